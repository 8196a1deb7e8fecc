"""alternative.me Fear & Greed API answers: /fng/ (the server redirects /fng to it, as the real one does).

The body keeps the real API's quirks: every value a string, a tab-indented layout, `limit=0` meaning the
whole history and an unparsable limit meaning 1. The index values come from feeds.py.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from . import feeds
from .replies import Reply, Request

CONTENT_TYPE = "application/json"


def fng(req: Request) -> Reply:
    """GET /fng/?limit=N&date_format=us|cn|kr|world: the newest N days, newest first."""
    q = req.query
    raw = (q.get("limit") or "1").strip()
    limit = int(raw) if raw.lstrip("-").isdigit() else 1
    entries = feeds.fear_greed(req.market, req.now_ms)
    if limit > 0:
        entries = entries[:limit]
    payload = feeds.fear_greed_payload(entries, req.now_ms, q.get("date_format"))
    return Reply(200, json.dumps(payload, indent="\t").encode(), CONTENT_TYPE)  # the API's own tab layout


# The route names faults use -> their answer.
HANDLERS: dict[str, Callable[[Request], Reply]] = {"fng": fng}
