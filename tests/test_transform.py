"""SQLMesh on the embedded Postgres with sandbox data: indicators checked independently with pandas/numpy,
and the analyst workflow (dev environment, promotion by virtual update, breaking-change classification)."""

from __future__ import annotations

import datetime as dt
import math
import shutil

import numpy as np
import pandas as pd
import pytest
import yaml
from helpers.gold import RTOL, assert_same_gold

from pipelines import ingest, quality, restatement, sqlmesh_context, transform
from pipelines.cli import sandboxed
from pipelines.runtime import db
from pipelines.sandbox import SandboxServer

# SQLMesh plans on a pipeline-built database (about 30 s), dev environments and the unit tests on Postgres
pytestmark = pytest.mark.slow

HOUR = 3_600_000
# the sandbox clock: mid-hour, well in the past so every interval SQLMesh processes is complete
NOW = dt.datetime(2026, 3, 10, 12, 30, tzinfo=dt.UTC)
NOW_MS = int(NOW.timestamp() * 1000)
LAST_CLOSED = NOW_MS // HOUR * HOUR - HOUR
SYMBOLS = ["BTCUSDT", "ETHUSDT", "DOGEUSDT"]
DAYS = 40
ANNUAL = math.sqrt(24 * 365)


def query_df(settings, sql: str) -> pd.DataFrame:
    with db.cursor(settings) as cur:
        cur.execute(sql)
        return pd.DataFrame(cur.fetchall(), columns=[d.name for d in cur.description])


def execute(settings, sql: str, params=()) -> list[tuple]:
    with db.cursor(settings) as cur:
        cur.execute(sql, params)
        return cur.fetchall() if cur.description else []


@pytest.fixture(scope="module")
def built(tmp_path_factory, settings_in):
    """Ingest 3 symbols x 40 days (ETH with a 5-hour exchange outage), then build silver and gold."""
    settings = settings_in(tmp_path_factory.mktemp("transform"), universe={"symbols": SYMBOLS})
    outage = LAST_CLOSED - 100 * HOUR
    with SandboxServer(seed=7, now_ms=NOW_MS, calm=True) as sandbox:  # the test sets its own outage
        sandbox.set_fault(
            "klines", "missing_hours", symbol="ETHUSDT", start_ms=outage, end_ms=outage + 4 * HOUR
        )
        active = sandboxed(settings, sandbox)
        ingest.ingest_ohlcv(active, days=DAYS)
        ingest.ingest_markets(active)
        ingest.ingest_fear_greed(active)
    summary = transform.transform(settings, execution_time=NOW)
    return settings, summary


def raw_frame(settings) -> pd.DataFrame:
    raw = query_df(
        settings,
        "SELECT symbol, open_time, close, volume, quote_volume, high, low, open FROM raw.binance_klines",
    )
    for col in ("close", "volume", "quote_volume", "high", "low", "open"):
        raw[col] = raw[col].astype(float)
    return raw.sort_values(["symbol", "open_time"]).reset_index(drop=True)


def assert_close(actual: pd.Series, expected: pd.Series, name: str) -> None:
    a, e = actual.to_numpy(dtype=float), expected.to_numpy(dtype=float)
    assert np.array_equal(np.isnan(a), np.isnan(e)), f"{name}: NULLs differ"
    ok = ~np.isnan(e)
    assert ok.sum() > 0, name
    rel = np.abs(a[ok] - e[ok]) / np.maximum(np.abs(e[ok]), 1e-300)
    assert rel.max() <= RTOL, f"{name}: max relative error {rel.max():.3e}"


