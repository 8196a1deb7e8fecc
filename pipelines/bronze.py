"""The bronze lake: Parquet, Hive-partitioned by the record's own UTC date, on a local folder or S3.

Layout: <bronze_url>/crypto/<table>/year=YYYY/month=MM/day=DD/<load_id>-<n>.parquet

Writes are idempotent per natural key: before a load's file lands in a day partition, rows with the same
keys in that partition's older files are removed (those files are rewritten, or deleted when fully
covered). Re-running a window therefore leaves exactly one copy of each record, carrying the load id of the
run that last delivered it - the same load id raw has.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from pipelines.settings import Settings

MS_PER_DAY = 86_400_000


@dataclass(frozen=True)
class BronzeLake:
    fs: pafs.FileSystem
    root: str  # path inside fs, without trailing slash
    url: str  # as configured, for messages

    def table_dir(self, table: str) -> str:
        return f"{self.root}/crypto/{table}"


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


def _existing_files(lake: BronzeLake, table: str) -> dict[str, list[str]]:
    """Partition directory -> parquet files already there (one recursive listing)."""
    found: dict[str, list[str]] = {}
    selector = pafs.FileSelector(lake.table_dir(table), recursive=True, allow_not_found=True)
    for info in lake.fs.get_file_info(selector):
        if info.type == pafs.FileType.File and info.path.endswith(".parquet"):
            found.setdefault(info.path.rsplit("/", 1)[0], []).append(info.path)
    return found


def _remove_overlap(
    lake: BronzeLake, paths: list[str], new_keys: pa.Array, key_columns: Sequence[str]
) -> None:
    """Drop rows the new load re-delivers from older files of one partition."""
    for path in paths:
        old = pq.read_table(path, filesystem=lake.fs, partitioning=None)
        overlap = pc.is_in(_keys(old, key_columns), value_set=new_keys)
        hits = pc.sum(overlap).as_py() or 0
        if hits == old.num_rows:
            lake.fs.delete_file(path)
        elif hits:
            pq.write_table(old.filter(pc.invert(overlap)), path, filesystem=lake.fs, compression="zstd")


def write_bronze(
    lake: BronzeLake,
    table: str,
    rows: pa.Table,
    time_column: str,
    key_columns: Sequence[str],
    load_id: str,
    threads: int = 4,
) -> int:
    """Write one load's records into their day partitions; returns rows written."""
    if rows.num_rows == 0:
        return 0
    existing = _existing_files(lake, table)
    for chunk in _day_chunks(rows, time_column):
        _write_chunk(
            lake, table, _with_partitions(chunk, time_column), key_columns, load_id, existing, threads
        )
    return rows.num_rows


def _write_chunk(
    lake: BronzeLake,
    table: str,
    rows: pa.Table,
    key_columns: Sequence[str],
    load_id: str,
    existing: dict[str, list[str]],
    threads: int,
) -> None:
    if existing:
        where = pc.binary_join_element_wise(rows["year"], rows["month"], rows["day"], "/")
        base = lake.table_dir(table)

        def settle(part: str) -> None:
            y, m, d = part.split("/")
            directory = f"{base}/year={y}/month={m}/day={d}"
            if directory in existing:
                new_keys = _keys(rows.filter(pc.equal(where, part)), key_columns)
                _remove_overlap(lake, existing[directory], new_keys, key_columns)

        with ThreadPoolExecutor(max_workers=threads) as pool:
            list(pool.map(settle, pc.unique(where).to_pylist()))
    ds.write_dataset(
        rows,
        lake.table_dir(table),
        filesystem=lake.fs,
        format="parquet",
        partitioning=ds.partitioning(
            pa.schema([("year", pa.string()), ("month", pa.string()), ("day", pa.string())]), flavor="hive"
        ),
        basename_template=f"{load_id}-{{i}}.parquet",
        existing_data_behavior="overwrite_or_ignore",
        file_options=ds.ParquetFileFormat().make_write_options(compression="zstd"),
        max_partitions=100_000,
    )


def delete_load(lake: BronzeLake, table: str, load_id: str) -> int:
    """Remove a failed load's files (used when the raw load fails after bronze was written)."""
    removed = 0
    for paths in _existing_files(lake, table).values():
        for path in paths:
            if path.rsplit("/", 1)[1].startswith(f"{load_id}-"):
                lake.fs.delete_file(path)
                removed += 1
    return removed


def read_bronze(lake: BronzeLake, table: str) -> pa.Table:
    """Read a whole bronze table back (partition columns year/month/day included)."""
    dataset = ds.dataset(lake.table_dir(table), filesystem=lake.fs, format="parquet", partitioning="hive")
    return dataset.to_table()
