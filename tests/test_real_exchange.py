"""The exchange changes under the pipeline (sandbox/events.py models it on fixed dates): delisted and
migrated pairs, listings inside the window, exchange-wide outages, a single pair's halt, revised candles,
half-open windows, `verify`. Embedded Postgres + the sandbox over real HTTP; expected values are computed
from the sandbox's own series, not read back from the pipeline."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import numpy as np
import pytest

from pipelines import ingest
from pipelines.bronze import open_lake, read_bronze
from pipelines.cli import sandboxed
from pipelines.errors import UniverseError
from pipelines.runtime import db
from pipelines.sandbox import SandboxServer, events
from pipelines.sandbox.markets import klines_rows

HOUR = 3_600_000


def ms(text: str) -> int:
    return int(dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC).timestamp() * 1000)


def utc(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC)


@pytest.fixture
def sandbox():
    with SandboxServer(seed=42) as server:  # the realistic market: the default
        yield server


@pytest.fixture
def settings(make_settings, sandbox):
    fast = {"max_retries": 2, "backoff_base_s": 0.01, "backoff_max_s": 0.05, "timeout_s": 5}
    return sandboxed(make_settings(sources={"binance": fast}), sandbox)


def query(settings, sql, params=()):
    with db.cursor(settings) as cur:
        cur.execute(sql, params)
        return cur.fetchall()


def counts(settings) -> dict[str, int]:
    return dict(query(settings, "SELECT symbol, count(*) FROM raw.binance_klines GROUP BY symbol"))


@pytest.mark.slow
def test_a_delisted_pair_is_skipped_its_history_stays_and_its_successor_loads(settings, sandbox, caplog):
    from pipelines import transform

    sandbox.set_now(ms("2024-09-08T12:30"))  # MATIC trades, POL is not listed yet
    first = ingest.ingest_ohlcv(settings, days=2, symbols=["BTCUSDT", "MATICUSDT", "POLUSDT"])
    assert first.details["skipped_pairs"] == {"POLUSDT": "NOT_LISTED"}
    assert counts(settings) == {"BTCUSDT": 48, "MATICUSDT": 48}

    sandbox.set_now(
        ms("2024-09-20T00:30")
    )  # MATIC is in BREAK since 09-10 04:00, POL trades since 09-13 10:00
    caplog.clear()
    second = ingest.ingest_ohlcv(settings, symbols=["BTCUSDT", "MATICUSDT", "POLUSDT"])
    assert second.details["skipped_pairs"] == {"MATICUSDT": "BREAK"}
    warnings = [r.getMessage() for r in caplog.records if "MATICUSDT" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].startswith(  # (a JSON log setup appends the extra fields)
        "skipping MATICUSDT: status BREAK; its successor is POLUSDT; its stored history stays "
        "(remove it from universe.symbols to silence this)"
    )
    # POL starts at its first candle: nothing before its listing is fetched or called missing
    assert second.details["listed_inside_window"] == {"POLUSDT": "2024-09-13T10:00:00+00:00"}
    last_closed = ms("2024-09-19T23:00")
    btc_expected = (last_closed - ms("2024-09-06T12:00")) // HOUR + 1
    assert counts(settings) == {
        "BTCUSDT": btc_expected,
        "MATICUSDT": 48,  # history kept
        "POLUSDT": (last_closed - ms("2024-09-13T10:00")) // HOUR + 1,
    }
    assert query(settings, "SELECT count(*) FROM ops.gaps")[0][0] == 0

    sandbox.set_now(ms("2024-10-15T00:30"))  # MATIC is gone: exchangeInfo no longer lists it (-1121)
    third = ingest.ingest_ohlcv(settings, symbols=["BTCUSDT", "MATICUSDT", "POLUSDT"])
    assert third.details["skipped_pairs"] == {"MATICUSDT": "NOT_LISTED"}
    assert counts(settings)["MATICUSDT"] == 48
    history = query(
        settings,
        "SELECT status, valid_from, valid_to FROM ops.pair_status_history WHERE symbol = 'MATICUSDT' "
        "ORDER BY valid_from",
    )
    assert history == [
        ("TRADING", utc("2024-09-08T12:30"), utc("2024-09-20T00:30")),
        ("BREAK", utc("2024-09-20T00:30"), utc("2024-10-15T00:30")),
        ("NOT_LISTED", utc("2024-10-15T00:30"), None),
    ]
    pairs = query(
        settings,
        "SELECT symbol, status, first_seen_trading, last_seen_trading, first_candle, successor FROM ops.pairs "
        "ORDER BY symbol",
    )
    assert pairs == [
        ("BTCUSDT", "TRADING", utc("2024-09-08T12:30"), utc("2024-10-15T00:30"), utc("2019-01-01"), None),
        (
            "MATICUSDT",
            "NOT_LISTED",
            utc("2024-09-08T12:30"),
            utc("2024-09-08T12:30"),
            utc("2019-01-01"),
            "POLUSDT",
        ),
        (
            "POLUSDT",
            "TRADING",
            utc("2024-09-20T00:30"),
            utc("2024-10-15T00:30"),
            utc("2024-09-13T10:00"),
            None,
        ),
    ]

    # gold: the pair's life in dim_pair, and its facts kept
    ingest.ingest_markets(settings)
    ingest.ingest_fear_greed(settings)
    transform.transform(settings, execution_time=utc("2024-10-15T00:30"))
    assert query(
        settings,
        "SELECT symbol, status, is_trading, listed_from, delisted_at, successor, last_candle_stored "
        "FROM gold.dim_pair ORDER BY symbol",
    ) == [
        ("BTCUSDT", "TRADING", True, utc("2019-01-01"), None, None, utc("2024-10-14T23:00")),
        (
            "MATICUSDT",
            "NOT_LISTED",
            False,
            utc("2019-01-01"),
            utc("2024-09-08T12:00"),
            "POLUSDT",
            utc("2024-09-08T11:00"),
        ),
        ("POLUSDT", "TRADING", True, utc("2024-09-13T10:00"), None, None, utc("2024-10-14T23:00")),
    ]
    assert query(settings, "SELECT count(*) FROM gold.fct_prices WHERE symbol = 'MATICUSDT'") == [(48,)]


def test_only_when_no_requested_pair_trades_is_it_an_error(settings, sandbox):
    sandbox.set_now(ms("2025-03-01T00:30"))
    with pytest.raises(UniverseError, match=r"MATICUSDT \(NOT_LISTED\), FTMUSDT \(NOT_LISTED\)"):
        ingest.ingest_ohlcv(settings, days=1, symbols=["MATICUSDT", "FTMUSDT"])


def test_a_ten_day_window_is_half_open(settings, sandbox):
    sandbox.set_now(ms("2025-03-01T00:30"))
    summary = ingest.ingest_ohlcv(
        settings, since=utc("2025-01-01"), until=utc("2025-01-11"), symbols=["BTCUSDT", "ETHUSDT", "SOLUSDT"]
    )
    assert counts(settings) == {"BTCUSDT": 240, "ETHUSDT": 240, "SOLUSDT": 240}
    assert summary.rows_raw == 720
    newest = query(settings, "SELECT max(open_time), min(open_time) FROM raw.binance_klines")[0]
    assert newest == (utc("2025-01-10T23:00"), utc("2025-01-01T00:00"))


def test_exchange_outage_and_pair_halt_are_classified(settings, sandbox):
    sandbox.set_now(ms("2023-04-01T00:30"))
    ingest.ingest_ohlcv(
        settings, since=utc("2023-03-23"), until=utc("2023-03-26"), symbols=["BTCUSDT", "BNBUSDT", "SOLUSDT"]
    )
    assert counts(settings) == {"BTCUSDT": 71, "BNBUSDT": 71, "SOLUSDT": 71}  # 13:00 on the 24th is missing
    gaps = query(settings, "SELECT symbol, open_time, status, gap_class FROM ops.gaps ORDER BY symbol")
    assert gaps == [
        (s, utc("2023-03-24T13:00"), "known_gap", "exchange_outage")
        for s in ("BNBUSDT", "BTCUSDT", "SOLUSDT")
    ]

    sandbox.set_now(ms("2025-10-10T00:30"))
    ingest.ingest_ohlcv(
        settings, since=utc("2025-10-06"), until=utc("2025-10-09"), symbols=["BTCUSDT", "DOTUSDT"]
    )
    halted = query(
        settings,
        "SELECT open_time, gap_class FROM ops.gaps WHERE symbol = 'DOTUSDT' ORDER BY open_time",
    )
    assert halted == [(utc(f"2025-10-07T0{h}:00"), "pair_halt") for h in (5, 6, 7)]
    assert counts(settings)["DOTUSDT"] == 72 - 3


def assert_revised_in_gold(settings, revised: list[tuple[str, int]], now_ms: int) -> None:
    """Each revised candle's volume, in raw and in gold.fct_prices, is what the exchange serves at now_ms."""
    for symbol, t in revised:
        raw, gold = query(
            settings,
            "SELECT r.volume, f.volume FROM raw.binance_klines r JOIN gold.fct_prices f USING (symbol, open_time) "
            "WHERE r.symbol = %s AND r.open_time = to_timestamp(%s / 1000.0)",
            (symbol, t),
        )[0]
        assert raw == gold == Decimal(klines_rows(symbol, "1h", t, t, now_ms, seed=42)[0][5])


