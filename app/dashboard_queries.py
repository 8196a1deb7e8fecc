"""Every query the dashboard runs, and nothing else: read-only, parameterised, cached for an hour.

The pages only draw. Each `load_*` function returns a DataFrame and is cached with `st.cache_data` keyed on
its arguments (the reader URL names the database, `schema` the SQLMesh environment). The one identifier that
varies, the gold schema of an environment (`gold`, `gold__dev`, ...), is checked against the schemas the
read-only role can see and quoted with `psycopg2.sql.Identifier`; every value is a query parameter.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import pandas as pd
import psycopg2
import streamlit as st
from psycopg2 import sql

from pipelines import catalog
from pipelines.runtime import db
from pipelines.runtime.db import DatabaseUnavailable
from pipelines.settings import Settings, load_settings

CACHE_TTL_S = 3600  # gold is rebuilt hourly: the dashboard re-reads at most once an hour
PROD_SCHEMA = "gold"
ENV_SCHEMA = re.compile(r"^gold(__[a-z0-9_]+)?$")
STATEMENT_TIMEOUT_MS = 30_000
CONTEXT_KEY = "cryptoflow_context"
# the gold relations each page needs; a page shows an empty state until they exist and hold rows
OVERVIEW_TABLES = ("mart_market_overview", "mart_market_totals", "fct_daily_summary", "fct_market_sentiment")
PRICE_TABLES = ("fct_prices", "fct_daily_summary")
SENTIMENT_TABLES = ("fct_market_sentiment", "fct_daily_summary")
FRESHNESS_TABLES = ("fct_prices", "fct_daily_summary", "fct_market_sentiment", "mart_market_overview")
# libpq's words when the server refuses the reader's login: a wrong or no password, or no such role
LOGIN_REFUSED = re.compile(r'authentication failed|no password supplied|role ".*" does not exist')


@dataclass(frozen=True)
class Context:
    """What every page needs: the settings, the read-only URL and the chosen environment's gold schema."""

    settings: Settings
    url: str
    schema: str
    sandbox: bool


def page_context() -> Context:
    """The context the router (streamlit_app.py) prepared for this run."""
    context: Context = st.session_state[CONTEXT_KEY]
    return context


def app_settings() -> Settings:
    """The validated settings (config.yaml named by CRYPTOFLOW_CONFIG, plus environment overrides)."""
    return load_settings()


def reader_url(settings: Settings) -> str:
    """The read-only role's URL (raises db.DatabaseUnavailable with a hint when the server is down)."""
    return db.reader_url(settings)


class ReaderLoginRefused(DatabaseUnavailable):
    """The server refused the read-only role's login; the message says what to set, never the password."""


def _connect(url: str) -> psycopg2.extensions.connection:
    """A connection as the reader. A refused login becomes ReaderLoginRefused instead of libpq's text."""
    try:
        return psycopg2.connect(url, connect_timeout=10, application_name="dashboard")
    except psycopg2.OperationalError as exc:
        if not LOGIN_REFUSED.search(str(exc)):
            raise
        parts = urlsplit(url)
        raise ReaderLoginRefused(
            f"the server refused the read-only role `{unquote(parts.username or '')}` on database "
            f"`{unquote(parts.path.lstrip('/'))}` (a wrong or missing password, or no such role). Set "
            "CRYPTOFLOW_READER_PASSWORD to its password; if the role does not exist yet, run `cryptoflow db "
            "start` with CRYPTOFLOW_READER_PASSWORD set to create it (when the writer may create roles; else an "
            "administrator creates it, as docker/postgres-init.sh shows)."
        ) from None


def _frame(
    url: str, query: sql.Composable | str, params: tuple[Any, ...] | dict[str, Any] = ()
) -> pd.DataFrame:
    with contextlib.closing(_connect(url)) as conn:
        conn.set_session(readonly=True, autocommit=True)
        with conn.cursor() as cur:
            cur.execute("SET statement_timeout = %s", (STATEMENT_TIMEOUT_MS,))
            cur.execute(query, params)
            return pd.DataFrame(cur.fetchall(), columns=[d.name for d in cur.description or ()])


def _gold(url: str, schema: str, relation: str) -> sql.Composed:
    """schema.relation, quoted. A SQLMesh dev environment holds views only for the models it changed (and
    their downstream); the others are the same as prod's, so they are read from `gold`."""
    return sql.SQL("{}.{}").format(
        sql.Identifier(relation_schema(url, schema, relation)), sql.Identifier(relation)
    )


