"""Bronze compaction: every hourly load adds a file to its day partition (about 24 a day per table, 8,760 a
year). Once a UTC day is closed - older than the trailing re-fetch's reach, so no routine load writes it
again - its partition's files become one, `compacted-<day>-<token>-0.parquet`, rows sorted by time and key,
each still carrying its load id (the per-load reconciliation reads the load_id column, `verify` and a later
revision settle against the compacted file like any other).

The swap survives a crash at any point: the new file is written and verified (rows and rows per load id)
under `<table>/_compactions/` (invisible to readers), then a record naming it and the old files is written -
the commit point - then the old files are deleted and the new one moved into the partition, then the record
is deleted. `recover` finishes a recorded swap (old files gone, new file in place) and drops an unrecorded
new file (the old files never changed): either the old files or the new, never both or neither. Every
writer and reader of a table's bronze recovers first (the engine before a delivery, the reconciliation check,
compaction itself); compaction and the check's read take the table's bronze lock.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from pipelines import catalog
from pipelines.bronze import (
    MANIFESTS,
    BronzeLake,
    existing_files,
    load_of,
    manifest,
    open_lake,
    union_schema,
    write_manifest,
)
from pipelines.runtime import db
from pipelines.settings import Settings

log = logging.getLogger(__name__)

COMPACTIONS = "_compactions"  # '_': invisible to dataset readers
PREFIX = "compacted-"


class CompactionCrash(Exception):
    """Raised by the test hook `crash_at` to stop a swap where a crash would."""


def bronze_lock(table: str) -> str:
    return f"bronze:{table}"


def _folder(lake: BronzeLake, table: str) -> str:
    return f"{lake.table_dir(table)}/{COMPACTIONS}"


def _exists(lake: BronzeLake, path: str) -> bool:
    return bool(lake.fs.get_file_info(path).type == pafs.FileType.File)


def _counts(table: pa.Table) -> dict[str, int]:
    if not len(table):
        return {}
    return {c["values"].as_py(): c["counts"].as_py() for c in pc.value_counts(table["load_id"])}


def _roll_forward(lake: BronzeLake, record_path: str) -> None:
    """Finish a recorded swap. Idempotent, and safe beside another process finishing the same one (two
    backfill batches recovering at once): whatever the other already did is skipped."""
    try:
        with lake.fs.open_input_stream(record_path) as stream:
            record = json.loads(stream.read())
    except FileNotFoundError:
        return  # finished by another process
    with contextlib.suppress(FileNotFoundError):
        if _exists(lake, record["staged"]):
            for old in record["old"]:
                if _exists(lake, old):
                    lake.fs.delete_file(old)
            lake.fs.move(record["staged"], record["final"])
        lake.fs.delete_file(record_path)


def recover(lake: BronzeLake, table: str) -> int:
    """Finish every recorded swap and drop every unrecorded staged file; returns the swaps finished."""
    selector = pafs.FileSelector(_folder(lake, table), allow_not_found=True)
    infos = [i for i in lake.fs.get_file_info(selector) if i.type == pafs.FileType.File]
    records = sorted(i.path for i in infos if i.path.endswith(".json"))
    for record in records:
        _roll_forward(lake, record)
        log.warning("finished an interrupted bronze compaction", extra={"table": table, "record": record})
    for staged in (i.path for i in infos if i.path.endswith(".parquet.tmp")):
        if f"{staged.removesuffix('.parquet.tmp')}.json" not in records:
            lake.fs.delete_file(staged)  # never recorded: the old files never changed
            token = staged.rsplit("/", 1)[-1].removesuffix(".parquet.tmp")
            with contextlib.suppress(FileNotFoundError, OSError):
                lake.fs.delete_file(manifest(lake, table, f"{PREFIX}{token}"))
    return len(records)


def prune_manifests(lake: BronzeLake, table: str) -> int:
    """Delete the manifests of loads none of whose files remain (compacted or replaced); returns how many.
    The caller holds the table's source lock: a load in flight writes its manifest before its files."""
    present = {load_of(p) for paths in existing_files(lake, table).values() for p in paths}
    selector = pafs.FileSelector(f"{lake.table_dir(table)}/{MANIFESTS}", allow_not_found=True)
    pruned = 0
    for info in lake.fs.get_file_info(selector):
        load = info.path.rsplit("/", 1)[-1].removesuffix(".json")
        if info.type == pafs.FileType.File and info.path.endswith(".json") and load not in present:
            lake.fs.delete_file(info.path)
            pruned += 1
    return pruned