def expected_hourly(raw: pd.DataFrame) -> pd.DataFrame:
    """The indicators from their written definitions, with pandas time-based windows."""
    frames = []
    for symbol, g in raw.groupby("symbol"):
        g = g.set_index("open_time").sort_index()
        prev = g["close"].reindex(g.index - pd.Timedelta(hours=1)).to_numpy()
        prev24 = g["close"].reindex(g.index - pd.Timedelta(hours=24)).to_numpy()
        out = pd.DataFrame(index=g.index)
        out["symbol"] = symbol
        out["change_24h"] = g["close"].to_numpy() / prev24 - 1
        out["log_return_1h"] = np.log(g["close"].to_numpy() / prev)
        out["ma_7d"] = g["close"].rolling("168h").mean()
        out["ma_30d"] = g["close"].rolling("720h").mean()
        out["vwap_24h"] = g["quote_volume"].rolling("24h").sum() / g["volume"].rolling("24h").sum()
        lr = out["log_return_1h"]
        out["volatility_7d"] = lr.rolling("168h", min_periods=2).std(ddof=1) * ANNUAL
        out["volatility_30d"] = lr.rolling("720h", min_periods=2).std(ddof=1) * ANNUAL
        frames.append(out.reset_index())
    return pd.concat(frames).sort_values(["symbol", "open_time"]).reset_index(drop=True)


def test_fct_prices_indicators_match_an_independent_computation(built):
    settings, _ = built
    raw = raw_frame(settings)
    assert len(raw) == len(SYMBOLS) * DAYS * 24 - 5  # the outage is missing from raw, not invented
    gold = query_df(
        settings,
        "SELECT symbol, open_time, change_24h, log_return_1h, ma_7d, ma_30d, vwap_24h, volatility_7d, "
        "volatility_30d FROM gold.fct_prices ORDER BY symbol, open_time",
    )
    expected = expected_hourly(raw)
    assert list(zip(gold.symbol, gold.open_time, strict=True)) == list(
        zip(expected.symbol, expected.open_time, strict=True)
    )
    for column in (
        "change_24h",
        "log_return_1h",
        "ma_7d",
        "ma_30d",
        "vwap_24h",
        "volatility_7d",
        "volatility_30d",
    ):
        assert_close(gold[column], expected[column], column)


def test_windows_do_not_stretch_across_the_outage(built):
    settings, _ = built
    gold = query_df(
        settings,
        "SELECT open_time, change_1h, change_24h FROM gold.fct_prices WHERE symbol = 'ETHUSDT' ORDER BY open_time",
    )
    after_gap = gold[gold.open_time == pd.Timestamp(LAST_CLOSED - 95 * HOUR, unit="ms", tz="UTC")]
    assert len(after_gap) == 1
    assert pd.isna(after_gap.change_1h.iloc[0])  # the hour before is missing: no 1h change, not a 6h one
    counts = query_df(
        settings,
        "SELECT open_time, candles_in_7d FROM gold.fct_prices WHERE symbol = 'ETHUSDT' ORDER BY open_time",
    )
    raw = raw_frame(settings)
    eth = raw[raw.symbol == "ETHUSDT"].set_index("open_time")["close"]
    assert counts.open_time.tolist() == eth.index.tolist()
    assert counts.candles_in_7d.tolist() == eth.rolling("168h").count().astype(int).tolist()
    assert counts.candles_in_7d.max() == 168 and counts.candles_in_7d.min() == 1  # the first candle: alone
    # a 7-day window holding the outage has 168 - 5 candles: the windows of the 96 hours after it
    # (LAST_CLOSED - 95 h .. LAST_CLOSED; none has moved past the outage yet)
    after = counts[counts.open_time >= pd.Timestamp(LAST_CLOSED - 95 * HOUR, unit="ms", tz="UTC")]
    assert after.candles_in_7d.tolist() == [163] * 96


def test_fct_daily_summary_matches_an_independent_computation(built):
    settings, _ = built
    raw = raw_frame(settings)
    raw["day"] = raw.open_time.dt.tz_convert("UTC").dt.date
    hourly = expected_hourly(raw.drop(columns="day"))
    raw["log_return_1h"] = hourly["log_return_1h"].to_numpy()
    rows = []
    for (symbol, day), g in raw.groupby(["symbol", "day"]):
        g = g.sort_values("open_time")
        rows.append(
            {
                "symbol": symbol,
                "day": day,
                "open": g.open.iloc[0],
                "high": g.high.max(),
                "low": g.low.min(),
                "close": g.close.iloc[-1],
                "candles": len(g),
                "vwap": g.quote_volume.sum() / g.volume.sum(),
                "volatility": g.log_return_1h.std(ddof=1) * ANNUAL,
            }
        )
    expected = pd.DataFrame(rows)
    expected["change_1d"] = [
        (c / prev - 1) if (prev := _close_on(expected, s, d - dt.timedelta(days=1))) else np.nan
        for s, d, c in zip(expected.symbol, expected.day, expected.close, strict=True)
    ]
    # SQLMesh processes whole days up to the last complete one before NOW
    expected = expected[expected.day < NOW.date()].reset_index(drop=True)
    gold = query_df(settings, "SELECT * FROM gold.fct_daily_summary ORDER BY symbol, day")
    assert list(zip(gold.symbol, gold.day, strict=True)) == list(
        zip(expected.symbol, expected.day, strict=True)
    )
    assert gold.candles.tolist() == expected.candles.tolist()
    for column in ("open", "high", "low", "close", "vwap", "volatility", "change_1d"):
        assert_close(gold[column].astype(float), expected[column], column)