def relation_schema(url: str, schema: str, relation: str) -> str:
    """The schema a relation of this environment is read from: its own, or prod's when unchanged there."""
    if schema != PROD_SCHEMA and relation not in set(load_relations(url, schema)["table_name"]):
        return PROD_SCHEMA
    return schema


# --- environments and readiness -------------------------------------------------------------------------


@st.cache_data(ttl=CACHE_TTL_S, show_spinner=False)
def load_environments(url: str) -> pd.DataFrame:
    """The gold schemas the read-only role can see: `gold` (prod) and SQLMesh dev environments."""
    return _frame(
        url,
        "SELECT schema_name FROM information_schema.schemata "
        r"WHERE schema_name = 'gold' OR schema_name LIKE 'gold\_\_%%' ORDER BY schema_name <> 'gold', schema_name",
    )


@st.cache_data(ttl=CACHE_TTL_S, show_spinner=False)
def load_relations(url: str, schema: str) -> pd.DataFrame:
    """Tables and views of one gold schema that the read-only role can see."""
    return _frame(url, "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (schema,))


def environment_schemas(url: str) -> list[str]:
    return [s for s in load_environments(url)["schema_name"] if ENV_SCHEMA.match(s)]


def checked_schema(url: str, schema: str) -> str:
    """schema if it is an existing gold environment; prod's `gold` otherwise."""
    return schema if schema in environment_schemas(url) else PROD_SCHEMA


def environment_label(schema: str) -> str:
    return "prod (gold)" if schema == PROD_SCHEMA else f"{schema.removeprefix('gold__')} ({schema})"


@st.cache_data(ttl=CACHE_TTL_S, show_spinner=False)
def load_table_rows(url: str, schema: str, tables: tuple[str, ...]) -> pd.DataFrame:
    """Per relation: the schema it is read from, whether it exists, whether it holds a row (a cheap probe)."""
    rows = []
    for table in tables:
        home = relation_schema(url, schema, table)
        exists = table in set(load_relations(url, home)["table_name"])
        has_rows = False
        if exists:
            probe = sql.SQL("SELECT EXISTS (SELECT 1 FROM {}) AS has_rows").format(_gold(url, schema, table))
            has_rows = bool(_frame(url, probe)["has_rows"][0])
        rows.append({"table_name": table, "schema": home, "exists": exists, "has_rows": has_rows})
    return pd.DataFrame(rows)


def missing_gold(url: str, schema: str, tables: tuple[str, ...]) -> list[str]:
    """The relations of `tables` that are missing or empty (empty list: the page can draw)."""
    state = load_table_rows(url, schema, tables)
    return [f"{r.schema}.{r.table_name}" for r in state.itertuples() if not r.has_rows]


@st.cache_data(ttl=CACHE_TTL_S, show_spinner=False)
def load_sandbox_runs(url: str) -> pd.DataFrame:
    """Pipeline runs marked as fed by the offline sandbox (details.sandbox = true)."""
    return _frame(
        url,
        "SELECT count(*) AS runs FROM ops.pipeline_runs WHERE details @> %s::jsonb",
        ('{"sandbox": true}',),
    )


# --- Overview -------------------------------------------------------------------------------------------


@st.cache_data(ttl=CACHE_TTL_S, show_spinner=False)
def load_top10(url: str, schema: str) -> pd.DataFrame:
    """The latest snapshot's top 10 coins by market cap (gold.mart_market_overview). Only CoinGecko's
    columns: the view's Binance columns (last_close ...) scan fct_prices, and Postgres drops that join when
    none of them is selected (0.3 ms instead of ~350 ms on 1.3M candles)."""
    query = sql.SQL(
        "SELECT position, coin_id, coin_name, symbol, price_usd, change_24h, market_cap_usd, volume_24h_usd, "
        "snapshot_ts FROM {} ORDER BY position"
    ).format(_gold(url, schema, "mart_market_overview"))
    return _frame(url, query)


@st.cache_data(ttl=CACHE_TTL_S, show_spinner=False)
def load_sparklines(url: str, schema: str, symbols: tuple[str, ...], days: int = 7) -> pd.DataFrame:
    """Daily closes of the last `days` days (ending at the newest day in gold) per symbol, oldest first."""
    table = _gold(url, schema, "fct_daily_summary")
    query = sql.SQL(
        "SELECT symbol, array_agg(close::float8 ORDER BY day) AS closes FROM {t} "
        "WHERE symbol = ANY(%(symbols)s) AND day > (SELECT max(day) FROM {t}) - %(days)s GROUP BY symbol"
    ).format(t=table)
    return _frame(url, query, {"symbols": list(symbols), "days": days})


@st.cache_data(ttl=CACHE_TTL_S, show_spinner=False)
def load_market_totals(url: str, schema: str) -> pd.DataFrame:
    """Market totals of the latest snapshot (mart_market_totals), and the newest Fear & Greed value (one
    row). `day` is the snapshot's UTC day."""
    query = sql.SQL(
        "SELECT (m.snapshot_ts AT TIME ZONE 'UTC')::date AS day, m.total_market_cap_usd, "
        "m.total_volume_24h_usd, m.btc_dominance, f.day AS fng_day, f.fng_value, f.fng_label "
        "FROM {m} AS m "
        "FULL JOIN (SELECT day, fng_value, fng_label FROM {t} WHERE fng_value IS NOT NULL "
        "ORDER BY day DESC LIMIT 1) AS f ON true"
    ).format(m=_gold(url, schema, "mart_market_totals"), t=_gold(url, schema, "fct_market_sentiment"))
    return _frame(url, query)


# --- Price Analysis ---------------------------------------------------------------------------------------


@st.cache_data(ttl=CACHE_TTL_S, show_spinner=False)
def load_symbols(url: str, schema: str) -> pd.DataFrame:
    """Every symbol with its first and last day in gold (from the daily summary: 24x fewer rows)."""
    query = sql.SQL(
        "SELECT symbol, min(day) AS first_day, max(day) AS last_day FROM {} GROUP BY symbol ORDER BY symbol"
    ).format(_gold(url, schema, "fct_daily_summary"))
    return _frame(url, query)


@st.cache_data(ttl=CACHE_TTL_S, show_spinner=False)
def load_prices_hourly(url: str, schema: str, symbol: str, start: dt.date, end: dt.date) -> pd.DataFrame:
    """Hourly candles with indicators for one symbol, UTC days start..end inclusive."""
    query = sql.SQL(
        "SELECT open_time, open::float8, high::float8, low::float8, close::float8, volume::float8, "
        "quote_volume::float8, ma_7d, ma_30d, vwap_24h, volatility_24h, volatility_7d, volatility_30d, "
        "change_24h FROM {} WHERE symbol = %(symbol)s AND open_time >= %(start)s AND open_time < %(end)s "
        "ORDER BY open_time"
    ).format(_gold(url, schema, "fct_prices"))
    bounds = {"start": _utc_midnight(start), "end": _utc_midnight(end + dt.timedelta(days=1))}
    return _frame(url, query, {"symbol": symbol, **bounds})


@st.cache_data(ttl=CACHE_TTL_S, show_spinner=False)
def load_prices_daily(url: str, schema: str, symbol: str, start: dt.date, end: dt.date) -> pd.DataFrame:
    """Daily candles for one symbol, start..end inclusive. MA 7d / 30d are gold's means of the daily closes
    (the 7 / 30 days ending that day); VWAP is the day's VWAP."""
    query = sql.SQL(
        "SELECT day, open::float8, high::float8, low::float8, close::float8, volume::float8, "
        "quote_volume::float8, ma_7d, ma_30d, vwap, volatility, change_1d FROM {} "
        "WHERE symbol = %(symbol)s AND day BETWEEN %(start)s AND %(end)s ORDER BY day"
    ).format(_gold(url, schema, "fct_daily_summary"))
    return _frame(url, query, {"symbol": symbol, "start": start, "end": end})


def _utc_midnight(day: dt.date) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)


