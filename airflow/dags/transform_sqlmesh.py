"""SQLMesh on prod: apply model changes and process every interval due, whenever a raw asset is updated.

Never two at once (max_active_runs=1, and an advisory lock inside). Updates the `gold` asset, which
schedules `data_quality`.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import Asset, dag, task

from pipelines.airflow_callbacks import default_args
from pipelines.orchestration import ASSETS

RAW = [
    Asset(name=name, uri=ASSETS[name])
    for name in ("raw.binance_klines", "raw.coingecko_markets", "raw.fear_greed")
]
GOLD = Asset(name="gold", uri=ASSETS["gold"])


@dag(
    dag_id="transform_sqlmesh",
    schedule=RAW[0] | RAW[1] | RAW[2],  # any raw table updated
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,
    default_args=default_args(),
    tags=["cryptoflow", "transform", "sqlmesh"],
    doc_md=__doc__,
)
def transform_sqlmesh():
    @task(outlets=[GOLD], execution_timeout=dt.timedelta(minutes=45))
    def sqlmesh_run() -> dict:
        from pipelines.orchestration import transform

        return transform("prod")

    sqlmesh_run()


transform_sqlmesh()
