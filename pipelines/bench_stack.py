"""`cryptoflow bench --stack`: the benchmark's backfill again, through Airflow on the native compose stack
(runtime/stack.py: PostgreSQL 15, Redis, moto as MinIO, CeleryExecutor), once on one Celery worker and once on
two, each on a fresh stack. The sandbox runs in this process, so its own weight accounting (per calendar
minute, as Binance counts per IP) gives the peak both workers together reached.

Keys: stack_backfill_1w_s and stack_backfill_2w_s (from the trigger of backfill_historical to its run's
success; starting the stack is not counted), stack_peak_weight (the most request weight any minute used, both
runs), next to the allowance it must stay under and the 429s it caused (none expected).
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg2

from pipelines.runtime import compose_spec, db, services
from pipelines.runtime import stack as native
from pipelines.settings import Settings, load_settings

BIN = Path(sys.executable).parent


def run(
    settings: Settings, symbols: list[str], days: int, frozen_ms: int, expected_rows: int
) -> dict[str, Any]:
    """Both timings and the weight peak; `expected_rows`: the CLI backfill's, which each run must match."""
    from pipelines.sandbox import SandboxServer

    seed = settings.sandbox.seed

    out: dict[str, Any] = {}
    with SandboxServer(seed=seed, now_ms=frozen_ms) as sandbox:
        for workers in (1, 2):
            seconds, rows = backfill_through_airflow(sandbox, symbols, days, workers)
            if rows != expected_rows:
                raise RuntimeError(
                    f"the backfill through Airflow on {workers} worker(s) loaded {rows} candles, "
                    f"the CLI's {expected_rows}: the timing is not of the same work"
                )
            out[f"stack_backfill_{workers}w_s"] = round(seconds, 1)
        src = settings.sources.binance
        out["stack_peak_weight"] = sandbox.peak_weight
        out["stack_weight_allowance"] = int(
            min(src.weight_limit_per_minute, sandbox.weight_limit) * src.weight_budget
        )
        out["stack_weight_rejections"] = sandbox.weight_rejections
    out["stack_2w_speedup"] = round(out["stack_backfill_1w_s"] / out["stack_backfill_2w_s"], 2)
    return out


def backfill_through_airflow(sandbox: Any, symbols: list[str], days: int, workers: int) -> tuple[float, int]:
    """A fresh native stack with `workers` Celery workers; backfill_historical over `symbols` (batches of
    orchestration.backfill_batch_size, orchestration.backfill_concurrency at a time). Returns (seconds from
    the trigger to the run's success, candles in raw)."""
    sources = {
        "CRYPTOFLOW__SOURCES__BINANCE__BASE_URL": sandbox.binance_url,
        "CRYPTOFLOW__SOURCES__BINANCE_ARCHIVE__BASE_URL": f"{sandbox.url}/archive",
        "CRYPTOFLOW__SOURCES__COINGECKO__BASE_URL": sandbox.coingecko_url,
        "CRYPTOFLOW__SOURCES__FEAR_GREED__BASE_URL": sandbox.fear_greed_url,
        "CRYPTOFLOW__BACKFILL__SOURCE": "rest",  # the CLI figure it stands next to is the REST backfill's
    }
    with native.native_stack(AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION="True") as stack:
        writer = {**stack.service_env("db-init"), **sources}
        subprocess.run(
            [str(BIN / "cryptoflow"), "db", "start"],
            env=stack.process_env(writer),
            check=True,
            capture_output=True,
        )
        login = stack.start_airflow(workers=workers, extra=sources)
        host, port = stack.addresses["airflow-apiserver"]
        settings = load_settings(compose_spec.ROOT / "config.yaml", environ=writer)
        api = services.AirflowApi(settings, login["password"], base=f"http://{host}:{port}")
        native.wait_until(lambda: "backfill_historical" in api.dag_ids(), "the DAGs to be parsed", 300)
        api.pause("backfill_historical", False)
        started = time.perf_counter()
        run_id = api.trigger("backfill_historical", {"days": days, "symbols": symbols})
        while (state := api.state("backfill_historical", run_id)) not in ("success", "failed"):
            if time.perf_counter() - started > 3 * 3600:
                raise TimeoutError("backfill_historical did not finish in 3 hours")
            time.sleep(1)
        seconds = time.perf_counter() - started
        if state != "success":
            logs = {p.name: p.read_text(errors="replace")[-2000:] for p in stack.root.glob("airflow-*.log")}
            raise RuntimeError(f"backfill_historical failed on {workers} worker(s): {logs}")
        password = writer["CRYPTOFLOW_DB_PASSWORD"]
        with (
            contextlib.closing(psycopg2.connect(settings.database.url, password=password)) as conn,
            conn.cursor() as cur,
        ):
            cur.execute("SELECT count(*) FROM raw.binance_klines")
            rows = db.one(cur)[0]
    return seconds, rows