def _close_on(frame: pd.DataFrame, symbol: str, day: dt.date) -> float | None:
    match = frame[(frame.symbol == symbol) & (frame.day == day)]
    return float(match.close.iloc[0]) if len(match) else None


def test_gold_sentiment_and_dimensions(built):
    settings, _ = built
    dim = query_df(
        settings, "SELECT symbol, is_current FROM gold.dim_crypto WHERE symbol = ANY(ARRAY['BTCUSDT'])"
    )
    assert dim.is_current.tolist() == [True]
    sentiment = query_df(settings, "SELECT * FROM gold.fct_market_sentiment ORDER BY day")
    fng = query_df(settings, "SELECT (ts AT TIME ZONE 'UTC')::date AS day, value FROM raw.fear_greed")
    merged = sentiment.merge(fng, on="day")
    # every Fear & Greed day from gold's start (2019-01-01) to the last complete day before NOW
    assert len(merged) == ((fng.day >= dt.date(2019, 1, 1)) & (fng.day < NOW.date())).sum()
    assert (merged.fng_value == merged.value).all()
    last = sentiment[sentiment.advancers.notna()].iloc[-1]
    changes = execute(settings, "SELECT change_1d FROM gold.fct_daily_summary WHERE day = %s", (last.day,))
    assert len(changes) == len(SYMBOLS)
    assert (last.advancers, last.decliners) == (
        sum(c > 0 for (c,) in changes if c is not None),
        sum(c < 0 for (c,) in changes if c is not None),
    )
    overview = query_df(settings, "SELECT position, coin_id FROM gold.mart_market_overview ORDER BY position")
    assert overview.position.tolist() == list(range(1, 11))


