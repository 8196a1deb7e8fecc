"""End to end on the embedded Postgres + the sandbox over real HTTP: exact rows, idempotence, faults."""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal

import pyarrow.compute as pc
import pytest

from pipelines import ingest
from pipelines.bronze import open_lake, read_bronze
from pipelines.cli import sandboxed
from pipelines.errors import UniverseError
from pipelines.http import ApiBanned, ApiError
from pipelines.ingest.markets import coingecko_client
from pipelines.runtime import db
from pipelines.sandbox import SandboxServer
from pipelines.sandbox.markets import COINS, klines_rows
from pipelines.sources.binance.helpers import fetch_exchange_info
from pipelines.sources.coingecko.helpers import fetch_markets

HOUR = 3_600_000
# A fixed sandbox clock, 30 minutes into an hour: the newest bar is open and must not be stored.
NOW = dt.datetime(2026, 3, 10, 12, 30, tzinfo=dt.UTC)
NOW_MS = int(NOW.timestamp() * 1000)
LAST_CLOSED = NOW_MS // HOUR * HOUR - HOUR


@pytest.fixture
def sandbox():
    # calm: these tests are about the mechanics; tests/test_real_exchange.py meets the unkind market
    with SandboxServer(seed=42, now_ms=NOW_MS, calm=True) as server:
        yield server


@pytest.fixture
def settings(make_settings, sandbox):
    fast_retries = {"max_retries": 4, "backoff_base_s": 0.01, "backoff_max_s": 0.05, "timeout_s": 2}
    return sandboxed(make_settings(sources={"binance": fast_retries}), sandbox)


def query(settings, sql, params=()):
    with db.cursor(settings) as cur:
        cur.execute(sql, params)
        return cur.fetchall()


def klines_count(settings, symbol=None):
    if symbol:
        return query(settings, "SELECT count(*) FROM raw.binance_klines WHERE symbol = %s", (symbol,))[0][0]
    return query(settings, "SELECT count(*) FROM raw.binance_klines")[0][0]


def bronze_keys(settings):
    table = read_bronze(open_lake(settings), "binance_klines")
    ms = pc.cast(pc.cast(table["open_time"], "timestamp[ms]"), "int64").to_pylist()
    return list(zip(table["symbol"].to_pylist(), ms, table["load_id"].to_pylist(), strict=True))


def test_backfill_exact_rows_in_raw_and_bronze(settings):
    summary = ingest.ingest_ohlcv(settings, days=3)
    assert summary.rows_raw == 2 * 3 * 24 == 144
    assert klines_count(settings) == 144
    first = LAST_CLOSED - (3 * 24 - 1) * HOUR
    hours = query(
        settings,
        "SELECT symbol, min(open_time), max(open_time), count(DISTINCT open_time) FROM raw.binance_klines "
        "GROUP BY symbol ORDER BY symbol",
    )
    for symbol, lo, hi, n in hours:
        assert (int(lo.timestamp() * 1000), int(hi.timestamp() * 1000), n) == (first, LAST_CLOSED, 72), symbol

    # values equal the sandbox's own series, computed without HTTP
    expected = klines_rows("ETHUSDT", "1h", first, LAST_CLOSED, NOW_MS, seed=42, calm=True)
    got = query(
        settings,
        "SELECT open, high, low, close, volume, quote_volume, trades FROM raw.binance_klines "
        "WHERE symbol = 'ETHUSDT' ORDER BY open_time",
    )
    assert got == [
        (Decimal(r[1]), Decimal(r[2]), Decimal(r[3]), Decimal(r[4]), Decimal(r[5]), Decimal(r[7]), r[8])
        for r in expected
    ]

    # bronze: the same keys, the same load id, partitioned by the candle's own UTC date
    keys = bronze_keys(settings)
    raw_keys = query(
        settings,
        "SELECT symbol, (extract(epoch FROM open_time) * 1000)::bigint, load_id FROM raw.binance_klines",
    )
    assert sorted(keys) == sorted(raw_keys)
    assert {k[2] for k in keys} == {summary.run_id}
    lake = open_lake(settings)
    files = sorted(p.relative_to(lake.root).as_posix() for p in _files(lake.root))
    assert re.fullmatch(
        rf"crypto/binance_klines/year=2026/month=03/day=07/{summary.run_id}-\d+\.parquet", files[0]
    )
    assert all(
        re.fullmatch(r"crypto/binance_klines/year=\d{4}/month=\d\d/day=\d\d/[\w-]+\.parquet", f)
        for f in files
    )
    assert len(files) == 4  # 72 hours ending 11:00 on the 10th span the 7th..10th

    run = query(
        settings,
        "SELECT status, rows_raw, rows_bronze, dead_letters, window_start, window_end FROM ops.pipeline_runs "
        "WHERE run_id = %s",
        (summary.run_id,),
    )[0]
    assert run[:4] == ("success", 144, 144, 0)
    assert int(run[5].timestamp() * 1000) == LAST_CLOSED


