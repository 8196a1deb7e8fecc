"""The Soda scans of raw, silver and gold after every transform; every outcome goes to ops.dq_results.

A failing check alerts once (its own incident) and turns this task red without retrying: a retry would
measure the same data.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import Asset, dag, task

from pipelines.airflow_callbacks import default_args
from pipelines.orchestration import ASSETS

GOLD = Asset(name="gold", uri=ASSETS["gold"])


@dag(
    dag_id="data_quality",
    schedule=[GOLD],
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,
    default_args=default_args(),
    tags=["cryptoflow", "quality", "soda"],
    doc_md=__doc__,
)
def data_quality():
    @task(execution_timeout=dt.timedelta(minutes=20))
    def soda_checks() -> dict:
        from pipelines.orchestration import check

        return check()

    soda_checks()


data_quality()
