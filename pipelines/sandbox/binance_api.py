"""Binance spot API answers: /api/v3/klines, exchangeInfo, ping and time, with Binance's errors.

Parameter checks and error codes follow the real API (-1100, -1102, -1120, -1121, -1130) so clients meet
the same refusals offline. The klines data faults (invalid_rows, duplicate_rows, missing_hours,
early_bar) are applied here because they change the rows of an otherwise normal answer.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from functools import cache
from typing import Any

import numpy as np

from . import events
from .bars import HOUR_MS, INTERVAL_HOURS, Bars
from .coins import COIN_BY_SYMBOL
from .kline_wire import binance_decimal, klines_json, rows_from_bars
from .replies import Reply, Request, int_param, json_body

CONTENT_TYPE = "application/json;charset=UTF-8"
WEIGHTS = {"klines": 2, "exchangeInfo": 20, "ping": 1, "time": 1}  # request weight per route
INVALID_EVERY = 97  # invalid_rows default: bars whose number (open_time // interval_ms) % 97 == 0
MSG_WEIGHT = (
    "Too much request weight used; current limit is {limit} request weight per 1 MINUTE. "
    "Please use WebSocket Streams for live updates to avoid polling the API."
)
# Pairs besides the sandbox's coins: long-delisted (BREAK) and non-USDT ones, as exchangeInfo lists them.
# (symbol, base, quote, status, tick in 1e-8 units, lot decimals)
OTHER_PAIRS = (
    ("BCCUSDT", "BCC", "USDT", "BREAK", 10**6, 5),
    ("VENUSDT", "VEN", "USDT", "BREAK", 100, 2),
    ("ETHBTC", "ETH", "BTC", "TRADING", 100, 4),
    ("BNBBTC", "BNB", "BTC", "TRADING", 10, 3),
)


def error(status: int, code: int, msg: str, headers: dict[str, str]) -> Reply:
    """Binance's error body: {"code": -1121, "msg": "Invalid symbol."}."""
    return Reply(status, json_body({"code": code, "msg": msg}), CONTENT_TYPE, headers)


def weight_exceeded(limit: int, headers: dict[str, str]) -> Reply:
    """The 429 Binance sends once a minute's request weight is used up (headers carry Retry-After)."""
    return error(429, -1003, MSG_WEIGHT.format(limit=limit), headers)


def _mandatory(name: str, headers: dict[str, str]) -> Reply:
    msg = f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed."
    return error(400, -1102, msg, headers)


def _illegal(name: str, headers: dict[str, str]) -> Reply:
    msg = f"Illegal characters found in parameter '{name}'; legal range is '^[0-9]{{1,20}}$'."
    return error(400, -1100, msg, headers)


# ---- klines ----------------------------------------------------------------------------------------------


def klines(req: Request) -> Reply:
    """GET /api/v3/klines: Binance's paging rules, the open last bar, and the klines data faults."""
    q, headers, faults = req.query, req.headers, req.faults
    symbol, interval = q.get("symbol"), q.get("interval")
    if not symbol:
        return _mandatory("symbol", headers)
    if not interval:
        return _mandatory("interval", headers)
    if interval not in INTERVAL_HOURS:
        return error(400, -1120, "Invalid interval.", headers)
    if symbol not in COIN_BY_SYMBOL or events.status(symbol, req.now_ms, req.calm, req.lifecycles) is None:
        return error(400, -1121, "Invalid symbol.", headers)
    values: dict[str, int | None] = {}
    for name in ("startTime", "endTime", "limit"):
        value = int_param(q, name)
        if isinstance(value, str):  # "bad"
            return _illegal(name, headers)
        values[name] = value
    limit = 500 if values["limit"] is None else values["limit"]
    if not 1 <= limit <= 1000:
        return error(400, -1130, "Data sent for parameter 'limit' is not valid.", headers)
    missing = [(f.params["start_ms"], f.params["end_ms"]) for f in faults if f.kind == "missing_hours"]
    start = values["startTime"]
    if start is not None and any(f.kind == "early_bar" for f in faults):
        start, limit = start - INTERVAL_HOURS[interval] * HOUR_MS, limit + 1
    bars = events.exchange_bars(
        req.market,
        symbol,
        interval,
        start,
        values["endTime"],
        req.now_ms,
        limit,
        missing,
        req.calm,
        req.lifecycles,
    )
    for f in faults:
        if f.kind == "duplicate_rows":
            bars = duplicate(bars, int(f.params.get("every", 1)))
        elif f.kind == "revised":
            bars = revise(
                bars, f.params["start_ms"], f.params["end_ms"], int(f.params.get("per_mille", 5)), req.now_ms
            )
    invalid = [f for f in faults if f.kind == "invalid_rows"]
    if not invalid:
        return Reply(200, klines_json(bars), CONTENT_TYPE, headers)
    rows = rows_from_bars(bars)
    for f in invalid:
        explicit = set(f.params["rows"]) if f.params.get("rows") is not None else None
        corrupt_rows(rows, bars.interval_ms, int(f.params.get("every", INVALID_EVERY)), explicit)
    return Reply(200, json_body(rows), CONTENT_TYPE, headers)


