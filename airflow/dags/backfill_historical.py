"""Manual backfill of klines: trigger with `days` (the last N days) or `since` [+ `until`], optionally
`symbols` (default: the universe). One mapped task per batch of `orchestration.backfill_batch_size` symbols,
`orchestration.backfill_concurrency` of them at a time, on as many Celery workers: they share the exchange's
request weight (one budget in Postgres for every worker) and take the raw load one at a time; each holds its
pairs' locks, so two batches never load the same pair.

Resumable and safe to re-trigger: a batch whose window is already complete in raw is skipped, and loads
merge on (symbol, open_time), so re-running only fills what is missing. To retry just the failed batches
of a run, clear them ("Clear" -> "Only failed") in the UI.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import Asset, Param, dag, get_current_context, task

from pipelines.airflow_callbacks import default_args, orchestration_setting
from pipelines.orchestration import ASSETS

KLINES = Asset(name="raw.binance_klines", uri=ASSETS["raw.binance_klines"])


@dag(
    dag_id="backfill_historical",
    schedule=None,
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,
    default_args=default_args(),
    tags=["cryptoflow", "ingest", "binance", "backfill"],
    doc_md=__doc__,
    params={
        "days": Param(None, type=["null", "integer"], minimum=1, description="the last N days"),
        "since": Param(None, type=["null", "string"], description="from this UTC date, YYYY-MM-DD"),
        "until": Param(None, type=["null", "string"], description="up to this UTC date (default: now)"),
        "symbols": Param([], type="array", items={"type": "string"}, description="default: the universe"),
        "batch_size": Param(None, type=["null", "integer"], minimum=1, description="symbols per task"),
    },
)
def backfill_historical():
    @task(execution_timeout=dt.timedelta(minutes=10))
    def plan_batches() -> list[list[str]]:
        from pipelines.orchestration import backfill_batches, check_window

        p = get_current_context()["params"]
        check_window(p["days"], p["since"], p["until"])  # a bad window fails here, before any load
        return backfill_batches(p["symbols"] or None, p["batch_size"])

    @task(
        outlets=[KLINES],
        max_active_tis_per_dagrun=orchestration_setting("backfill_concurrency"),
        execution_timeout=dt.timedelta(hours=2),
    )
    def load_batch(symbols: list[str]) -> dict:
        from pipelines.orchestration import backfill_batch

        p = get_current_context()["params"]
        return backfill_batch(symbols, p["days"], p["since"], p["until"])

    load_batch.expand(symbols=plan_batches())


backfill_historical()
