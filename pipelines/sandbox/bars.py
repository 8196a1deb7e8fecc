"""The bar matrix every sandbox module shares: the time grid, the row layout, and aggregation over hours.

Kept apart from the generator (series.py) so the wire formatter, the exchange events and the API modules
can speak about bars without importing the series machinery.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

HOUR_MS = 3_600_000
DAY_MS = 86_400_000
T0_MS = 1_546_300_800_000  # 2019-01-01T00:00:00Z: the first synthetic hour of every symbol
UNIT = 10**8  # prices and quote volumes are int64 counts of 1e-8
INTERVAL_HOURS = {"1h": 1, "2h": 2, "4h": 4, "6h": 6, "8h": 8, "12h": 12, "1d": 24}

# Row order of the (9, n) int64 bar matrix used everywhere in the sandbox.
OPEN, HIGH, LOW, CLOSE, VOL, QVOL, TRADES, TBASE, TQUOTE = range(9)
FIELDS = (
    "open",
    "high",
    "low",
    "close",
    "volume",
    "quote_volume",
    "trades",
    "taker_buy_base",
    "taker_buy_quote",
)


class Bars(NamedTuple):
    """A page of bars: open times (ms) and a (9, n) int64 matrix in the row order OPEN..TQUOTE."""

    open_time: np.ndarray
    data: np.ndarray
    interval_ms: int
    lot_decimals: int


def aggregate(hourly: np.ndarray, k: int) -> np.ndarray:
    """Complete groups of k hourly bars -> k-hour bars (first open, max high, min low, last close, sums)."""
    if k == 1:
        return hourly
    x = hourly.reshape(9, -1, k)
    out = np.empty((9, x.shape[1]), dtype=np.int64)
    out[OPEN] = x[OPEN, :, 0]
    out[HIGH] = x[HIGH].max(axis=1)
    out[LOW] = x[LOW].min(axis=1)
    out[CLOSE] = x[CLOSE, :, -1]
    out[VOL:] = x[VOL:].sum(axis=2)
    return out


def aggregate_masked(hourly: np.ndarray, k: int, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Like `aggregate` but only over valid hours; returns (bars, bar-has-any-valid-hour)."""
    x = hourly.reshape(9, -1, k)
    ok = valid.reshape(-1, k)
    rows = np.arange(ok.shape[0])
    out = np.empty((9, ok.shape[0]), dtype=np.int64)
    out[OPEN] = x[OPEN][rows, ok.argmax(axis=1)]
    out[CLOSE] = x[CLOSE][rows, k - 1 - ok[:, ::-1].argmax(axis=1)]
    out[HIGH] = np.where(ok, x[HIGH], np.iinfo(np.int64).min).max(axis=1)
    out[LOW] = np.where(ok, x[LOW], np.iinfo(np.int64).max).min(axis=1)
    out[VOL:] = np.where(ok, x[VOL:], 0).sum(axis=2)
    return out, np.asarray(ok.any(axis=1))
