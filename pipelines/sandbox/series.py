"""The SYNTHETIC series generator: deterministic hourly bars per coin, cached, paged at a clock.

Nothing here is real market data. Every value is a pure function of (seed, symbol, hour index): the hourly
path is generated in fixed 52-week blocks whose random numbers come from `default_rng([seed, crc32(symbol),
block])`, so a bar is identical whichever window, page size or process asks for it, and closed bars never
change. Prices and volumes are kept as int64 counts of 1e-8 (prices, quote volumes) or of the symbol's lot
(base volumes) so the wire strings are exact.
"""

from __future__ import annotations

import math
import threading
import zlib
from collections import OrderedDict
from functools import cache

import numpy as np

from .bars import (
    CLOSE,
    DAY_MS,
    HIGH,
    HOUR_MS,
    INTERVAL_HOURS,
    LOW,
    T0_MS,
    UNIT,
    Bars,
    aggregate,
    aggregate_masked,
)
from .coins import COIN_BY_SYMBOL, Coin

CHUNK = 8736  # hours per generated block: 52 weeks, a multiple of every supported interval
# Market factor (shared by all non-stable coins) and volatility regime, per hour.
_SIG_M = 0.0045  # hourly vol of the common factor
_THETA_M = 2e-5  # slow mean reversion keeps multi-year levels realistic
_THETA_Z = 0.005  # vol regime half-life ~140 h
_S_Z = 0.4  # vol-of-vol; g = exp(S z - S^2) keeps E[g^2] = 1
_BOUND = 1.8  # log-deviation from the anchor is squashed into +-1.8 (price within anchor/6 .. anchor*6)
_DEV_STD = 0.6  # stationary std of the idiosyncratic log deviation
_MAX_USD_H = 1e9  # caps hourly quote volume so daily sums stay far below int64 in 1e-8 units


def _ar1(eps: np.ndarray, a: float, x0: float) -> np.ndarray:
    """x_t = a * x_{t-1} + eps_t, vectorised in blocks (a^-t stays small inside a block)."""
    out = np.empty_like(eps)
    block = 512
    powers = a ** np.arange(1, block + 1, dtype=np.float64)
    for s in range(0, len(eps), block):
        e = eps[s : s + block]
        p = powers[: len(e)]
        out[s : s + len(e)] = p * (x0 + np.cumsum(e / p))
        x0 = float(out[s + len(e) - 1])
    return out


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


