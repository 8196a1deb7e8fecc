"""The Streamlit dashboard with AppTest on real gold data (sandbox -> raw -> SQLMesh -> Soda on the embedded
Postgres), through the read-only role: every page runs without an exception and shows what gold holds,
computed independently here by SQL; every page has an empty state; dev environments are selectable.

The tests on a pipeline-built database (tests/helpers/dashboard_data.py: 20-30 s to build each) are marked
slow; the ones on an empty database are not."""

from __future__ import annotations

import contextlib
import datetime as dt
import re
import shutil
from pathlib import Path

import pandas as pd
import psycopg2
import pytest
import streamlit as st
import yaml
from helpers.dashboard_data import DAYS, HISTORICAL_NOW, NOW, SNAPSHOT, SYMBOLS, execute, write_config
from streamlit.testing.v1 import AppTest

from pipelines import catalog, dashboard_bench, sqlmesh_context, transform
from pipelines.runtime import dashboard_server, db

APP = str(Path(__file__).resolve().parents[1] / "app" / "streamlit_app.py")
OVERVIEW = "app_pages/overview.py"
PRICES = "app_pages/price_analysis.py"
SENTIMENT = "app_pages/market_sentiment.py"
QUALITY = "app_pages/data_quality.py"
PAGES = [OVERVIEW, PRICES, SENTIMENT, QUALITY]
TITLES = {
    OVERVIEW: "Market overview",
    PRICES: "Price analysis",
    SENTIMENT: "Market sentiment",
    QUALITY: "Data quality",
}
GOLD_START = dt.date(2019, 1, 1)  # SQLMesh's model_defaults start (pipelines/transform.py)
NO_PAIR = "—"  # the Overview's Pair of a coin without a pair the pipeline knows
# the Data Quality page's colours of a check's outcome and of a table's freshness (its cells' text)
OUTCOME_COLOURS = {"fail": "#d32f2f", "error": "#e65100", "warn": "#9a7000", "pass": "#0a8f3c"}


@pytest.fixture(autouse=True)
def fresh_cache():
    st.cache_data.clear()
    yield
    st.cache_data.clear()


def open_page(config: Path, monkeypatch, page: str) -> AppTest:
    monkeypatch.setenv("CRYPTOFLOW_CONFIG", str(config))
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception, [e.message for e in at.exception]
    if page != OVERVIEW:
        at.switch_page(page).run()
    assert not at.exception, [e.message for e in at.exception]
    return at


def shown(at: AppTest, column: str) -> pd.DataFrame:
    """The one dataframe on the page that has `column` (AppTest does not expose a dataframe's key)."""
    frames = [d.value for d in at.dataframe if column in d.value.columns]
    assert len(frames) == 1, f"{len(frames)} dataframes with column {column!r}"
    return frames[0]


def text_colours(at: AppTest, column: str) -> list[str | None]:
    """Per row of the one dataframe with `column`: the colour its Styler gives that cell's text (None: none)."""
    [table] = [d for d in at.dataframe if column in d.value.columns]
    col = list(table.value.columns).index(column)
    colours = {}
    # CSS rules such as `#T_ab12_row0_col4, #T_ab12_row3_col4 { color: #d32f2f; font-weight: 600 }`
    for selectors, rule in re.findall(r"([^{}]+)\{([^{}]*)\}", table.proto.arrow_data.styler.styles):
        colour = re.search(r"(?<![-\w])color:\s*(#[0-9a-f]{6})", rule)
        for row, cell_col in re.findall(r"_row(\d+)_col(\d+)\b", selectors):
            if colour and int(cell_col) == col:
                colours[int(row)] = colour.group(1)
    return [colours.get(row) for row in range(len(table.value))]


def frame(settings, sql: str, params=()) -> pd.DataFrame:
    with db.cursor(settings) as cur:
        cur.execute(sql, params)
        return pd.DataFrame(cur.fetchall(), columns=[d.name for d in cur.description])


