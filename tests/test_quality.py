"""Soda scans on the embedded Postgres with sandbox data: clean data passes; each class of fault makes the
named check fail with the right measured value; every outcome lands in ops.dq_results. A fault that breaks
a model's own invariant is its SQLMesh audit's alone (one owner per check): that audit fails, Soda has no twin."""

from __future__ import annotations

import contextlib
import datetime as dt
from pathlib import Path

import pytest

from pipelines import ingest, quality, transform
from pipelines.bronze import open_lake
from pipelines.cli import sandboxed
from pipelines.runtime import db
from pipelines.sandbox import SandboxServer

# every test runs on one database the whole pipeline built (about 30 s: sandbox, raw, SQLMesh, Soda)
pytestmark = pytest.mark.slow

HOUR = 3_600_000
NOW = dt.datetime(2026, 3, 10, 12, 5, tzinfo=dt.UTC)  # five minutes past the hour: the newest candle is 11:00
NOW_MS = int(NOW.timestamp() * 1000)
SYMBOLS = ["BTCUSDT", "ETHUSDT"]


@pytest.fixture(scope="module")
def built(tmp_path_factory, settings_in):
    settings = settings_in(
        tmp_path_factory.mktemp("quality"),
        universe={"symbols": SYMBOLS},
        checks={"expected_market_coins": 50},
    )
    with SandboxServer(seed=3, now_ms=NOW_MS) as sandbox:
        active = sandboxed(settings, sandbox)
        ingest.ingest_ohlcv(active, days=5)
        ingest.ingest_markets(active)
        ingest.ingest_fear_greed(active)
    # the market snapshot is stamped with the real hour; align it with the sandbox clock
    execute(settings, "UPDATE raw.coingecko_markets SET snapshot_ts = %s", (NOW.replace(minute=0),))
    transform.transform(settings, execution_time=NOW)
    return settings


def execute(settings, sql, params=()):
    with db.cursor(settings) as cur:
        cur.execute(sql, params)
        return cur.fetchall() if cur.description else None


def outcomes(run: quality.CheckRun) -> dict[str, tuple[str, float | None]]:
    return {r.name: (r.outcome, r.value) for r in run.results}


def not_passing(run: dict[str, tuple[str, float | None]]) -> dict[str, tuple[str, float | None]]:
    return {name: outcome for name, outcome in run.items() if outcome[0] != "pass"}


@contextlib.contextmanager
def fault(settings, do_sql: str, undo_sql: str):
    execute(settings, do_sql)
    try:
        yield
    finally:
        execute(settings, undo_sql)


def test_clean_data_passes_every_check_and_is_recorded(built):
    run = quality.run_checks(built, now=NOW)
    assert len(run.results) == 15 + 2 + 3 + 3  # raw, silver, gold Soda checks + bronze per raw table
    assert not_passing(outcomes(run)) == {}
    stored = execute(
        built,
        "SELECT count(*), count(DISTINCT check_name) FROM ops.dq_results WHERE run_id = %s",
        (run.run_id,),
    )
    assert stored == [(len(run.results), len(run.results))]
    from soda.telemetry.soda_telemetry import SodaTelemetry

    assert SodaTelemetry.get_instance()._SodaTelemetry__send is False  # no usage statistics leave the machine
    fresh = outcomes(run)["newest closed candle is fresh (raw)"]
    assert fresh == ("pass", pytest.approx(5 * 60 + 0.001))  # the 11:00 candle closed at 11:59:59.999


def test_stale_data_fails_freshness_with_its_age(built):
    later = NOW + dt.timedelta(hours=3)
    run = outcomes(quality.run_checks(built, layers=("raw", "gold"), now=later))
    assert run["newest closed candle is fresh (raw)"] == ("fail", pytest.approx(3 * 3600 + 5 * 60 + 0.001))
    assert run["newest candle is fresh (gold)"][0] == "fail"
    assert run["market snapshot is fresh"][0] == "pass"  # 26 h allowed


