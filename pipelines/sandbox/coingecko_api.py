"""CoinGecko API answers: /api/v3/coins/markets and /api/v3/ping.

Parameter handling follows the public API (vs_currency required, usd only; per_page capped at 250; unknown
change windows ignored), and the feed is empty until two days of synthetic history exist. The data itself
comes from feeds.py; the schema_drift fault is applied here, to the page about to be sent.
"""

from __future__ import annotations

from collections.abc import Callable

from . import events, feeds
from .bars import HOUR_MS, T0_MS
from .coins import COINS
from .replies import Reply, Request, int_param, json_body

CONTENT_TYPE = "application/json; charset=utf-8"


def _bad_request(message: str) -> Reply:
    return Reply(400, json_body({"error": message}), CONTENT_TYPE)


def coins_markets(req: Request) -> Reply:
    """GET /api/v3/coins/markets: the listed coins at now, filtered, sorted and paged like CoinGecko."""
    q = req.query
    vs = q.get("vs_currency")
    if not vs:
        return _bad_request("Missing parameter vs_currency")
    if vs.lower() != "usd":
        return _bad_request("invalid vs_currency")
    order = q.get("order") or "market_cap_desc"
    if order not in feeds.ORDERS:
        return _bad_request("invalid order")
    per_page = int_param(q, "per_page")
    per_page = 100 if not isinstance(per_page, int) else min(max(per_page, 1), 250)  # CoinGecko caps at 250
    page = int_param(q, "page")
    page = 1 if not isinstance(page, int) else max(page, 1)
    windows = [w.strip() for w in (q.get("price_change_percentage") or "").split(",")]
    windows = [w for w in windows if w in feeds.CHANGE_WINDOWS]
    now = req.now_ms
    if now < T0_MS + 2 * 24 * HOUR_MS:
        return Reply(200, b"[]", CONTENT_TYPE)
    coins = tuple(c for c in COINS if events.on_coingecko(c.cg_id, now, req.calm))
    items = feeds.coin_markets(req.market, now, order, windows, coins)
    if q.get("ids"):
        ids = {s.strip().lower() for s in q["ids"].split(",")}
        items = [i for i in items if i["id"] in ids]
    if q.get("symbols"):
        syms = {s.strip().lower() for s in q["symbols"].split(",")}
        items = [i for i in items if i["symbol"] in syms]
    items = items[(page - 1) * per_page : page * per_page]
    for fault in req.faults:
        if fault.kind == "schema_drift":
            items = [feeds.drift(item, **fault.params) for item in items]
    return Reply(200, json_body(items), CONTENT_TYPE)


def ping() -> Reply:
    """GET /api/v3/ping: answered before faults and weights, as a liveness check."""
    return Reply(200, json_body({"gecko_says": "(V3) To the Moon!"}), CONTENT_TYPE)


# The route names faults use -> their answer (ping is no fault route: the server answers it directly).
HANDLERS: dict[str, Callable[[Request], Reply]] = {"markets": coins_markets}