@dataclass(frozen=True)
class Compacted:
    day: dt.date
    files: int
    rows: int


def compact_partition(
    lake: BronzeLake,
    table: catalog.Table,
    day: dt.date,
    files: Sequence[str],
    crash_at: str | None = None,
) -> Compacted:
    """One day partition's files into one (the caller holds the table's bronze lock and its source's)."""
    schemas = [pq.read_schema(f, filesystem=lake.fs) for f in files]
    schema = union_schema(schemas) if len(set(schemas)) > 1 else schemas[0]
    rows = ds.dataset(list(files), schema=schema, filesystem=lake.fs, format="parquet").to_table()
    rows = rows.sort_by([(table.time_column, "ascending"), *((k, "ascending") for k in table.key)])
    expected = _counts(rows)
    token = f"{day:%Y%m%d}-{uuid.uuid4().hex[:12]}"
    staged = f"{_folder(lake, table.name)}/{token}.parquet.tmp"
    final = f"{files[0].rsplit('/', 1)[0]}/{PREFIX}{token}-0.parquet"
    if isinstance(lake.fs, pafs.LocalFileSystem):
        lake.fs.create_dir(_folder(lake, table.name), recursive=True)
    pq.write_table(rows, staged, filesystem=lake.fs, compression="zstd")
    if crash_at == "staged":
        raise CompactionCrash(crash_at)
    written = _counts(pq.read_table(staged, filesystem=lake.fs, columns=["load_id"]))
    if written != expected:  # never swap in a file that lost or gained a row
        lake.fs.delete_file(staged)
        raise RuntimeError(
            f"bronze compaction of {table.name} {day}: the new file's rows differ; kept the old"
        )
    write_manifest(lake, table.name, rows, f"{PREFIX}{token}", table.replaces[0])
    record = f"{_folder(lake, table.name)}/{token}.json"
    body = {"staged": staged, "final": final, "old": list(files), "rows": expected}
    with lake.fs.open_output_stream(record) as out:
        out.write(json.dumps(body).encode())
    if crash_at == "recorded":
        raise CompactionCrash(crash_at)
    if crash_at == "deleting":  # a crash after some old files went
        lake.fs.delete_file(files[0])
        raise CompactionCrash(crash_at)
    _roll_forward(lake, record)
    return Compacted(day, len(files), int(rows.num_rows))


def closed_before(settings: Settings, now: dt.datetime) -> dt.date:
    """The first UTC day not yet closed: a day is closed once the trailing re-fetch (restate_hours) can no
    longer reach it, so no routine load writes its partition again."""
    reach = dt.timedelta(hours=settings.sources.binance.restate_hours + 1)
    return (now - reach).date()


def day_of(partition: str) -> dt.date:
    parts = dict(p.split("=", 1) for p in partition.split("/") if "=" in p)
    return dt.date(int(parts["year"]), int(parts["month"]), int(parts["day"]))


def compact_table(settings: Settings, table: catalog.Table, now: dt.datetime) -> str:
    """Every closed day partition of `table` holding more than one file, one partition at a time (each under
    the table's bronze lock and its source's ingest lock: an hourly run waits at most one partition)."""
    lake = open_lake(settings)
    before = closed_before(settings, now)
    done: list[Compacted] = []
    with db.advisory_lock(settings, bronze_lock(table.name), settings.database.lock_wait_s):
        recover(lake, table.name)
        partitions = existing_files(lake, table.name)
    pruned, busy = 0, ""
    try:
        for partition, files in sorted(partitions.items()):
            if len(files) < 2 or day_of(partition) >= before:
                continue
            with db.advisory_lock(
                settings,
                f"ingest:{table.source}",
                settings.database.lock_wait_s,
                also=[bronze_lock(table.name)],
            ):
                current = existing_files(lake, table.name, [day_of(partition)]).get(partition, [])
                if len(current) > 1:
                    done.append(compact_partition(lake, table, day_of(partition), sorted(current)))
        with db.advisory_lock(
            settings, f"ingest:{table.source}", settings.database.lock_wait_s, also=[bronze_lock(table.name)]
        ):
            pruned = prune_manifests(lake, table.name)
    except db.LockBusy:  # a run of the source is loading: it goes first, the next maintain goes on
        busy = "; stopped for a run of its source in progress (the next maintain goes on)"
    merged = sum(c.files for c in done)
    return (
        f"bronze {table.name}: compacted {len(done):,} closed days ({merged:,} files into {len(done):,}), "
        f"{pruned:,} load manifests without files deleted{busy}"
    )
