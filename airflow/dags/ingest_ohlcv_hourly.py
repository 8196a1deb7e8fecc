"""Hourly klines: every tracked symbol from its own cursor up to the last closed hour, into bronze + raw.

Updates the `raw.binance_klines` asset, which schedules `transform_sqlmesh`. Safe to re-run: loads merge
on (symbol, open_time). The cron comes from `orchestration.ohlcv_schedule` (at each close); the task
then waits until `orchestration.close_grace_s` past the close by the exchange's clock.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import Asset, dag, task

from pipelines.airflow_callbacks import default_args, schedule
from pipelines.orchestration import ASSETS

KLINES = Asset(name="raw.binance_klines", uri=ASSETS["raw.binance_klines"])


@dag(
    dag_id="ingest_ohlcv_hourly",
    schedule=schedule("ohlcv_schedule"),
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    catchup=False,  # each run catches up by itself: every symbol resumes from its newest stored candle
    max_active_runs=1,
    default_args=default_args(),
    tags=["cryptoflow", "ingest", "binance"],
    doc_md=__doc__,
)
def ingest_ohlcv_hourly():
    @task(outlets=[KLINES], execution_timeout=dt.timedelta(minutes=20))
    def ingest_klines() -> dict:
        from pipelines.orchestration import ingest

        return ingest("ohlcv")

    ingest_klines()


ingest_ohlcv_hourly()
