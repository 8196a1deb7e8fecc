"""An offline HTTP imitation of Binance, CoinGecko and alternative.me serving SYNTHETIC data.

Routes keep the real wire formats (see shared/fixtures/real); Binance weight accounting, the open last bar,
a freezable clock and injectable faults let clients be tested against the failures the real APIs produce.
Every response carries `X-Sandbox: synthetic`.
"""

from __future__ import annotations

import json
import math
import threading
import time
from dataclasses import dataclass, field
from functools import cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np

from . import events, feeds, markets
from .markets import COIN_BY_SYMBOL, HOUR_MS, INTERVAL_HOURS, SYMBOLS, T0_MS, Bars

ROUTES = ("klines", "exchangeInfo", "ping", "time", "markets", "fng")
BINANCE_WEIGHTS = {"klines": 2, "exchangeInfo": 20, "ping": 1, "time": 1}
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
    # klines: the answer starts one bar before startTime (a server that rounds the start down)
    "early_bar": set(),
    # markets: schema drift as the real feed shows it - a field added (a number per coin), a field dropped,
    # numbers sent as numeric strings, integers sent as floats
    "schema_drift": {"add_field", "drop_field", "string_numbers", "float_ints"},
    # markets, fng: answer with exactly this body (e.g. a real response saved in tests/fixtures/real)
    "replay": {"body"},
}
MODIFYING_KINDS = frozenset({"slow", "drip", "oversized"})  # change how the normal answer is sent
DATA_KINDS = frozenset({"invalid_rows", "duplicate_rows", "missing_hours", "early_bar"})
ROUTE_KINDS = {"schema_drift": ("markets",), "replay": ("markets", "fng")}
REPLACING_KINDS = frozenset({"429", "418", "451", "500", "502", "503", "timeout", "malformed", "replay"})
INVALID_EVERY = 97  # invalid_rows default: bars whose number (open_time // interval_ms) % 97 == 0

BINANCE_JSON = "application/json;charset=UTF-8"
COINGECKO_JSON = "application/json; charset=utf-8"
FNG_JSON = "application/json"
HTML = "text/html; charset=utf-8"

MSG_WEIGHT = (
    "Too much request weight used; current limit is {limit} request weight per 1 MINUTE. "
    "Please use WebSocket Streams for live updates to avoid polling the API."
)
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


def _nginx(status: int, reason: str) -> bytes:
    return (
        f"<html>\r\n<head><title>{status} {reason}</title></head>\r\n<body>\r\n<center><h1>{status} {reason}"
        f"</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
    ).encode()