# --- Market Sentiment -------------------------------------------------------------------------------------


@st.cache_data(ttl=CACHE_TTL_S, show_spinner=False)
def load_sentiment(url: str, schema: str, start: dt.date, end: dt.date) -> pd.DataFrame:
    """Per UTC day: Fear & Greed, market totals, breadth and BTC's daily close."""
    query = sql.SQL(
        "SELECT s.day, s.fng_value, s.fng_label, s.total_market_cap_usd, s.total_volume_24h_usd, "
        "s.btc_dominance, s.advancers, s.decliners, b.close::float8 AS btc_close "
        "FROM {s} AS s LEFT JOIN {d} AS b ON b.day = s.day AND b.symbol = 'BTCUSDT' "
        "WHERE s.day BETWEEN %(start)s AND %(end)s ORDER BY s.day"
    ).format(s=_gold(url, schema, "fct_market_sentiment"), d=_gold(url, schema, "fct_daily_summary"))
    return _frame(url, query, {"start": start, "end": end})


@st.cache_data(ttl=CACHE_TTL_S, show_spinner=False)
def load_sentiment_bounds(url: str, schema: str) -> pd.DataFrame:
    query = sql.SQL("SELECT min(day) AS first_day, max(day) AS last_day FROM {}").format(
        _gold(url, schema, "fct_market_sentiment")
    )
    return _frame(url, query)


