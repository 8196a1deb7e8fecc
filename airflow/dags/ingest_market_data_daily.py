"""Daily market data: a CoinGecko markets snapshot (market cap, supply, rank) and the Fear & Greed index.

Each updates its raw asset (`raw.coingecko_markets`, `raw.fear_greed`), which schedules `transform_sqlmesh`.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import Asset, dag, task

from pipelines.airflow_callbacks import default_args, schedule
from pipelines.orchestration import ASSETS

MARKETS = Asset(name="raw.coingecko_markets", uri=ASSETS["raw.coingecko_markets"])
FEAR_GREED = Asset(name="raw.fear_greed", uri=ASSETS["raw.fear_greed"])


@dag(
    dag_id="ingest_market_data_daily",
    schedule=schedule("market_data_schedule"),
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,
    default_args=default_args(),
    tags=["cryptoflow", "ingest", "coingecko", "fear_greed"],
    doc_md=__doc__,
)
def ingest_market_data_daily():
    @task(outlets=[MARKETS], execution_timeout=dt.timedelta(minutes=15))
    def ingest_markets() -> dict:
        from pipelines.orchestration import ingest

        return ingest("markets")

    @task(outlets=[FEAR_GREED], execution_timeout=dt.timedelta(minutes=15))
    def ingest_fear_greed() -> dict:
        from pipelines.orchestration import ingest

        return ingest("fear-greed")

    ingest_markets()
    ingest_fear_greed()


ingest_market_data_daily()
