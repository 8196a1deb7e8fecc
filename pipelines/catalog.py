"""One description per table: its layer, time column, natural key, freshness rule and Airflow asset.

Every module that needs one of these facts reads it here: the ingest engine (key, time column, bronze
replacement), the Soda variables and the bronze reconciliation (quality.py), the metrics endpoint, the email
digest, the dashboard's freshness panel, the transform's "raw not loaded yet" message and the DAGs' assets.
A table's rule changes in one place.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # data only: importing the catalogue loads nothing else
    from pipelines.settings import Settings

# Fear & Greed has no config key: a value is published once a UTC day, stamped 00:00 UTC, so a day late is
# normal and two days late is not.
FEAR_GREED_MAX_AGE_HOURS = 48.0


@dataclass(frozen=True)
class Table:
    schema: str  # raw, silver or gold
    name: str
    time_column: str  # the record's own time: bronze partitions, windows, incremental ranges
    key: tuple[str, ...]  # the natural key (unique in the table)
    # Freshness. The data covers up to fresh_column + covers_hours (a candle's open time + 1 h, a day's row
    # + 24 h); that moment may be at most the threshold old: the checks.freshness_<max_age_from>_hours
    # setting (None: the fixed max_age_hours) plus grace_hours.
    fresh_column: str | None = None
    max_age_from: str | None = None
    max_age_hours: float = 0.0
    covers_hours: float = 0.0
    grace_hours: float = 0.0
    source: str | None = None  # the ingest source that writes it (raw tables)
    ingest_step: str | None = None  # `cryptoflow ingest <step>` loads it
    replace_on: tuple[str, ...] | None = None  # bronze: a new load replaces older copies by these columns
    # The silver model reading it by time range: a load of hours SQLMesh already processed (a backfill, a gap
    # re-fetch, a verified revision) is restated there and downstream (pipelines/restatement.py)
    incremental_model: str | None = None

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"

    @property
    def asset_uri(self) -> str:
        return f"cryptoflow://{self.schema}/{self.name}"

    @property
    def replaces(self) -> tuple[str, ...]:
        """What a new load replaces whole in bronze: the key, or (a market snapshot) every older copy of its
        snapshot_ts, so two snapshots of one hour never mix."""
        return self.replace_on or self.key

    def threshold_h(self, settings: Settings) -> float | None:
        """How old the moment the data covers up to may be, in hours (None: no freshness rule)."""
        if self.fresh_column is None:
            return None
        base = (
            getattr(settings.checks, f"freshness_{self.max_age_from}_hours")
            if self.max_age_from
            else self.max_age_hours
        )
        return base + self.grace_hours

    def column_max_age_h(self, settings: Settings) -> float | None:
        """The same rule measured on fresh_column itself (Soda's freshness(), the metrics)."""
        threshold = self.threshold_h(settings)
        return None if threshold is None else threshold + self.covers_hours


KLINES = Table(
    "raw", "binance_klines", "open_time", ("symbol", "open_time"),
    fresh_column="close_time", max_age_from="ohlcv", source="binance", ingest_step="ohlcv",
    incremental_model="silver.stg_binance__ohlcv",
)  # fmt: skip
MARKETS = Table(
    "raw", "coingecko_markets", "snapshot_ts", ("id", "snapshot_ts"),
    fresh_column="snapshot_ts", max_age_from="markets", source="coingecko", ingest_step="markets",
    replace_on=("snapshot_ts",),
)  # fmt: skip
FEAR_GREED = Table(
    "raw", "fear_greed", "ts", ("ts",),
    fresh_column="ts", max_age_hours=FEAR_GREED_MAX_AGE_HOURS, source="fear_greed", ingest_step="fear-greed",
)  # fmt: skip
STG_OHLCV = Table(
    "silver", "stg_binance__ohlcv", "open_time", ("symbol", "open_time"),
    fresh_column="open_time", max_age_from="ohlcv", covers_hours=1,
)  # fmt: skip
FCT_PRICES = Table(
    "gold", "fct_prices", "open_time", ("symbol", "open_time"),
    fresh_column="open_time", max_age_from="ohlcv", covers_hours=1,
)  # fmt: skip
# a daily row covers up to the end of its UTC day; the summary of the next day completes 24 h later
FCT_DAILY_SUMMARY = Table(
    "gold", "fct_daily_summary", "day", ("symbol", "day"),
    fresh_column="day", max_age_from="ohlcv", covers_hours=24, grace_hours=24,
)  # fmt: skip
FCT_MARKET_SENTIMENT = Table(
    "gold",
    "fct_market_sentiment",
    "day",
    ("day",),
    fresh_column="day",
    max_age_from="markets",
    covers_hours=24,
)
MART_MARKET_OVERVIEW = Table(
    "gold", "mart_market_overview", "snapshot_ts", ("coin_id",),
    fresh_column="snapshot_ts", max_age_from="markets",
)  # fmt: skip

TABLES = (
    KLINES, MARKETS, FEAR_GREED, STG_OHLCV, FCT_PRICES, FCT_DAILY_SUMMARY, FCT_MARKET_SENTIMENT,
    MART_MARKET_OVERVIEW,
)  # fmt: skip
RAW = tuple(t for t in TABLES if t.schema == "raw")
BY_SOURCE = {t.source: t for t in RAW}
BY_NAME = {t.qualified: t for t in TABLES}
GOLD_ASSET_URI = "cryptoflow://gold"  # the transform's output as a whole: data_quality runs on it


def assets() -> dict[str, str]:
    """Airflow asset name -> URI: every raw table, and gold."""
    return {**{t.qualified: t.asset_uri for t in RAW}, "gold": GOLD_ASSET_URI}


def column_max_age_hours(settings: Settings, tables: tuple[Table, ...] = TABLES) -> dict[str, float]:
    """Qualified table name -> how old its fresh_column's newest value may be, in hours (tables with a rule)."""
    return {t.qualified: hours for t in tables if (hours := t.column_max_age_h(settings)) is not None}


# Autovacuum and analyze per hot table; every other table keeps Postgres's defaults (a table is vacuumed once
# 20% of it is dead and analysed once 10% changed, checked every minute). The ops tables get theirs through
# a migration (pipelines/migrations/0002_autovacuum.sql); a raw table, which dlt creates at its first load,
# from the ingest engine right after that load. tests/test_maintenance.py holds the database to this table.
AUTOVACUUM: dict[str, dict[str, str]] = {
    # A year of one pair is 8,760 candles; every hourly run merges back the restate window (48 h per pair),
    # leaving dead rows behind. At 20% a table of 50 pairs x 3 years would carry 260k dead rows before a
    # vacuum; at 2%, about a day's churn. New hours must reach the statistics (the transform and the
    # dashboard filter on the newest open_time), so analyse at 2% too, and vacuum appended pages at 5%
    # (the visibility map keeps index-only scans of the key cheap).
    "raw.binance_klines": {
        "autovacuum_vacuum_scale_factor": "0.02",
        "autovacuum_analyze_scale_factor": "0.02",
        "autovacuum_vacuum_insert_scale_factor": "0.05",
    },
    # One row per API and minute, updated on every request (the shared weight budget): leave room on each
    # page for the updates (fillfactor: they stay on their page, no index change) and vacuum by count.
    "ops.request_weight": {
        "fillfactor": "50",
        "autovacuum_vacuum_scale_factor": "0",
        "autovacuum_vacuum_threshold": "1000",
    },
    # Queues: a row per load, deleted by the next transform (raw_changes) or gap check. Nearly all of such a
    # table is dead most of the time; a percentage of its live rows never triggers.
    "ops.raw_changes": {"autovacuum_vacuum_scale_factor": "0", "autovacuum_vacuum_threshold": "200"},
    "ops.pending_gap_checks": {"autovacuum_vacuum_scale_factor": "0", "autovacuum_vacuum_threshold": "200"},
}