def test_a_later_snapshot_never_rewrites_past_facts(make_settings):
    """The coin of a fact is the one its pair mapped to as of the fact's UTC day: a later market snapshot
    that renames a coin (a new dim_crypto version) and gives a ticker to another coin changes the hours from
    its day on, not the hours before it, whether they are reprocessed by the lookback or restated."""
    settings = make_settings(universe={"symbols": ["BTCUSDT", "ETHUSDT"]})
    first, second = "2026-03-07 00:00+00", "2026-03-11 00:00+00"
    later = dt.datetime(2026, 3, 12, 0, 30, tzinfo=dt.UTC)
    coins = "SELECT symbol, open_time, coin_id, coin_name FROM gold.fct_prices ORDER BY symbol, open_time"
    daily = "SELECT symbol, day, coin_id FROM gold.fct_daily_summary ORDER BY symbol, day"
    with SandboxServer(seed=7, now_ms=NOW_MS, calm=True) as sandbox:
        active = sandboxed(settings, sandbox)
        ingest.ingest_ohlcv(active, days=3)
        ingest.ingest_markets(active)
        execute(settings, "UPDATE raw.coingecko_markets SET snapshot_ts = %s", (first,))
        ingest.ingest_fear_greed(active)
        transform.transform(settings, execution_time=NOW)
        before = execute(settings, coins)

        sandbox.set_now(int(later.timestamp() * 1000))
        ingest.ingest_ohlcv(active)  # up to 2026-03-11 23:00
        ingest.ingest_markets(active)  # the second snapshot: bitcoin renamed, ETH now another coin's ticker
        execute(
            settings,
            "UPDATE raw.coingecko_markets SET snapshot_ts = %s, "
            "name = CASE id WHEN 'bitcoin' THEN 'Bitcoin (renamed)' WHEN 'ethereum' THEN 'Ethereum 2' ELSE name END, "
            "id = CASE id WHEN 'ethereum' THEN 'ethereum-2' ELSE id END WHERE snapshot_ts <> %s",
            (second, first),
        )
    transform.transform(settings, execution_time=later)
    after = execute(settings, coins)

    old = {"BTCUSDT": ("bitcoin", "Bitcoin"), "ETHUSDT": ("ethereum", "Ethereum")}
    new = {"BTCUSDT": ("bitcoin", "Bitcoin (renamed)"), "ETHUSDT": ("ethereum-2", "Ethereum 2")}
    hours = pd.date_range(
        "2026-03-07 12:00", "2026-03-11 23:00", freq="h", tz="UTC"
    )  # 3 days, then 36 h more
    built_first, split = pd.Timestamp("2026-03-10 12:00", tz="UTC"), pd.Timestamp(second)
    assert before == [
        (s, t.to_pydatetime(), *old[s]) for s in ("BTCUSDT", "ETHUSDT") for t in hours if t < built_first
    ]
    expected = [
        (s, t.to_pydatetime(), *(old if t < split else new)[s]) for s in ("BTCUSDT", "ETHUSDT") for t in hours
    ]
    assert len(before) == 2 * 72 and len(after) == 2 * 108
    assert after == expected
    assert [r for r in after if r[1] < built_first] == before  # the past, the 48 h lookback included
    days = [dt.date(2026, 3, d) for d in range(7, 12)]
    expected_daily = [
        (s, d, (old if d < split.date() else new)[s][0]) for s in ("BTCUSDT", "ETHUSDT") for d in days
    ]
    assert execute(settings, daily) == expected_daily
    assert execute(
        settings,
        "SELECT coin_id, coin_name, is_current FROM gold.dim_crypto "
        "WHERE coin_id IN ('bitcoin', 'ethereum', 'ethereum-2') ORDER BY coin_id, valid_from",
    ) == [
        ("bitcoin", "Bitcoin", False),
        ("bitcoin", "Bitcoin (renamed)", True),
        ("ethereum", "Ethereum", True),
        ("ethereum-2", "Ethereum 2", True),
    ]  # the dimension did change

    # a full restatement of the history gives the same facts
    restatement.restate(settings, dt.datetime(2026, 3, 7, tzinfo=dt.UTC), later, execution_time=later)
    assert execute(settings, coins) == expected
    assert execute(settings, daily) == expected_daily


def transformed(settings, when: dt.datetime) -> dict:
    """Run the prod transform as of `when`; its ledger details."""
    run_id = transform.transform(settings, execution_time=when).run_id
    return execute(settings, "SELECT details FROM ops.pipeline_runs WHERE run_id = %s", (run_id,))[0][0]


def test_a_day_closed_without_its_last_hour_gets_it_in_the_daily_tables_the_hour_it_arrives(
    tmp_path, settings_in
):
    """The run just after midnight fails (the exchange's 429, the lake gone): the transform closes the day in
    the daily tables with 23 candles. The next hour's run brings the missed candle; the daily tables must count
    it in that run's transform, not a day later when the next day's interval comes with its lookback (found
    by the 14-day soak: the completeness check failed for a day)."""
    from pipelines.http import ApiError

    settings = settings_in(tmp_path, universe={"symbols": ["BTCUSDT"]})
    day = dt.date(2026, 3, 9)
    midnight = dt.datetime(2026, 3, 10, tzinfo=dt.UTC)
    daily = "SELECT candles, close FROM gold.fct_daily_summary WHERE symbol = 'BTCUSDT' AND day = %s"
    with SandboxServer(
        seed=7, now_ms=int((midnight - dt.timedelta(minutes=30)).timestamp() * 1000), calm=True
    ) as sandbox:
        active = sandboxed(settings, sandbox)
        ingest.ingest_ohlcv(active, days=3)
        ingest.ingest_markets(active)
        ingest.ingest_fear_greed(active)
        transformed(settings, midnight - dt.timedelta(minutes=30))
        at = midnight + dt.timedelta(minutes=30)
        sandbox.set_now(int(at.timestamp() * 1000))
        sandbox.set_fault("klines", "429", times=1, retry_after=600)  # stops the run at once
        with pytest.raises(ApiError):
            ingest.ingest_ohlcv(active)
        transformed(settings, at)
        assert execute(settings, daily, (day,))[0][0] == 23  # the day closed without its 23:00 candle

        at += dt.timedelta(hours=1)
        sandbox.set_now(int(at.timestamp() * 1000))
        ingest.ingest_ohlcv(active)  # 23:00 and 00:00
        transformed(settings, at)
    last = execute(
        settings,
        "SELECT close FROM raw.binance_klines WHERE symbol = 'BTCUSDT' AND open_time = %s",
        (midnight - dt.timedelta(hours=1),),
    )[0][0]
    assert execute(settings, daily, (day,)) == [(24, last)]