# --- Data Quality (ops) -----------------------------------------------------------------------------------


@st.cache_data(ttl=CACHE_TTL_S, show_spinner=False)
def load_runs(url: str, days: int) -> pd.DataFrame:
    """Pipeline runs that started in the last `days` days, newest first."""
    return _frame(
        url,
        "SELECT run_id, source, command, status, started_at, finished_at, duration_s, rows_extracted, "
        "rows_raw, dead_letters, retries, error FROM ops.pipeline_runs "
        "WHERE started_at >= now() - make_interval(days => %s) ORDER BY started_at DESC",
        (days,),
    )


@st.cache_data(ttl=CACHE_TTL_S, show_spinner=False)
def load_run_summary(url: str, days: int) -> pd.DataFrame:
    """Per source over the last `days` days: finished runs, successes, success rate, last run, dead letters."""
    return _frame(
        url,
        "SELECT source, count(*) FILTER (WHERE status <> 'running') AS runs, "
        "count(*) FILTER (WHERE status = 'success') AS succeeded, "
        "count(*) FILTER (WHERE status IN ('failed', 'up_for_retry')) AS failed, "
        "(count(*) FILTER (WHERE status = 'success'))::float8 "
        "/ NULLIF(count(*) FILTER (WHERE status <> 'running'), 0) AS success_rate, "
        "max(started_at) AS last_started, sum(rows_raw)::bigint AS rows_raw, "
        "sum(dead_letters)::bigint AS dead_letters FROM ops.pipeline_runs "
        "WHERE started_at >= now() - make_interval(days => %s) GROUP BY source ORDER BY source",
        (days,),
    )


# gold table -> SQL of the newest time its data covers (its threshold is the catalogue's)
FRESHNESS = {
    # the newest candle's close, searched only from the newest daily row on (no scan of every hourly row)
    "fct_prices": (
        "(SELECT max(open_time) + interval '1 hour' FROM {fp} "
        "WHERE open_time >= (SELECT max(day) FROM {fd})::timestamp AT TIME ZONE 'UTC')"
    ),
    # a daily table covers up to the END of its newest UTC day (the next midnight)
    "fct_daily_summary": "(SELECT (max(day) + 1)::timestamp AT TIME ZONE 'UTC' FROM {fd})",
    "fct_market_sentiment": "(SELECT (max(day) + 1)::timestamp AT TIME ZONE 'UTC' FROM {fs})",
    "mart_market_overview": "(SELECT max(snapshot_ts) FROM {mo})",
}


def freshness_thresholds(settings: Settings) -> tuple[tuple[str, float], ...]:
    """(gold table, its freshness threshold in hours) from the catalogue, for load_freshness."""
    found = ((table, catalog.BY_NAME[f"gold.{table}"].threshold_h(settings)) for table in FRESHNESS)
    return tuple((table, hours) for table, hours in found if hours is not None)


