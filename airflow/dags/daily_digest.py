"""The daily email digest: runs, rows loaded, failed checks, freshness per table, dead letters."""

from __future__ import annotations

import datetime as dt

from airflow.sdk import dag, task

from pipelines.airflow_callbacks import default_args, schedule


@dag(
    dag_id="daily_digest",
    schedule=schedule("digest_schedule"),
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,
    default_args=default_args(),
    tags=["cryptoflow", "alerts"],
    doc_md=__doc__,
)
def daily_digest():
    @task(execution_timeout=dt.timedelta(minutes=5))
    def send_digest() -> dict:
        from pipelines.orchestration import digest

        return digest()

    send_digest()


daily_digest()