def test_history_backfilled_after_gold_exists_reaches_silver_and_gold(tmp_path, settings_in):
    """A backfill of older hours (hours SQLMesh processed long ago, empty) reaches silver and gold in the next
    transform, indicators of the following 30 days included: gold then equals a build of the same raw from
    scratch. The hourly loads, inside the models' lookback, restate nothing; a load still running waits."""
    symbols = ["BTCUSDT", "ETHUSDT"]
    late = settings_in(tmp_path / "late", universe={"symbols": symbols})
    fresh = settings_in(tmp_path / "fresh", universe={"symbols": symbols})
    at = [NOW + dt.timedelta(hours=h) for h in range(3)]
    since = dt.datetime(2026, 2, 1, tzinfo=dt.UTC)

    with SandboxServer(seed=7, now_ms=NOW_MS, calm=True) as sandbox:
        active = sandboxed(late, sandbox)
        ingest.ingest_ohlcv(active, days=3)
        ingest.ingest_markets(active)
        ingest.ingest_fear_greed(active)
        assert "restated" not in transformed(late, at[0])  # the first build: every hour raw has

        sandbox.set_now(int(at[1].timestamp() * 1000))
        ingest.ingest_ohlcv(active)  # the new hour and the trailing 48 h re-fetched: inside the lookback
        # a load still running (its rows may not be committed yet) is left for a later run
        execute(
            late,
            "INSERT INTO ops.pipeline_runs (run_id, source, command, started_at, status) "
            "VALUES ('binance-test-running', 'binance', 'backfill', now(), 'running')",
        )
        execute(
            late,
            "INSERT INTO ops.raw_changes (table_name, load_id, first_time, last_time) "
            "VALUES ('binance_klines', 'binance-test-running-rev', '2026-02-10', '2026-02-11')",
        )
        assert "restated" not in transformed(late, at[1])
        assert execute(late, "SELECT load_id FROM ops.raw_changes") == [("binance-test-running-rev",)]
        execute(late, "UPDATE ops.pipeline_runs SET status = 'failed' WHERE run_id = 'binance-test-running'")

        sandbox.set_now(int(at[2].timestamp() * 1000))
        ingest.ingest_ohlcv(
            active, since=since, until=dt.datetime(2026, 3, 8, tzinfo=dt.UTC)
        )  # older history
        ingest.ingest_ohlcv(active)
        # raw has hours silver lacks, awaiting the transform: not a defect of silver
        checks = {r.name: r.outcome for r in quality.run_checks(late, ("silver",), now=at[2]).results}
        assert checks["raw -> silver candle counts reconcile"] == "pass"
        assert execute(late, "SELECT count(*) FROM raw.binance_klines") != execute(
            late, "SELECT count(*) FROM silver.stg_binance__ohlcv"
        )
        details = transformed(late, at[2])
        # from the backfill's first hour to the end of what is processed (the 721 h reach is past it)
        assert details["restated"] == [since.isoformat(), "2026-03-10T14:00:00+00:00"]
        assert execute(late, "SELECT count(*) FROM ops.raw_changes") == [(0,)]
        again = transformed(late, at[2])
        assert "restated" not in again  # nothing left to restate
        assert again["plan_s"] == 0  # and the restatement, a plan of this project, left nothing to plan
        checks = {r.name: r.outcome for r in quality.run_checks(late, ("silver",), now=at[2]).results}
        assert checks["raw -> silver candle counts reconcile"] == "pass"

        active = sandboxed(fresh, sandbox)  # the same raw, built from scratch
        ingest.ingest_ohlcv(active, since=since)
        ingest.ingest_markets(active)
        ingest.ingest_fear_greed(active)
        transformed(fresh, at[2])

    count = "SELECT symbol, count(*) FROM {} GROUP BY symbol ORDER BY symbol"
    hours = int((at[2].replace(minute=0) - since) / dt.timedelta(hours=1))  # 2026-02-01 00:00 .. 03-10 13:00
    for table in ("raw.binance_klines", "silver.stg_binance__ohlcv", "gold.fct_prices"):
        assert execute(late, count.format(table)) == [(s, hours) for s in symbols], table
    candles = "SELECT symbol, open_time, open, high, low, close, volume FROM raw.binance_klines ORDER BY 1, 2"
    assert execute(late, candles) == execute(fresh, candles)
    assert_same_gold(late, fresh)