def invalid_row_kind(
    open_time: int, interval_ms: int, every: int = INVALID_EVERY, rows: Any = None
) -> str | None:
    """Which corruption the `invalid_rows` fault applies to a kline row, or None.

    A row is hit when `open_time` is in `rows` (if given) or else when bar number n = open_time // interval_ms
    satisfies n % every == 0. The kind cycles with n % 3: 0 -> open negated ("-123.45000000"),
    1 -> high and low swapped (high < low), 2 -> close replaced by "abc".
    """
    n = open_time // interval_ms
    hit = open_time in rows if rows is not None else n % every == 0
    if not hit:
        return None
    return ("negative_open", "high_below_low", "non_numeric_close")[n % 3]


def corrupt_rows(
    rows: list[list[Any]], interval_ms: int, every: int = INVALID_EVERY, explicit: Any = None
) -> None:
    """Apply the `invalid_rows` fault to decoded kline rows in place (see invalid_row_kind)."""
    for row in rows:
        kind = invalid_row_kind(row[0], interval_ms, every, explicit)
        if kind == "negative_open":
            row[1] = "-" + row[1]
        elif kind == "high_below_low":
            row[2], row[3] = row[3], row[2]
        elif kind == "non_numeric_close":
            row[4] = "abc"


def revise(bars: Bars, start_ms: int, end_ms: int, per_mille: int, now_ms: int) -> Bars:
    """The `revised` fault: every closed bar opening in [start_ms, end_ms] reports per_mille more volume
    (a burst of re-published candles; prices never change), for as long as the fault stays. Hourly bars
    only, as the market's own revisions (sandbox/events.py)."""
    if bars.interval_ms != HOUR_MS:
        return bars
    hit = (
        (bars.open_time >= start_ms)
        & (bars.open_time <= end_ms)
        & (bars.open_time + bars.interval_ms <= now_ms)
    )
    return events.with_more_volume(bars, hit, per_mille)


