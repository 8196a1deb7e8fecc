"""The bronze lake: Parquet, Hive-partitioned by the record's own UTC date, on a local folder or S3.

Layout: <bronze_url>/crypto/<table>/year=YYYY/month=MM/day=DD/<load_id>.parquet

Writes are idempotent per natural key: before a load's file lands in a day partition, rows with the same
keys in that partition's older files are removed (those files are rewritten, or deleted when fully
covered). Re-running a window therefore leaves exactly one copy of each record, carrying the load id of the
run that last delivered it - the same load id raw has.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
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

    def partition_dir(self, table: str, day_ms: int) -> str:
        d = np.datetime64(day_ms, "ms").astype("datetime64[D]").astype(object)
        return f"{self.table_dir(table)}/year={d.year:04d}/month={d.month:02d}/day={d.day:02d}"


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


def _keys(table: pa.Table, key_columns: Sequence[str]) -> np.ndarray:
    parts = [
        pc.cast(table[c], pa.string()) if table[c].type != pa.string() else table[c] for c in key_columns
    ]
    joined = parts[0] if len(parts) == 1 else pc.binary_join_element_wise(*parts, "\x1f")
    return np.asarray(joined.to_numpy(zero_copy_only=False), dtype=object)


def _write_partition(
    lake: BronzeLake, table: str, day_ms: int, rows: pa.Table, key_columns: Sequence[str], load_id: str
) -> int:
    directory = lake.partition_dir(table, day_ms)
    lake.fs.create_dir(directory, recursive=True)
    new_keys = set(_keys(rows, key_columns))
    target = f"{directory}/{load_id}.parquet"
    for info in lake.fs.get_file_info(pafs.FileSelector(directory, allow_not_found=True)):
        if info.type != pafs.FileType.File or not info.path.endswith(".parquet") or info.path == target:
            continue
        old = pq.read_table(info.path, filesystem=lake.fs)
        overlap = np.fromiter(
            (k in new_keys for k in _keys(old, key_columns)), dtype=bool, count=old.num_rows
        )
        if overlap.all():
            lake.fs.delete_file(info.path)
        elif overlap.any():
            pq.write_table(old.filter(pa.array(~overlap)), info.path, filesystem=lake.fs)
    pq.write_table(rows, target, filesystem=lake.fs, compression="zstd")
    return rows.num_rows


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
    ms = pc.cast(pc.cast(rows[time_column], pa.timestamp("ms")), pa.int64()).to_numpy()
    days = ms // MS_PER_DAY
    order = np.argsort(days, kind="stable")
    sorted_days = days[order]
    bounds = np.flatnonzero(np.diff(sorted_days)) + 1
    groups = np.split(order, bounds)
    with ThreadPoolExecutor(max_workers=threads) as pool:
        written = pool.map(
            lambda idx: _write_partition(
                lake, table, int(days[idx[0]]) * MS_PER_DAY, rows.take(pa.array(idx)), key_columns, load_id
            ),
            groups,
        )
        return sum(written)


def delete_load(lake: BronzeLake, table: str, load_id: str) -> int:
    """Remove a failed load's files (used when the raw load fails after bronze was written)."""
    removed = 0
    selector = pafs.FileSelector(lake.table_dir(table), recursive=True, allow_not_found=True)
    for info in lake.fs.get_file_info(selector):
        if info.type == pafs.FileType.File and info.base_name == f"{load_id}.parquet":
            lake.fs.delete_file(info.path)
            removed += 1
    return removed


def read_bronze(lake: BronzeLake, table: str) -> pa.Table:
    """Read a whole bronze table back (partition columns year/month/day included)."""
    dataset = ds.dataset(lake.table_dir(table), filesystem=lake.fs, format="parquet", partitioning="hive")
    return dataset.to_table()
