"""Bronze on a real S3 endpoint (moto's server over HTTP on 127.0.0.1): the local layout, the rows and load
ids raw has, and re-runs that replace objects instead of duplicating rows."""

from __future__ import annotations

import datetime as dt
import io
import logging
import re
import uuid
from pathlib import Path

import boto3
import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from moto.server import ThreadedMotoServer

from pipelines import ingest
from pipelines.bronze import open_lake, read_bronze
from pipelines.cli import sandboxed
from pipelines.runtime import db
from pipelines.sandbox import SandboxServer, events
from pipelines.settings import load_settings

HOUR = 3_600_000
NOW = dt.datetime(2026, 3, 10, 12, 30, tzinfo=dt.UTC)  # the newest closed bar opens at 11:00 on the 10th
NOW_MS = int(NOW.timestamp() * 1000)
LAST_CLOSED = NOW_MS // HOUR * HOUR - HOUR
SYMBOLS = ["BTCUSDT", "ETHUSDT"]
KEY_ID, SECRET = "cryptoflow-test-key", "cryptoflow-test-secret"
TABLE_PREFIX = "lake/crypto/binance_klines"
FILE_INDEX = re.compile(r"-\d+\.parquet$")


@pytest.fixture(scope="module")
def s3_endpoint():
    access_log = logging.getLogger("werkzeug")  # one line per S3 request otherwise
    level = access_log.level
    access_log.setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()
    access_log.setLevel(level)


@pytest.fixture
def s3(s3_endpoint):
    return boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        aws_access_key_id=KEY_ID,
        aws_secret_access_key=SECRET,
        region_name="us-east-1",
    )


@pytest.fixture
def bucket(s3) -> str:
    name = f"bronze-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    return name


@pytest.fixture
def sandbox():
    with SandboxServer(seed=42, now_ms=NOW_MS) as server:
        yield server


def _settings(pg_dir: Path, project_dir: Path, sandbox: SandboxServer, storage: dict):
    """Secrets come from the environ handed to load_settings, exactly as in production."""
    environ = {"AWS_ACCESS_KEY_ID": KEY_ID, "AWS_SECRET_ACCESS_KEY": SECRET}
    overrides = {
        "database": {"embedded_dir": str(pg_dir), "name": f"t_{uuid.uuid4().hex[:10]}"},
        "storage": storage,
        "universe": {"mode": "pinned", "symbols": SYMBOLS},
        "sources": {"binance": {"max_retries": 2, "backoff_base_s": 0.01, "timeout_s": 5}},
    }
    settings = load_settings(environ=environ, overrides=overrides)
    return sandboxed(settings.model_copy(update={"project_dir": project_dir}), sandbox)


@pytest.fixture
def settings(pg_dir, tmp_path, sandbox, s3_endpoint, bucket):
    s = _settings(
        pg_dir, tmp_path, sandbox, {"bronze_url": f"s3://{bucket}/lake", "s3_endpoint_url": s3_endpoint}
    )
    assert s.storage.is_s3 and s.secrets.aws_access_key_id == KEY_ID
    return s


def query(settings, sql, params=()):
    with db.cursor(settings) as cur:
        cur.execute(sql, params)
        return cur.fetchall()


def raw_keys(settings) -> list[tuple[str, int, str]]:
    return sorted(
        query(
            settings,
            "SELECT symbol, (extract(epoch FROM open_time) * 1000)::bigint, load_id FROM raw.binance_klines",
        )
    )


def bronze_keys(settings) -> list[tuple[str, int, str]]:
    table = read_bronze(open_lake(settings), "binance_klines")
    ms = pc.cast(pc.cast(table["open_time"], "timestamp[ms]"), "int64").to_pylist()
    return sorted(zip(table["symbol"].to_pylist(), ms, table["load_id"].to_pylist(), strict=True))


def objects(s3, bucket: str) -> dict[str, int]:
    """Every object in the bucket: key -> size."""
    out: dict[str, int] = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        out.update({o["Key"]: o["Size"] for o in page.get("Contents", [])})
    return out