@pytest.mark.slow
def test_overview_shows_the_top10_and_totals_of_gold(gold_db, monkeypatch):
    settings, config = gold_db
    at = open_page(config, monkeypatch, OVERVIEW)
    assert [t.value for t in at.title] == ["Market overview"]
    top10 = shown(at, "market_cap_usd")
    gold = frame(settings, "SELECT * FROM gold.mart_market_overview ORDER BY position")
    assert len(gold) == 10
    assert top10["symbol"].tolist() == gold["symbol"].fillna(NO_PAIR).tolist()
    # a pair only for the coins the pipeline tracks: no USDTUSDT for Tether (USDT is the quote asset)
    pairs = dict(zip(top10["coin_name"], top10["symbol"], strict=True))
    assert (pairs["Bitcoin"], pairs["Tether"]) == ("BTCUSDT", NO_PAIR)
    assert {name: pair for name, pair in pairs.items() if pair != NO_PAIR} == {
        "Bitcoin": "BTCUSDT",
        "Ethereum": "ETHUSDT",
        "Solana": "SOLUSDT",
    }
    assert top10["coin_name"].tolist() == gold["coin_name"].tolist()
    assert top10["price_usd"].tolist() == gold["price_usd"].tolist()
    assert top10["market_cap_usd"].tolist() == gold["market_cap_usd"].tolist()
    assert top10["change_pct"].tolist() == pytest.approx((gold["change_24h"] * 100).tolist())
    # sparklines: the tracked pairs' daily closes of the newest 7 days, the others none
    closes = frame(
        settings,
        "SELECT symbol, array_agg(close::float8 ORDER BY day) AS closes FROM gold.fct_daily_summary "
        "WHERE day > (SELECT max(day) FROM gold.fct_daily_summary) - 7 GROUP BY symbol",
    ).set_index("symbol")["closes"]
    sparks = {
        sym: [float(x) for x in spark]
        for sym, spark in zip(top10["symbol"], top10["closes"], strict=True)
        if spark is not None and not isinstance(spark, float)
    }
    assert sparks == {symbol: closes[symbol] for symbol in top10["symbol"] if symbol in closes.index}
    # seed 11's top 10 holds every tracked pair (ETH 1st, BTC 2nd, SOL 7th): each has its sparkline
    assert set(sparks) == set(SYMBOLS) == set(gold["symbol"].dropna())

    totals = frame(
        settings,
        "SELECT sum(market_cap_usd) AS total_market_cap_usd, sum(volume_24h_usd) AS total_volume_24h_usd, "
        "sum(market_cap_usd) FILTER (WHERE coin_id = 'bitcoin') / sum(market_cap_usd) AS btc_dominance "
        "FROM silver.stg_coingecko__markets WHERE snapshot_ts = (SELECT max(snapshot_ts) "
        "FROM silver.stg_coingecko__markets)",  # computed here from the snapshot, not read from the view
    ).iloc[0]
    fng = frame(
        settings,
        "SELECT fng_value, fng_label FROM gold.fct_market_sentiment WHERE fng_value IS NOT NULL "
        "ORDER BY day DESC LIMIT 1",
    ).iloc[0]
    metrics = {m.label: m.value for m in at.metric}
    assert metrics == {
        "Total market cap": f"${totals.total_market_cap_usd / 1e9:,.1f} B",
        "24 h volume": f"${totals.total_volume_24h_usd / 1e9:,.1f} B",
        "BTC dominance": f"{totals.btc_dominance:.1%}",
        "Fear & Greed": f"{fng.fng_value} · {fng.fng_label}",
    }
    snapshot = gold["snapshot_ts"].max()
    assert any(f"As of the market snapshot of {snapshot:%Y-%m-%d %H:%M} UTC" in c.value for c in at.caption)
    # sandbox.enabled is off, but the runs saw the sandbox's `X-Sandbox` label on every answer: banner
    assert [w.value for w in at.warning if "Sandbox data" in w.value], "the synthetic-data banner"


