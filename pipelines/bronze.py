"""The bronze lake: Parquet, Hive-partitioned by the record's own UTC date, on a local folder or S3.

Layout: <bronze_url>/crypto/<table>/year=YYYY/month=MM/day=DD/<load_id>-<n>.parquet

Writes are idempotent per natural key: before a load's file lands in a day partition, rows with the same
keys in that partition's older files are removed (those files are rewritten, or deleted when fully
covered). Re-running a window therefore leaves exactly one copy of each record, carrying the load id of the
run that last delivered it - the same load id raw has.

Each load also leaves a small manifest, <table>/_loads/<load_id>.json, naming the values of its first key
column (the pairs of a klines load): settling reads another load's files only when their pairs can meet its
own. Backfill batches of other pairs share every day partition; without it, batch k read the k-1 batches'
files in all of them (1,095 days each).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import re
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from pipelines.errors import LakeUnavailable
from pipelines.settings import Settings

MS_PER_DAY = 86_400_000
_FILE_NAME = re.compile(r"^(.+)-\d+\.parquet$")
MANIFESTS = "_loads"  # '_': invisible to dataset readers
# a load with more distinct first-key values (Fear & Greed's first run: its days) gets no manifest: read it
MANIFEST_MAX_VALUES = 1_000


@dataclass(frozen=True)
class BronzeLake:
    fs: pafs.FileSystem
    root: str  # path inside fs, without trailing slash
    url: str  # as configured, for messages

    def table_dir(self, table: str) -> str:
        return f"{self.root}/crypto/{table}"


@contextlib.contextmanager
def lake_errors(lake: BronzeLake) -> Iterator[None]:
    """The filesystem's OSError (pyarrow's S3 errors carry the whole AWS SDK message) as one line that says
    which lake and what to do."""
    try:
        yield
    except OSError as exc:
        text = str(exc)
        cause = text.rsplit("Details: ", 1)[-1] if "Details: " in text else text
        raise LakeUnavailable(
            f"the bronze lake at {lake.url} cannot be reached ({cause.strip()[:160]}): nothing half-written "
            "is kept; re-run once it is back (storage.bronze_url, storage.s3_endpoint_url)"
        ) from exc


def open_lake(settings: Settings) -> BronzeLake:
    storage = settings.storage
    if storage.is_s3:
        secrets = settings.secrets
        fs = pafs.S3FileSystem(
            access_key=secrets.aws_access_key_id or None,
            secret_key=secrets.aws_secret_access_key or None,
            endpoint_override=storage.s3_endpoint_url or None,
            region=storage.s3_region,
            scheme="http" if storage.s3_endpoint_url.startswith("http://") else "https",
        )
        return BronzeLake(fs, storage.bronze_url.removeprefix("s3://"), storage.bronze_url)
    root = settings.path(storage.bronze_url)
    root.mkdir(parents=True, exist_ok=True)
    return BronzeLake(pafs.LocalFileSystem(), str(root), str(root))


def _keys(table: pa.Table, key_columns: Sequence[str]) -> pa.Array:
    """One string per row identifying its natural key (vectorised, no Python loop)."""
    parts = [
        pc.cast(pc.cast(table[c], pa.int64()), pa.string())
        if pa.types.is_timestamp(table[c].type)
        else pc.cast(table[c], pa.string())
        for c in key_columns
    ]
    joined = parts[0] if len(parts) == 1 else pc.binary_join_element_wise(*parts, "\x1f")
    return joined.combine_chunks() if isinstance(joined, pa.ChunkedArray) else joined


def _with_partitions(rows: pa.Table, time_column: str) -> pa.Table:
    ts = pc.cast(rows[time_column], pa.timestamp("ms", tz="UTC"))
    for name, fmt in (("year", "%Y"), ("month", "%m"), ("day", "%d")):
        rows = rows.append_column(name, pc.strftime(ts, format=fmt))
    return rows.sort_by(time_column)  # each partition contiguous: one file per partition per load


def _day_chunks(rows: pa.Table, time_column: str, days: int = 64) -> Iterator[pa.Table]:
    """Slices of at most `days` UTC days each, so a large load is partitioned piece by piece in bounded memory."""
    day = pc.cast(
        pc.divide(pc.cast(pc.cast(rows[time_column], pa.timestamp("ms")), pa.int64()), MS_PER_DAY), pa.int64()
    )
    first, last = pc.min(day).as_py(), pc.max(day).as_py()
    if last - first < days:
        yield rows
        return
    for lo in range(first, last + 1, days):
        yield rows.filter(pc.and_(pc.greater_equal(day, lo), pc.less(day, lo + days)))


def load_of(path: str) -> str | None:
    """The load id a bronze file belongs to (file names are <load_id>-<n>.parquet)."""
    match = _FILE_NAME.match(path.rsplit("/", 1)[-1])
    return match.group(1) if match else None


def existing_files(
    lake: BronzeLake, table: str, days: Sequence[dt.date] | None = None
) -> dict[str, list[str]]:
    """Partition directory -> the parquet files in it (temporary files skipped): one recursive listing of the
    table, or, for a few days, only those days' partitions (an hourly run touches one or two of ~1,100)."""
    found: dict[str, list[str]] = {}
    for info in data_files(lake, table, days):
        found.setdefault(info.path.rsplit("/", 1)[0], []).append(info.path)
    return found


