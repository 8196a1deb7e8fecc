"""SYNTHETIC CoinGecko `coins/markets` snapshots and alternative.me Fear & Greed history.

Both are derived from the same synthetic hourly series as the klines (see series.py), so a dashboard that
joins them sees consistent numbers. Field sets, types and nulls follow the real fixtures.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import numpy as np

from .bars import CLOSE, DAY_MS, HIGH, HOUR_MS, LOW, QVOL, T0_MS, UNIT
from .coins import COINS, Coin
from .series import FNG_FIRST_DAY, Market

# Days alternative.me never published: 2018-04-14..16 and 2024-10-26, as in the real feed.
FNG_MISSING_DAYS = frozenset({17635, 17636, 17637, 20022})
# `price_change_percentage=` windows CoinGecko accepts, in hours.
CHANGE_WINDOWS = {"1h": 1, "24h": 24, "7d": 168, "14d": 336, "30d": 720, "200d": 4800, "1y": 8760}
NO_24H_IDS = frozenset({"dai"})  # like the real feed, one listing has null 24h fields (the real one was new)
ORDERS = ("market_cap_desc", "market_cap_asc", "volume_desc", "volume_asc", "id_asc", "id_desc")


def iso_ms(ms: int) -> str:
    """CoinGecko's timestamp format: 2026-04-30T02:29:06.506Z."""
    t = dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def _price(x: float) -> float | int:
    """CoinGecko-like precision: 6 significant digits, integers written without a fraction."""
    r = float(f"{x:.6g}")
    return int(r) if r == int(r) and abs(r) < 1e15 else r


def _pct(new: float, old: float) -> float:
    return round((new / old - 1) * 100, 5)


def coin_snapshot(market: Market, coin: Coin, now_ms: int, windows: Sequence[str] = ()) -> dict[str, Any]:
    """One `coins/markets` item at now_ms (needs now_ms at least 25 hours after 2019-01-01)."""
    h_now = (now_ms - T0_MS) // HOUR_MS
    first = max(0, h_now - 24)
    rows = market.hours(coin, first, h_now).copy()
    rows[:, -1] = market.partial_hour(coin, h_now, now_ms)  # the current hour is still open
    price = rows[CLOSE, -1] / UNIT
    day = rows[:, -24:]
    price_24h = rows[CLOSE, 0] / UNIT  # close of hour h_now-24: the price when the 24 h window opened
    mcap = round(price * coin.circulating_supply)
    mcap_24h = round(price_24h * coin.circulating_supply)
    hi, hi_hour, lo, lo_hour = market.extremes(coin, h_now - 1)
    if rows[HIGH, -1] > hi:
        hi, hi_hour = int(rows[HIGH, -1]), h_now
    if rows[LOW, -1] < lo:
        lo, lo_hour = int(rows[LOW, -1]), h_now
    ath, atl = hi / UNIT, lo / UNIT
    supply_cap = coin.max_supply if coin.max_supply is not None else coin.total_supply
    no_24h = coin.cg_id in NO_24H_IDS
    item: dict[str, Any] = {
        "id": coin.cg_id,
        "symbol": coin.base.lower(),
        "name": coin.name,
        "image": f"https://sandbox.invalid/coins/images/{COINS.index(coin) + 1}/large/{coin.cg_id}.png",
        "current_price": _price(price),
        "market_cap": mcap,
        "market_cap_rank": None,  # filled in by coin_markets()
        "fully_diluted_valuation": None if supply_cap is None else round(price * supply_cap),
        "total_volume": round(int(day[QVOL].sum()) / UNIT),
        "high_24h": None if no_24h else _price(day[HIGH].max() / UNIT),
        "low_24h": None if no_24h else _price(day[LOW].min() / UNIT),
        "price_change_24h": None if no_24h else price - price_24h,
        "price_change_percentage_24h": None if no_24h else _pct(price, price_24h),
        "market_cap_change_24h": None if no_24h else float(mcap - mcap_24h),
        "market_cap_change_percentage_24h": None if no_24h else _pct(mcap, mcap_24h),
        "circulating_supply": float(coin.circulating_supply),
        "total_supply": coin.total_supply,
        "max_supply": None if coin.max_supply is None else float(coin.max_supply),
        "ath": _price(ath),
        "ath_change_percentage": _pct(price, ath),
        "ath_date": iso_ms(T0_MS + hi_hour * HOUR_MS),
        "atl": _price(atl),
        "atl_change_percentage": _pct(price, atl),
        "atl_date": iso_ms(T0_MS + lo_hour * HOUR_MS),
        "roi": None,
        "last_updated": iso_ms(now_ms),
    }
    if coin.ico_usd is not None:
        times = price / coin.ico_usd - 1
        item["roi"] = {"times": times, "currency": "usd", "percentage": times * 100}
    for w in windows:
        back = market.hours(coin, max(0, h_now - CHANGE_WINDOWS[w]), max(0, h_now - CHANGE_WINDOWS[w]))
        item[f"price_change_percentage_{w}_in_currency"] = (price / (back[CLOSE, 0] / UNIT) - 1) * 100
    return item