def test_negative_price_fails_validity(built):
    where = "WHERE symbol = 'ETHUSDT' AND open_time = '2026-03-08 00:00+00'"
    (low,) = execute(built, f"SELECT low FROM raw.binance_klines {where}")[0]
    with fault(
        built,
        f"UPDATE raw.binance_klines SET low = -1 {where}",
        f"UPDATE raw.binance_klines SET low = {low} {where}",
    ):
        run = outcomes(quality.run_checks(built, layers=("raw",), now=NOW))
    assert run["every raw price is positive"] == ("fail", -1.0)
    assert run["raw high is at least max(open, close) and low at most min(open, close)"] == ("pass", 0.0)


def test_missing_hour_fails_completeness_and_reconciliation(built):
    row = execute(
        built, "SELECT * FROM raw.binance_klines WHERE symbol = 'BTCUSDT' ORDER BY open_time DESC LIMIT 1"
    )
    columns = [
        c[0]
        for c in execute(
            built,
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_schema = 'raw' AND table_name = 'binance_klines' "
            "ORDER BY ordinal_position",
        )
    ]
    execute(built, "DELETE FROM raw.binance_klines WHERE symbol = 'BTCUSDT' AND open_time = %s", (row[0][2],))
    try:
        # a load awaiting the transform elsewhere in the history leaves the rest compared
        with fault(
            built,
            "INSERT INTO ops.raw_changes (table_name, load_id, first_time, last_time) "
            "VALUES ('binance_klines', 'binance-x', '2020-01-01', '2020-01-31')",
            "DELETE FROM ops.raw_changes WHERE load_id = 'binance-x'",
        ):
            run = outcomes(quality.run_checks(built, layers=("raw", "silver"), now=NOW))
    finally:
        placeholders = ", ".join(["%s"] * len(columns))
        execute(
            built, f"INSERT INTO raw.binance_klines ({', '.join(columns)}) VALUES ({placeholders})", row[0]
        )
    assert run["every tracked symbol has the latest closed hour"] == ("fail", 1.0)
    assert run["raw -> silver candle counts reconcile"] == ("fail", 1.0)
    assert run["bronze rows equal raw rows per load id (binance_klines)"] == ("fail", 1.0)


def test_bronze_reconciliation_leaves_out_a_load_in_flight_but_not_a_killed_one(built):
    """A merge load half-way between raw and bronze while the check reads them (revised candles of a run on
    another worker): raw already moved one candle from an older load to it, bronze not yet. Neither the load
    nor the older one's surplus is a mismatch while its run is alive; the same state left by a killed run is."""
    [(load_id, rows)] = execute(built, "SELECT load_id, count(*) FROM raw.binance_klines GROUP BY 1")
    run_id = "binance-20260310T120000-0000live"
    where = "WHERE symbol = 'BTCUSDT' AND open_time = '2026-03-10 11:00+00'"
    name = "bronze rows equal raw rows per load id (binance_klines)"
    with (
        fault(
            built,
            f"UPDATE raw.binance_klines SET load_id = '{run_id}-rev' {where}",
            f"UPDATE raw.binance_klines SET load_id = '{load_id}' {where}",
        ),
        fault(
            built,
            "INSERT INTO ops.pipeline_runs (run_id, source, command, started_at, status) "
            f"VALUES ('{run_id}', 'binance', 'ingest', now(), 'running')",
            f"DELETE FROM ops.pipeline_runs WHERE run_id = '{run_id}'",
        ),
    ):
        with db.advisory_lock(built, f"run:{run_id}"):  # the run is alive
            live = {r.name: r for r in quality.run_checks(built, layers=("raw",), now=NOW).results}[name]
        dead = {r.name: r for r in quality.run_checks(built, layers=("raw",), now=NOW).results}[name]
    assert (live.outcome, live.value) == ("pass", 0.0)
    assert live.diagnostics["loads_in_flight"] == [f"{run_id}-rev"]
    assert live.diagnostics["awaiting_their_settle"] == [load_id]
    assert (dead.outcome, dead.value) == ("fail", 2.0)
    assert dead.diagnostics["mismatched_loads"] == {
        load_id: {"bronze": rows, "raw": rows - 1},
        f"{run_id}-rev": {"bronze": 0, "raw": 1},
    }
    assert "loads_in_flight" not in dead.diagnostics