def _revised_between(symbol: str, lo_ms: int, hi_ms: int, seen_at: int, now: int) -> list[int]:
    """Open times in [lo, hi] that the sandbox served unrevised at seen_at and revised at now."""
    opens = np.arange(lo_ms, hi_ms + 1, HOUR, dtype=np.int64)
    closes_plus = opens + HOUR + events.REVISE_AFTER_MS
    hit = events.revised(symbol, opens, 42) & (closes_plus > seen_at) & (closes_plus <= now)
    return opens[hit].tolist()


def test_the_hourly_run_restates_revised_candles_with_a_trace(settings, sandbox):
    t0 = ms("2026-03-10T12:30")
    sandbox.set_now(t0)
    first = ingest.ingest_ohlcv(settings, days=2)
    last_closed = ms("2026-03-10T11:00")
    lo = last_closed - 47 * HOUR
    t1 = t0 + 24 * HOUR
    sandbox.set_now(t1)
    expected = {s: _revised_between(s, lo, last_closed, t0, t1) for s in ("BTCUSDT", "ETHUSDT")}
    assert {s: len(ts) for s, ts in expected.items()} == {
        "BTCUSDT": 2,
        "ETHUSDT": 3,
    }  # seed 42's, in this window

    summary = ingest.ingest_ohlcv(settings)
    revised = query(
        settings,
        "SELECT symbol, (extract(epoch FROM open_time) * 1000)::bigint, old_load_id, new_load_id, found_by, "
        "applied_at IS NOT NULL, changes FROM ops.revisions ORDER BY 1, 2",
    )
    assert [(s, t) for s, t, *_ in revised] == sorted((s, t) for s, ts in expected.items() for t in ts)
    assert {(old, new, by, applied) for _, _, old, new, by, applied, _ in revised} == {
        (first.run_id, f"{summary.run_id}-rev", "restate", True)
    }
    assert summary.details["revised"] == len(revised)
    assert all(
        set(changes) == {"volume", "quote_volume", "taker_buy_base_volume", "taker_buy_quote_volume"}
        for *_, changes in revised
    )
    # raw now equals what the exchange serves at t1, for every stored hour; bronze holds each key once
    for symbol in ("BTCUSDT", "ETHUSDT"):
        rows = klines_rows(symbol, "1h", lo, t1 // HOUR * HOUR - HOUR, t1, seed=42)
        got = query(
            settings,
            "SELECT (extract(epoch FROM open_time) * 1000)::bigint, volume, quote_volume FROM raw.binance_klines "
            "WHERE symbol = %s ORDER BY open_time",
            (symbol,),
        )
        assert got == [(r[0], Decimal(r[5]), Decimal(r[7])) for r in rows]
    bronze = read_bronze(open_lake(settings), "binance_klines")
    keys = list(zip(bronze["symbol"].to_pylist(), bronze["open_time"].to_pylist(), strict=True))
    assert len(keys) == len(set(keys)) == query(settings, "SELECT count(*) FROM raw.binance_klines")[0][0]
    by_key = dict(zip(keys, bronze["volume"].to_pylist(), strict=True))
    for symbol, t, *_ in revised:
        stored = query(
            settings,
            "SELECT open_time, volume FROM raw.binance_klines WHERE symbol = %s AND open_time = to_timestamp(%s / 1000.0)",
            (symbol, t),
        )[0]
        assert by_key[(symbol, stored[0])] == stored[1]


def test_verify_reports_exactly_the_revised_hours_and_apply_restates_them(settings, sandbox):
    t0 = ms("2026-03-10T12:30")
    sandbox.set_now(t0)
    ingest.ingest_ohlcv(settings, days=2)
    t1 = t0 + 30 * HOUR
    sandbox.set_now(t1)
    lo, hi = ms("2026-03-08T12:00"), ms("2026-03-10T11:00")
    expected = sorted((s, t) for s in ("BTCUSDT", "ETHUSDT") for t in _revised_between(s, lo, hi, t0, t1))
    assert len(expected) == 5  # seed 42 revises 2 BTC and 3 ETH hours of this window
    found = ingest.verify_klines(settings, since=utc("2026-03-08T12:00"), until=utc("2026-03-10T12:00"))
    assert sorted((s, int(at.timestamp() * 1000)) for s, at, _ in found.changed) == expected
    assert found.missing_in_raw == found.missing_on_exchange == []
    assert query(settings, "SELECT count(*) FROM ops.revisions")[0][0] == 0  # a report changes nothing

    applied = ingest.verify_klines(
        settings, since=utc("2026-03-08T12:00"), until=utc("2026-03-10T12:00"), apply=True
    )
    assert applied.details["revised"] == len(expected)
    got = query(
        settings,
        "SELECT symbol, (extract(epoch FROM open_time) * 1000)::bigint, found_by FROM ops.revisions ORDER BY 1, 2",
    )
    assert got == [(s, t, "verify") for s, t in expected]
    again = ingest.verify_klines(settings, since=utc("2026-03-08T12:00"), until=utc("2026-03-10T12:00"))
    assert again.changed == []


@pytest.mark.slow
def test_gold_knows_the_outage_and_restates_revised_candles(settings, sandbox):
    from pipelines import quality, transform

    symbols = ["BTCUSDT", "BNBUSDT", "SOLUSDT"]
    t0 = ms("2023-03-26T00:30")
    sandbox.set_now(t0)
    ingest.ingest_ohlcv(settings, since=utc("2023-03-23"), until=utc("2023-03-26"), symbols=symbols)
    ingest.ingest_markets(settings)
    ingest.ingest_fear_greed(settings)
    transform.transform(settings, execution_time=utc("2023-03-26T00:30"))
    days = query(
        settings,
        "SELECT day::text, count(*), min(candles), max(candles) FROM gold.fct_daily_summary GROUP BY day ORDER BY day",
    )
    assert days == [("2023-03-23", 3, 24, 24), ("2023-03-24", 3, 23, 23), ("2023-03-25", 3, 24, 24)]
    checks = quality.run_checks(settings, ("gold",), now=utc("2023-03-26T00:30"))
    outcome = {r.name: r.outcome for r in checks.results}
    assert outcome["24 candles per symbol per closed UTC day (known exchange gaps excepted)"] == "pass"

    t1 = t0 + 24 * HOUR  # revisions of the stored hours appear; the hourly run restates them
    sandbox.set_now(t1)
    expected = sorted(
        (s, t)
        for s in symbols
        for t in _revised_between(s, ms("2023-03-25T00:00"), ms("2023-03-25T23:00"), t0, t1)
        if t >= t1 // HOUR * HOUR - 48 * HOUR  # inside the trailing restate window
    )
    assert len(expected) == 8  # seed 42 revises 2 BNB, 3 BTC and 3 SOL hours of that day
    summary = ingest.ingest_ohlcv(settings, symbols=symbols)
    assert summary.details["revised"] == len(expected)
    transform.transform(settings, execution_time=dt.datetime.fromtimestamp(t1 / 1000, dt.UTC))
    assert_revised_in_gold(settings, expected, t1)


@pytest.mark.slow
def test_verify_apply_restates_gold_beyond_the_restate_window(settings, sandbox, capsys):
    """Revisions older than the hourly run's 48 h are found only by `cryptoflow verify`; --apply restates raw,
    bronze and the affected gold intervals (SQLMesh restatement), through the CLI."""
    import yaml

    from pipelines import cli, transform

    symbols = ["BTCUSDT", "ETHUSDT"]
    t0 = ms("2026-03-10T12:30")
    sandbox.set_now(t0)
    ingest.ingest_ohlcv(settings, days=2, symbols=symbols)
    ingest.ingest_markets(settings)
    ingest.ingest_fear_greed(settings)
    transform.transform(settings, execution_time=utc("2026-03-10T12:30"))
    t1 = t0 + 72 * HOUR  # every stored hour is now out of the trailing restate window
    sandbox.set_now(t1)
    expected = sorted(
        (s, t)
        for s in symbols
        for t in _revised_between(s, ms("2026-03-08T12:00"), ms("2026-03-10T11:00"), t0, t1)
    )
    assert len(expected) == 5  # seed 42 revises 2 BTC and 3 ETH hours of this window
    config = settings.project_dir / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "universe": {"mode": "pinned", "symbols": symbols},
                "database": {
                    "embedded_dir": str(settings.path(settings.database.embedded_dir)),
                    "name": settings.database.name,
                },
                "storage": {"bronze_url": settings.storage.bronze_url},
                "sources": {
                    "binance": {"base_url": sandbox.binance_url},
                    "coingecko": {"base_url": sandbox.coingecko_url},
                    "fear_greed": {"base_url": sandbox.fear_greed_url},
                },
            }
        )
    )
    window = ["--since", "2026-03-08T12:00", "--until", "2026-03-10T12:00"]
    assert cli.main(["--config", str(config), "verify", *window]) == 0
    report = capsys.readouterr().out
    assert f"{len(expected)} changed, 0 missing in raw, 0 missing on the exchange" in report
    assert "run again with --apply" in report
    assert cli.main(["--config", str(config), "verify", *window, "--apply"]) == 0
    assert "gold restated" in capsys.readouterr().out
    assert_revised_in_gold(settings, expected, t1)
    assert query(settings, "SELECT DISTINCT found_by FROM ops.revisions") == [("verify",)]