def _files(root):
    from pathlib import Path

    return [p for p in Path(root).rglob("*.parquet")]


def test_rerun_adds_nothing_and_incremental_adds_exactly_the_new_hours(settings, sandbox):
    first = ingest.ingest_ohlcv(settings, days=2)
    again = ingest.ingest_ohlcv(settings, days=2)
    # a window over stored hours is compared with raw: nothing changed, so nothing is rewritten
    assert (first.rows_raw, again.rows_raw, again.details["unchanged"]) == (96, 0, 96)
    assert klines_count(settings) == 96
    assert len(bronze_keys(settings)) == 96  # no duplicates
    assert query(settings, "SELECT DISTINCT load_id FROM raw.binance_klines")[0][0] == first.run_id
    assert {k[2] for k in bronze_keys(settings)} == {first.run_id}

    nothing = ingest.ingest_ohlcv(settings)  # re-fetches the trailing 48 hours (restate_hours)
    assert (nothing.rows_raw, nothing.details["unchanged"], nothing.details["revised"]) == (0, 96, 0)

    sandbox.set_now(NOW_MS + 3 * HOUR)
    later = ingest.ingest_ohlcv(settings)
    assert later.rows_raw == 2 * 3 and later.details["unchanged"] == 2 * 45
    assert klines_count(settings) == 96 + 6
    assert len(bronze_keys(settings)) == 102
    newest = query(settings, "SELECT max(open_time) FROM raw.binance_klines")[0][0]
    assert int(newest.timestamp() * 1000) == LAST_CLOSED + 3 * HOUR


def test_lagging_symbol_catches_up_without_gaps(settings, sandbox):
    ingest.ingest_ohlcv(settings, days=1, symbols=["BTCUSDT", "ETHUSDT"])
    sandbox.set_now(NOW_MS + 5 * HOUR)
    ingest.ingest_ohlcv(settings, symbols=["BTCUSDT"])  # ETH falls 5 hours behind
    assert klines_count(settings, "BTCUSDT") == 29 and klines_count(settings, "ETHUSDT") == 24
    sandbox.set_now(NOW_MS + 6 * HOUR)
    summary = ingest.ingest_ohlcv(settings)
    assert summary.rows_raw == 1 + 6
    assert klines_count(settings, "BTCUSDT") == klines_count(settings, "ETHUSDT") == 30
    assert query(settings, "SELECT count(*) FROM ops.gaps")[0][0] == 0


