"""Binance's kline JSON from a page of bars: a readable reference formatter and the fast one actually served.

Both write every decimal exactly as Binance does (8 decimals, base volumes padded from the lot's
decimals): `klines_json(bars)` is byte for byte the compact JSON of `rows_from_bars(bars)`, which
tests/test_sandbox.py checks, so the fast path can be trusted by reading the simple one.
"""

from __future__ import annotations

import json

import numpy as np

from .bars import CLOSE, HIGH, LOW, OPEN, QVOL, TBASE, TQUOTE, TRADES, UNIT, VOL, Bars


def rows_from_bars(bars: Bars) -> list[list[object]]:
    """Binance kline rows (strings with 8 decimals), built one by one in Python (reference formatter)."""
    e = bars.lot_decimals
    rows: list[list[object]] = []
    for t, col in zip(bars.open_time.tolist(), bars.data.T.tolist(), strict=True):
        o, h, lo, c, v, q, n, tb, tq = col
        rows.append(
            [
                t,
                binance_decimal(o, 8),
                binance_decimal(h, 8),
                binance_decimal(lo, 8),
                binance_decimal(c, 8),
                binance_decimal(v, e),
                t + bars.interval_ms - 1,
                binance_decimal(q, 8),
                n,
                binance_decimal(tb, e),
                binance_decimal(tq, 8),
                "0",
            ]
        )
    return rows


def binance_decimal(value: int, decimals: int) -> str:
    """int count of 10^-decimals -> Binance's 8-decimal string."""
    whole, frac = divmod(value, 10**decimals)
    digits = f"{frac:0{decimals}d}" if decimals else ""
    return f"{whole}.{digits}{'0' * (8 - decimals)}"


# ---- fast wire formatter ------------------------------------------------------------------------------

_POW10 = 10 ** np.arange(19, dtype=np.int64)
# 0..9999 -> four ASCII digits packed in one uint32, so one gather writes four bytes.
_TABLE4 = np.array([list(f"{i:04d}".encode()) for i in range(10_000)], dtype=np.uint8).view(np.uint32).ravel()
# Literal text between the 11 integer blocks of a kline row; "." + 8 fraction digits follow blocks 1-5, 7, 9, 10.
_KLINE_LITS = (b",[", b',"', b'","', b'","', b'","', b'","', b'",', b',"', b'",', b',"', b'","', b'","0"]')
_KLINE_FRAC = (None, 0, 1, 2, 3, 4, None, 5, None, 6, 7)  # which fraction row follows each integer block


def _digits(values: np.ndarray, groups: int) -> np.ndarray:
    """values (..., n) -> (..., n, 4 * groups) zero-padded ASCII digits, four digits per table lookup."""
    parts = np.empty((*values.shape, groups), dtype=np.int64)
    rest = values
    for g in range(groups - 1, -1, -1):
        rest, parts[..., g] = np.divmod(rest, 10_000)
    return _TABLE4[parts].view(np.uint8).reshape(*values.shape, 4 * groups)


def klines_json(bars: Bars) -> bytes:
    """The compact Binance JSON body for a page of bars, built with numpy (no per-row Python).

    Every row is laid out at a fixed width (zero-padded integers), then one boolean mask drops the
    leading zeros and the whole page is emitted with a single `tobytes()`.
    """
    n = len(bars.open_time)
    if n == 0:
        return b"[]"
    d, e = bars.data, bars.lot_decimals
    if int(d.min()) < 0:  # never happens for generated data; keeps the fast path honest
        return json.dumps(rows_from_bars(bars), separators=(",", ":")).encode()
    scale = np.array([UNIT, UNIT, UNIT, UNIT, 10**e, UNIT, 10**e, UNIT], dtype=np.int64)[:, None]
    whole, frac = np.divmod(d[[OPEN, HIGH, LOW, CLOSE, VOL, QVOL, TBASE, TQUOTE]], scale)
    frac[[4, 6]] *= 10 ** (8 - e)  # base volumes: lot decimals padded to 8 decimals with zeros
    ints = np.stack(
        [bars.open_time, *whole[:5], bars.open_time + (bars.interval_ms - 1), whole[5], d[TRADES], *whole[6:]]
    )
    ndig = np.maximum(np.searchsorted(_POW10, ints, side="right"), 1)
    widths = ndig.max(axis=1).tolist()  # each block only as wide as its longest number in this page
    padded = 4 * ((max(widths) + 3) // 4)
    int_digits = _digits(ints, padded // 4)  # (11, n, padded)
    frac_digits = _digits(frac, 2)  # (8, n, 8)

    row_width = sum(map(len, _KLINE_LITS)) + sum(widths) + 8 * 9
    mat = np.empty((n, row_width), dtype=np.uint8)
    keep = np.ones((n, row_width), dtype=bool)
    at = 0
    for i, lit in enumerate(_KLINE_LITS):
        mat[:, at : at + len(lit)] = np.frombuffer(lit, dtype=np.uint8)
        at += len(lit)
        if i == 11:
            break
        w = widths[i]
        mat[:, at : at + w] = int_digits[i, :, padded - w :]
        keep[:, at : at + w] = np.arange(w) >= (w - ndig[i])[:, None]
        at += w
        if (f := _KLINE_FRAC[i]) is not None:
            mat[:, at] = 46  # "."
            mat[:, at + 1 : at + 9] = frac_digits[f]
            at += 9
    return b"[" + mat[keep].tobytes()[1:] + b"]"
