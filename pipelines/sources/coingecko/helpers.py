"""CoinGecko /coins/markets: paging, validation, snapshot -> Arrow."""

from __future__ import annotations

import datetime as dt
import json
import math
import re
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


_NUMBER = re.compile(r"^-?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?$")
_FIELD_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
TEXT_FIELDS = ("symbol", "name", "image")


def _as_number(value: Any) -> tuple[float | None, bool]:
    """(the number, True) for a JSON number or a numeric string ("21000000.0": lossless type drift);
    (None, True) for null; (None, False) when the value cannot be read as a number."""
    if value is None:
        return None, True
    if isinstance(value, bool):
        return None, False
    if isinstance(value, int | float):
        return float(value), math.isfinite(value)
    if isinstance(value, str) and _NUMBER.match(value.strip()):
        number = float(value)
        return number, math.isfinite(number)
    return None, False


def _as_rank(value: Any) -> tuple[int | None, bool]:
    """market_cap_rank as an int: 5, 5.0 and "5" all read as 5 (integer sent as a float or a string)."""
    number, ok = _as_number(value)
    if not ok or number is None:
        return None, ok
    return (int(number), True) if number == int(number) and number >= 1 else (None, False)


def clean_coin(coin: Any) -> tuple[dict[str, Any] | None, str | None]:
    """The coin with lossless type drift coerced (numeric strings, integral floats), or (None, reason)."""
    if not isinstance(coin, dict) or not isinstance(coin.get("id"), str) or not coin["id"]:
        return None, "malformed coin: no id"
    out = dict(coin)
    for name in TEXT_FIELDS:
        if out.get(name) is not None and not isinstance(out[name], str):
            return None, f"non-text {name}: {out[name]!r}"
    for name in FLOAT_FIELDS:
        number, ok = _as_number(coin.get(name))
        if not ok:
            return None, f"non-numeric {name}: {coin.get(name)!r}"
        if name in coin:
            out[name] = number
    for name in NON_NEGATIVE:
        if out.get(name) is not None and out[name] < 0:
            return None, f"negative {name}: {coin[name]!r}"
    rank, ok = _as_rank(coin.get("market_cap_rank"))
    if not ok:
        return None, f"invalid market_cap_rank: {coin.get('market_cap_rank')!r}"
    out["market_cap_rank"] = rank
    for name in ("ath_date", "atl_date", "last_updated"):
        try:
            _ts(coin.get(name))
        except (ValueError, TypeError):
            return None, f"unparseable timestamp in {name}: {coin.get(name)!r}"
    return out, None


def _extra_type(values: list[Any]) -> pa.DataType | None:
    """Arrow type of a field the API added: numbers -> float64, booleans, text; anything else JSON text.
    None while the field has no value at all: its type is taken from its first values, never guessed as
    text (raw would then hold later numbers in a text column)."""
    present = [v for v in values if v is not None]
    if not present:
        return None
    if present and all(isinstance(v, int | float) and not isinstance(v, bool) for v in present):
        return pa.float64()
    if present and all(isinstance(v, bool) for v in present):
        return pa.bool_()
    return pa.string()


def _extra_value(value: Any, kind: pa.DataType) -> Any:
    if value is None:
        return None
    if kind == pa.float64():
        return float(value)
    if kind == pa.string() and not isinstance(value, str):
        return json.dumps(value, sort_keys=True)
    return value


def markets_to_arrow(
    coins: list[Any], snapshot_ts: dt.datetime, load_id: str
) -> tuple[pa.Table, list[Rejected]]:
    """One snapshot as Arrow: the known fields typed, every field the API added kept as a nullable column
    (raw gains it through dlt's schema evolution, bronze keeps it), fields it dropped left NULL."""
    rows, rejected = [], []
    seen: set[str] = set()
    known = set(MARKETS_SCHEMA.names)
    for coin in coins:
        cleaned, problem = clean_coin(coin)
        key = f"{coin.get('id') if isinstance(coin, dict) else '?'}@{snapshot_ts.isoformat()}"
        if cleaned is None:
            rejected.append(Rejected(key, coin, problem or "malformed coin"))
            continue
        if cleaned["id"] in seen:
            continue  # the API can repeat a coin across pages while ranks shift
        seen.add(cleaned["id"])
        rows.append(cleaned)
    extras = sorted({k for r in rows for k in r if k not in known and _FIELD_NAME.match(k)})
    extra_types = {name: _extra_type([r.get(name) for r in rows]) for name in extras}
    extra_types = {name: kind for name, kind in extra_types.items() if kind is not None}
    table_rows = []
    for coin in rows:
        row = {name: coin.get(name) for name in MARKETS_SCHEMA.names if name in coin}
        row.update(
            snapshot_ts=snapshot_ts,
            ath_date=_ts(coin.get("ath_date")),
            atl_date=_ts(coin.get("atl_date")),
            last_updated=_ts(coin.get("last_updated")),
            roi=json.dumps(coin["roi"]) if coin.get("roi") is not None else None,
            load_id=load_id,
        )
        row.update({name: _extra_value(coin.get(name), kind) for name, kind in extra_types.items()})
        table_rows.append(row)
    schema = pa.schema([*MARKETS_SCHEMA, *(pa.field(n, t) for n, t in extra_types.items())])
    return pa.Table.from_pylist(table_rows, schema=schema), rejected