def test_a_status_change_at_the_open_rows_own_instant_rewrites_it(make_settings):
    """A frozen clock (or two runs inside one ms) sees TRADING then BREAK at the same server time: the open
    row takes the newer status instead of Postgres refusing the statement; a later change closes it."""
    from pipelines.ingest import lifecycle
    from pipelines.sources.binance.helpers import ExchangeInfo

    settings = make_settings()
    db.ensure_database(settings)
    at = ms("2024-09-10T04:00")

    def seen(status: str, server_ms: int) -> None:
        info = ExchangeInfo(server_ms, frozenset(), None, {"AUSDT": status})
        lifecycle.record_statuses(settings, info, ["AUSDT"], "run")

    seen("TRADING", at)
    seen("BREAK", at)
    seen("BREAK", at)
    seen("TRADING", at + HOUR)
    assert query(
        settings, "SELECT status, valid_from, valid_to FROM ops.pair_status_history ORDER BY valid_from"
    ) == [
        ("BREAK", utc("2024-09-10T04:00"), utc("2024-09-10T05:00")),
        ("TRADING", utc("2024-09-10T05:00"), None),
    ]
    assert query(settings, "SELECT status, status_since FROM ops.pairs") == [
        ("TRADING", utc("2024-09-10T05:00"))
    ]


