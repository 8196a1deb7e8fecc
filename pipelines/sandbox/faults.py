"""The fault catalogue: which failures can be switched on, on which routes, with which parameters.

Faults come in four kinds, by what they do to a request: replacing ones answer instead of the route
(status codes, timeout, malformed, replay; `fault_reply` builds them in the style of the API hit), modifying
ones change how the normal answer is sent (slow, drip, oversized), `truncated` cuts it, and data faults
change its content (klines rows in binance_api.py, schema drift in coingecko_api.py).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from . import binance_api, coingecko_api, fear_greed_api
from .replies import HTML, Reply, json_body, nginx_page

ROUTES = ("klines", "exchangeInfo", "ping", "time", "markets", "fng", "archive")
FAULT_PARAMS: dict[str, set[str]] = {
    "429": {"retry_after"},
    "418": {"retry_after"},
    "451": set(),
    "500": set(),
    "502": set(),
    "503": set(),
    "slow": {"delay"},
    # the normal answer, sent `chunk` bytes every `every_s` seconds: each read is quick, the whole is not
    "drip": {"every_s", "chunk"},
    # the normal answer padded with trailing whitespace (still valid JSON) to `bytes` bytes
    "oversized": {"bytes"},
    "timeout": {"delay"},
    "truncated": {"content_length"},
    "malformed": set(),
    "invalid_rows": {"every", "rows"},
    "duplicate_rows": {"every"},
    "missing_hours": {"start_ms", "end_ms"},
    # klines: closed bars opening in [start_ms, end_ms] re-published with per_mille more volume (default 5)
    "revised": {"start_ms", "end_ms", "per_mille"},
    # klines: the answer starts one bar before startTime (a server that rounds the start down)
    "early_bar": set(),
    # markets: schema drift as the real feed shows it - a field added (a number per coin), a field dropped,
    # numbers sent as numeric strings, integers sent as floats
    "schema_drift": {"add_field", "drop_field", "string_numbers", "float_ints"},
    # markets, fng: answer with exactly this body (e.g. a real response saved in tests/fixtures/real)
    "replay": {"body"},
    # the kline archive, one file (its zip name): not published, a sidecar naming another hash, half a
    # zip, re-published with revised volumes (sandbox/archive.py)
    "archive_missing": {"file"},
    "archive_bad_checksum": {"file"},
    "archive_truncated": {"file"},
    "archive_reupload": {"file"},
}
MODIFYING_KINDS = frozenset({"slow", "drip", "oversized"})  # change how the normal answer is sent
DATA_KINDS = frozenset({"invalid_rows", "duplicate_rows", "missing_hours", "revised", "early_bar"})
ROUTE_KINDS = {
    "schema_drift": ("markets",),
    "replay": ("markets", "fng"),
    **{kind: ("archive",) for kind in FAULT_PARAMS if kind.startswith("archive_")},
}
REPLACING_KINDS = frozenset({"429", "418", "451", "500", "502", "503", "timeout", "malformed", "replay"})

MSG_BANNED = (
    "Way too much request weight used; IP banned until {until}. "
    "Please use WebSocket Streams for live updates to avoid bans."
)
MSG_REGION = (
    "Service unavailable from a restricted location according to 'b. Eligibility' in "
    "https://www.binance.com/en/terms. Please contact customer service if you believe you received this "
    "message in error."
)
MSG_CG_RATE = (
    "You've exceeded the Rate Limit. Please visit https://www.coingecko.com/en/api/pricing to subscribe to "
    "our API plans for higher rate limits."
)
MSG_CG_DOWN = (
    "This endpoint is temporarily unavailable due to ongoing issues. Please visit "
    "https://www.coingecko.com/en/api/pricing to subscribe to our API plans with higher availability and "
    "https://status.coingecko.com for API status. "
)
MALFORMED_BODY = (
    b"<!DOCTYPE html><html><head><title>Just a moment...</title></head><body><h1>Checking your browser"
    b"</h1><p>cryptoflow sandbox: injected malformed response (synthetic)</p></body></html>"
)


@dataclass
class Fault:
    """An injected failure on one route; `times` = requests left (None = until cleared)."""

    route: str
    kind: str
    times: int | None = None
    symbol: str | None = None
    params: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "route": self.route,
            "kind": self.kind,
            "times_left": self.times,
            "symbol": self.symbol,
            **self.params,
        }


def make_fault(route: str, kind: str, times: int | None, symbol: str | None, params: dict[str, Any]) -> Fault:
    """Validate a fault request (ValueError explains what is wrong)."""
    if route not in ROUTES:
        raise ValueError(f"unknown route {route!r}; expected one of {ROUTES}")
    kind = str(kind)
    if kind not in FAULT_PARAMS:
        raise ValueError(f"unknown fault kind {kind!r}; expected one of {tuple(FAULT_PARAMS)}")
    if kind in DATA_KINDS and route != "klines":
        raise ValueError(f"fault {kind!r} only applies to the klines route")
    if kind in ROUTE_KINDS and route not in ROUTE_KINDS[kind]:
        raise ValueError(f"fault {kind!r} only applies to the {' and '.join(ROUTE_KINDS[kind])} route(s)")
    if kind.startswith("archive_") and not str(params.get("file", "")).endswith(".zip"):
        raise ValueError(f"{kind} needs file= (a zip's name, e.g. BTCUSDT-1h-2024-03.zip)")
    if kind == "replay" and not isinstance(params.get("body"), str | bytes):
        raise ValueError("replay needs body= (the exact response body)")
    if symbol is not None and route != "klines":
        raise ValueError("symbol= only applies to the klines route")
    unknown = set(params) - FAULT_PARAMS[kind]
    if unknown:
        raise ValueError(
            f"fault {kind!r} takes {sorted(FAULT_PARAMS[kind]) or 'no parameters'}, not {sorted(unknown)}"
        )
    if times is not None and (not isinstance(times, int) or times < 1):
        raise ValueError("times must be None or a positive int")
    if kind in ("missing_hours", "revised") and not all(
        isinstance(params.get(k), int) for k in ("start_ms", "end_ms")
    ):
        raise ValueError(f"{kind} needs int start_ms and end_ms (inclusive open-time range)")
    if kind == "truncated" and params.get("content_length", "full") not in ("full", "truncated"):
        raise ValueError("truncated content_length must be 'full' or 'truncated'")
    if kind in ("invalid_rows", "duplicate_rows") and int(params.get("every", 1)) < 1:
        raise ValueError("every must be >= 1")
    return Fault(route, kind, times, symbol, dict(params))


def classify(live: list[Fault]) -> tuple[list[Fault], Fault | None, list[Fault]]:
    """Sort the faults live on one request: (modifying faults; the first replacing-or-truncating fault;
    data faults). A replacing fault (status codes, timeout, malformed, replay) means the data faults are
    not applied (nor used up)."""
    modifiers = [f for f in live if f.kind in MODIFYING_KINDS]
    first = next((f for f in live if f.kind in REPLACING_KINDS or f.kind == "truncated"), None)
    data = (
        []
        if first and first.kind in REPLACING_KINDS
        else [f for f in live if f.kind in DATA_KINDS or f.kind in ROUTE_KINDS]
    )
    return modifiers, first, data


def apply_modifiers(reply: Reply, modifiers: list[Fault]) -> Reply:
    """Apply the modifying faults (slow, drip, oversized) to the answer about to be sent."""
    reply.delay += sum(float(f.params.get("delay", 2.0)) for f in modifiers if f.kind == "slow")
    for f in modifiers:
        if f.kind == "drip":
            reply.drip = (float(f.params.get("every_s", 0.5)), int(f.params.get("chunk", 64)))
        elif f.kind == "oversized" and reply.status == 200:
            reply.body += b" " * max(0, int(f.params.get("bytes", 100_000_000)) - len(reply.body))
    return reply


def fault_reply(api: str, fault: Fault, headers: dict[str, str], weight_limit: int = 6000) -> Reply:
    """The response a replacing fault produces, in the style of the API it imitates."""
    kind = fault.kind
    if kind == "timeout":
        return Reply(0, drop=True, delay=float(fault.params.get("delay", 30.0)))
    if kind == "replay":
        body = fault.params["body"]
        return Reply(
            200,
            body.encode() if isinstance(body, str) else body,
            coingecko_api.CONTENT_TYPE if api == "coingecko" else fear_greed_api.CONTENT_TYPE,
        )
    if kind == "malformed":
        return Reply(200, MALFORMED_BODY, HTML, headers)
    status = int(kind)
    headers = dict(headers)
    retry_after = 0
    if status in (429, 418):
        retry_after = int(fault.params.get("retry_after", 1 if status == 429 else 120))
        headers["Retry-After"] = str(retry_after)
    if api == "binance":
        return _binance_status(status, headers, weight_limit, retry_after)
    if api == "coingecko":
        return _coingecko_status(status, headers)
    reasons = {429: "Too Many Requests", 418: "I'm a teapot", 451: "Unavailable For Legal Reasons"}
    reasons |= {500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Temporarily Unavailable"}
    return Reply(status, nginx_page(status, reasons[status]), HTML, headers)


def _binance_status(status: int, headers: dict[str, str], weight_limit: int, retry_after: int) -> Reply:
    """Binance's answer for a status fault: its JSON error codes (a 418 names the ban's end), nginx's page
    for a 502."""
    if status == 429:
        return binance_api.weight_exceeded(weight_limit, headers)
    if status == 418:
        until = int(time.time() * 1000) + retry_after * 1000
        return binance_api.error(418, -1003, MSG_BANNED.format(until=until), headers)
    if status == 451:
        return binance_api.error(451, 0, MSG_REGION, headers)
    if status == 500:
        msg = "Internal error; unable to process your request. Please try again."
        return binance_api.error(500, -1001, msg, headers)
    if status == 503:
        msg = "Server is currently overloaded with other requests. Please try again in a few minutes."
        return binance_api.error(503, -1008, msg, headers)
    return Reply(status, nginx_page(502, "Bad Gateway"), HTML, headers)


def _coingecko_status(status: int, headers: dict[str, str]) -> Reply:
    """CoinGecko's answer for a status fault: its {"status": {...}} error body, nginx's page for a 502."""
    if status == 502:
        return Reply(502, nginx_page(502, "Bad Gateway"), HTML, headers)
    messages = {
        429: MSG_CG_RATE,
        503: MSG_CG_DOWN,
        500: "Internal server error",
        418: "Banned",
        451: "Unavailable",
    }
    body = json_body({"status": {"error_code": status, "error_message": messages[status]}})
    return Reply(status, body, coingecko_api.CONTENT_TYPE, headers)