def test_bad_rows_land_in_dead_letter_with_reasons(settings, sandbox):
    sandbox.set_fault("klines", "invalid_rows", symbol="ETHUSDT", every=7)
    first = LAST_CLOSED - 47 * HOUR
    corrupted = [ms for ms in range(first, LAST_CLOSED + 1, HOUR) if (ms // HOUR) % 7 == 0]
    summary = ingest.ingest_ohlcv(settings, days=2)
    kinds = {0: "non-positive open", 1: "high < low", 2: "non-numeric close: 'abc'"}
    expected = sorted((f"ETHUSDT@{ms}", kinds[(ms // HOUR) % 3]) for ms in corrupted)
    letters = query(
        settings,
        "SELECT natural_key, reason, source, table_name, load_id FROM raw.dead_letter ORDER BY natural_key",
    )
    assert [(k, r) for k, r, *_ in letters] == expected
    assert len(expected) == 7
    assert {(s, t, lid) for _, _, s, t, lid in letters} == {("binance", "binance_klines", summary.run_id)}
    assert klines_count(settings) == 96 - len(expected)
    assert summary.dead_letters == len(expected)
    # the rejected hours are gaps the exchange does have: re-fetched once (still bad) and kept as known gaps
    assert query(settings, "SELECT count(*) FROM ops.gaps WHERE status = 'known_gap'")[0][0] == len(expected)


def test_rate_limit_429_waits_and_succeeds(settings, sandbox):
    sandbox.set_fault("klines", "429", times=2, retry_after=1)
    summary = ingest.ingest_ohlcv(settings, days=1)
    assert summary.rows_raw == 48
    run = query(
        settings, "SELECT rate_limited, retries FROM ops.pipeline_runs WHERE run_id = %s", (summary.run_id,)
    )
    assert run == [(2, 2)]  # each 429 answered once, each retried once


def test_ban_418_fails_clearly_and_writes_nothing(settings, sandbox):
    ingest.ingest_ohlcv(settings, days=1)
    before_raw, before_bronze = klines_count(settings), sorted(bronze_keys(settings))
    sandbox.set_now(NOW_MS + 2 * HOUR)
    sandbox.set_fault("klines", "418", symbol="ETHUSDT")
    with pytest.raises(ApiBanned, match=r"IP banned by the API \(HTTP 418\); stopping without retry"):
        ingest.ingest_ohlcv(settings)
    assert klines_count(settings) == before_raw  # BTC's new hours were not half-written either
    assert sorted(bronze_keys(settings)) == before_bronze
    assert ingest.klines_cursors(settings) == {
        "BTCUSDT": LAST_CLOSED,
        "ETHUSDT": LAST_CLOSED,
    }
    failed = query(settings, "SELECT status, error FROM ops.pipeline_runs ORDER BY started_at DESC LIMIT 1")[
        0
    ]
    assert failed[0] == "failed" and "HTTP 418" in failed[1]
    sandbox.clear_faults()
    assert ingest.ingest_ohlcv(settings).rows_raw == 4


def test_5xx_storm_is_retried_and_succeeds(settings, sandbox):
    sandbox.set_fault("klines", "500", times=1)
    sandbox.set_fault("klines", "502", times=1)
    sandbox.set_fault("klines", "503", times=1)
    summary = ingest.ingest_ohlcv(settings, days=1)
    assert summary.rows_raw == 48
    retries = query(settings, "SELECT retries FROM ops.pipeline_runs WHERE run_id = %s", (summary.run_id,))[
        0
    ][0]
    assert retries == 3


def test_truncated_json_is_retried(settings, sandbox):
    sandbox.set_fault("klines", "truncated", times=1)
    assert ingest.ingest_ohlcv(settings, days=1).rows_raw == 48


def test_missing_hours_become_known_gaps_after_one_refetch(settings, sandbox):
    outage_start = LAST_CLOSED - 10 * HOUR
    sandbox.set_fault(
        "klines", "missing_hours", symbol="BTCUSDT", start_ms=outage_start, end_ms=outage_start + 2 * HOUR
    )
    summary = ingest.ingest_ohlcv(settings, days=1)
    assert klines_count(settings, "BTCUSDT") == 21 and klines_count(settings, "ETHUSDT") == 24
    gaps = query(settings, "SELECT symbol, open_time, status FROM ops.gaps ORDER BY open_time")
    assert [(s, int(t.timestamp() * 1000), st) for s, t, st in gaps] == [
        ("BTCUSDT", outage_start + i * HOUR, "known_gap") for i in range(3)
    ]
    assert summary.details["known_gaps"] == 3
    # the exchange later serves the hours: an explicit backfill fills them
    sandbox.clear_faults()
    ingest.ingest_ohlcv(settings, days=1)
    assert klines_count(settings, "BTCUSDT") == 24


def test_duplicate_rows_from_the_api_are_stored_once(settings, sandbox):
    sandbox.set_fault("klines", "duplicate_rows")
    summary = ingest.ingest_ohlcv(settings, days=1)
    assert klines_count(settings) == 48
    assert summary.details["duplicates_dropped"] == 48


def test_unknown_symbol_is_a_clear_error(settings, caplog):
    # one pair that does not trade is skipped with a warning; the others load
    summary = ingest.ingest_ohlcv(settings, days=1, symbols=["BTCUSDT", "NOPEUSDT"])
    assert summary.rows_raw == 24 and summary.details["skipped_pairs"] == {"NOPEUSDT": "NOT_LISTED"}
    warnings = [r.getMessage() for r in caplog.records if "NOPEUSDT" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].startswith(  # (a JSON log setup appends the extra fields)
        "skipping NOPEUSDT: not on the exchange (-1121 Invalid symbol); its stored history stays "
        "(remove it from universe.symbols to silence this)"
    )
    with pytest.raises(UniverseError, match=r"none of the requested pairs trades.*NOPEUSDT \(NOT_LISTED\)"):
        ingest.ingest_ohlcv(settings, days=1, symbols=["NOPEUSDT"])
    with pytest.raises(ValueError, match="invalid symbol 'btc'"):
        ingest.ingest_ohlcv(settings, days=1, symbols=["btc"])


def test_concurrent_run_exits_with_a_clear_message(settings):
    db.ensure_database(settings)
    with (
        db.advisory_lock(settings, "ingest:binance"),
        pytest.raises(db.LockBusy, match="another 'ingest:binance' run is in progress"),
    ):
        ingest.ingest_ohlcv(settings, days=1)
    assert ingest.ingest_ohlcv(settings, days=1).rows_raw == 48


@pytest.mark.slow
def test_markets_and_fear_greed(settings):
    markets = ingest.ingest_markets(settings)
    # the sandbox lists its whole catalogue (stablecoins too): fewer coins than the 100 a snapshot asks for
    assert markets.rows_raw == markets.rows_bronze == len(COINS) == 71
    again = ingest.ingest_markets(settings)
    assert query(settings, "SELECT count(*) FROM raw.coingecko_markets")[0][0] == again.rows_raw

    full = ingest.ingest_fear_greed(settings)
    assert full.details["limit"] == 0
    start = dt.date(2018, 2, 1)
    all_days = (NOW.date() - start).days + 1
    missing = 4  # 2018-04-14..16 and 2024-10-26 are missing in the API's history too
    assert full.rows_raw == all_days - missing
    labels = query(settings, "SELECT DISTINCT value_classification FROM raw.fear_greed ORDER BY 1")
    assert [x[0] for x in labels] == ["Extreme Fear", "Extreme Greed", "Fear", "Greed", "Neutral"]
    # the next run asks for the days since the newest stored value (NOW's day, by the real clock) + 2
    newest = dt.datetime.combine(NOW.date(), dt.time(), dt.UTC)
    before = (dt.datetime.now(dt.UTC) - newest).days + 2
    incremental = ingest.ingest_fear_greed(settings)
    after = (dt.datetime.now(dt.UTC) - newest).days + 2
    assert incremental.details["limit"] in {before, after}
    assert incremental.rows_raw == min(incremental.details["limit"], all_days - missing)
    assert query(settings, "SELECT count(*) FROM raw.fear_greed")[0][0] == all_days - missing


def test_database_down_is_a_clear_error(make_settings):
    bad = make_settings(database={"url": "postgresql://u:pw@127.0.0.1:1/x"})
    with pytest.raises(db.DatabaseUnavailable) as info:
        ingest.ingest_ohlcv(bad, days=1)
    assert "cannot connect to Postgres at postgresql://u:***@127.0.0.1:1/x" in str(info.value)
    assert "pw@" not in str(info.value)


def test_top_n_universe_maps_coingecko_to_trading_pairs_without_stablecoins(make_settings, sandbox):
    settings = sandboxed(make_settings(universe={"mode": "top_n", "top_n": 5, "symbols": []}), sandbox)
    db.ensure_database(settings)  # the client reserves request weight in the budget the database shares
    client = ingest.binance_client(settings)
    info = fetch_exchange_info(client)
    chosen = ingest.resolve_universe(settings, info)
    markets = fetch_markets(coingecko_client(settings), 20)
    expected = [
        f"{c['symbol'].upper()}USDT"
        for c in markets
        if c["symbol"].upper() not in {"USDT", "USDC", "DAI"} and f"{c['symbol'].upper()}USDT" in info.trading
    ][:5]
    assert chosen == expected and len(chosen) == 5
    assert not {"USDTUSDT", "USDCUSDT", "DAIUSDT"} & set(chosen)


def test_region_block_451_stops_without_retry(settings, sandbox):
    sandbox.set_fault("klines", "451")
    with pytest.raises(ApiBanned, match=r"region blocked by the API \(HTTP 451\)"):
        ingest.ingest_ohlcv(settings, days=1)
    assert ingest.klines_cursors(settings) == {}


def test_gaps_in_two_distant_pages_of_one_pair_are_only_those_hours(settings, sandbox):
    """Two short 1000-hour pages far apart: the complete pages between them are not gaps."""
    first, second = LAST_CLOSED - 2500 * HOUR, LAST_CLOSED - 100 * HOUR
    sandbox.set_fault("klines", "missing_hours", symbol="ETHUSDT", start_ms=first, end_ms=first)
    sandbox.set_fault("klines", "missing_hours", start_ms=second, end_ms=second + HOUR)  # every pair
    summary = ingest.ingest_ohlcv(settings, days=120)
    gaps = query(
        settings,
        "SELECT symbol, (extract(epoch FROM open_time) * 1000)::bigint, status, gap_class FROM ops.gaps",
    )
    assert sorted(gaps) == [
        ("BTCUSDT", second, "known_gap", "exchange_outage"),
        ("BTCUSDT", second + HOUR, "known_gap", "exchange_outage"),
        ("ETHUSDT", first, "known_gap", "pair_halt"),
        ("ETHUSDT", second, "known_gap", "exchange_outage"),
        ("ETHUSDT", second + HOUR, "known_gap", "exchange_outage"),
    ]
    assert summary.rows_raw == 2 * 120 * 24 - 5 and "refetched_rows" in summary.details


def test_a_retry_after_longer_than_the_cap_fails_at_once(settings, sandbox):
    sandbox.set_fault("klines", "429", retry_after=86400)
    with pytest.raises(
        ApiError, match=r"Retry-After 86400 s, more than sources.binance.max_retry_after_s \(120 s\)"
    ):
        ingest.ingest_ohlcv(settings, days=1)
    assert ingest.count_rows(settings, "binance_klines") == 0  # nothing written (not even the table)
    sandbox.clear_faults()
    assert ingest.ingest_ohlcv(settings, days=1).rows_raw == 48


@pytest.mark.slow
def test_a_slow_drip_server_is_cut_at_the_request_deadline_and_retried(make_settings, sandbox):
    """Each chunk arrives well within timeout_s, so only a total deadline stops the request: the dripping
    answer is abandoned, the retry gets the normal one, and the rows are exact."""
    bounded = {"max_retries": 2, "backoff_base_s": 0.01, "timeout_s": 5, "request_deadline_s": 1}
    settings = sandboxed(make_settings(sources={"binance": bounded}), sandbox)
    sandbox.set_fault("klines", "drip", times=1, every_s=0.2, chunk=16)  # a ~6 kB page: ~70 s if let be
    summary = ingest.ingest_ohlcv(settings, days=1, symbols=["BTCUSDT"])
    assert summary.rows_raw == 24 and klines_count(settings, "BTCUSDT") == 24
    run = query(settings, "SELECT retries FROM ops.pipeline_runs WHERE run_id = %s", (summary.run_id,))
    assert run == [(1,)]

    sandbox.set_fault("klines", "drip", every_s=0.2, chunk=16)  # every answer: past the retries
    sandbox.set_now(sandbox.now() + 3 * HOUR)
    with pytest.raises(
        ApiError,
        match=r"giving up on /api/v3/klines after 3 attempts; last problem: "
        r"DeadlinePassed: /api/v3/klines: the response was still arriving after "
        r"request_deadline_s \(1 s\)",
    ):
        ingest.ingest_ohlcv(settings, symbols=["BTCUSDT"])
    assert klines_count(settings, "BTCUSDT") == 24  # what was loaded stays


def test_a_response_larger_than_the_limit_fails_clearly_without_retry(make_settings, sandbox):
    settings = sandboxed(make_settings(sources={"binance": {"max_response_mb": 0.5}}), sandbox)
    sandbox.set_fault("klines", "oversized", bytes=3 * 2**20)
    with pytest.raises(
        ApiError,
        match=r"binance: the response to /api/v3/klines is larger than sources.binance.max_response_mb \(0.5 MB\)",
    ):
        ingest.ingest_ohlcv(settings, days=1, symbols=["BTCUSDT"])
    assert ingest.count_rows(settings, "binance_klines") == 0
    assert query(settings, "SELECT status, retries FROM ops.pipeline_runs") == [("failed", 0)]  # no retry


def test_a_candle_before_the_requested_start_is_dropped_and_counted(settings, sandbox):
    """A server that rounds startTime down returns a stored candle (at or before the cursor) with every
    page: kept, it would hit the unique index on this and every later run."""
    ingest.ingest_ohlcv(settings, days=1)
    sandbox.set_fault("klines", "early_bar")
    for hour in (1, 2):
        sandbox.set_now(NOW_MS + hour * HOUR)
        summary = ingest.ingest_ohlcv(settings)
        assert summary.details["outside_window_dropped"] == 2  # one per pair's page
        assert summary.rows_raw == 2  # the new hour of each pair
    for symbol in ("BTCUSDT", "ETHUSDT"):
        assert klines_count(settings, symbol) == 26
    assert query(
        settings, "SELECT count(*) - count(DISTINCT (symbol, open_time)) FROM raw.binance_klines"
    ) == [(0,)]
