"""What the exchange does to a pipeline, on fixed dates: listings, halts, removals, outages, revisions.

SYNTHETIC, but shaped like the real market (../shared/FACTS.md):
- MATICUSDT stops trading when Polygon migrates to POL (September 2024): BREAK first, then removed, after
  which klines answer -1121 and exchangeInfo no longer lists it. POLUSDT starts a few days later.
- FTMUSDT does the same for Sonic (January 2025); SUSDT starts after it.
- Exchange-wide outages leave the same hour missing for every pair (2023-03-24 13:00 UTC is the real one;
  the later ones are invented so that a backfill of the last three years meets some).
- One pair halts alone for a few hours.
- Closed candles get revised: a fixed share of hours reports about 0.2% more volume once REVISE_AFTER_MS
  has passed since the close (prices never change), as real re-published candles do.

`calm=True` everywhere turns all of it off: every pair trades forever and nothing is revised.
"""

from __future__ import annotations

import datetime as dt
import zlib
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from .bars import HOUR_MS, QVOL, T0_MS, TBASE, TQUOTE, VOL, Bars
from .series import Market


def _ms(text: str) -> int:
    return int(dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC).timestamp() * 1000)


@dataclass(frozen=True)
class Lifecycle:
    """One pair's life on the exchange: first candle, first hour without one (BREAK), removal (-1121)."""

    listed_ms: int = T0_MS
    halted_ms: int | None = None
    removed_ms: int | None = None
    successor: str | None = None


LIFECYCLES: dict[str, Lifecycle] = {
    "MATICUSDT": Lifecycle(
        halted_ms=_ms("2024-09-10T04:00"), removed_ms=_ms("2024-10-10T00:00"), successor="POLUSDT"
    ),
    "POLUSDT": Lifecycle(listed_ms=_ms("2024-09-13T10:00")),
    "FTMUSDT": Lifecycle(
        halted_ms=_ms("2025-01-13T03:00"), removed_ms=_ms("2025-02-13T00:00"), successor="SUSDT"
    ),
    "SUSDT": Lifecycle(listed_ms=_ms("2025-01-16T08:00")),
}
# CoinGecko lists a new coin when its pair starts trading.
COINGECKO_SINCE = {"polygon-ecosystem-token": LIFECYCLES["POLUSDT"].listed_ms}
COINGECKO_SINCE["sonic-3"] = LIFECYCLES["SUSDT"].listed_ms

# Inclusive open-time ranges with no candle for any pair.
OUTAGES: tuple[tuple[int, int], ...] = (
    (_ms("2023-03-24T13:00"), _ms("2023-03-24T13:00")),  # real: the spot outage of that afternoon
    (_ms("2025-06-12T07:00"), _ms("2025-06-12T07:00")),
    (_ms("2026-02-05T21:00"), _ms("2026-02-05T22:00")),
)
# Inclusive open-time ranges with no candle for one pair.
PAIR_HALTS: dict[str, tuple[tuple[int, int], ...]] = {
    "DOTUSDT": ((_ms("2025-10-07T05:00"), _ms("2025-10-07T07:00")),),
}
REVISE_EVERY = 12  # about one closed hour in 12 is revised ...
REVISE_AFTER_MS = 24 * HOUR_MS  # ... within a day of its close (inside the 48 h restate window)
REVISE_PER_MILLE = 2  # volumes grow by 0.2%


def lifecycle(symbol: str, calm: bool = False, overrides: Mapping[str, Lifecycle] | None = None) -> Lifecycle:
    """A pair's life: a server's own override first (SandboxServer.set_lifecycle), then the fixed events."""
    if overrides and symbol in overrides:
        return overrides[symbol]
    return Lifecycle() if calm else LIFECYCLES.get(symbol, Lifecycle())


def status(
    symbol: str, now_ms: int, calm: bool = False, overrides: Mapping[str, Lifecycle] | None = None
) -> str | None:
    """exchangeInfo's status at now_ms: TRADING, BREAK, or None (not listed yet, or removed: -1121)."""
    life = lifecycle(symbol, calm, overrides)
    if now_ms < life.listed_ms or (life.removed_ms is not None and now_ms >= life.removed_ms):
        return None
    if life.halted_ms is not None and now_ms >= life.halted_ms:
        return "BREAK"
    return "TRADING"


def on_coingecko(cg_id: str, now_ms: int, calm: bool = False) -> bool:
    return calm or now_ms >= COINGECKO_SINCE.get(cg_id, T0_MS)


def missing_ranges(
    symbol: str, calm: bool = False, overrides: Mapping[str, Lifecycle] | None = None
) -> list[tuple[int, int]]:
    """Inclusive open-time ranges the exchange has no candle for (before listing, after halting, outages)."""
    life = lifecycle(symbol, calm, overrides)
    ranges = [] if calm else [*OUTAGES, *PAIR_HALTS.get(symbol, ())]
    if life.listed_ms > T0_MS:
        ranges.append((T0_MS, life.listed_ms - HOUR_MS))
    if life.halted_ms is not None:
        ranges.append((life.halted_ms, 2**62))
    return ranges


def revised(symbol: str, open_ms: np.ndarray, seed: int) -> np.ndarray:
    """Which hourly candles (by open time) belong to the revised share: a fixed hash of (seed, symbol, hour)."""
    salt = np.uint64(zlib.crc32(f"{seed}:{symbol}".encode()))
    h = (open_ms // HOUR_MS).astype(np.uint64) * np.uint64(2654435761) + salt
    hits: np.ndarray = (h >> np.uint64(7)) % np.uint64(REVISE_EVERY) == 0
    return hits


def exchange_bars(
    market: Market,
    symbol: str,
    interval: str,
    start_ms: int | None,
    end_ms: int | None,
    now_ms: int,
    limit: int | None,
    extra_missing: list[tuple[int, int]] | None = None,
    calm: bool = False,
    overrides: Mapping[str, Lifecycle] | None = None,
) -> Bars:
    """The bars the exchange serves at now_ms: the synthetic series with this module's events applied."""
    lo = T0_MS if start_ms is None else start_ms
    hi = now_ms if end_ms is None else min(end_ms, now_ms)
    # Only ranges that touch the request leave the fast path; paging backwards from `end` can reach
    # before `start`-less requests' first hour, so those keep every range before `hi`.
    missing = [
        (a, b)
        for a, b in [*(extra_missing or []), *missing_ranges(symbol, calm, overrides)]
        if b >= (lo if start_ms is not None else T0_MS) and a <= hi
    ]
    bars = market.bars(symbol, interval, start_ms, end_ms, now_ms, limit, missing or None)
    if calm or bars.interval_ms != HOUR_MS or not len(bars.open_time):
        return bars  # only hourly candles are revised (the pipeline's grain)
    hit = revised(symbol, bars.open_time, market.seed) & (
        bars.open_time + HOUR_MS + REVISE_AFTER_MS <= now_ms
    )
    return with_more_volume(bars, hit, REVISE_PER_MILLE)


def with_more_volume(bars: Bars, hit: np.ndarray, per_mille: int) -> Bars:
    """The bars with per_mille more volume (base, quote, taker's) where `hit`: a re-published candle's
    change (prices never change)."""
    if not hit.any():
        return bars
    data = bars.data.copy()
    for row in (VOL, QVOL, TBASE, TQUOTE):
        data[row, hit] += data[row, hit] * per_mille // 1000
    return bars._replace(data=data)
