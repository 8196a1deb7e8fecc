"""Binance planning: the client, the universe of pairs, each pair's stored span and cursor, the windows."""

from __future__ import annotations

import datetime as dt
import logging

from pipelines.errors import UniverseError
from pipelines.http import ApiClient, client_for
from pipelines.ingest import lifecycle
from pipelines.ingest.markets import coingecko_client
from pipelines.runtime import db
from pipelines.settings import Settings, validate_symbol
from pipelines.sources.binance import SymbolWindow
from pipelines.sources.binance import settings as bn
from pipelines.sources.binance.helpers import ExchangeInfo
from pipelines.sources.coingecko.helpers import fetch_markets

log = logging.getLogger(__name__)
HOUR_MS = bn.INTERVAL_MS["1h"]


def binance_client(settings: Settings) -> ApiClient:
    """The exchange's client; with sources.binance.shared_weight_budget (the default) every request first
    reserves its weight in the minute this database's other processes share (runtime/weight_budget.py)."""
    from pipelines.runtime.weight_budget import SharedWeightBudget

    src = settings.sources.binance
    shared = (
        SharedWeightBudget(settings, "binance", src.weight_limit_per_minute, src.weight_budget)
        if src.shared_weight_budget
        else None
    )
    return client_for(
        "binance",
        src,
        weight_limit=src.weight_limit_per_minute,
        weight_header=bn.WEIGHT_HEADER,
        shared_budget=shared,
        request_weights=bn.REQUEST_WEIGHTS,
    )


def resolve_universe(settings: Settings, info: ExchangeInfo, requested: list[str] | None = None) -> list[str]:
    """The pairs to fetch: pinned symbols (no CoinGecko call) or the top N by market cap, TRADING only."""
    return resolve_pairs(settings, info, requested).trading


def resolve_pairs(
    settings: Settings, info: ExchangeInfo, requested: list[str] | None = None
) -> lifecycle.Pairs:
    """Requested or configured pairs split into TRADING and skipped (with their status). A pair that does
    not trade never stops the others; only a universe with no trading pair at all is an error."""
    universe = settings.universe
    if requested or universe.mode == "pinned":
        symbols = [validate_symbol(s) for s in (requested or universe.symbols)]
        pairs = lifecycle.split_by_status(symbols, info)
        lifecycle.require_some_trading(pairs)
        return pairs
    coins = fetch_markets(coingecko_client(settings), min(1000, universe.top_n * 3))
    stable = {s.upper() for s in universe.stablecoins}
    chosen: list[str] = []
    for coin in coins:
        base = str(coin.get("symbol", "")).upper()
        pair = f"{base}{universe.quote_asset}"
        if base in stable or pair in chosen or pair not in info.trading:
            continue
        chosen.append(pair)
        if len(chosen) == universe.top_n:
            break
    if not chosen:
        raise UniverseError(
            "the top_n universe came out empty: no CoinGecko coin maps to a TRADING USDT pair"
        )
    return lifecycle.Pairs(chosen, {})


def klines_cursors(settings: Settings) -> dict[str, int]:
    """Per-symbol cursor: open time (ms) of the newest candle in raw."""
    return {symbol: newest for symbol, (_, newest) in stored_spans(settings).items()}


def stored_spans(settings: Settings) -> dict[str, tuple[int, int]]:
    """Per symbol: open times (ms) of the oldest and the newest candle in raw."""
    with db.cursor(settings) as cur:
        cur.execute("SELECT to_regclass('raw.binance_klines')")
        if db.one(cur)[0] is None:
            return {}
        cur.execute(
            "SELECT symbol, (extract(epoch FROM min(open_time)) * 1000)::bigint, "
            "(extract(epoch FROM max(open_time)) * 1000)::bigint FROM raw.binance_klines GROUP BY symbol"
        )
        return {symbol: (oldest, newest) for symbol, oldest, newest in cur.fetchall()}


def last_open_before(until: dt.datetime) -> int:
    """Windows are half-open, [since, until): the newest candle that opens strictly before `until`."""
    return (int(until.timestamp() * 1000) - 1) // HOUR_MS * HOUR_MS


def utc_of_ms(ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC)


def plan_windows(
    settings: Settings,
    universe: list[str],
    end_ms: int,
    since: dt.datetime | None,
    days: int | None,
    spans: dict[str, tuple[int, int]],
) -> list[SymbolWindow]:
    if since is not None:
        start = -(-int(since.timestamp() * 1000) // HOUR_MS) * HOUR_MS
        return [SymbolWindow(s, start, end_ms) for s in universe if start <= end_ms]
    horizon = days or settings.backfill.days
    first = end_ms - (horizon * 24 - 1) * HOUR_MS
    if days is not None:
        return [SymbolWindow(s, first, end_ms) for s in universe]
    # Incremental: from the cursor, and back over the stored part of the trailing restate window, where
    # the exchange may have revised closed candles.
    restate_from = end_ms - (settings.sources.binance.restate_hours - 1) * HOUR_MS
    windows = []
    for symbol in universe:
        start = first
        if symbol in spans:
            oldest, newest = spans[symbol]
            start = min(newest + HOUR_MS, max(restate_from, oldest))
        if start <= end_ms:
            windows.append(SymbolWindow(symbol, start, end_ms))
    return windows


def after_listing(
    settings: Settings, client: ApiClient, windows: list[SymbolWindow], cursors: dict[str, int]
) -> tuple[list[SymbolWindow], dict[str, int]]:
    """Start each window no earlier than the pair's first candle on the exchange, so nothing before a listing
    is fetched or recorded as a gap. Returns the windows and {symbol: first candle} where that cut one."""
    reaching_back = [w.symbol for w in windows if w.symbol not in cursors or w.start_ms <= cursors[w.symbol]]
    first = (
        lifecycle.first_candles(settings, client, reaching_back, settings.interval) if reaching_back else {}
    )
    out, listed = [], {}
    for w in windows:
        start = max(w.start_ms, first.get(w.symbol, w.start_ms))
        if start > w.start_ms:
            listed[w.symbol] = start
            log.warning(
                f"{w.symbol} starts at its first candle on the exchange, {utc_of_ms(start).isoformat()}: "
                "nothing before its listing is fetched or counted as missing",
                extra={"symbol": w.symbol},
            )
        if start <= w.end_ms:
            out.append(SymbolWindow(w.symbol, start, w.end_ms))
    return out, listed