@pytest.mark.slow
def test_price_page_shows_the_chosen_range_of_fct_prices(gold_db, monkeypatch):
    settings, config = gold_db
    at = open_page(config, monkeypatch, PRICES)
    assert at.selectbox(key="symbol").value == "BTCUSDT"
    assert len(at.get("plotly_chart")) == 1
    assert len(at.download_button) == 1
    first = frame(settings, "SELECT min(day) AS a FROM gold.fct_daily_summary WHERE symbol = 'ETHUSDT'").a[0]
    start, end = first + dt.timedelta(days=3), first + dt.timedelta(days=9)
    at.selectbox(key="symbol").set_value("ETHUSDT").run()
    at.date_input(key="date_range").set_value((start, end)).run()
    assert not at.exception, [e.message for e in at.exception]
    expected = frame(
        settings,
        "SELECT open_time, close::float8 AS close FROM gold.fct_prices WHERE symbol = 'ETHUSDT' "
        "AND open_time >= %s AND open_time < %s ORDER BY open_time",
        (
            dt.datetime.combine(start, dt.time(), dt.UTC),
            dt.datetime.combine(end + dt.timedelta(days=1), dt.time(), dt.UTC),
        ),
    )
    assert len(expected) == 7 * 24
    rows = shown(at, "close")
    assert rows["open_time"].tolist() == expected["open_time"].tolist()
    assert rows["close"].tolist() == expected["close"].tolist()
    assert any(c.value.startswith(f"{len(expected):,} hourly rows") for c in at.caption)

    at.segmented_control(key="grain").set_value("Daily").run()
    assert not at.exception, [e.message for e in at.exception]
    daily = frame(
        settings,
        "SELECT day, close::float8 AS close FROM gold.fct_daily_summary WHERE symbol = 'ETHUSDT' "
        "AND day BETWEEN %s AND %s ORDER BY day",
        (start, end),
    )
    rows = shown(at, "close")
    assert rows["day"].tolist() == daily["day"].tolist() and len(daily) == 7
    assert rows["close"].tolist() == daily["close"].tolist()
    ma7 = frame(
        settings,
        "SELECT avg(close::float8) AS ma FROM gold.fct_daily_summary WHERE symbol = 'ETHUSDT' "
        "AND day BETWEEN %s AND %s",
        (end - dt.timedelta(days=6), end),
    ).ma[0]
    assert rows["ma_7d"].iloc[-1] == pytest.approx(ma7, rel=1e-12)


@pytest.mark.slow
def test_sentiment_page_shows_every_day_of_gold(gold_db, monkeypatch):
    settings, config = gold_db
    at = open_page(config, monkeypatch, SENTIMENT)
    assert [t.value for t in at.title] == ["Market sentiment"]
    assert len(at.get("plotly_chart")) == 3
    days, newest = frame(
        settings, "SELECT count(*) AS n, max(day) AS newest FROM gold.fct_market_sentiment"
    ).iloc[0]
    # Fear & Greed comes with its full history: far more days than the 15 of candles
    assert days == sentiment_days(settings, NOW.date()) and days > DAYS
    assert newest == NOW.date() - dt.timedelta(days=1)  # the newest complete day
    assert any(c.value.startswith(f"{min(days, 365):,} days · as of {newest}") for c in at.caption)


def sentiment_days(settings, today: dt.date) -> int:
    """The days gold.fct_market_sentiment should hold, from raw: every complete UTC day since gold's start
    with a Fear & Greed value, a market snapshot or a candle."""
    [(days,)] = execute(
        settings,
        "SELECT count(*) FROM (SELECT (ts AT TIME ZONE 'UTC')::date AS day FROM raw.fear_greed "
        "UNION SELECT (snapshot_ts AT TIME ZONE 'UTC')::date FROM raw.coingecko_markets "
        "UNION SELECT (open_time AT TIME ZONE 'UTC')::date FROM raw.binance_klines) AS d "
        "WHERE day >= %s AND day < %s",
        (GOLD_START, today),
    )
    return days