def _json(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


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


def invalid_row_kind(
    open_time: int, interval_ms: int, every: int = INVALID_EVERY, rows: Any = None
) -> str | None:
    """Which corruption the `invalid_rows` fault applies to a kline row, or None.

    A row is hit when `open_time` is in `rows` (if given) or else when bar number n = open_time // interval_ms
    satisfies n % every == 0. The kind cycles with n % 3: 0 -> open negated ("-123.45000000"),
    1 -> high and low swapped (high < low), 2 -> close replaced by "abc".
    """
    n = open_time // interval_ms
    hit = open_time in rows if rows is not None else n % every == 0
    if not hit:
        return None
    return ("negative_open", "high_below_low", "non_numeric_close")[n % 3]


def corrupt_rows(
    rows: list[list[Any]], interval_ms: int, every: int = INVALID_EVERY, explicit: Any = None
) -> None:
    """Apply the `invalid_rows` fault to decoded kline rows in place (see invalid_row_kind)."""
    for row in rows:
        kind = invalid_row_kind(row[0], interval_ms, every, explicit)
        if kind == "negative_open":
            row[1] = "-" + row[1]
        elif kind == "high_below_low":
            row[2], row[3] = row[3], row[2]
        elif kind == "non_numeric_close":
            row[4] = "abc"


def duplicate(bars: Bars, every: int = 1) -> Bars:
    """Every bar whose number % every == 0 appears twice in a row (the duplicate_rows fault)."""
    chosen = (bars.open_time // bars.interval_ms) % every == 0
    idx = np.repeat(np.arange(len(bars.open_time)), np.where(chosen, 2, 1))
    return bars._replace(open_time=bars.open_time[idx], data=bars.data[:, idx])


def _binance_error(status: int, code: int, msg: str, headers: dict[str, str]) -> Reply:
    return Reply(status, _json({"code": code, "msg": msg}), BINANCE_JSON, headers)


def _mandatory(name: str, headers: dict[str, str]) -> Reply:
    msg = f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed."
    return _binance_error(400, -1102, msg, headers)


def _illegal(name: str, headers: dict[str, str]) -> Reply:
    msg = f"Illegal characters found in parameter '{name}'; legal range is '^[0-9]{{1,20}}$'."
    return _binance_error(400, -1100, msg, headers)


def _int_param(q: dict[str, str], name: str) -> int | str | None:
    """None if absent, the int if valid, "bad" otherwise."""
    raw = q.get(name)
    if raw is None or raw == "":
        return None
    return int(raw) if raw.isdigit() and len(raw) <= 20 else "bad"


def _exchange_symbols(now_ms: int, calm: bool) -> tuple[dict[str, Any], ...]:
    """exchangeInfo `symbols` at now_ms: each sandbox pair with its status (sandbox/events.py; a removed or
    not yet listed pair is absent), plus long-delisted (BREAK) and non-USDT pairs."""
    listed = []
    for entry in _symbol_entries():
        state = (
            events.status(entry["symbol"], now_ms, calm)
            if entry["symbol"] in COIN_BY_SYMBOL
            else entry["status"]
        )
        if state is not None:
            listed.append({**entry, "status": state})
    return tuple(listed)


@cache
def _symbol_entries() -> tuple[dict[str, Any], ...]:
    """Every pair the sandbox has ever listed, with its static exchangeInfo fields."""
    pairs = [
        (c.symbol, c.base, "USDT", "TRADING", c.tick_units, c.lot_decimals) for c in COIN_BY_SYMBOL.values()
    ]
    pairs += [
        ("BCCUSDT", "BCC", "USDT", "BREAK", 10**6, 5),
        ("VENUSDT", "VEN", "USDT", "BREAK", 100, 2),
        ("ETHBTC", "ETH", "BTC", "TRADING", 100, 4),
        ("BNBBTC", "BNB", "BTC", "TRADING", 10, 3),
    ]
    out = []
    for symbol, base, quote, status, tick, lot in pairs:
        out.append(
            {
                "symbol": symbol,
                "status": status,
                "baseAsset": base,
                "baseAssetPrecision": 8,
                "quoteAsset": quote,
                "quotePrecision": 8,
                "quoteAssetPrecision": 8,
                "baseCommissionPrecision": 8,
                "quoteCommissionPrecision": 8,
                "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT"],
                "icebergAllowed": True,
                "ocoAllowed": True,
                "quoteOrderQtyMarketAllowed": True,
                "isSpotTradingAllowed": True,
                "isMarginTradingAllowed": False,
                "filters": [
                    {
                        "filterType": "PRICE_FILTER",
                        "minPrice": markets._dec(tick, 8),
                        "maxPrice": "1000000.00000000",
                        "tickSize": markets._dec(tick, 8),
                    },
                    {
                        "filterType": "PERCENT_PRICE",
                        "multiplierUp": "5",
                        "multiplierDown": "0.2",
                        "avgPriceMins": 5,
                    },
                    {
                        "filterType": "LOT_SIZE",
                        "minQty": markets._dec(1, lot),
                        "maxQty": "9000000.00000000",
                        "stepSize": markets._dec(1, lot),
                    },
                    {
                        "filterType": "MIN_NOTIONAL",
                        "minNotional": "10.00000000",
                        "applyToMarket": True,
                        "avgPriceMins": 5,
                    },
                    {"filterType": "ICEBERG_PARTS", "limit": 10},
                    {"filterType": "MAX_NUM_ORDERS", "maxNumOrders": 200},
                ],
                "permissions": ["SPOT"],
            }
        )
    return tuple(out)


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True  # a stuck handler (timeout fault, idle keep-alive) never blocks stop()
    request_queue_size = 128
    sandbox: SandboxServer


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: paging clients reuse one connection
    disable_nagle_algorithm = True  # headers and body go out in two writes; avoid the 40 ms delayed-ACK stall
    server_version = "cryptoflow-sandbox/1"
    sys_version = ""
    timeout = 120  # idle keep-alive connections give their thread back
    server: _HTTPServer

    def version_string(self) -> str:
        return self.server_version

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    def _serve(self, method: str) -> None:
        sandbox = self.server.sandbox
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        try:
            reply = sandbox.dispatch(method, self.path, body)
        except Exception as exc:  # a sandbox bug must surface as a 500, not a hung client
            reply = Reply(500, _json({"error": f"sandbox error: {type(exc).__name__}: {exc}"}))
        if reply.delay > 0 and sandbox._stopping.wait(reply.delay):
            reply.drop = True  # the server is stopping: give up on the delayed answer
        if reply.drop:
            self.close_connection = True
            return
        payload, declared = reply.body, len(reply.body)
        if reply.truncate:
            payload = payload[: len(payload) // 2]
            if reply.truncate == "truncated":
                declared = len(payload)
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(declared))
        self.send_header("X-Sandbox", "synthetic")
        for name, value in reply.headers.items():
            self.send_header(name, value)
        if reply.truncate == "full":
            self.send_header("Connection", "close")
            self.close_connection = True
        try:
            self.end_headers()
            if reply.drip:
                every_s, chunk = reply.drip
                for start in range(0, len(payload), chunk):
                    self.wfile.write(payload[start : start + chunk])
                    self.wfile.flush()
                    if sandbox._stopping.wait(every_s):
                        break
            else:
                self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (e.g. its own timeout)
            self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.sandbox.verbose:
            super().log_message(format, *args)


class SandboxServer:
    """Binance + CoinGecko + alternative.me imitation on one port (SYNTHETIC data), in a daemon thread."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        seed: int = 42,
        now_ms: int | None = None,
        weight_limit: int = 6000,
        *,
        verbose: bool = False,
        calm: bool = False,
    ) -> None:
        self.host = host
        self.calm = calm  # True: every pair trades forever, no outages, nothing revised (sandbox/events.py)
        self.port = port
        self.seed = seed
        self.weight_limit = weight_limit
        self.verbose = verbose
        self.market = markets.market(seed)
        self._now = now_ms
        self._faults: list[Fault] = []
        self._lock = threading.Lock()
        self._weight_minute = -1
        self._weight_used = 0
        self._stopping = threading.Event()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ---- lifecycle ------------------------------------------------------------------------------

    def start(self) -> SandboxServer:
        """Bind and serve in a daemon thread; returns self."""
        if self._httpd is not None:
            return self
        self._stopping.clear()
        httpd = _HTTPServer((self.host, self.port), _Handler)
        httpd.sandbox = self
        self._httpd = httpd
        self.port = httpd.server_address[1]
        self._thread = threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"sandbox:{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; delayed (slow/timeout) handlers are woken and drop their connection."""
        if self._httpd is None:
            return
        self._stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = None
        self._thread = None

    def __enter__(self) -> SandboxServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def binance_url(self) -> str:
        return f"{self.url}/binance"

    @property
    def coingecko_url(self) -> str:
        return f"{self.url}/coingecko"

    @property
    def fear_greed_url(self) -> str:
        return f"{self.url}/alternative"

    # ---- controls -------------------------------------------------------------------------------

    def set_now(self, ms: int | None) -> None:
        """Freeze the sandbox clock at ms (UTC epoch ms); None follows the real clock again."""
        self._now = None if ms is None else int(ms)

    def now(self) -> int:
        """The sandbox clock in ms."""
        return markets.now_default(self._now)

    def set_fault(
        self, route: str, kind: str, times: int | None = None, symbol: str | None = None, **params: Any
    ) -> None:
        """Inject a fault on a route (replaces one with the same route, kind and symbol)."""
        fault = _make_fault(route, kind, times, symbol, params)
        with self._lock:
            self._faults = [
                f
                for f in self._faults
                if (f.route, f.kind, f.symbol) != (fault.route, fault.kind, fault.symbol)
            ]
            self._faults.append(fault)

    def clear_faults(self, route: str | None = None) -> None:
        """Remove every fault, or only those of one route."""
        with self._lock:
            self._faults = [f for f in self._faults if route is not None and f.route != route]

    @property
    def faults(self) -> list[dict[str, Any]]:
        with self._lock:
            return [f.as_dict() for f in self._faults]

    @property
    def used_weight(self) -> int:
        """Binance request weight used in the current (wall-clock) minute."""
        with self._lock:
            return self._weight_used if self._weight_minute == int(time.time() // 60) else 0

    def state(self) -> dict[str, Any]:
        return {
            "data": "synthetic",
            "seed": self.seed,
            "market": "calm" if self.calm else "realistic",
            "now_ms": self.now(),
            "clock": "real" if self._now is None else "frozen",
            "weight_limit": self.weight_limit,
            "used_weight_1m": self.used_weight,
            "faults": self.faults,
            "symbols": len(SYMBOLS),
            "urls": {
                "binance": self.binance_url,
                "coingecko": self.coingecko_url,
                "fear_greed": self.fear_greed_url,
            },
        }

    # ---- request plumbing -----------------------------------------------------------------------

    def _charge(self, weight: int) -> tuple[int, int | None]:
        """Add weight to this calendar minute; returns (used, Retry-After seconds if over the limit)."""
        with self._lock:
            now = time.time()
            minute = int(now // 60)
            if minute != self._weight_minute:
                self._weight_minute, self._weight_used = minute, 0
            self._weight_used += weight  # rejected requests count too, as on Binance
            over = self._weight_used > self.weight_limit
            return self._weight_used, max(1, math.ceil(60 - now % 60)) if over else None

    def _take_faults(self, route: str, symbol: str | None) -> tuple[list[Fault], Fault | None, list[Fault]]:
        """Pick the faults that apply to one request and use up one of their `times`.

        Returns (modifying faults: slow, drip, oversized; the first replacing-or-truncating fault; data
        faults); a replacing fault (status codes, timeout, malformed) means the data faults are not applied
        (nor used up).
        """
        with self._lock:
            live = [f for f in self._faults if f.route == route and f.symbol in (None, symbol)]
            slow = [f for f in live if f.kind in MODIFYING_KINDS]
            first = next((f for f in live if f.kind in REPLACING_KINDS or f.kind == "truncated"), None)
            data = (
                []
                if first and first.kind in REPLACING_KINDS
                else [f for f in live if f.kind in DATA_KINDS or f.kind in ROUTE_KINDS]
            )
            for f in [*slow, *data, *([first] if first else [])]:
                if f.times is not None:
                    f.times -= 1
            self._faults = [f for f in self._faults if f.times is None or f.times > 0]
            return slow, first, data

    def dispatch(self, method: str, raw_path: str, body: bytes) -> Reply:
        """Route one request to a Reply (faults, weight and wire formats applied)."""
        parts = urlsplit(raw_path)
        path = parts.path
        q = {k: v[0] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        if path.startswith("/__sandbox/"):
            return self._control(method, path, q, body)
        if path in ("", "/"):
            return Reply(200, _json({"sandbox": "cryptoflow", "data": "synthetic", **self.state()["urls"]}))
        if path == "/alternative/fng":  # the real API redirects to the trailing-slash form
            location = "/alternative/fng/" + (f"?{parts.query}" if parts.query else "")
            return Reply(301, b"", "text/html", {"Location": location})
        route_api = ROUTE_TABLE.get(path)
        if route_api is None:
            return Reply(404, _json({"error": "Not Found", "path": path}))
        if method != "GET":
            return Reply(405, _json({"error": "Method Not Allowed"}))
        route, api = route_api
        headers: dict[str, str] = {}
        if api == "binance":
            used, retry_after = self._charge(BINANCE_WEIGHTS[route])
            headers["X-MBX-USED-WEIGHT-1M"] = str(used)
            if retry_after is not None:
                headers["Retry-After"] = str(retry_after)
                return _binance_error(429, -1003, MSG_WEIGHT.format(limit=self.weight_limit), headers)
        if route == "coingecko_ping":
            return Reply(200, _json({"gecko_says": "(V3) To the Moon!"}), COINGECKO_JSON)
        slow, first, data = self._take_faults(route, q.get("symbol") if route == "klines" else None)
        delay = sum(float(f.params.get("delay", 2.0)) for f in slow if f.kind == "slow")
        if first is not None and first.kind in REPLACING_KINDS:
            reply = _fault_reply(api, first, headers, self.weight_limit)
        else:
            reply = getattr(self, f"_route_{route}")(q, data, headers)
            if first is not None:
                reply.truncate = first.params.get("content_length", "full")
        reply.delay += delay
        for f in slow:
            if f.kind == "drip":
                reply.drip = (float(f.params.get("every_s", 0.5)), int(f.params.get("chunk", 64)))
            elif f.kind == "oversized" and reply.status == 200:
                reply.body += b" " * max(0, int(f.params.get("bytes", 100_000_000)) - len(reply.body))
        return reply

    # ---- control routes -------------------------------------------------------------------------

    def _control(self, method: str, path: str, q: dict[str, str], body: bytes) -> Reply:
        try:
            payload = json.loads(body) if body else {}
            if path == "/__sandbox/state" and method == "GET":
                return Reply(200, _json(self.state()))
            if path == "/__sandbox/faults" and method == "POST":
                params = dict(payload)
                self.set_fault(params.pop("route", ""), params.pop("kind", ""), **params)
                return Reply(200, _json({"ok": True, "faults": self.faults}))
            if path == "/__sandbox/faults" and method == "DELETE":
                self.clear_faults(q.get("route") or payload.get("route"))
                return Reply(200, _json({"ok": True, "faults": self.faults}))
            if path == "/__sandbox/clock" and method == "POST":
                self.set_now(payload.get("now_ms"))
                return Reply(200, _json({"ok": True, "now_ms": self.now(), "frozen": self._now is not None}))
        except (ValueError, TypeError, AttributeError) as exc:
            return Reply(400, _json({"error": str(exc)}))
        return Reply(404, _json({"error": "Not Found", "path": path}))

    # ---- Binance --------------------------------------------------------------------------------

    def _route_klines(self, q: dict[str, str], faults: list[Fault], headers: dict[str, str]) -> Reply:
        symbol, interval = q.get("symbol"), q.get("interval")
        if not symbol:
            return _mandatory("symbol", headers)
        if not interval:
            return _mandatory("interval", headers)
        if interval not in INTERVAL_HOURS:
            return _binance_error(400, -1120, "Invalid interval.", headers)
        if symbol not in COIN_BY_SYMBOL or events.status(symbol, self.now(), self.calm) is None:
            return _binance_error(400, -1121, "Invalid symbol.", headers)
        values = {}
        for name in ("startTime", "endTime", "limit"):
            values[name] = _int_param(q, name)
            if values[name] == "bad":
                return _illegal(name, headers)
        limit = 500 if values["limit"] is None else values["limit"]
        if not 1 <= limit <= 1000:
            return _binance_error(400, -1130, "Data sent for parameter 'limit' is not valid.", headers)
        missing = [(f.params["start_ms"], f.params["end_ms"]) for f in faults if f.kind == "missing_hours"]
        start = values["startTime"]
        if start is not None and any(f.kind == "early_bar" for f in faults):
            start, limit = start - INTERVAL_HOURS[interval] * 3_600_000, limit + 1
        bars = events.exchange_bars(
            self.market,
            symbol,
            interval,
            start,
            values["endTime"],
            self.now(),
            limit,
            missing,
            self.calm,
        )
        for f in faults:
            if f.kind == "duplicate_rows":
                bars = duplicate(bars, int(f.params.get("every", 1)))
        invalid = [f for f in faults if f.kind == "invalid_rows"]
        if not invalid:
            return Reply(200, markets.klines_json(bars), BINANCE_JSON, headers)
        rows = markets.rows_from_bars(bars)
        for f in invalid:
            explicit = set(f.params["rows"]) if f.params.get("rows") is not None else None
            corrupt_rows(rows, bars.interval_ms, int(f.params.get("every", INVALID_EVERY)), explicit)
        return Reply(200, _json(rows), BINANCE_JSON, headers)

    def _route_exchangeInfo(self, q: dict[str, str], faults: list[Fault], headers: dict[str, str]) -> Reply:
        symbols = _exchange_symbols(self.now(), self.calm)
        if q.get("symbol"):
            wanted = [q["symbol"]]
        elif q.get("symbols"):
            try:
                wanted = json.loads(q["symbols"])
                assert isinstance(wanted, list) and all(isinstance(s, str) for s in wanted)
            except (ValueError, AssertionError):
                return _illegal("symbols", headers)
        else:
            wanted = None
        if wanted is not None:
            by_name = {s["symbol"]: s for s in symbols}
            if any(s not in by_name for s in wanted):
                return _binance_error(400, -1121, "Invalid symbol.", headers)
            symbols = tuple(by_name[s] for s in wanted)
        body = {
            "timezone": "UTC",
            "serverTime": self.now(),
            "rateLimits": [
                {
                    "rateLimitType": "REQUEST_WEIGHT",
                    "interval": "MINUTE",
                    "intervalNum": 1,
                    "limit": self.weight_limit,
                },
                {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 100},
                {"rateLimitType": "ORDERS", "interval": "DAY", "intervalNum": 1, "limit": 200000},
                {"rateLimitType": "RAW_REQUESTS", "interval": "MINUTE", "intervalNum": 5, "limit": 61000},
            ],
            "exchangeFilters": [],
            "symbols": list(symbols),
        }
        return Reply(200, _json(body), BINANCE_JSON, headers)

    def _route_ping(self, q: dict[str, str], faults: list[Fault], headers: dict[str, str]) -> Reply:
        return Reply(200, b"{}", BINANCE_JSON, headers)

    def _route_time(self, q: dict[str, str], faults: list[Fault], headers: dict[str, str]) -> Reply:
        return Reply(200, _json({"serverTime": self.now()}), BINANCE_JSON, headers)

    # ---- CoinGecko ------------------------------------------------------------------------------

    def _route_markets(self, q: dict[str, str], faults: list[Fault], headers: dict[str, str]) -> Reply:
        vs = q.get("vs_currency")
        if not vs:
            return Reply(400, _json({"error": "Missing parameter vs_currency"}), COINGECKO_JSON)
        if vs.lower() != "usd":
            return Reply(400, _json({"error": "invalid vs_currency"}), COINGECKO_JSON)
        order = q.get("order") or "market_cap_desc"
        if order not in feeds.ORDERS:
            return Reply(400, _json({"error": "invalid order"}), COINGECKO_JSON)
        per_page = _int_param(q, "per_page")
        per_page = (
            100 if not isinstance(per_page, int) else min(max(per_page, 1), 250)
        )  # CoinGecko caps at 250
        page = _int_param(q, "page")
        page = 1 if not isinstance(page, int) else max(page, 1)
        windows = [w.strip() for w in (q.get("price_change_percentage") or "").split(",")]
        windows = [w for w in windows if w in feeds.CHANGE_WINDOWS]
        now = self.now()
        if now < T0_MS + 2 * 24 * HOUR_MS:
            return Reply(200, b"[]", COINGECKO_JSON)
        coins = tuple(c for c in markets.COINS if events.on_coingecko(c.cg_id, now, self.calm))
        items = feeds.coin_markets(self.market, now, order, windows, coins)
        if q.get("ids"):
            ids = {s.strip().lower() for s in q["ids"].split(",")}
            items = [i for i in items if i["id"] in ids]
        if q.get("symbols"):
            syms = {s.strip().lower() for s in q["symbols"].split(",")}
            items = [i for i in items if i["symbol"] in syms]
        items = items[(page - 1) * per_page : page * per_page]
        for fault in faults:
            if fault.kind == "schema_drift":
                items = [feeds.drift(item, **fault.params) for item in items]
        return Reply(200, _json(items), COINGECKO_JSON)

    # ---- alternative.me -------------------------------------------------------------------------

    def _route_fng(self, q: dict[str, str], faults: list[Fault], headers: dict[str, str]) -> Reply:
        raw = (q.get("limit") or "1").strip()
        limit = int(raw) if raw.lstrip("-").isdigit() else 1
        now = self.now()
        entries = feeds.fear_greed(self.market, now)
        if limit > 0:
            entries = entries[:limit]
        payload = feeds.fear_greed_payload(entries, now, q.get("date_format"))
        return Reply(200, json.dumps(payload, indent="\t").encode(), FNG_JSON)  # the API's own tab layout


ROUTE_TABLE: dict[str, tuple[str, str]] = {
    "/binance/api/v3/klines": ("klines", "binance"),
    "/binance/api/v3/exchangeInfo": ("exchangeInfo", "binance"),
    "/binance/api/v3/ping": ("ping", "binance"),
    "/binance/api/v3/time": ("time", "binance"),
    "/coingecko/api/v3/coins/markets": ("markets", "coingecko"),
    "/coingecko/api/v3/ping": ("coingecko_ping", "coingecko"),
    "/alternative/fng/": ("fng", "alternative"),
}


def _make_fault(
    route: str, kind: str, times: int | None, symbol: str | None, params: dict[str, Any]
) -> Fault:
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
    if kind == "missing_hours" and not all(isinstance(params.get(k), int) for k in ("start_ms", "end_ms")):
        raise ValueError("missing_hours needs int start_ms and end_ms (inclusive open-time range)")
    if kind == "truncated" and params.get("content_length", "full") not in ("full", "truncated"):
        raise ValueError("truncated content_length must be 'full' or 'truncated'")
    if kind in ("invalid_rows", "duplicate_rows") and int(params.get("every", 1)) < 1:
        raise ValueError("every must be >= 1")
    return Fault(route, kind, times, symbol, dict(params))


def _fault_reply(api: str, fault: Fault, headers: dict[str, str], weight_limit: int = 6000) -> Reply:
    """The response a replacing fault produces, in the style of the API it imitates."""
    kind = fault.kind
    if kind == "timeout":
        return Reply(0, drop=True, delay=float(fault.params.get("delay", 30.0)))
    if kind == "replay":
        body = fault.params["body"]
        return Reply(
            200,
            body.encode() if isinstance(body, str) else body,
            COINGECKO_JSON if api == "coingecko" else FNG_JSON,
        )
    if kind == "malformed":
        return Reply(200, MALFORMED_BODY, HTML, headers)
    status = int(kind)
    headers = dict(headers)
    if status in (429, 418):
        retry_after = int(fault.params.get("retry_after", 1 if status == 429 else 120))
        headers["Retry-After"] = str(retry_after)
    if api == "binance":
        if status == 429:
            return _binance_error(429, -1003, MSG_WEIGHT.format(limit=weight_limit), headers)
        if status == 418:
            until = int(time.time() * 1000) + retry_after * 1000
            return _binance_error(418, -1003, MSG_BANNED.format(until=until), headers)
        if status == 451:
            return _binance_error(451, 0, MSG_REGION, headers)
        if status == 500:
            return _binance_error(
                500, -1001, "Internal error; unable to process your request. Please try again.", headers
            )
        if status == 503:
            msg = "Server is currently overloaded with other requests. Please try again in a few minutes."
            return _binance_error(503, -1008, msg, headers)
        return Reply(status, _nginx(502, "Bad Gateway"), HTML, headers)
    if api == "coingecko":
        if status == 502:
            return Reply(502, _nginx(502, "Bad Gateway"), HTML, headers)
        messages = {
            429: MSG_CG_RATE,
            503: MSG_CG_DOWN,
            500: "Internal server error",
            418: "Banned",
            451: "Unavailable",
        }
        return Reply(
            status,
            _json({"status": {"error_code": status, "error_message": messages[status]}}),
            COINGECKO_JSON,
            headers,
        )
    reasons = {429: "Too Many Requests", 418: "I'm a teapot", 451: "Unavailable For Legal Reasons"}
    reasons |= {500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Temporarily Unavailable"}
    return Reply(status, _nginx(status, reasons[status]), HTML, headers)


def serve(
    host: str = "127.0.0.1", port: int = 8765, seed: int = 42, *, verbose: bool = False, calm: bool = False
) -> None:
    """Run the sandbox in the foreground until Ctrl-C (the `cryptoflow sandbox` command)."""
    srv = SandboxServer(host, port, seed, verbose=verbose, calm=calm).start()
    market = (
        "calm: every pair trades forever" if calm else "realistic: listings, delistings, outages, revisions"
    )
    print(f"cryptoflow sandbox - SYNTHETIC data (seed={seed}, {market}); nothing here is real market data")
    print(f"  Binance       {srv.binance_url}      (GET /api/v3/klines, /api/v3/exchangeInfo, /api/v3/ping)")
    print(f"  CoinGecko     {srv.coingecko_url}    (GET /api/v3/coins/markets)")
    print(f"  Fear & Greed  {srv.fear_greed_url}  (GET /fng/)")
    print(f"  Controls      {srv.url}/__sandbox/faults | /__sandbox/clock | /__sandbox/state")
    print("Press Ctrl-C to stop.", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        srv.stop()
