"""SYNTHETIC market data as the sandbox serves it: the entry point tests and tools import.

The pieces live in their own modules - coins.py (the catalogue, from coins.json), bars.py (time grid and
bar layout), series.py (the deterministic generator), events.py (listings, outages, revisions) and
kline_wire.py (Binance's kline JSON) - and are re-exported here so `markets.X` keeps working. What this
module adds: the shared clock default and `klines` / `klines_rows`, the bars the klines route would answer
(no faults), for tests to compare against.
"""

from __future__ import annotations

import time

import numpy as np

from .bars import DAY_MS, FIELDS, HOUR_MS, INTERVAL_HOURS, T0_MS, TRADES, UNIT, Bars
from .coins import COIN_BY_ID, COIN_BY_SYMBOL, COINS, SYMBOLS, Coin
from .events import exchange_bars
from .kline_wire import binance_decimal, klines_json, rows_from_bars
from .series import Market, market

# What other code imports from here: this module's own names and the re-exports above.
__all__ = [
    "COINS",
    "COIN_BY_ID",
    "COIN_BY_SYMBOL",
    "DAY_MS",
    "HOUR_MS",
    "INTERVAL_HOURS",
    "KLINE_DTYPE",
    "SYMBOLS",
    "T0_MS",
    "UNIT",
    "Bars",
    "Coin",
    "Market",
    "klines",
    "klines_json",
    "klines_rows",
    "market",
    "now_default",
    "rows_from_bars",
]


def now_default(now_ms: int | None) -> int:
    """now_ms, or the real clock when None."""
    return int(time.time() * 1000) if now_ms is None else int(now_ms)


KLINE_DTYPE = np.dtype(
    [
        ("open_time", "i8"),
        ("open", "f8"),
        ("high", "f8"),
        ("low", "f8"),
        ("close", "f8"),
        ("volume", "f8"),
        ("close_time", "i8"),
        ("quote_volume", "f8"),
        ("trades", "i8"),
        ("taker_buy_base", "f8"),
        ("taker_buy_quote", "f8"),
    ]
)


def _to_float(units: np.ndarray, decimals: int) -> np.ndarray:
    """Exactly float(<the wire string>): a division when exact, else via the decimal strings."""
    if len(units) == 0 or int(np.abs(units).max()) < 2**53:
        return units / float(10**decimals)
    return np.array([binance_decimal(int(u), decimals) for u in units], dtype=np.float64)


def klines(
    symbol: str,
    interval: str,
    start_ms: int | None = None,
    end_ms: int | None = None,
    now_ms: int | None = None,
    seed: int = 42,
    limit: int | None = None,
    calm: bool = False,
) -> np.ndarray:
    """The bars the sandbox serves (no faults), as a structured array (KLINE_DTYPE) of floats.

    Floats equal `float()` of the wire strings exactly. No limit means every bar in the window.
    """
    bars = _served(symbol, interval, start_ms, end_ms, now_ms, seed, limit, calm)
    out = np.empty(len(bars.open_time), dtype=KLINE_DTYPE)
    out["open_time"] = bars.open_time
    out["close_time"] = bars.open_time + bars.interval_ms - 1
    out["trades"] = bars.data[TRADES]
    for name, row in zip(FIELDS, bars.data, strict=True):
        if name != "trades":
            decimals = bars.lot_decimals if name in ("volume", "taker_buy_base") else 8
            out[name] = _to_float(row, decimals)
    return out


def klines_rows(
    symbol: str,
    interval: str,
    start_ms: int | None = None,
    end_ms: int | None = None,
    now_ms: int | None = None,
    seed: int = 42,
    limit: int | None = None,
    calm: bool = False,
) -> list[list[object]]:
    """The exact JSON rows the sandbox serves (no faults): `json.loads(body) == klines_rows(...)`."""
    return rows_from_bars(_served(symbol, interval, start_ms, end_ms, now_ms, seed, limit, calm))


def _served(
    symbol: str,
    interval: str,
    start_ms: int | None,
    end_ms: int | None,
    now_ms: int | None,
    seed: int,
    limit: int | None,
    calm: bool,
) -> Bars:
    return exchange_bars(
        market(seed), symbol, interval, start_ms, end_ms, now_default(now_ms), limit, None, calm
    )