@pytest.mark.slow
def test_data_quality_page_matches_the_ops_tables(gold_db, monkeypatch):
    settings, config = gold_db
    at = open_page(config, monkeypatch, QUALITY)
    runs = frame(
        settings,
        "SELECT count(*) FILTER (WHERE status <> 'running') AS finished, "
        "count(*) FILTER (WHERE status = 'success') AS ok, sum(rows_raw) AS rows_raw FROM ops.pipeline_runs",
    ).iloc[0]
    assert runs.finished == 4  # klines, markets, fear & greed, transform (run_checks records no run)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics == {
        "Runs": f"{runs.finished:,}",
        "Success rate": f"{runs.ok / runs.finished:.1%}",
        "Rows to raw": f"{int(runs.rows_raw):,}",
    }
    checks = shown(at, "check_name")
    stored = frame(
        settings,
        "SELECT DISTINCT ON (layer, check_name) layer, check_name, outcome FROM ops.dq_results "
        "ORDER BY layer, check_name, checked_at DESC",
    )
    assert len(checks) == len(stored) == 20 + 3  # the Soda checks and bronze = raw per raw table
    # failures first (fail, error, warn, pass), each outcome a word in its colour: no emoji
    stored["rank"] = stored["outcome"].map(list(OUTCOME_COLOURS).index)
    expected = stored.sort_values(["rank", "layer", "check_name"])[["layer", "check_name", "outcome"]]
    assert checks[["layer", "check_name", "outcome"]].values.tolist() == expected.values.tolist()
    assert text_colours(at, "outcome") == [OUTCOME_COLOURS[o] for o in checks["outcome"]]
    counts = stored["outcome"].value_counts()
    icons = {
        "fail": ":red[:material/cancel:]",
        "error": ":orange[:material/error:]",
        "warn": ":yellow[:material/warning:]",
        "pass": ":green[:material/check_circle:]",
    }
    summary = " · ".join(f"{icon} {o}: {counts.get(o, 0)}" for o, icon in icons.items())
    assert summary in [c.value for c in at.caption]

    freshness = shown(at, "threshold_h").set_index("table_name")
    # the page's own SQL says how far each table covers (fct_prices searched from its newest day on): it must
    # agree with the catalogue's rule, the newest fresh_column plus covers_hours
    for name in freshness.index:
        table = catalog.BY_NAME[name]
        newest = frame(settings, f"SELECT max({table.fresh_column}) AS t FROM {name}").t[0]
        covers = (
            pd.Timestamp(newest).tz_localize("UTC")
            if isinstance(newest, dt.date) and not isinstance(newest, dt.datetime)
            else pd.Timestamp(newest)
        )
        assert freshness.loc[name, "newest"] == covers + pd.Timedelta(hours=table.covers_hours), name
    assert freshness.loc["gold.fct_prices", "threshold_h"] == settings.checks.freshness_ohlcv_hours
    snapshot = freshness.loc["gold.mart_market_overview"]
    assert (snapshot["newest"], snapshot["threshold_h"]) == (
        SNAPSHOT,
        settings.checks.freshness_markets_hours,
    )
    # the data is from the sandbox's clock (March 2026), older than any threshold by the real clock
    assert set(freshness["status"]) == {"stale"} and len(freshness) == 4
    assert text_colours(at, "status") == [OUTCOME_COLOURS["fail"]] * 4  # stale: red
    assert execute(settings, "SELECT count(*) FROM ops.gaps") == [(0,)]  # seed 11's 15 days: no outage
    assert any("No missing candle hours" in s.value for s in at.success)


@pytest.mark.parametrize("page", PAGES)
def test_every_page_has_an_empty_state_before_the_first_load(empty_db, monkeypatch, page):
    _, config = empty_db
    at = open_page(config, monkeypatch, page)
    assert at.info, "an empty-state message"
    if page == QUALITY:
        assert [i.value for i in at.info][:1] == [
            "No pipeline runs in the last 30 days: nothing has been loaded yet."
        ]
    else:
        assert "missing or empty" in at.info[0].value