def physical_table(settings, schema: str, model: str) -> str:
    """The table behind a model's view (SQLMesh's physical layer)."""
    definition = execute(
        settings, "SELECT definition FROM pg_views WHERE schemaname = %s AND viewname = %s", (schema, model)
    )[0][0]
    return definition.split("FROM ")[-1].strip().rstrip(";").split()[0]


def failing_audits(settings, model: str) -> list[tuple[str, int]]:
    """(audit, offending rows) of every SQLMesh audit of `model` that fails on the built data now."""
    ctx = transform.context(settings)
    snapshot = ctx.get_snapshot(model, raise_if_missing=True)
    start, end = NOW - dt.timedelta(days=10), NOW
    results = ctx.snapshot_evaluator.audit(snapshot=snapshot, snapshots=ctx.snapshots, start=start, end=end)
    return [(r.audit.name, r.count) for r in results if r.count]


def test_a_duplicate_cannot_enter_silver_the_grain_is_a_unique_index(built):
    """Each hourly model's grain is a unique index (@unique_grain): the database refuses a second row for a
    (symbol, hour), naming the key, where an audit would only find it after the write."""
    import psycopg2

    table = physical_table(built, "silver", "stg_binance__ohlcv")
    with pytest.raises(psycopg2.errors.UniqueViolation) as refused:
        execute(
            built,
            f"INSERT INTO {table} SELECT * FROM {table} WHERE symbol = 'ETHUSDT' ORDER BY open_time LIMIT 2",
        )
    assert "duplicate key value violates unique constraint" in str(refused.value)
    assert "Key (open_time, symbol)=(" in str(refused.value) and "ETHUSDT) already exists" in str(
        refused.value
    )
    assert execute(built, f"SELECT count(*) - count(DISTINCT (symbol, open_time)) FROM {table}") == [(0,)]


def test_fact_without_its_coin_fails_the_models_audit(built):
    table = physical_table(built, "gold", "fct_prices")
    where = "WHERE symbol = 'ETHUSDT' AND open_time = '2026-03-08 00:00+00'"
    (coin,) = execute(built, f"SELECT coin_id FROM {table} {where}")[0]
    with fault(
        built,
        f"UPDATE {table} SET coin_id = NULL {where}",
        f"UPDATE {table} SET coin_id = '{coin}' {where}",
    ):
        failed = failing_audits(built, "gold.fct_prices")
        run = outcomes(quality.run_checks(built, layers=("gold",), now=NOW))
    assert coin == "ethereum"
    assert failed == [("not_null", 1)]
    assert not_passing(run) == {}  # no Soda twin


def test_bronze_raw_mismatch_fails_reconciliation(built):
    lake = open_lake(built)
    files = sorted(Path(lake.root, "crypto", "binance_klines").rglob("*.parquet"))
    moved = files[0].with_name("_set_aside.parquet")  # '_' files are invisible to readers
    files[0].rename(moved)
    try:
        run = outcomes(quality.run_checks(built, layers=("raw",), now=NOW))
    finally:
        moved.rename(files[0])
    import pyarrow.parquet as pq

    lost = pq.read_metadata(files[0]).num_rows
    assert run["bronze rows equal raw rows per load id (binance_klines)"] == ("fail", float(lost))

    # the check keeps what it read in ops.bronze_index and reads again only what changed since: a file
    # rewritten in place with rows missing (a new size, a new time) is read again and caught
    check = "bronze rows equal raw rows per load id (binance_klines)"
    assert outcomes(quality.run_checks(built, layers=("raw",), now=NOW))[check] == ("pass", 0.0)
    indexed = execute(
        built, "SELECT count(DISTINCT path) FROM ops.bronze_index WHERE table_name = 'binance_klines'"
    )
    assert indexed == [(len(files),)]
    original = files[-1].read_bytes()
    whole = pq.read_table(files[-1])
    pq.write_table(whole.slice(0, whole.num_rows - 2), files[-1], compression="zstd")
    try:
        assert outcomes(quality.run_checks(built, layers=("raw",), now=NOW))[check] == ("fail", 2.0)
    finally:
        files[-1].write_bytes(original)
    assert outcomes(quality.run_checks(built, layers=("raw",), now=NOW))[check] == ("pass", 0.0)