def data_files(lake: BronzeLake, table: str, days: Sequence[dt.date] | None = None) -> list[pafs.FileInfo]:
    """The table's data files with their size and modification time, as existing_files lists them."""
    if days is None or len(days) > 31:
        selectors = [pafs.FileSelector(lake.table_dir(table), recursive=True, allow_not_found=True)]
    else:
        selectors = [
            pafs.FileSelector(
                f"{lake.table_dir(table)}/year={d:%Y}/month={d:%m}/day={d:%d}", allow_not_found=True
            )
            for d in days
        ]
    return [
        info
        for selector in selectors
        for info in lake.fs.get_file_info(selector)
        if info.type == pafs.FileType.File and load_of(info.path)
    ]


def _rewrite(lake: BronzeLake, path: str, rows: pa.Table) -> None:
    """Replace a file's content without ever leaving a half-written file under its name."""
    if isinstance(lake.fs, pafs.LocalFileSystem):
        directory, name = path.rsplit("/", 1)
        scratch = f"{directory}/_tmp-{name}"  # '_' prefix: invisible to dataset readers
        pq.write_table(rows, scratch, filesystem=lake.fs, compression="zstd")
        lake.fs.move(scratch, path)  # atomic rename
    else:
        pq.write_table(rows, path, filesystem=lake.fs, compression="zstd")  # an S3 PUT is all or nothing


def manifest(lake: BronzeLake, table: str, load_id: str) -> str:
    return f"{lake.table_dir(table)}/{MANIFESTS}/{load_id}.json"


def write_manifest(lake: BronzeLake, table: str, rows: pa.Table, load_id: str, column: str) -> None:
    values = pc.unique(pc.cast(rows[column], pa.string()))
    if len(values) > MANIFEST_MAX_VALUES:
        return
    path = manifest(lake, table, load_id)
    if isinstance(lake.fs, pafs.LocalFileSystem):
        lake.fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
    body = {"load_id": load_id, "column": column, "values": sorted(values.to_pylist())}
    with lake.fs.open_output_stream(path) as out:
        out.write(json.dumps(body).encode())


def manifest_values(lake: BronzeLake, table: str, load_id: str, column: str) -> frozenset[str] | None:
    """The first-key values a load holds, from its manifest; None when it has none (a lake written before
    manifests, a load with too many values): its files must be read."""
    try:
        with lake.fs.open_input_stream(manifest(lake, table, load_id)) as stream:
            body = json.loads(stream.read())
    except (FileNotFoundError, OSError, ValueError):
        return None
    return frozenset(body["values"]) if body.get("column") == column else None


