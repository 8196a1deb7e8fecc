"""Daily upkeep: `cryptoflow maintain` - the ops ledgers past `retention.*`, dlt's completed load packages,
SQLMesh's expired environments (its janitor) and Airflow's old metadata (`airflow db clean`). History (gaps,
revisions, status spells) is kept whole. Safe to re-run: each step deletes only what is past its window.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import dag, task

from pipelines.airflow_callbacks import default_args, schedule


@dag(
    dag_id="maintenance_daily",
    schedule=schedule("maintenance_schedule"),
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,
    default_args=default_args(),
    tags=["cryptoflow", "maintenance"],
    doc_md=__doc__,
)
def maintenance_daily():
    @task(execution_timeout=dt.timedelta(minutes=30))
    def maintain() -> dict:
        from pipelines.orchestration import maintain

        return maintain()

    maintain()


maintenance_daily()