def parquet_objects(s3, bucket: str) -> dict[str, str]:
    """Parquet objects as {<partition>/<load id>.parquet: actual key}; the writer may add a -<n> file index
    to the load id, and a load must have exactly one file per partition."""
    listed = objects(s3, bucket)
    files = sorted(k for k in listed if k.endswith(".parquet"))
    # the loads' manifests (<table>/_loads/<load id>.json: the pairs each holds; bronze.py)
    manifests = {k for k in listed if re.search(r"/_loads/[^/]+\.json$", k)}
    # anything else is one of pyarrow's zero-byte "directory" markers on the way to a file
    others = {k: size for k, size in listed.items() if not k.endswith(".parquet") and k not in manifests}
    assert all(k.endswith("/") and size == 0 for k, size in others.items()), others
    assert all(any(f.startswith(k) for f in files) for k in others), others
    by_load = {FILE_INDEX.sub(".parquet", k): k for k in files}
    assert len(by_load) == len(files), files  # one file per load and partition
    return by_load


def day_key(day: int, load_id: str) -> str:
    return f"{TABLE_PREFIX}/year=2026/month=03/day={day:02d}/{load_id}.parquet"


def read_object(s3, bucket: str, key: str):
    """Read one load's object of a partition, key as day_key() names it."""
    actual = parquet_objects(s3, bucket)[key]
    return pq.read_table(io.BytesIO(s3.get_object(Bucket=bucket, Key=actual)["Body"].read()))


def expected_hours(first_ms: int, last_ms: int) -> list[tuple[str, int]]:
    return [(s, ms) for s in sorted(SYMBOLS) for ms in range(first_ms, last_ms + 1, HOUR)]


def test_s3_bronze_has_the_local_layout_and_the_rows_of_raw(settings, s3, bucket, pg_dir, tmp_path, sandbox):
    summary = ingest.ingest_ohlcv(settings, days=2)
    run_id = summary.run_id
    assert (summary.rows_raw, summary.rows_bronze) == (96, 96)

    # 48 hours ending 11:00 on the 10th start at 12:00 on the 8th: three day partitions, one object each
    assert set(parquet_objects(s3, bucket)) == {day_key(d, run_id) for d in (8, 9, 10)}
    per_day = {d: read_object(s3, bucket, day_key(d, run_id)).num_rows for d in (8, 9, 10)}
    assert per_day == {8: 2 * 12, 9: 2 * 24, 10: 2 * 12}

    # read back through the lake: the same keys and load ids as raw, each key once
    first = LAST_CLOSED - 47 * HOUR
    bronze = bronze_keys(settings)
    assert bronze == raw_keys(settings)
    assert [(s, ms) for s, ms, _ in bronze] == expected_hours(first, LAST_CLOSED)
    assert {lid for *_, lid in bronze} == {run_id}
    run = query(
        settings, "SELECT status, rows_raw, rows_bronze FROM ops.pipeline_runs WHERE run_id = %s", (run_id,)
    )
    assert run == [("success", 96, 96)]

    # the same ingest into a local folder writes the same relative paths and the same records
    local_dir = tmp_path / "local"  # its own database and dlt state too
    local = _settings(pg_dir, local_dir, sandbox, {"bronze_url": str(local_dir / "bronze")})
    local_run = ingest.ingest_ohlcv(local, days=2).run_id
    local_root = local_dir / "bronze"
    local_files = sorted(
        p.relative_to(local_root).as_posix().replace(local_run, "<run>")
        for p in local_root.rglob("*.parquet")
    )
    s3_files = sorted(
        k.removeprefix("lake/").replace(run_id, "<run>") for k in parquet_objects(s3, bucket).values()
    )
    assert s3_files == local_files
    by_key = [("symbol", "ascending"), ("open_time", "ascending")]  # row order in a file is no contract
    for d in (8, 9, 10):
        from_s3 = read_object(s3, bucket, day_key(d, run_id)).drop_columns(["load_id"]).sort_by(by_key)
        (path,) = (local_root / f"crypto/binance_klines/year=2026/month=03/day={d:02d}").glob(f"{local_run}*")
        from_local = pq.read_table(path, partitioning=None).drop_columns(["load_id"]).sort_by(by_key)
        assert from_s3.num_rows == from_local.num_rows == per_day[d]
        assert from_s3.equals(from_local), d