def test_sandbox_banner_from_the_configuration_or_a_sandbox_run(empty_db, monkeypatch, tmp_path):
    settings, config = empty_db
    assert not open_page(config, monkeypatch, OVERVIEW).warning
    enabled = write_config(settings, tmp_path / "sandbox.yaml", sandbox={"enabled": True})
    st.cache_data.clear()
    assert "Sandbox data" in open_page(enabled, monkeypatch, OVERVIEW).warning[0].value
    execute(
        settings,
        "INSERT INTO ops.pipeline_runs (run_id, source, command, started_at, status, details) "
        "VALUES ('r1', 'binance', 'ingest ohlcv', now(), 'success', '{\"sandbox\": true}')",
    )
    st.cache_data.clear()
    assert "Sandbox data" in open_page(config, monkeypatch, PRICES).warning[0].value


def test_database_down_is_a_message_not_a_traceback(tmp_path, monkeypatch):
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"database": {"embedded_dir": str(tmp_path / "nowhere")}}))
    monkeypatch.setenv("CRYPTOFLOW_CONFIG", str(config))
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception
    assert "cryptoflow db start" in at.error[0].value


@pytest.mark.parametrize(
    ("role", "password"),
    [
        ("cryptoflow_reader", None),  # the role exists, no password given
        ("cryptoflow_reader", "not-its-password"),
        ("no_such_reader", "r3ad-only"),  # `cryptoflow db start` was never run with the password set
    ],
)
def test_a_refused_reader_login_says_what_to_set(empty_db, monkeypatch, tmp_path, role, password):
    """database.url set (the session's server, reached as a configured one) and the reader's login refused:
    the page says to set CRYPTOFLOW_READER_PASSWORD and which command creates the role, never libpq's text
    and never the password."""
    settings, _ = empty_db
    server = {"url": db.writer_url(settings), "reader_role": role}
    config = write_config(settings, tmp_path / "server.yaml", database=server)
    monkeypatch.setenv("CRYPTOFLOW_CONFIG", str(config))
    if password is None:
        monkeypatch.delenv("CRYPTOFLOW_READER_PASSWORD", raising=False)
    else:
        monkeypatch.setenv("CRYPTOFLOW_READER_PASSWORD", password)
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception, [e.message for e in at.exception]
    [error] = [e.value for e in at.error]
    assert error == (
        f"The dashboard cannot reach its data: the server refused the read-only role `{role}` on database "
        f"`{settings.database.name}` (a wrong or missing password, or no such role). Set "
        "CRYPTOFLOW_READER_PASSWORD to its password; if the role does not exist yet, run `cryptoflow db start` "
        "with CRYPTOFLOW_READER_PASSWORD set to create it (when the writer may create roles; else an "
        "administrator creates it, as docker/postgres-init.sh shows)."
    )
    shown_text = " ".join(
        str(e.value)
        for kind in ("error", "warning", "info", "markdown", "caption")
        for e in getattr(at, kind)
    )
    for libpq in ("authentication failed", "no password supplied", "FATAL", '" does not exist'):
        assert libpq not in shown_text
    if password:
        assert password not in shown_text


def test_check_outcomes_are_words_in_their_colours_failures_first(empty_db, monkeypatch):
    settings, config = empty_db
    execute(
        settings,
        "INSERT INTO ops.dq_results (run_id, layer, check_name, table_name, level, outcome, measured_value) "
        "VALUES ('r1', 'gold', 'a passes', 'fct_prices', 'fail', 'pass', 0), "
        "('r1', 'gold', 'b warns', 'fct_prices', 'warn', 'warn', 3), "
        "('r1', 'raw', 'c fails', 'fear_greed', 'fail', 'fail', 2), "
        "('r1', 'silver', 'd errs', 'stg_binance__ohlcv', 'fail', 'error', NULL), "
        "('r1', 'gold', 'e fails too', 'fct_prices', 'fail', 'fail', 1)",
    )
    at = open_page(config, monkeypatch, QUALITY)
    checks = shown(at, "check_name")
    assert checks[["check_name", "outcome"]].values.tolist() == [
        ["e fails too", "fail"],  # gold before raw
        ["c fails", "fail"],
        ["d errs", "error"],
        ["b warns", "warn"],
        ["a passes", "pass"],
    ]
    assert text_colours(at, "outcome") == ["#d32f2f", "#d32f2f", "#e65100", "#9a7000", "#0a8f3c"]
    assert (
        ":red[:material/cancel:] fail: 2 · :orange[:material/error:] error: 1 · "
        ":yellow[:material/warning:] warn: 1 · :green[:material/check_circle:] pass: 1"
    ) in [c.value for c in at.caption]