def test_hours_filled_weeks_later_restate_the_month_of_indicators_after_them(tmp_path, settings_in):
    """Two days raw lacked at the first build, loaded five weeks later (a hole re-fetched): the next transform
    restates them and exactly the 721 hours after them that read them (fct_prices' 30-day windows) - no
    less, or the indicators of the month after stay stale: gold equals a build of the same raw from scratch."""
    late = settings_in(tmp_path / "late", universe={"symbols": ["BTCUSDT"]})
    fresh = settings_in(tmp_path / "fresh", universe={"symbols": ["BTCUSDT"]})
    since, hole = (
        dt.datetime(2026, 1, 25, tzinfo=dt.UTC),
        (dt.datetime(2026, 2, 1, tzinfo=dt.UTC), dt.datetime(2026, 2, 3, tzinfo=dt.UTC)),
    )
    with SandboxServer(seed=7, now_ms=NOW_MS, calm=True) as sandbox:
        for settings in (late, fresh):
            active = sandboxed(settings, sandbox)
            ingest.ingest_ohlcv(active, since=since)
            ingest.ingest_markets(active)
            ingest.ingest_fear_greed(active)
        execute(late, "DELETE FROM raw.binance_klines WHERE open_time >= %s AND open_time < %s", hole)
        transformed(late, NOW)
        ingest.ingest_ohlcv(sandboxed(late, sandbox), since=hole[0], until=hole[1])  # the hole, filled
        details = transformed(late, NOW)
        transformed(fresh, NOW)
    last = hole[1] - dt.timedelta(hours=1)
    assert details["restated"] == [hole[0].isoformat(), (last + dt.timedelta(hours=1 + 721)).isoformat()]
    assert_same_gold(late, fresh)


def test_late_loads_for_a_model_prod_lacks_fail_instead_of_being_forgotten(built):
    """catalog.KLINES.incremental_model naming a model prod does not have (renamed): reading how far it was
    processed fails, saying so - it is read before ops.raw_changes is cleared, so no late load is dropped."""
    settings, _ = built
    ctx = transform.context(settings, load=False)
    assert restatement._processed_until(ctx, "silver.stg_binance__ohlcv")[1] == dt.timedelta(hours=48)
    with pytest.raises(
        transform.TransformError, match=r"silver\.stg_renamed is not in prod.*Table\.incremental_model"
    ):
        restatement._processed_until(ctx, "silver.stg_renamed")


