"""alternative.me /fng/: fetch, validate (values and timestamps arrive as strings), -> Arrow."""

from __future__ import annotations

import datetime as dt
import re
import time
from typing import Any

import pyarrow as pa

from pipelines.http import ApiClient, ApiError, MalformedResponse
from pipelines.sources.common import Rejected
from pipelines.sources.fear_greed.settings import FNG_PATH, FNG_SCHEMA


def fetch_fng(client: ApiClient, limit: int) -> list[Any]:
    """limit=0 asks for the whole daily history (since 2018-02-01); newest first."""
    body = client.get_json(FNG_PATH, {"limit": limit, "format": "json"})
    if not isinstance(body, dict) or not isinstance(body.get("data"), list):
        raise MalformedResponse(f"fear_greed: body without a data list: {str(body)[:200]}")
    error = (body.get("metadata") or {}).get("error")
    if error:
        raise ApiError(f"fear_greed: the API reported an error: {error}")
    data: list[Any] = body["data"]
    return data


_DIGITS = re.compile(r"^[0-9]{1,12}$")  # ASCII only: str.isdigit() also accepts "²", which int() refuses
FIRST_TS = 1_517_443_200  # 2018-02-01, the index's first day
MAX_AHEAD_S = 2 * 86_400


def _problem(item: Any) -> str | None:
    if not isinstance(item, dict):
        return "malformed item: not an object"
    value, ts, label = item.get("value"), item.get("timestamp"), item.get("value_classification")
    if isinstance(value, bool) or not isinstance(value, str | int) or not _DIGITS.match(str(value)):
        return f"non-numeric value: {value!r}"
    if not 0 <= int(value) <= 100:
        return f"value out of [0, 100]: {value!r}"
    if isinstance(ts, bool) or not isinstance(ts, str | int) or not _DIGITS.match(str(ts)):
        return f"non-numeric timestamp: {ts!r}"
    if not FIRST_TS <= int(ts) <= time.time() + MAX_AHEAD_S:
        return f"timestamp outside 2018-02-01 .. now: {ts!r}"
    if int(ts) % 86400 != 0:
        return f"timestamp not at 00:00 UTC: {ts!r}"
    if not isinstance(label, str) or not label:
        return "missing value_classification"
    return None


def fng_to_arrow(items: list[Any], load_id: str) -> tuple[pa.Table, list[Rejected]]:
    rows, rejected, seen = [], [], set()
    for item in items:
        problem = _problem(item)
        if problem:
            key = f"fng@{item.get('timestamp') if isinstance(item, dict) else '?'}"
            rejected.append(Rejected(key, item, problem))
            continue
        ts = int(item["timestamp"])
        if ts in seen:
            continue
        seen.add(ts)
        rows.append(
            {
                "ts": dt.datetime.fromtimestamp(ts, dt.UTC),
                "value": int(item["value"]),
                "value_classification": item["value_classification"],
                "load_id": load_id,
            }
        )
    rows.sort(key=lambda r: r["ts"])
    return pa.Table.from_pylist(rows, schema=FNG_SCHEMA), rejected