def test_s3_rerun_replaces_objects_and_never_duplicates_rows(settings, s3, bucket, sandbox):
    first = ingest.ingest_ohlcv(settings, days=2)
    objects = {day_key(d, first.run_id) for d in (8, 9, 10)}
    assert set(parquet_objects(s3, bucket)) == objects

    second = ingest.ingest_ohlcv(settings, days=2)
    assert (second.rows_raw, second.rows_bronze, second.details["unchanged"]) == (0, 0, 96)
    assert set(parquet_objects(s3, bucket)) == objects  # nothing changed: no object rewritten

    # 30 hours later the exchange has revised some stored candles (sandbox/events.py): the revision load
    # writes them as new objects and every older object holding one is rewritten without it
    later = NOW_MS + 30 * HOUR
    sandbox.set_now(later)
    restate_from = LAST_CLOSED + 30 * HOUR - 47 * HOUR  # the 48 trailing hours re-fetched at `later`
    opens = np.arange(restate_from, LAST_CLOSED + 1, HOUR, dtype=np.int64)
    revised = sorted(
        (symbol, int(t))
        for symbol in SYMBOLS
        for t in opens[
            events.revised(symbol, opens, 42)
            & (opens + HOUR + events.REVISE_AFTER_MS > NOW_MS)
            & (opens + HOUR + events.REVISE_AFTER_MS <= later)
        ]
    )
    assert revised  # the seed gives this window some
    third = ingest.ingest_ohlcv(settings)  # incremental: 30 new hours per pair + the restate window
    assert (third.rows_raw, third.details["revised"]) == (2 * 30 + len(revised), len(revised))
    rev_load = f"{third.run_id}-rev"
    bronze = bronze_keys(settings)
    assert len(bronze) == len({(s, ms) for s, ms, _ in bronze}) == 2 * (48 + 30)
    assert bronze == raw_keys(settings)
    assert sorted((s, ms) for s, ms, lid in bronze if lid == rev_load) == revised
    revised_days = {dt.datetime.fromtimestamp(ms / 1000, dt.UTC).day for _, ms in revised}
    assert {day_key(d, rev_load) for d in revised_days} <= set(parquet_objects(s3, bucket))
    for d in revised_days:  # the first load's object of that day no longer holds the revised keys
        kept = read_object(s3, bucket, day_key(d, first.run_id))
        kept_ms = pc.cast(pc.cast(kept["open_time"], "timestamp[ms]"), "int64").to_pylist()
        assert not set(zip(kept["symbol"].to_pylist(), kept_ms, strict=True)) & set(revised)


def test_the_s3_endpoint_gone_for_an_hour_fails_in_one_line_and_the_next_run_completes(
    pg_dir, tmp_path, sandbox
):
    """The endpoint stops answering (its port closed, as a dead host's) between two hourly runs: the run
    fails saying which lake and what to do, raw keeps what it had, the reconciliation check reports an
    error instead of crashing the check run; back an hour later, the next run loads both hours."""
    from pipelines import quality
    from pipelines.errors import user_facing

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    port = server.get_host_and_port()[1]
    endpoint = f"http://127.0.0.1:{port}"
    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=KEY_ID,
        aws_secret_access_key=SECRET,
        region_name="us-east-1",
    )
    client.create_bucket(Bucket="gone")
    settings = _settings(
        pg_dir, tmp_path, sandbox, {"bronze_url": "s3://gone/lake", "s3_endpoint_url": endpoint}
    )
    try:
        ingest.ingest_ohlcv(settings, days=1)
        before = raw_keys(settings)
        server.stop()
        server._server.server_close()  # moto keeps its buckets in this process; the port now refuses
        sandbox.set_now(NOW_MS + HOUR)
        with pytest.raises(Exception) as failed:
            ingest.ingest_ohlcv(settings)
        line = user_facing(failed.value)
        assert line is not None and "\n" not in line
        assert line.startswith("the bronze lake at s3://gone/lake cannot be reached (")
        assert line.endswith(
            "): nothing half-written is kept; re-run once it is back "
            "(storage.bronze_url, storage.s3_endpoint_url)"
        )
        assert raw_keys(settings) == before
        check = next(r for r in quality.bronze_reconciliation(settings) if r.table == "binance_klines")
        assert (check.outcome, check.diagnostics["error"]) == ("error", line)

        server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        server.start()
        sandbox.set_now(NOW_MS + 2 * HOUR)
        ingest.ingest_ohlcv(settings)
        after = raw_keys(settings)
        assert len(after) == len(before) + 2 * len(SYMBOLS)  # the hour it missed and the new one
        assert bronze_keys(settings) == after
        assert all(r.outcome == "pass" for r in quality.bronze_reconciliation(settings))
    finally:
        server.stop()