def test_no_emoji_in_the_dashboard():
    """Emoji are empty boxes on a machine without an emoji font: the app uses Material icons and colours."""
    app = Path(__file__).resolve().parent.parent / "app"
    emoji = {
        f"{path.relative_to(app)}: {ch!r}"
        for path in app.rglob("*")
        if path.is_file() and path.suffix in {".py", ".toml", ".md", ".css"}
        for ch in path.read_text()
        if ord(ch) >= 0x1F000 or 0x2600 <= ord(ch) <= 0x27BF or ch == "\ufe0f"
    }
    assert emoji == set()


def test_the_app_reads_gold_and_ops_only_and_as_the_reader(empty_db):
    """The reader may read raw (the metrics need it); the dashboard never names a raw table, and connects
    as the read-only reader role."""
    settings, _ = empty_db
    app = Path(__file__).resolve().parent.parent / "app"
    named = {m for path in app.rglob("*.py") for m in re.findall(r"\braw\.[a-z_]+", path.read_text())}
    assert named == set()
    with contextlib.closing(psycopg2.connect(db.reader_url(settings))) as conn, conn.cursor() as cur:
        cur.execute("SELECT current_user")
        assert cur.fetchone() == (settings.database.reader_role,)
        with pytest.raises(psycopg2.errors.ReadOnlySqlTransaction):
            cur.execute("CREATE TEMP TABLE t (x int)")


@pytest.mark.slow
def test_environment_selector_shows_a_dev_environment(gold_db, monkeypatch, tmp_path):
    """An analyst changes fct_daily_summary's VWAP and transforms into dev: the selector lists gold__dev, the
    price page's daily rows come from it, and models dev did not change are read from prod."""
    settings, config = gold_db
    project = tmp_path / "sqlmesh_project"
    shutil.copytree(sqlmesh_context.PROJECT_DIR, project, ignore=shutil.ignore_patterns(".cache", "logs"))
    model = project / "models" / "marts" / "fct_daily_summary.sql"
    vwap = "(d.quote_volume / NULLIF(d.volume, 0))::DOUBLE PRECISION AS vwap,"
    assert vwap in model.read_text()
    model.write_text(model.read_text().replace(vwap, vwap.replace("::DOUBLE", " + 1::DOUBLE")))
    (project / "tests" / "test_fct_daily_summary.yaml").unlink()  # its expectations describe the old VWAP
    monkeypatch.setattr(sqlmesh_context, "PROJECT_DIR", project)
    transform.transform(settings, "dev", execution_time=NOW)

    at = open_page(config, monkeypatch, PRICES)
    assert at.selectbox(key="environment").options == ["prod (gold)", "dev (gold__dev)"]
    at.selectbox(key="environment").set_value("gold__dev").run()
    at.segmented_control(key="grain").set_value("Daily").run()
    assert not at.exception, [e.message for e in at.exception]
    rows = shown(at, "close")
    dev = frame(
        settings,
        "SELECT d.day, d.vwap, p.vwap AS prod_vwap FROM gold__dev.fct_daily_summary AS d "
        "JOIN gold.fct_daily_summary AS p USING (symbol, day) WHERE symbol = 'BTCUSDT' AND d.day >= %s "
        "ORDER BY d.day",
        (rows["day"].min(),),
    )
    assert rows["day"].tolist() == dev["day"].tolist()
    assert rows["vwap"].tolist() == dev["vwap"].tolist() == pytest.approx((dev["prod_vwap"] + 1).tolist())
    # mart_market_overview is unchanged in dev, so the overview reads prod's
    at.switch_page(OVERVIEW).run()
    assert not at.exception, [e.message for e in at.exception]
    prod = frame(settings, "SELECT symbol FROM gold.mart_market_overview ORDER BY position")
    assert shown(at, "market_cap_usd")["symbol"].tolist() == prod["symbol"].fillna(NO_PAIR).tolist()