def write_bronze(
    lake: BronzeLake,
    table: str,
    rows: pa.Table,
    time_column: str,
    load_id: str,
    key_columns: Sequence[str] = (),
) -> int:
    """Write one load's records as new files in their day partitions (and, given its key columns, its
    manifest first: a file never lacks one); returns rows written.

    Older copies of the same keys stay until `settle_bronze` runs after the raw load commits, so a failed
    raw load (whose new files `delete_load` removes) leaves bronze exactly as it was.
    """
    if rows.num_rows == 0:
        return 0
    if key_columns:
        write_manifest(lake, table, rows, load_id, key_columns[0])
    for chunk in _day_chunks(rows, time_column):
        ds.write_dataset(
            _with_partitions(chunk, time_column),
            lake.table_dir(table),
            filesystem=lake.fs,
            format="parquet",
            partitioning=ds.partitioning(
                pa.schema([("year", pa.string()), ("month", pa.string()), ("day", pa.string())]),
                flavor="hive",
            ),
            basename_template=f"{load_id}-{{i}}.parquet",
            existing_data_behavior="overwrite_or_ignore",
            file_options=ds.ParquetFileFormat().make_write_options(compression="zstd"),
            max_partitions=100_000,
            # S3 has no directories: creating each partition's "directory" costs listings of the table's
            # prefix (Fear & Greed's first run: ~3,000 partitions, quadratic); a PUT needs none
            create_dir=isinstance(lake.fs, pafs.LocalFileSystem),
        )
    return int(rows.num_rows)


def settle_bronze(
    lake: BronzeLake,
    table: str,
    load_ids: Sequence[str],
    key_columns: Sequence[str],
    threads: int = 4,
    time_range: tuple[dt.datetime, dt.datetime] | None = None,
) -> int:
    """After raw committed these loads: drop older copies of their keys from the other files of each
    partition they wrote (deleting files left empty). `time_range` (the loads' first and last record
    time, UTC) limits the search to those days' partitions. Returns how many older files changed."""
    wanted = set(load_ids)
    column = key_columns[0]
    known: dict[str, frozenset[str] | None] = {}  # load id -> its manifest's values

    def values_of(load_id: str) -> frozenset[str] | None:
        if load_id not in known:
            known[load_id] = manifest_values(lake, table, load_id, column)
        return known[load_id]

    mine = [values_of(load_id) for load_id in load_ids]
    ours_values = None if any(v is None for v in mine) else frozenset[str]().union(*(v for v in mine if v))

    def may_overlap(path: str) -> bool:
        if ours_values is None:
            return True
        load_id = load_of(path)
        theirs = values_of(load_id) if load_id is not None else None
        return theirs is None or not theirs.isdisjoint(ours_values)

    def settle(paths: list[str]) -> int:
        ours = [p for p in paths if load_of(p) in wanted]
        others = [p for p in paths if load_of(p) not in wanted and may_overlap(p)]
        if not ours or not others:
            return 0
        new_keys = pa.concat_arrays(
            [
                _keys(pq.read_table(p, filesystem=lake.fs, columns=list(key_columns)), key_columns)
                for p in ours
            ]
        )
        changed = 0
        for path in others:
            old = pq.read_table(path, filesystem=lake.fs, partitioning=None)
            overlap = pc.is_in(_keys(old, key_columns), value_set=new_keys)
            hits = pc.sum(overlap).as_py() or 0
            if hits == old.num_rows:
                lake.fs.delete_file(path)
            elif hits:
                _rewrite(lake, path, old.filter(pc.invert(overlap)))
            changed += bool(hits)
        return changed

    days = None
    if time_range is not None:
        first, last = (
            (t if t.tzinfo else t.replace(tzinfo=dt.UTC)).astimezone(dt.UTC).date() for t in time_range
        )
        days = [first + dt.timedelta(days=n) for n in range((last - first).days + 1)]
    with ThreadPoolExecutor(max_workers=threads) as pool:
        return sum(pool.map(settle, existing_files(lake, table, days).values()))