def test_dev_environment_workflow(built, tmp_path):
    """A non-breaking change planned in dev builds only that model into gold__dev, leaves prod alone, and
    promotes to prod without recomputing; a breaking change is classified as breaking."""
    from sqlmesh import Context
    from sqlmesh.core.snapshot import SnapshotChangeCategory

    settings, _ = built
    project = tmp_path / "sqlmesh_project"
    shutil.copytree(sqlmesh_context.PROJECT_DIR, project, ignore=shutil.ignore_patterns(".cache", "logs"))
    model = project / "models" / "marts" / "fct_daily_summary.sql"
    model.write_text(
        model.read_text().replace(
            "  d.candles::INT AS candles,",
            "  (d.high - d.low)::NUMERIC(36, 8) AS day_range, /* high - low of the day */\n  d.candles::INT AS candles,",
        )
    )
    ctx = Context(paths=str(project), config=sqlmesh_context.sqlmesh_config(settings))
    prod_before = query_df(settings, "SELECT count(*) AS n FROM gold.fct_daily_summary").n[0]

    plan = ctx.plan("dev", auto_apply=True, no_prompts=True, execution_time=NOW, skip_tests=True)
    changed = {s.name.split(".")[-1].strip('"'): s.change_category for s in plan.new_snapshots}
    assert changed == {
        "fct_daily_summary": SnapshotChangeCategory.NON_BREAKING,
        "fct_market_sentiment": SnapshotChangeCategory.INDIRECT_NON_BREAKING,  # reuses its data
    }
    rebuilt = {mi.snapshot_id.name.split(".")[-1].strip('"') for mi in plan.missing_intervals}
    assert rebuilt == {"fct_daily_summary"}  # only the changed model is built
    dev = query_df(
        settings, "SELECT count(*) AS n, count(day_range) AS ranged FROM gold__dev.fct_daily_summary"
    )
    assert dev.n[0] == dev.ranged[0] == prod_before
    prod_cols = query_df(
        settings,
        "SELECT column_name FROM information_schema.columns WHERE table_schema = 'gold' "
        "AND table_name = 'fct_daily_summary'",
    ).column_name.tolist()
    assert "day_range" not in prod_cols  # prod untouched

    promote = ctx.plan("prod", auto_apply=True, no_prompts=True, execution_time=NOW, skip_tests=True)
    assert promote.missing_intervals == []  # a virtual update: nothing to recompute
    assert query_df(settings, "SELECT count(day_range) AS n FROM gold.fct_daily_summary").n[0] == prod_before

    model.write_text(model.read_text().replace("SUM(volume) AS volume,", "SUM(volume) * 2 AS volume,"))
    ctx = Context(paths=str(project), config=sqlmesh_context.sqlmesh_config(settings))
    breaking = ctx.plan_builder("dev2", execution_time=NOW, skip_tests=True).build()  # classify, don't apply
    categories = {s.name.split(".")[-1].strip('"'): s.change_category for s in breaking.new_snapshots}
    assert categories["fct_daily_summary"] == SnapshotChangeCategory.BREAKING


def test_sqlmesh_unit_tests_pass_on_postgres(make_settings):
    """The YAML unit tests (hand-computed expectations) run on the real engine, as `sqlmesh plan` runs them."""
    ctx = transform.context(make_settings())
    result = ctx.test()
    tests = [yaml.safe_load(p.read_text()) for p in (sqlmesh_context.PROJECT_DIR / "tests").glob("*.yaml")]
    assert result.testsRun == sum(map(len, tests))  # every test of every YAML file ran, none was skipped
    assert result.wasSuccessful(), [str(f[1]) for f in result.failures + result.errors]


def test_a_failing_audit_stops_the_run_naming_model_audit_and_rows(built, tmp_path, monkeypatch):
    """A blocking audit that fails stops the plan; the error names the model, the audit and sample rows."""
    settings, _ = built
    project = tmp_path / "sqlmesh_project"
    shutil.copytree(sqlmesh_context.PROJECT_DIR, project, ignore=shutil.ignore_patterns(".cache", "logs"))
    model = project / "models" / "marts" / "fct_daily_summary.sql"
    text = model.read_text().replace(
        "accepted_range(column := candles, min_v := 1, max_v := 24),",
        "accepted_range(column := candles, min_v := 1, max_v := 23),",  # a full day has 24: must fail
    )
    # a new column too, so the model is rebuilt (an audit-only change is metadata and re-runs nothing)
    text = text.replace(
        "  d.candles::INT AS candles,", "  d.candles::INT AS candles,\n  1::INT AS probe, /* test */"
    )
    model.write_text(text)
    (project / "tests" / "test_fct_daily_summary.yaml").unlink()  # its expected rows lack the probe column
    monkeypatch.setattr(sqlmesh_context, "PROJECT_DIR", project)
    with pytest.raises(transform.TransformError) as failed:
        transform.transform(settings, "audit_check", execution_time=NOW)
    message = str(failed.value)
    assert "model gold.fct_daily_summary: audit 'accepted_range' failed for" in message
    assert "'candles': 24" in message  # a sample of the offending rows
    assert query_df(settings, "SELECT to_regclass('gold__audit_check.fct_daily_summary') AS t").t[0] is None