def test_the_reconciliation_reads_only_the_load_id_column_of_bronze(tmp_path):
    """The raw checks run every hour, from S3 in compose: counting rows per load id must not read every
    column of every file. A filesystem that counts the bytes it hands out shows what the count reads: a
    day of 2,000 pairs (48,000 candles, one file) is megabytes, its load_id column a few kilobytes."""
    import os
    from decimal import Decimal

    import pyarrow as pa
    import pyarrow.dataset as ds
    import pyarrow.fs as pafs
    from fsspec.implementations.local import LocalFileSystem

    from pipelines.bronze import BronzeLake, rows_per_load, write_bronze
    from pipelines.sources.binance.settings import DECIMAL_FIELDS, KLINES_SCHEMA

    n, rng = 48_000, np.random.default_rng(7)
    opens = [dt.datetime(2026, 3, 1, h, tzinfo=dt.UTC) for h in range(24)] * (n // 24)
    columns = {
        "symbol": [f"P{i // 24:04d}USDT" for i in range(n)],
        "interval": ["1h"] * n,
        "open_time": opens,
        "close_time": [t + dt.timedelta(hours=1, milliseconds=-1) for t in opens],
        "trades": rng.integers(0, 10**6, n).tolist(),
        "load_id": ["load-1"] * n,
        **{f: [Decimal(int(v)) / 10**8 for v in rng.integers(1, 10**15, n)] for f in DECIMAL_FIELDS},
    }
    rows = pa.table({f.name: pa.array(columns[f.name], f.type) for f in KLINES_SCHEMA}, schema=KLINES_SCHEMA)
    lake = BronzeLake(pafs.LocalFileSystem(), str(tmp_path / "lake"), str(tmp_path / "lake"))
    assert write_bronze(lake, "binance_klines", rows, "open_time", "load-1") == n

    class CountingFileSystem(LocalFileSystem):
        bytes_read = 0

        def _open(self, path, mode="rb", **kwargs):
            handle = super()._open(path, mode, **kwargs)
            read = handle.read

            def counted(*args, **kw):
                data = read(*args, **kw)
                CountingFileSystem.bytes_read += len(data)
                return data

            handle.read = counted
            return handle

    counting = BronzeLake(pafs.PyFileSystem(pafs.FSSpecHandler(CountingFileSystem())), lake.root, lake.url)
    totals, index = rows_per_load(counting, "binance_klines")
    assert totals == {"load-1": n}
    on_disk = sum(
        os.path.getsize(os.path.join(d, f))
        for d, _, files in os.walk(lake.table_dir("binance_klines"))
        for f in files
    )
    assert on_disk > 2_000_000
    assert 0 < CountingFileSystem.bytes_read < on_disk / 10, (CountingFileSystem.bytes_read, on_disk)

    # what the last read returned: unchanged files are not read again, only the new load's file is
    CountingFileSystem.bytes_read = 0
    assert rows_per_load(counting, "binance_klines", index) == (totals, index)
    assert CountingFileSystem.bytes_read == 0
    later = rows.slice(0, 24).set_column(
        rows.schema.get_field_index("load_id"), "load_id", pa.array(["load-2"] * 24)
    )
    assert write_bronze(lake, "binance_klines", later, "open_time", "load-2") == 24
    totals, updated = rows_per_load(counting, "binance_klines", index)
    assert totals == {"load-1": n, "load-2": 24}
    assert [p for p in updated if p not in index] == [p for p in updated if "load-2" in p] != []
    assert 0 < CountingFileSystem.bytes_read < 20_000
    CountingFileSystem.bytes_read = 0  # the same files read whole, as the check once did: all of it
    ds.dataset(
        counting.table_dir("binance_klines"), filesystem=counting.fs, format="parquet", partitioning="hive"
    ).to_table()
    assert CountingFileSystem.bytes_read >= on_disk * 0.9


def test_settling_reads_only_the_loads_whose_pairs_can_meet_its_own(tmp_path):
    """Backfill batches of other pairs share every day partition. Each load's manifest names its pairs, so
    a load settles without opening another batch's files, still replaces an older copy of its own pairs,
    and a load without a manifest (a lake written before them) is read as before."""
    import pyarrow as pa
    import pyarrow.fs as pafs
    from fsspec.implementations.local import LocalFileSystem

    from pipelines.bronze import BronzeLake, settle_bronze, write_bronze

    keys = ("symbol", "open_time")
    days = [dt.datetime(2026, 3, d, h, tzinfo=dt.UTC) for d in (1, 2, 3) for h in (0, 12)]

    def rows(pairs: list[str], load_id: str, close: float) -> pa.Table:
        return pa.table(
            {
                "symbol": [p for p in pairs for _ in days],
                "open_time": [t for _ in pairs for t in days],
                "close": [close] * (len(pairs) * len(days)),
                "load_id": [load_id] * (len(pairs) * len(days)),
            }
        )

    lake = BronzeLake(pafs.LocalFileSystem(), str(tmp_path / "lake"), str(tmp_path / "lake"))
    for pairs, load_id, close in ((["AUSDT", "BUSDT"], "l1", 1.0), (["CUSDT", "DUSDT"], "l2", 2.0)):
        write_bronze(lake, "binance_klines", rows(pairs, load_id, close), "open_time", load_id, keys)
        settle_bronze(lake, "binance_klines", [load_id], keys)

    opened: list[str] = []

    class Counting(LocalFileSystem):
        def _open(self, path, mode="rb", **kwargs):
            if path.endswith(".parquet"):
                opened.append(path.rsplit("/", 1)[-1].split("-")[0])
            return super()._open(path, mode, **kwargs)

    counting = BronzeLake(pafs.PyFileSystem(pafs.FSSpecHandler(Counting())), lake.root, lake.url)
    write_bronze(lake, "binance_klines", rows(["AUSDT"], "l3", 3.0), "open_time", "l3", keys)
    assert settle_bronze(counting, "binance_klines", ["l3"], keys) == 3  # l1's file in each of 3 days
    assert sorted(set(opened)) == ["l1", "l3"]  # l2 (other pairs) never opened
    stored = read_bronze(lake, "binance_klines").to_pylist()
    assert sorted((r["symbol"], r["close"]) for r in stored if r["open_time"] == days[0]) == [
        ("AUSDT", 3.0),
        ("BUSDT", 1.0),
        ("CUSDT", 2.0),
        ("DUSDT", 2.0),
    ]
    assert len(stored) == 4 * len(days)  # each candle once

    # no manifest for l2 (written before manifests existed): a load of its pairs still replaces them
    (tmp_path / "lake" / "crypto" / "binance_klines" / "_loads" / "l2.json").unlink()
    write_bronze(lake, "binance_klines", rows(["CUSDT"], "l4", 4.0), "open_time", "l4", keys)
    opened.clear()
    assert settle_bronze(counting, "binance_klines", ["l4"], keys) == 3
    assert "l2" in opened
    stored = read_bronze(lake, "binance_klines").to_pylist()
    assert sorted((r["symbol"], r["close"]) for r in stored if r["open_time"] == days[0]) == [
        ("AUSDT", 3.0),
        ("BUSDT", 1.0),
        ("CUSDT", 4.0),
        ("DUSDT", 2.0),
    ]
    assert len(stored) == 4 * len(days)