def duplicate(bars: Bars, every: int = 1) -> Bars:
    """Every bar whose number % every == 0 appears twice in a row (the duplicate_rows fault)."""
    chosen = (bars.open_time // bars.interval_ms) % every == 0
    idx = np.repeat(np.arange(len(bars.open_time)), np.where(chosen, 2, 1))
    return bars._replace(open_time=bars.open_time[idx], data=bars.data[:, idx])


# ---- exchangeInfo, ping, time ----------------------------------------------------------------------------


def exchange_info(req: Request) -> Reply:
    """GET /api/v3/exchangeInfo: every listed pair, or those of symbol= / symbols=[...]."""
    q, headers = req.query, req.headers
    symbols = _exchange_symbols(req.now_ms, req.calm, req.lifecycles)
    if q.get("symbol"):
        wanted = [q["symbol"]]
    elif q.get("symbols"):
        try:
            wanted = json.loads(q["symbols"])
            assert isinstance(wanted, list) and all(isinstance(s, str) for s in wanted)
        except (ValueError, AssertionError):
            return _illegal("symbols", headers)
    else:
        wanted = None
    if wanted is not None:
        by_name = {s["symbol"]: s for s in symbols}
        if any(s not in by_name for s in wanted):
            return error(400, -1121, "Invalid symbol.", headers)
        symbols = tuple(by_name[s] for s in wanted)
    body = {
        "timezone": "UTC",
        "serverTime": req.now_ms,
        "rateLimits": [
            {
                "rateLimitType": "REQUEST_WEIGHT",
                "interval": "MINUTE",
                "intervalNum": 1,
                "limit": req.weight_limit,
            },
            {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 100},
            {"rateLimitType": "ORDERS", "interval": "DAY", "intervalNum": 1, "limit": 200000},
            {"rateLimitType": "RAW_REQUESTS", "interval": "MINUTE", "intervalNum": 5, "limit": 61000},
        ],
        "exchangeFilters": [],
        "symbols": list(symbols),
    }
    return Reply(200, json_body(body), CONTENT_TYPE, headers)


def ping(req: Request) -> Reply:
    return Reply(200, b"{}", CONTENT_TYPE, req.headers)


def server_time(req: Request) -> Reply:
    return Reply(200, json_body({"serverTime": req.now_ms}), CONTENT_TYPE, req.headers)


# The route names faults and weights use -> their answer.
HANDLERS: dict[str, Callable[[Request], Reply]] = {
    "klines": klines,
    "exchangeInfo": exchange_info,
    "ping": ping,
    "time": server_time,
}


def _exchange_symbols(
    now_ms: int, calm: bool, overrides: Mapping[str, events.Lifecycle] | None = None
) -> tuple[dict[str, Any], ...]:
    """exchangeInfo `symbols` at now_ms: each sandbox pair with its status (sandbox/events.py; a removed or
    not yet listed pair is absent), plus long-delisted (BREAK) and non-USDT pairs."""
    listed = []
    for entry in _symbol_entries():
        state = (
            events.status(entry["symbol"], now_ms, calm, overrides)
            if entry["symbol"] in COIN_BY_SYMBOL
            else entry["status"]
        )
        if state is not None:
            listed.append({**entry, "status": state})
    return tuple(listed)


@cache
def _symbol_entries() -> tuple[dict[str, Any], ...]:
    """Every pair the sandbox has ever listed, with its static exchangeInfo fields."""
    pairs = [
        (c.symbol, c.base, "USDT", "TRADING", c.tick_units, c.lot_decimals) for c in COIN_BY_SYMBOL.values()
    ]
    return tuple(_symbol_entry(*pair) for pair in [*pairs, *OTHER_PAIRS])


def _symbol_entry(symbol: str, base: str, quote: str, status: str, tick: int, lot: int) -> dict[str, Any]:
    """One pair's exchangeInfo entry (filters from its price tick and lot size)."""
    return {
        "symbol": symbol,
        "status": status,
        "baseAsset": base,
        "baseAssetPrecision": 8,
        "quoteAsset": quote,
        "quotePrecision": 8,
        "quoteAssetPrecision": 8,
        "baseCommissionPrecision": 8,
        "quoteCommissionPrecision": 8,
        "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT"],
        "icebergAllowed": True,
        "ocoAllowed": True,
        "quoteOrderQtyMarketAllowed": True,
        "isSpotTradingAllowed": True,
        "isMarginTradingAllowed": False,
        "filters": [
            {
                "filterType": "PRICE_FILTER",
                "minPrice": binance_decimal(tick, 8),
                "maxPrice": "1000000.00000000",
                "tickSize": binance_decimal(tick, 8),
            },
            {"filterType": "PERCENT_PRICE", "multiplierUp": "5", "multiplierDown": "0.2", "avgPriceMins": 5},
            {
                "filterType": "LOT_SIZE",
                "minQty": binance_decimal(1, lot),
                "maxQty": "9000000.00000000",
                "stepSize": binance_decimal(1, lot),
            },
            {
                "filterType": "MIN_NOTIONAL",
                "minNotional": "10.00000000",
                "applyToMarket": True,
                "avgPriceMins": 5,
            },
            {"filterType": "ICEBERG_PARTS", "limit": 10},
            {"filterType": "MAX_NUM_ORDERS", "maxNumOrders": 200},
        ],
        "permissions": ["SPOT"],
    }