def coin_markets(
    market: Market,
    now_ms: int,
    order: str = "market_cap_desc",
    windows: Sequence[str] = (),
    coins: tuple[Coin, ...] = COINS,
) -> list[dict[str, Any]]:
    """Every catalogue coin in `coins` (incl. the three stablecoins), sorted like CoinGecko's `order`.

    `market_cap_rank` is the rank by market cap one hour earlier (CoinGecko refreshes ranks less often than
    prices), so - as in the real feed - ranks are occasionally not monotonic in market_cap_desc order.
    """
    h_prev = (now_ms - T0_MS) // HOUR_MS - 1
    items = [coin_snapshot(market, coin, now_ms, windows) for coin in coins]
    prev_cap = [int(market.hours(c, h_prev, h_prev)[CLOSE, 0]) * c.circulating_supply for c in coins]
    for rank, i in enumerate(
        sorted(range(len(coins)), key=lambda i: (-prev_cap[i], coins[i].cg_id)), start=1
    ):
        items[i]["market_cap_rank"] = rank
    key, reverse = {
        "market_cap_desc": (lambda x: (-x["market_cap"], x["id"]), False),
        "market_cap_asc": (lambda x: (x["market_cap"], x["id"]), False),
        "volume_desc": (lambda x: (-x["total_volume"], x["id"]), False),
        "volume_asc": (lambda x: (x["total_volume"], x["id"]), False),
        "id_asc": (lambda x: x["id"], False),
        "id_desc": (lambda x: x["id"], True),
    }[order]
    return sorted(items, key=key, reverse=reverse)


def fear_greed(market: Market, now_ms: int) -> list[tuple[int, int]]:
    """(midnight UTC in seconds, value) for every published day up to now's UTC day, newest first."""
    last_day = now_ms // DAY_MS
    if last_day < FNG_FIRST_DAY:
        return []
    values = market.fear_greed_values(last_day)
    days = np.arange(FNG_FIRST_DAY, last_day + 1)
    return [
        (int(d) * 86_400, int(v))
        for d, v in zip(days[::-1], values[::-1], strict=True)
        if d not in FNG_MISSING_DAYS
    ]


def fng_classification(value: int) -> str:
    """alternative.me's bands."""
    if value <= 25:
        return "Extreme Fear"
    if value <= 46:
        return "Fear"
    if value <= 54:
        return "Neutral"
    if value <= 75:
        return "Greed"
    return "Extreme Greed"


FNG_DATE_FORMATS = {"us": "%m-%d-%Y", "cn": "%Y-%m-%d", "kr": "%Y-%m-%d", "world": "%d-%m-%Y"}


def fear_greed_payload(
    entries: list[tuple[int, int]], now_ms: int, date_format: str | None
) -> dict[str, Any]:
    """alternative.me's body: strings everywhere, `time_until_update` on the newest item only."""
    fmt = FNG_DATE_FORMATS.get(date_format or "")
    data = []
    for i, (ts, value) in enumerate(entries):
        stamp = dt.datetime.fromtimestamp(ts, tz=dt.UTC).strftime(fmt) if fmt else str(ts)
        item = {"value": str(value), "value_classification": fng_classification(value), "timestamp": stamp}
        if i == 0:
            item["time_until_update"] = str((now_ms // DAY_MS + 1) * 86_400 - now_ms // 1000)  # next midnight
        data.append(item)
    return {"name": "Fear and Greed Index", "data": data, "metadata": {"error": None}}


def drift(
    item: dict[str, Any],
    add_field: str | None = None,
    drop_field: str | None = None,
    string_numbers: Sequence[str] = (),
    float_ints: Sequence[str] = (),
) -> dict[str, Any]:
    """One markets item with schema drift applied (the `schema_drift` fault): `add_field` appears with a
    number derived from the coin, `drop_field` disappears, `string_numbers` come as numeric strings
    ("21000000.0") and `float_ints` as floats (5.0)."""
    out = dict(item)
    if add_field:
        out[add_field] = round((out.get("price_change_percentage_24h") or 0.0) * 3.1, 5)
    if drop_field:
        out.pop(drop_field, None)
    for name in string_numbers:
        if isinstance(out.get(name), int | float):
            out[name] = repr(float(out[name]))
    for name in float_ints:
        if isinstance(out.get(name), int):
            out[name] = float(out[name])
    return out
