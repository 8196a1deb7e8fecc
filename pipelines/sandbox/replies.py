"""What a sandbox route receives and answers, shared by the server, the API modules and the fault catalogue.

It lives apart from server.py so the API modules and faults.py can build replies without importing the
HTTP server (which imports them).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .events import Lifecycle
    from .faults import Fault
    from .series import Market

HTML = "text/html; charset=utf-8"


@dataclass
class Reply:
    """What the handler writes; `drop` closes the connection without a response (timeout fault)."""

    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    drop: bool = False
    drip: tuple[float, int] | None = None  # (seconds between chunks, chunk bytes): the drip fault
    truncate: str | None = (
        None  # "full": declare the full length, send half, close; "truncated": declare half
    )


@dataclass(frozen=True)
class Request:
    """One API request as a route sees it: the query, the data faults to apply and the sandbox's state."""

    query: dict[str, str]
    faults: list[Fault]  # data faults only (invalid_rows, schema_drift, ...); replacing ones never get here
    headers: dict[str, str]  # headers every answer carries (Binance's used weight)
    market: Market
    now_ms: int
    calm: bool
    weight_limit: int
    lifecycles: Mapping[str, Lifecycle] = field(default_factory=dict)  # the server's own (set_lifecycle)


def json_body(obj: Any) -> bytes:
    """Compact JSON, as Binance and CoinGecko send it."""
    return json.dumps(obj, separators=(",", ":")).encode()


def int_param(q: dict[str, str], name: str) -> int | str | None:
    """None if absent, the int if valid, "bad" otherwise (Binance's rule for numeric parameters, which
    CoinGecko's paging parameters reuse)."""
    raw = q.get(name)
    if raw is None or raw == "":
        return None
    return int(raw) if raw.isdigit() and len(raw) <= 20 else "bad"


def nginx_page(status: int, reason: str) -> bytes:
    """The HTML error page an nginx in front of an API answers with (502s, alternative.me's errors)."""
    return (
        f"<html>\r\n<head><title>{status} {reason}</title></head>\r\n<body>\r\n<center><h1>{status} {reason}"
        f"</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
    ).encode()