def delete_load(lake: BronzeLake, table: str, load_id: str) -> int:
    """Remove one load's files (its raw load failed, or its run was killed before raw committed)."""
    removed = 0
    for paths in existing_files(lake, table).values():
        for path in paths:
            if load_of(path) == load_id:
                lake.fs.delete_file(path)
                removed += 1
    with contextlib.suppress(FileNotFoundError, OSError):
        lake.fs.delete_file(manifest(lake, table, load_id))
    return removed


def read_bronze(lake: BronzeLake, table: str) -> pa.Table:
    """Read a whole bronze table back (partition columns year/month/day included)."""
    dataset = ds.dataset(lake.table_dir(table), filesystem=lake.fs, format="parquet", partitioning="hive")
    # files written before and after a source added a field differ in columns: read the union of them
    schemas = [fragment.physical_schema for fragment in dataset.get_fragments()]
    if len(set(schemas)) > 1:
        unified = union_schema([*schemas, dataset.partitioning.schema])
        dataset = ds.dataset(
            lake.table_dir(table), schema=unified, filesystem=lake.fs, format="parquet", partitioning="hive"
        )
    return dataset.to_table()


def union_schema(schemas: list[pa.Schema]) -> pa.Schema:
    """One schema for files that differ: every column of any file; a type widened where Arrow can (null to
    anything, int to float), text where the files cannot agree (a field whose type the API changed)."""
    try:
        return pa.unify_schemas(schemas, promote_options="permissive")
    except (pa.ArrowTypeError, pa.ArrowInvalid):
        pass
    fields: dict[str, pa.Field] = {}
    for schema in schemas:
        for field in schema:
            known = fields.get(field.name)
            if known is None:
                fields[field.name] = field
                continue
            try:
                fields[field.name] = pa.unify_schemas(
                    [pa.schema([known]), pa.schema([field])], promote_options="permissive"
                ).field(0)
            except (pa.ArrowTypeError, pa.ArrowInvalid):
                fields[field.name] = pa.field(field.name, pa.string())
    return pa.schema(list(fields.values()))


@dataclass(frozen=True)
class FileLoads:
    """Rows per load id in one bronze file, and the file's size and modification time when they were read."""

    size: int
    mtime_ns: int
    loads: dict[str, int]


def rows_per_load(
    lake: BronzeLake, table: str, known: dict[str, FileLoads] | None = None
) -> tuple[dict[str, int], dict[str, FileLoads]]:
    """Rows per load id in a bronze table (the reconciliation check), and what each file holds. `known` is
    what an earlier call returned: a file whose size and modification time are unchanged is not read again,
    so an hourly check reads the files written since the last one, not years of partitions (each a request
    on S3). Others are read in one parallel scan of their load_id column, never every column."""
    known = known or {}
    index, unread = {}, []
    for info in data_files(lake, table):
        entry = known.get(info.path)
        mtime = info.mtime_ns or 0
        if entry is not None and (entry.size, entry.mtime_ns) == (info.size, mtime):
            index[info.path] = entry
        else:
            unread.append((info.path, int(info.size or 0), mtime))
    if unread:
        counts: dict[str, dict[str, int]] = {path: {} for path, _, _ in unread}
        dataset = ds.dataset([path for path, _, _ in unread], filesystem=lake.fs, format="parquet")
        for tagged in dataset.scanner(columns=["load_id"]).scan_batches():
            found = counts[tagged.fragment.path]
            for c in pc.value_counts(tagged.record_batch["load_id"]):
                found[c["values"].as_py()] = found.get(c["values"].as_py(), 0) + c["counts"].as_py()
        index |= {path: FileLoads(size, mtime, counts[path]) for path, size, mtime in unread}
    totals: dict[str, int] = {}
    for entry in index.values():
        for load, rows in entry.loads.items():
            totals[load] = totals.get(load, 0) + rows
    return totals, index