@pytest.mark.slow
def test_measure_queries_times_every_page_query(gold_db, monkeypatch):
    """Every cached `load_*` query of app/dashboard_queries.py (what the pages run) is run by the bench, and
    the bench reports exactly its named queries."""
    settings, _ = gold_db
    q = dashboard_bench._queries_module()
    defined = set(
        re.findall(
            r"^def (load_\w+)\(", (dashboard_server.APP_DIR / "dashboard_queries.py").read_text(), re.M
        )
    )
    queries = {name: getattr(q, name) for name in defined}
    ran: set[str] = set()

    def spy(name, cached):
        def call(*args, **kwargs):  # called by another query (load_table_rows -> load_relations)
            ran.add(name)
            return cached(*args, **kwargs)

        def uncached(*args, **kwargs):  # what the bench times
            ran.add(name)
            return cached.__wrapped__(*args, **kwargs)

        call.__wrapped__ = uncached
        return call

    for name, cached in queries.items():
        monkeypatch.setattr(q, name, spy(name, cached))
    timings = dashboard_bench.measure_queries(settings, repeats=1)
    assert ran == defined and "load_relations" in defined
    assert set(timings) == {
        "environments",
        "table_rows",
        "sandbox_runs",
        "top10",
        "sparklines",
        "market_totals",
        "symbols",
        "prices_hourly_90d",
        "prices_daily_90d",
        "prices_daily_3y",
        "sentiment_bounds",
        "sentiment_365d",
        "runs_30d",
        "run_summary_30d",
        "freshness",
        "check_results",
        "dead_letter_runs",
        "gaps",
        "gap_counts",
        "pairs_not_trading",
        "revisions",
    }


def test_command_and_env_of_the_server(empty_db):
    settings, config = empty_db
    argv = dashboard_server.command(settings, 8599)
    assert argv[1:] == [
        "run",
        str(dashboard_server.ENTRY_POINT),
        "--server.port",
        "8599",
        "--server.headless",
        "true",
        "--browser.gatherUsageStats",
        "false",
        "--server.address",
        "127.0.0.1",
    ]
    environment = dashboard_server.env(settings, config)
    assert environment["CRYPTOFLOW_CONFIG"] == str(config.resolve())
    assert environment["STREAMLIT_BROWSER_GATHER_USAGE_STATS"] == "false"


@pytest.mark.slow
@pytest.mark.parametrize("page", PAGES)
def test_every_page_renders_on_a_historical_window_without_a_snapshot(historical_db, monkeypatch, page):
    settings, config = historical_db
    [(days, without_breadth)] = execute(
        settings, "SELECT count(*), count(*) FILTER (WHERE decliners IS NULL) FROM gold.fct_market_sentiment"
    )
    # breadth only on the window's candle days (2025-01-08 .. 01-19), Fear & Greed's other days without it
    assert execute(settings, "SELECT count(DISTINCT day) FROM gold.fct_daily_summary") == [(12,)]
    assert days == sentiment_days(settings, HISTORICAL_NOW.date()) and without_breadth == days - 12
    at = open_page(config, monkeypatch, page)
    if page == SENTIMENT:
        assert [s.value for s in at.subheader][-2:] == [
            "Market volume (24 h, all coins)",
            "Breadth: advancers vs decliners",
        ]
        assert any("No market snapshot falls on these days" in i.value for i in at.info)


@pytest.mark.slow
@pytest.mark.parametrize("page", PAGES)
def test_every_page_renders_on_one_pair_and_one_day(tiny_db, monkeypatch, page):
    settings, config = tiny_db
    assert execute(settings, "SELECT count(*), count(DISTINCT symbol) FROM gold.fct_prices")[0] == (24, 1)
    at = open_page(config, monkeypatch, page)
    assert [t.value for t in at.title] == [TITLES[page]]  # the page drew its heading
