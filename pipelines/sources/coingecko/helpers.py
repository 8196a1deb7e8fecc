"""CoinGecko /coins/markets: paging, validation, snapshot -> Arrow."""

from __future__ import annotations

import datetime as dt
import json
import math
from typing import Any

import pyarrow as pa

from pipelines.http import ApiClient, ApiError, MalformedResponse
from pipelines.sources.coingecko.settings import FLOAT_FIELDS, MARKETS_PATH, MARKETS_SCHEMA, NON_NEGATIVE
from pipelines.sources.common import Rejected


def fetch_markets(client: ApiClient, coins: int, per_page: int = 250) -> list[dict[str, Any]]:
    """The top `coins` by market cap (vs USD), paging until enough coins or an empty page."""
    result: list[dict[str, Any]] = []
    page = 1
    while len(result) < coins:
        params = {
            "vs_currency": "usd",
            "order": "market_cap_desc",
            "per_page": min(per_page, coins - len(result)) if page == 1 else per_page,
            "page": page,
        }
        body = client.get_json(MARKETS_PATH, params)
        if isinstance(body, dict):  # errors come as an object, never a list
            status = body.get("status", {})
            message = status.get("error_message") or body.get("error") or str(body)[:200]
            raise ApiError(f"coingecko: {message}", status.get("error_code"), json.dumps(body)[:500])
        if not isinstance(body, list):
            raise MalformedResponse(f"coingecko: markets is not a list: {str(body)[:200]}")
        if not body:
            break
        result.extend(body)
        page += 1
    return result[:coins]


def _ts(value: Any) -> dt.datetime | None:
    if not value:
        return None
    return dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def _problem(coin: Any) -> str | None:
    if not isinstance(coin, dict) or not isinstance(coin.get("id"), str) or not coin["id"]:
        return "malformed coin: no id"
    for name in FLOAT_FIELDS:
        value = coin.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            return f"non-numeric {name}: {value!r}"
        if isinstance(value, float) and not math.isfinite(value):
            return f"non-finite {name}: {value!r}"
    for name in NON_NEGATIVE:
        value = coin.get(name)
        if value is not None and value < 0:
            return f"negative {name}: {value!r}"
    rank = coin.get("market_cap_rank")
    if rank is not None and (not isinstance(rank, int) or rank < 1):
        return f"invalid market_cap_rank: {rank!r}"
    try:
        for name in ("ath_date", "atl_date", "last_updated"):
            _ts(coin.get(name))
    except ValueError:
        return f"unparseable timestamp in {name}: {coin.get(name)!r}"
    return None


def markets_to_arrow(
    coins: list[Any], snapshot_ts: dt.datetime, load_id: str
) -> tuple[pa.Table, list[Rejected]]:
    rows, rejected = [], []
    seen: set[str] = set()
    for coin in coins:
        problem = _problem(coin)
        key = f"{coin.get('id') if isinstance(coin, dict) else '?'}@{snapshot_ts.isoformat()}"
        if problem:
            rejected.append(Rejected(key, coin, problem))
            continue
        if coin["id"] in seen:
            continue  # the API can repeat a coin across pages while ranks shift
        seen.add(coin["id"])
        row = {name: coin.get(name) for name in MARKETS_SCHEMA.names if name in coin}
        for name in FLOAT_FIELDS:
            if row.get(name) is not None:
                row[name] = float(row[name])
        row.update(
            snapshot_ts=snapshot_ts,
            ath_date=_ts(coin.get("ath_date")),
            atl_date=_ts(coin.get("atl_date")),
            last_updated=_ts(coin.get("last_updated")),
            roi=json.dumps(coin["roi"]) if coin.get("roi") is not None else None,
            load_id=load_id,
        )
        rows.append(row)
    return pa.Table.from_pylist(rows, schema=MARKETS_SCHEMA), rejected