def test_a_ctrl_c_while_the_database_goes_away_stays_a_ctrl_c_and_the_next_run_finishes(
    settings, sandbox, monkeypatch, caplog
):
    """The revision load is interrupted just as the database becomes unreachable: the cleanup cannot settle
    anything, and must say so instead of raising its own error over the Ctrl-C. The next run (database
    back) recovers the abandoned run and ends exact."""
    import dlt

    t0, t1 = ms("2026-03-10T12:30"), ms("2026-03-11T12:30")
    sandbox.set_now(t0)
    ingest.ingest_ohlcv(settings, days=2)
    sandbox.set_now(t1)
    embedded_url, loads = settings.database.url, []
    original_load = dlt.Pipeline.load

    def load(self, *args, **kwargs):
        loads.append(self.pipeline_name)
        if len(loads) == 2:  # the run's second load: the revised candles (the new ones came first)
            settings.database.url = "postgresql://nobody@127.0.0.1:9/gone"
            raise KeyboardInterrupt
        return original_load(self, *args, **kwargs)

    monkeypatch.setattr(dlt.Pipeline, "load", load)
    with pytest.raises(KeyboardInterrupt):
        ingest.ingest_ohlcv(settings)
    messages = [r.getMessage() for r in caplog.records]
    # bronze: raw could not be asked whether the load committed; the revisions: could not be settled
    assert "could not tell whether the raw load committed; bronze left as written" in messages
    assert [m for m in messages if "while handling an earlier error" in m] == [
        "settling the revisions failed while handling an earlier error; the next run finishes it"
    ]
    monkeypatch.setattr(dlt.Pipeline, "load", original_load)
    settings.database.url = embedded_url

    rerun = ingest.ingest_ohlcv(settings)
    hours = (ms("2026-03-08T12:00"), ms("2026-03-10T11:00"))  # what the first run stored
    expected = [t for s in ("BTCUSDT", "ETHUSDT") for t in _revised_between(s, *hours, t0, t1)]
    assert rerun.details["revised"] == len(expected) == 5
    for symbol in ("BTCUSDT", "ETHUSDT"):
        rows = klines_rows(symbol, "1h", ms("2026-03-08T12:00"), ms("2026-03-11T11:00"), t1, seed=42)
        got = query(
            settings,
            "SELECT (extract(epoch FROM open_time) * 1000)::bigint, volume FROM raw.binance_klines "
            "WHERE symbol = %s ORDER BY open_time",
            (symbol,),
        )
        assert got == [(r[0], Decimal(r[5])) for r in rows]
    assert query(settings, "SELECT DISTINCT new_load_id, applied_at IS NOT NULL FROM ops.revisions") == [
        (f"{rerun.run_id}-rev", True)
    ]
    bronze = read_bronze(open_lake(settings), "binance_klines")
    raw = query(settings, "SELECT symbol, open_time, load_id FROM raw.binance_klines ORDER BY 1, 2")
    assert (
        sorted(
            zip(
                bronze["symbol"].to_pylist(),
                bronze["open_time"].to_pylist(),
                bronze["load_id"].to_pylist(),
                strict=True,
            )
        )
        == raw
    )


def test_a_window_from_before_the_exchange_existed_starts_each_pair_at_its_first_candle(
    settings, sandbox, caplog
):
    """`--since 2017-01-01` (or the DAG's days=100000) for a pair listed in 2024: nothing before its first
    candle is fetched or recorded as a gap, and the run says where the pair starts."""
    sandbox.set_now(ms("2024-09-14T00:30"))  # POL trades since 2024-09-13 10:00
    summary = ingest.ingest_ohlcv(settings, symbols=["POLUSDT"], since=utc("2017-01-01T00:00"))
    assert summary.details["listed_inside_window"] == {"POLUSDT": "2024-09-13T10:00:00+00:00"}
    assert counts(settings) == {"POLUSDT": 14}  # 10:00 .. 23:00
    assert query(settings, "SELECT count(*) FROM ops.gaps") == [(0,)]
    assert any(
        r.getMessage().startswith(
            "POLUSDT starts at its first candle on the exchange, 2024-09-13T10:00:00+00:00"
        )
        for r in caplog.records
    )