def test_an_unchanged_project_runs_without_a_plan_and_a_changed_one_is_planned(
    make_settings, tmp_path, monkeypatch
):
    """The hourly transform re-parses and re-plans nothing when the project is the one last planned into the
    environment (ops.transform_state): it runs the due intervals from the state, and the new hour is in gold.
    A changed model is planned again, and its new column appears."""
    project = tmp_path / "sqlmesh_project"
    shutil.copytree(sqlmesh_context.PROJECT_DIR, project, ignore=shutil.ignore_patterns(".cache", "logs"))
    monkeypatch.setattr(sqlmesh_context, "PROJECT_DIR", project)
    settings = make_settings(universe={"symbols": ["BTCUSDT", "ETHUSDT"]})
    hour_later = NOW + dt.timedelta(hours=1)
    newest = "SELECT count(*) FROM gold.fct_prices WHERE open_time = %s"
    with SandboxServer(seed=7, now_ms=NOW_MS, calm=True) as sandbox:
        active = sandboxed(settings, sandbox)
        ingest.ingest_ohlcv(active, days=2)
        ingest.ingest_markets(active)
        ingest.ingest_fear_greed(active)
        first = transform.transform(settings, execution_time=NOW)
        assert "silver.int_crypto_daily" in {
            n.split(".", 1)[1].replace('"', "") for n in first.changed_models
        }
        assert execute(settings, "SELECT environment, project_sha256 FROM ops.transform_state") == [
            ("prod", sqlmesh_context.project_fingerprint(settings))
        ]
        sandbox.set_now(NOW_MS + HOUR)
        ingest.ingest_ohlcv(active)  # the 11:00 candles close
    assert execute(settings, newest, (NOW.replace(minute=0) - dt.timedelta(hours=1),)) == [(2,)]
    assert execute(settings, newest, (NOW.replace(minute=0),)) == [(0,)]

    hourly = transform.transform(settings, execution_time=hour_later)
    assert (hourly.changed_models, hourly.split_s["plan"]) == ([], 0.0)  # no plan
    assert execute(settings, newest, (NOW.replace(minute=0),)) == [(2,)]  # the new hour reached gold
    assert execute(settings, "SELECT count(*), count(DISTINCT (symbol, open_time)) FROM gold.fct_prices") == [
        (2 * (48 + 1), 2 * (48 + 1))
    ]  # 2 days up to the 11:00 candle, and the 12:00 one: no duplicate from the lookback

    # prod holding a plan this pipeline did not record (another checkout's `sqlmesh plan`): planned again
    execute(settings, "UPDATE ops.transform_state SET plan_id = 'from-another-checkout'")
    transform.transform(settings, execution_time=hour_later)
    assert execute(settings, "SELECT plan_id FROM ops.transform_state") == execute(
        settings, "SELECT plan_id FROM sqlmesh._environments WHERE name = 'prod'"
    )

    model = project / "models" / "marts" / "fct_daily_summary.sql"
    model.write_text(
        model.read_text().replace(
            "  d.candles::INT AS candles,", "  d.candles::INT AS candles,\n  1::INT AS probe, /* test */"
        )
    )
    (project / "tests" / "test_fct_daily_summary.yaml").unlink()  # its expected rows lack the probe column
    replanned = transform.transform(settings, execution_time=hour_later)
    assert "gold.fct_daily_summary" in {n.split(".", 1)[1].replace('"', "") for n in replanned.changed_models}
    assert execute(settings, "SELECT count(*), sum(probe) FROM gold.fct_daily_summary") == execute(
        settings, "SELECT count(*), count(*) FROM gold.fct_daily_summary"
    )
    assert execute(settings, "SELECT project_sha256 FROM ops.transform_state") == [
        (sqlmesh_context.project_fingerprint(settings),)
    ]
