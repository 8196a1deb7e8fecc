"""Pair lifecycle: which configured pairs trade, their status history (SCD2), listing dates, successors.

Pairs list, halt, delist and migrate (MATICUSDT -> POLUSDT, FTMUSDT -> SUSDT). A pair that does not trade is
skipped with one warning and never stops the others; its history stays. Every run records what exchangeInfo
said about each pair it knows, so the warehouse keeps when each pair traded and when it stopped.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

from pipelines.errors import UniverseError
from pipelines.http import ApiClient
from pipelines.runtime import db
from pipelines.settings import Settings
from pipelines.sources.binance.helpers import ExchangeInfo, first_candle_ms

log = logging.getLogger(__name__)
NOT_LISTED = "NOT_LISTED"  # absent from exchangeInfo: klines answer -1121 (removed, or never listed)


@dataclass(frozen=True)
class Pairs:
    """The requested pairs split by what the exchange says now."""

    trading: list[str]
    skipped: dict[str, str]  # symbol -> its status (BREAK, NOT_LISTED, ...)


def split_by_status(requested: list[str], info: ExchangeInfo) -> Pairs:
    trading = [s for s in requested if s in info.trading]
    skipped = {s: info.statuses.get(s, NOT_LISTED) for s in requested if s not in info.trading}
    return Pairs(trading, skipped)


def warn_skipped(settings: Settings, pairs: Pairs) -> None:
    """One warning per skipped pair, naming its status and its successor when known."""
    successors = settings.universe.successors
    for symbol, state in pairs.skipped.items():
        hint = f"; its successor is {successors[symbol]}" if symbol in successors else ""
        why = "not on the exchange (-1121 Invalid symbol)" if state == NOT_LISTED else f"status {state}"
        log.warning(
            f"skipping {symbol}: {why}{hint}; its stored history stays (remove it from universe.symbols "
            "to silence this)",
            extra={"symbol": symbol, "status": state},
        )


def require_some_trading(pairs: Pairs) -> None:
    if not pairs.trading:
        listed = ", ".join(f"{s} ({state})" for s, state in pairs.skipped.items())
        raise UniverseError(
            f"none of the requested pairs trades on Binance: {listed}; check universe.symbols (or --symbols) "
            "for typos or delisted pairs (universe.successors names replacements), or use universe.mode: top_n"
        )


def record_statuses(settings: Settings, info: ExchangeInfo, symbols: list[str], run_id: str) -> None:
    """Update ops.pairs and the SCD2 history ops.pair_status_history for these symbols and every pair
    recorded before, as of the exchange's clock."""
    seen_at = dt.datetime.fromtimestamp(info.server_time_ms / 1000, dt.UTC)
    successors = settings.universe.successors
    with db.cursor(settings) as cur:
        cur.execute("SELECT symbol FROM ops.pairs")
        known = [s for (s,) in cur.fetchall()]
        # in one order for every run: backfills of other pairs recording at the same time never deadlock
        everyone = sorted({*symbols, *known})
        rows = [(s, info.statuses.get(s, NOT_LISTED), successors.get(s)) for s in everyone]
        cur.execute(
            """
            WITH seen AS (
                SELECT * FROM unnest(%(symbols)s::text[], %(statuses)s::text[], %(successors)s::text[])
                    AS t(symbol, status, successor)
            ), closed AS (  -- a status that changed: close its history row
                UPDATE ops.pair_status_history h SET valid_to = %(at)s
                FROM seen s
                WHERE h.symbol = s.symbol AND h.valid_to IS NULL AND h.status <> s.status
                RETURNING h.symbol
            )
            INSERT INTO ops.pair_status_history (symbol, status, valid_from, run_id)
            SELECT s.symbol, s.status, %(at)s, %(run)s FROM seen s
            WHERE NOT EXISTS (SELECT 1 FROM ops.pair_status_history h
                              WHERE h.symbol = s.symbol AND h.valid_to IS NULL AND h.status = s.status)
            ON CONFLICT (symbol, valid_from) DO UPDATE SET status = EXCLUDED.status
            """,
            {
                "symbols": [r[0] for r in rows],
                "statuses": [r[1] for r in rows],
                "successors": [r[2] for r in rows],
                "at": seen_at,
                "run": run_id,
            },
        )
        cur.execute(
            """
            INSERT INTO ops.pairs AS p (symbol, status, status_since, first_seen_trading, last_seen_trading,
                                        successor, updated_at)
            SELECT t.symbol, t.status, %(at)s,
                   CASE WHEN t.status = 'TRADING' THEN %(at)s::timestamptz END,
                   CASE WHEN t.status = 'TRADING' THEN %(at)s::timestamptz END, t.successor, now()
            FROM unnest(%(symbols)s::text[], %(statuses)s::text[], %(successors)s::text[])
                AS t(symbol, status, successor)
            ON CONFLICT (symbol) DO UPDATE SET
                status_since = CASE WHEN p.status = EXCLUDED.status THEN p.status_since ELSE %(at)s END,
                status = EXCLUDED.status,
                first_seen_trading = coalesce(p.first_seen_trading, EXCLUDED.first_seen_trading),
                last_seen_trading = coalesce(EXCLUDED.last_seen_trading, p.last_seen_trading),
                successor = EXCLUDED.successor,
                updated_at = now()
            """,
            {
                "symbols": [r[0] for r in rows],
                "statuses": [r[1] for r in rows],
                "successors": [r[2] for r in rows],
                "at": seen_at,
            },
        )


def first_candles(settings: Settings, client: ApiClient, symbols: list[str], interval: str) -> dict[str, int]:
    """Each pair's first candle on the exchange (its listing), in ms: probed once (one klines call from
    time 0, weight 2) and kept in ops.pairs, so no hour before a listing is ever fetched or called a gap."""
    with db.cursor(settings) as cur:
        cur.execute(
            "SELECT symbol, (extract(epoch FROM first_candle) * 1000)::bigint FROM ops.pairs "
            "WHERE symbol = ANY(%s) AND first_candle IS NOT NULL",
            (symbols,),
        )
        known = dict(cur.fetchall())
        for symbol in symbols:
            if symbol in known:
                continue
            first = first_candle_ms(client, symbol, interval)  # an error here would fail the pages too
            if first is None:
                continue
            known[symbol] = first
            cur.execute(
                "UPDATE ops.pairs SET first_candle = to_timestamp(%s / 1000.0) WHERE symbol = %s",
                (first, symbol),
            )
    return known
