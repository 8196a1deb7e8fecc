"""`cryptoflow bench`: the full backfill, the raw load against a plain COPY of the same rows, an hourly run.

Everything runs in one invocation on the embedded Postgres, against a sandbox in its own process over HTTP
(so the server's work does not share this process's GIL). Figures are measured, never assumed.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import json
import platform
import resource
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv

from pipelines import db
from pipelines.bronze import open_lake, read_bronze
from pipelines.delivery import ingest_fear_greed, ingest_markets, ingest_ohlcv
from pipelines.settings import Settings
from pipelines.sources.binance.settings import KLINES_SCHEMA
from pipelines.sources.binance.settings import TABLE as KLINES_TABLE
from pipelines.transform import transform

HOUR_MS = 3_600_000


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def sandbox_process(seed: int):
    """A `cryptoflow sandbox` in a child process; yields its base URL."""
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipelines.cli", "sandbox", "--port", str(port), "--seed", str(seed)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{url}/binance/api/v3/ping", timeout=1).read()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("the benchmark sandbox did not start") from None
                time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def _control(url: str, path: str, body: dict[str, Any]) -> None:
    request = urllib.request.Request(
        f"{url}{path}", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    urllib.request.urlopen(request, timeout=5).read()


def _copy_reference(settings: Settings, table: pa.Table) -> float:
    """Seconds for a plain COPY of the same rows into an unlogged-free scratch table (the floor to beat)."""
    buffer = io.BytesIO()
    pacsv.write_csv(table, buffer, pacsv.WriteOptions(include_header=False))
    with contextlib.closing(db.connect(settings)) as conn, conn.cursor() as cur:
        cur.execute("CREATE TEMP TABLE copy_reference (LIKE raw.binance_klines)")
        buffer.seek(0)
        started = time.perf_counter()
        cur.copy_expert("COPY copy_reference FROM STDIN WITH (FORMAT csv)", buffer)
        conn.commit()
        return time.perf_counter() - started


def _dt(ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC)


def _bronze_rows(settings: Settings) -> pa.Table:
    """The backfilled candles, read back from bronze in raw's column order."""
    table = read_bronze(open_lake(settings), KLINES_TABLE)
    return table.select(KLINES_SCHEMA.names)


def run(settings: Settings, *, symbols: int = 50, days: int = 1095) -> dict[str, Any]:
    from pipelines.cli import sandboxed
    from pipelines.sandbox.markets import SYMBOLS

    work = Path(tempfile.mkdtemp(prefix="cryptoflow-bench-"))
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d%H%M%S")
    settings = settings.model_copy(
        update={
            "database": settings.database.model_copy(update={"name": f"bench_{stamp}"}),
            "storage": settings.storage.model_copy(update={"bronze_url": str(work / "bronze")}),
            "project_dir": work,
        }
    )
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    chosen = SYMBOLS[:symbols]
    now_ms = int(time.time() * 1000)
    frozen = now_ms // HOUR_MS * HOUR_MS + HOUR_MS // 2  # mid-hour: the newest bar is open
    with sandbox_process(settings.sandbox.seed) as url:

        class _Urls:
            binance_url, coingecko_url, fear_greed_url = (
                f"{url}/binance",
                f"{url}/coingecko",
                f"{url}/alternative",
            )

        active = sandboxed(settings, _Urls)
        db.ensure_database(active)
        _control(url, "/__sandbox/clock", {"now_ms": frozen})
        started = time.perf_counter()
        backfill = ingest_ohlcv(active, symbols=chosen, days=days, command="bench backfill")
        backfill_s = time.perf_counter() - started
        peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        ingest_markets(active, command="bench")
        ingest_fear_greed(active, command="bench")
        # silver + gold from scratch, as of the sandbox clock (the hour the backfill ended in)
        started = time.perf_counter()
        full = transform(active, execution_time=_dt(frozen))
        transform_full_wall_s = time.perf_counter() - started
        _control(url, "/__sandbox/clock", {"now_ms": frozen + HOUR_MS})
        started = time.perf_counter()
        incremental = ingest_ohlcv(active, symbols=chosen, command="bench incremental")
        incremental_s = time.perf_counter() - started
        # the hourly job: one new candle per symbol, then plan (no changes) + run
        started = time.perf_counter()
        transform(active, execution_time=_dt(frozen + HOUR_MS))
        transform_incremental_wall_s = time.perf_counter() - started
    rows = _bronze_rows(active)
    copy_s = _copy_reference(active, rows)
    timings = backfill.details["timings"]
    candles = backfill.rows_raw
    return {
        "candles": candles,
        "symbols": len(chosen),
        "days": days,
        "backfill_s": round(backfill_s, 2),
        "rows_per_s": round(candles / backfill_s),
        "extract_s": timings.get("extract_s"),
        "fetch_thread_s": timings.get("fetch_thread_s"),
        "parse_thread_s": timings.get("parse_thread_s"),
        "bronze_s": timings.get("bronze_s"),
        "raw_load_s": timings.get("raw_s"),
        "unique_index_s": timings.get("unique_index_s"),
        "count_s": timings.get("count_s"),
        "gap_check_s": timings.get("gap_check_s"),
        "copy_reference_s": round(copy_s, 2),
        "raw_vs_copy": round(timings.get("raw_s", 0) / copy_s, 2) if copy_s else None,
        "incremental_s": round(incremental_s, 2),
        "incremental_rows": incremental.rows_raw,
        # wall time of `cryptoflow transform`: project load, plan (changed models' unit tests, backfill), run
        "transform_full_s": round(transform_full_wall_s, 2),
        "transform_full_build_s": round(full.plan_s + full.run_s, 2),
        "transform_incremental_s": round(transform_incremental_wall_s, 2),
        "peak_rss_mb": round(peak_rss_mb),  # the ingestion's peak (SQLMesh runs in Postgres)
        "rss_after_stage_mb": {
            k: round(v)
            for k, v in timings.items()
            if k in ("rss_after_extract_mb", "rss_after_bronze_mb", "rss_after_raw_mb")
        },
        "machine": f"{platform.machine()}, {__import__('os').cpu_count()} cores, Python {platform.python_version()}",
        "measured_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


def render(results: dict[str, Any]) -> str:
    width = max(len(k) for k in results)
    return "\n".join(f"{key:<{width}}  {value}" for key, value in results.items())