@st.cache_data(ttl=CACHE_TTL_S, show_spinner=False)
def load_freshness(url: str, schema: str, thresholds: tuple[tuple[str, float], ...]) -> pd.DataFrame:
    """Per gold table: the newest time its data covers, its age in hours and its threshold."""
    state = load_table_rows(url, schema, tuple(FRESHNESS))
    present = set(state.loc[state["has_rows"], "table_name"])
    relations = {
        "fp": _gold(url, schema, "fct_prices"),
        "fd": _gold(url, schema, "fct_daily_summary"),
        "fs": _gold(url, schema, "fct_market_sentiment"),
        "mo": _gold(url, schema, "mart_market_overview"),
    }
    parts: list[sql.Composable] = []
    params: dict[str, Any] = {}
    for n, (table, threshold_h) in enumerate(thresholds):
        newest = FRESHNESS[table]
        if table not in present or (table == "fct_prices" and "fct_daily_summary" not in present):
            continue
        parts.append(
            sql.SQL(
                "SELECT {name} AS table_name, " + newest + " AS newest, {threshold} AS threshold_h"
            ).format(
                name=sql.Placeholder(f"name{n}"), threshold=sql.Placeholder(f"threshold{n}"), **relations
            )
        )
        params[f"name{n}"] = f"{relation_schema(url, schema, table)}.{table}"
        params[f"threshold{n}"] = float(threshold_h)
    if not parts:
        return pd.DataFrame(columns=["table_name", "newest", "threshold_h", "age_h", "fresh"])
    query = sql.SQL(
        "SELECT table_name, newest, threshold_h, extract(epoch FROM now() - newest)::float8 / 3600 AS age_h, "
        "coalesce(extract(epoch FROM now() - newest) / 3600 <= threshold_h, false) AS fresh FROM ({}) AS f"
    ).format(sql.SQL(" UNION ALL ").join(parts))
    return _frame(url, query, params)


@st.cache_data(ttl=CACHE_TTL_S, show_spinner=False)
def load_check_results(url: str) -> pd.DataFrame:
    """The latest outcome of every check (layer, name), failures first: fail, error, warn, pass."""
    return _frame(
        url,
        "SELECT layer, check_name, table_name, level, outcome, measured_value, checked_at, run_id FROM ("
        "SELECT DISTINCT ON (layer, check_name) * FROM ops.dq_results ORDER BY layer, check_name, checked_at DESC"
        ") AS latest ORDER BY array_position(ARRAY['fail', 'error', 'warn', 'pass'], outcome), layer, check_name",
    )


@st.cache_data(ttl=CACHE_TTL_S, show_spinner=False)
def load_dead_letter_runs(url: str) -> pd.DataFrame:
    """Runs that sent records to the dead letter queue (from ops: the dashboard reads gold and ops only)."""
    return _frame(
        url,
        "SELECT run_id, source, command, started_at, dead_letters FROM ops.pipeline_runs "
        "WHERE dead_letters > 0 ORDER BY started_at DESC LIMIT 200",
    )


@st.cache_data(ttl=CACHE_TTL_S, show_spinner=False)
def load_gaps(url: str) -> pd.DataFrame:
    """Missing candle hours recorded by ingestion, with their class: still missing first, then the newest."""
    return _frame(
        url,
        "SELECT symbol, interval, open_time, coalesce(gap_class, status) AS gap_class, status, detected_at, "
        "refetched_at FROM ops.gaps ORDER BY status <> 'missing', open_time DESC LIMIT 1000",
    )


@st.cache_data(ttl=CACHE_TTL_S, show_spinner=False)
def load_gap_counts(url: str) -> pd.DataFrame:
    """Missing hours per class (an hour still waiting for its re-fetch counts as `missing`)."""
    return _frame(
        url,
        "SELECT CASE WHEN status = 'missing' THEN 'missing' ELSE coalesce(gap_class, status) END AS gap_class, "
        "count(*) AS hours FROM ops.gaps GROUP BY 1 ORDER BY 1",
    )


@st.cache_data(ttl=CACHE_TTL_S, show_spinner=False)
def load_pairs_not_trading(url: str) -> pd.DataFrame:
    """Pairs the exchange no longer trades (skipped by every run, history kept), with their successor."""
    return _frame(
        url,
        "SELECT symbol, status, status_since, last_seen_trading, successor FROM ops.pairs "
        "WHERE status <> 'TRADING' ORDER BY symbol",
    )


@st.cache_data(ttl=CACHE_TTL_S, show_spinner=False)
def load_revisions(url: str) -> pd.DataFrame:
    """Candles the exchange revised after their close, newest first, with what changed."""
    return _frame(
        url,
        "SELECT symbol, open_time, found_by, changes::text AS changes, old_load_id, new_load_id, detected_at "
        "FROM ops.revisions WHERE applied_at IS NOT NULL ORDER BY detected_at DESC, symbol, open_time LIMIT 500",
    )