class Market:
    """Lazily generated, cached synthetic series for one seed (thread-safe)."""

    def __init__(self, seed: int, cache_bytes: int = 160 * 2**20) -> None:
        self.seed = int(seed)
        self._lock = threading.RLock()
        self._factor: list[tuple[np.ndarray, np.ndarray]] = []  # per block: (market factor, vol regime g)
        self._factor_carry: list[tuple[float, float]] = [(0.0, 0.0)]
        self._carry: dict[str, list[tuple[float, int]]] = {}  # per symbol, state at each block start
        self._extremes: dict[tuple[str, int], tuple[int, int, int, int]] = {}  # (max high, at, min low, at)
        self._cache: OrderedDict[tuple[str, int, int], np.ndarray] = OrderedDict()
        self._cache_bytes = cache_bytes
        self._cached = 0

    # ---- generation -------------------------------------------------------------------------------

    def _factor_block(self, b: int) -> tuple[np.ndarray, np.ndarray]:
        with self._lock:
            while len(self._factor) <= b:
                i = len(self._factor)
                m0, z0 = self._factor_carry[i]
                rng = np.random.default_rng([self.seed, 0x6D6B74, i])
                e = rng.standard_normal((2, CHUNK))
                z = _ar1(e[0] * math.sqrt(2 * _THETA_Z), 1 - _THETA_Z, z0)
                g = np.exp(_S_Z * z - _S_Z**2)
                m = _ar1(e[1] * _SIG_M * g, 1 - _THETA_M, m0)
                self._factor.append((m, g))
                self._factor_carry.append((float(m[-1]), float(z[-1])))
            return self._factor[b]

    def _generate(self, coin: Coin, b: int) -> np.ndarray:
        """Hourly bars of block b (needs the carry state of block b)."""
        x0, prev_close = self._carry[coin.symbol][b]
        n = CHUNK
        rng = np.random.default_rng([self.seed, zlib.crc32(coin.symbol.encode()), b])
        eps = rng.standard_normal((4, n))
        expo = rng.standard_exponential((2, n))
        tick = coin.tick_units
        if coin.stable:
            g = np.ones(n)
            x = _ar1(eps[0] * coin.sigma, 0.9, x0)
            lp = math.log(coin.anchor) + x
        else:
            m, g = self._factor_block(b)
            beta = 1.0 if coin.base == "BTC" else 1.15
            sig_i = math.sqrt(max(coin.sigma**2 - (beta * _SIG_M) ** 2, (0.3 * coin.sigma) ** 2))
            theta = sig_i**2 / (2 * _DEV_STD**2)
            x = _ar1(eps[0] * sig_i * g, 1 - theta, x0)
            lp = math.log(coin.anchor) + _BOUND * np.tanh((beta * m + x) / _BOUND)
        close = np.rint(np.exp(lp) * UNIT / tick).astype(np.int64) * tick
        close = np.maximum(close, 3 * tick)  # keeps low >= 1 tick > 0 even for micro-priced coins
        open_ = np.empty_like(close)
        open_[0] = prev_close
        open_[1:] = close[:-1]
        sig_t = coin.sigma * g
        top = np.maximum(open_, close)
        bot = np.minimum(open_, close)
        high = np.ceil(top * np.exp(0.5 * sig_t * expo[0]) / tick).astype(np.int64) * tick
        high = np.maximum(high, top + tick)
        low = np.floor(bot * np.exp(-0.5 * sig_t * expo[1]) / tick).astype(np.int64) * tick
        low = np.maximum(np.minimum(low, bot - tick), tick)

        hour = b * CHUNK + np.arange(n)
        hod = hour % 24
        weekday = (hour // 24 + 1) % 7  # 2019-01-01 was a Tuesday (Monday = 0)
        season = (1 + 0.3 * np.cos(2 * np.pi * (hod - 15) / 24)) * np.where(weekday >= 5, 0.75, 1.0)
        ret = np.abs(np.log(close / open_))
        usd = (
            coin.usd_volume_h
            * season
            * g
            * np.exp(0.5 * eps[1] - 0.125)
            * (0.6 + 0.4 * np.minimum(ret / sig_t, 5))
        )
        usd = np.clip(usd, coin.usd_volume_h * 0.02, _MAX_USD_H)
        vwap = (high + low + close) / 3.0  # strictly inside (low, high) because high > low always
        lots = np.maximum(np.rint(usd * UNIT / vwap * coin.lot_units), 1).astype(np.int64)
        quote = np.maximum(np.rint(lots * vwap / coin.lot_units), 1).astype(np.int64)
        buy = np.clip(0.5 + 0.1 * np.tanh(np.log(close / open_) / sig_t) + 0.04 * eps[2], 0.2, 0.8)
        tb = np.floor(lots * buy).astype(np.int64)
        tq = np.minimum(np.floor(quote * (tb / lots)).astype(np.int64), quote)
        trades = np.maximum(np.rint(usd / coin.trade_usd * np.exp(0.2 * eps[3] - 0.02)), 1).astype(np.int64)
        out = np.stack([open_, high, low, close, lots, quote, trades, tb, tq])

        carry = self._carry[coin.symbol]
        if len(carry) == b + 1:
            carry.append((float(x[-1]), int(close[-1])))
            self._extremes[(coin.symbol, b)] = (
                int(high.max()),
                b * CHUNK + int(high.argmax()),
                int(low.min()),
                b * CHUNK + int(low.argmin()),
            )
        return out

    def _store(self, key: tuple[str, int, int], arr: np.ndarray) -> None:
        self._cache[key] = arr
        self._cached += arr.nbytes
        while self._cached > self._cache_bytes and len(self._cache) > 1:
            _, old = self._cache.popitem(last=False)
            self._cached -= old.nbytes

    def block(self, coin: Coin, b: int, k: int = 1) -> np.ndarray:
        """Closed bars of block b at k hours per bar: (9, CHUNK // k) int64 (cached, LRU)."""
        key = (coin.symbol, k, b)
        with self._lock:
            arr = self._cache.get(key)
            if arr is not None:
                self._cache.move_to_end(key)
                return arr
            if k > 1:
                arr = aggregate(self.block(coin, b, 1), k)
            else:
                carry = self._carry.setdefault(coin.symbol, [(0.0, _quantize(coin.anchor, coin.tick_units))])
                # Block b needs the carry state of every earlier block: generate those once (carries and
                # extremes are kept forever; the blocks themselves live in the LRU and are regenerated).
                for i in range(len(carry) - 1, b):
                    self._store((coin.symbol, 1, i), self._generate(coin, i))
                arr = self._generate(coin, b)
            self._store(key, arr)
            return arr

    def hours(self, coin: Coin, h0: int, h1: int, k: int = 1) -> np.ndarray:
        """Closed bars with indices h0..h1 inclusive at k hours per bar, stitched across blocks."""
        per = CHUNK // k
        parts = []
        i = h0
        while i <= h1:
            b, off = divmod(i, per)
            take = min(h1 - i + 1, per - off)
            parts.append(self.block(coin, b, k)[:, off : off + take])
            i += take
        if not parts:
            return np.empty((9, 0), dtype=np.int64)
        return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)

    def extremes(self, coin: Coin, h_last: int) -> tuple[int, int, int, int]:
        """(max high, its hour, min low, its hour) over closed hours 0..h_last (earliest hour on ties)."""
        full, rest = divmod(h_last + 1, CHUNK)
        found: list[tuple[int, int, int, int]] = []
        for b in range(full):
            if (coin.symbol, b) not in self._extremes:  # summaries outlive evicted blocks
                self.block(coin, b)
            found.append(self._extremes[(coin.symbol, b)])
        if rest:
            part = self.block(coin, full)[:, :rest]
            hi_at, lo_at = int(part[HIGH].argmax()), int(part[LOW].argmin())
            found.append(
                (int(part[HIGH, hi_at]), full * CHUNK + hi_at, int(part[LOW, lo_at]), full * CHUNK + lo_at)
            )
        hi, hi_hour = max(((f[0], -f[1]) for f in found), default=(0, 0))
        lo, lo_hour = min(((f[2], f[3]) for f in found), default=(0, 0))
        return hi, -hi_hour, lo, lo_hour

    # ---- bars at a clock ----------------------------------------------------------------------------

    def partial_hour(self, coin: Coin, hour: int, now_ms: int) -> np.ndarray:
        """The still-open hourly bar `hour` as seen at now_ms: a prorated version of its final values."""
        final = [int(v) for v in self.hours(coin, hour, hour)[:, 0]]
        frac = (now_ms - T0_MS - hour * HOUR_MS) / HOUR_MS
        return np.array(_partial(final, frac, coin.tick_units, coin.lot_units), dtype=np.int64)

    def bars(
        self,
        symbol: str,
        interval: str,
        start_ms: int | None,
        end_ms: int | None,
        now_ms: int,
        limit: int | None = None,
        missing: list[tuple[int, int]] | None = None,
    ) -> Bars:
        """Bars whose open time is in [start_ms, end_ms] and not after now, Binance paging rules.

        With start_ms: the first `limit` bars from start_ms; without: the last `limit` bars up to end_ms.
        The bar containing now_ms is open (partial values). `missing` lists inclusive [start, end] ms
        ranges of hours the exchange has no data for: those hours are left out of every bar, and bars with
        no hour left are absent.
        """
        coin = COIN_BY_SYMBOL[symbol]
        k = INTERVAL_HOURS[interval]
        span = k * HOUR_MS
        empty = Bars(np.empty(0, np.int64), np.empty((9, 0), np.int64), span, coin.lot_decimals)
        if now_ms < T0_MS:
            return empty
        h_now = (now_ms - T0_MS) // HOUR_MS
        j_now = h_now // k
        j0 = 0 if start_ms is None else max(0, _ceil_div(start_ms - T0_MS, span))
        j1 = j_now if end_ms is None else min(j_now, (end_ms - T0_MS) // span)
        if j1 < j0:
            return empty
        if missing:
            return self._masked_page(coin, k, j0, j1, h_now, now_ms, limit, start_ms is not None, missing)
        if limit is not None:
            if start_ms is not None:
                j1 = min(j1, j0 + limit - 1)
            else:
                j0 = max(j0, j1 - limit + 1)
        data = self.hours(coin, j0, min(j1, j_now - 1), k)
        if j1 == j_now:
            open_bar = self._window(coin, k, j_now, j_now, h_now, now_ms, None)[1]
            data = np.concatenate([data, open_bar], axis=1)
        times = T0_MS + np.arange(j0, j1 + 1, dtype=np.int64) * span
        return Bars(times, data, span, coin.lot_decimals)

    def _window(
        self,
        coin: Coin,
        k: int,
        j0: int,
        j1: int,
        h_now: int,
        now_ms: int,
        missing: list[tuple[int, int]] | None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Bars j0..j1 rebuilt from hours, leaving out future and missing hours; empty bars dropped."""
        hourly = self.hours(coin, j0 * k, (j1 + 1) * k - 1).copy()
        idx = np.arange(j0 * k, (j1 + 1) * k)
        valid = idx <= h_now
        if j0 * k <= h_now <= (j1 + 1) * k - 1:
            hourly[:, h_now - j0 * k] = self.partial_hour(coin, h_now, now_ms)
        for lo_ms, hi_ms in missing or ():
            t = T0_MS + idx * HOUR_MS
            valid &= ~((t >= lo_ms) & (t <= hi_ms))
        data, keep = aggregate_masked(hourly, k, valid)
        return np.arange(j0, j1 + 1)[keep], data[:, keep]

    def _masked_page(
        self,
        coin: Coin,
        k: int,
        j0: int,
        j1: int,
        h_now: int,
        now_ms: int,
        limit: int | None,
        forward: bool,
        missing: list[tuple[int, int]],
    ) -> Bars:
        want = limit if limit is not None else j1 - j0 + 1
        got_j: list[np.ndarray] = []
        got_d: list[np.ndarray] = []
        count = 0
        a, b = j0, j1
        while a <= b and count < want:
            step = max(want - count, 64)
            lo, hi = (a, min(b, a + step - 1)) if forward else (max(a, b - step + 1), b)
            js, data = self._window(coin, k, lo, hi, h_now, now_ms, missing)
            got_j.append(js)
            got_d.append(data)
            count += len(js)
            if forward:
                a = hi + 1
            else:
                b = lo - 1
        if not forward:
            got_j.reverse()
            got_d.reverse()
        js = np.concatenate(got_j) if got_j else np.empty(0, np.int64)
        data = np.concatenate(got_d, axis=1) if got_d else np.empty((9, 0), np.int64)
        if len(js) > want:
            js, data = (js[:want], data[:, :want]) if forward else (js[-want:], data[:, -want:])
        span = k * HOUR_MS
        return Bars(T0_MS + js.astype(np.int64) * span, data, span, coin.lot_decimals)

    # ---- fear & greed -------------------------------------------------------------------------------

    def fear_greed_values(self, last_day: int) -> np.ndarray:
        """Index values (int) for epoch days FNG_FIRST_DAY..last_day, missing days included.

        A slow AR(1) mood mixed with BTC's synthetic 7-day momentum (so sentiment follows price).
        """
        days = np.arange(FNG_FIRST_DAY, last_day + 1)
        mood = _fng_mood(self.seed)[: len(days)]
        btc = COIN_BY_SYMBOL["BTCUSDT"]
        t0_day = T0_MS // DAY_MS
        score = mood.copy()
        first = t0_day + 8  # first day with 7 full days of synthetic BTC history before it
        if last_day >= first:
            d = np.arange(first, last_day + 1)
            h_end = (d - t0_day) * 24 - 1  # the last closed hour before each midnight
            closes = self.hours(btc, int(h_end[0]) - 168, int(h_end[-1]))[CLOSE].astype(np.float64)
            now_c = closes[h_end - (h_end[0] - 168)]
            then_c = closes[h_end - 168 - (h_end[0] - 168)]
            mom = np.log(now_c / then_c) / (btc.sigma * math.sqrt(168))
            score[first - FNG_FIRST_DAY :] = 0.55 * mood[first - FNG_FIRST_DAY :] + 0.75 * mom
        values: np.ndarray = np.clip(np.rint(50 + 46 * np.tanh(0.6 * score)), 0, 100).astype(np.int64)
        return values


FNG_FIRST_DAY = 17563  # 2018-02-01 as days since the epoch


@cache
def _fng_mood(seed: int) -> np.ndarray:
    rng = np.random.default_rng([seed, 0x666E67])
    return _ar1(rng.standard_normal(40_000) * math.sqrt(1 - 0.85**2), 0.85, 0.0)


def _quantize(price: float, tick: int) -> int:
    return max(round(price * UNIT / tick), 3) * tick


def _partial(final: list[int], frac: float, tick: int, lot: int) -> list[int]:
    """Prorate a final hourly bar to `frac` of its hour; keeps every OHLC/volume invariant exact."""
    f = min(max(frac, 1 / 60), 1.0)
    o, h, lo, c, v, _, n, tb, _ = final
    cp = o + round((c - o) * f / tick) * tick
    top, bot = max(o, cp), min(o, cp)
    hp = top + math.ceil((h - max(o, c)) * f / tick) * tick
    lp = bot - math.ceil((min(o, c) - lo) * f / tick) * tick
    vp = max(1, int(v * f))
    vwap = (hp + lp + cp) / 3
    qp = max(1, round(vp * vwap / lot))
    tbp = min(int(tb * f), vp)
    return [o, hp, lp, cp, vp, qp, max(1, int(n * f)), tbp, min(int(qp * tbp / vp), qp)]


@cache
def market(seed: int) -> Market:
    """The shared Market of a seed (servers and test helpers with the same seed share the cache)."""
    return Market(seed)
