"""An offline HTTP imitation of Binance, CoinGecko and alternative.me serving SYNTHETIC data.

This module is the HTTP side only: the threaded server, URL routing, Binance's request-weight accounting,
the control routes (/__sandbox/...) and applying faults around a route's answer. The answers themselves
live in binance_api.py, coingecko_api.py and fear_greed_api.py, the fault catalogue in faults.py. Routes
keep the real wire formats (see tests/fixtures/real); a freezable clock and injectable faults let clients
be tested against the failures the real APIs produce. Every response carries `X-Sandbox: synthetic`.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from . import archive, binance_api, coingecko_api, events, fear_greed_api, markets
from .coins import SYMBOLS
from .faults import REPLACING_KINDS, Fault, apply_modifiers, classify, fault_reply, make_fault
from .replies import Reply, Request, json_body

__all__ = ["Reply", "SandboxServer", "serve"]

# path -> (route name, API); the route name is what faults and Binance weights refer to
ROUTE_TABLE: dict[str, tuple[str, str]] = {
    "/binance/api/v3/klines": ("klines", "binance"),
    "/binance/api/v3/exchangeInfo": ("exchangeInfo", "binance"),
    "/binance/api/v3/ping": ("ping", "binance"),
    "/binance/api/v3/time": ("time", "binance"),
    "/coingecko/api/v3/coins/markets": ("markets", "coingecko"),
    "/coingecko/api/v3/ping": ("coingecko_ping", "coingecko"),
    "/alternative/fng/": ("fng", "alternative"),
}
HANDLERS: dict[str, Callable[[Request], Reply]] = {
    **binance_api.HANDLERS,
    **coingecko_api.HANDLERS,
    **fear_greed_api.HANDLERS,
}


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
            reply = Reply(500, json_body({"error": f"sandbox error: {type(exc).__name__}: {exc}"}))
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
        self._lifecycles: dict[str, events.Lifecycle] = {}
        self._lock = threading.Lock()
        self._weight_minute = -1
        self._weight_used = 0
        self.peak_weight = (
            0  # the most request weight any one minute has used (what tests compare with budgets)
        )
        self.weight_rejections = 0  # requests answered 429 for weight
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

    @property
    def archive_url(self) -> str:
        """The kline archive's base (data.binance.vision's role): files under /data/spot/..."""
        return f"{self.url}/archive"

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
        """Inject a fault on a route (replaces one with the same route, kind, symbol and archive file)."""
        fault = make_fault(route, kind, times, symbol, params)
        with self._lock:
            self._faults = [
                f
                for f in self._faults
                if (f.route, f.kind, f.symbol, f.params.get("file"))
                != (
                    fault.route,
                    fault.kind,
                    fault.symbol,
                    fault.params.get("file"),
                )  # archive faults: per file
            ]
            self._faults.append(fault)

    def set_lifecycle(
        self,
        symbol: str,
        *,
        listed_ms: int | None = None,
        halted_ms: int | None = None,
        removed_ms: int | None = None,
    ) -> None:
        """Give one pair a life of this server's own (a delisting on a date a test chooses): from halted_ms
        it reports BREAK and has no candles; from removed_ms exchangeInfo drops it and klines answer -1121."""
        life = events.Lifecycle(
            listed_ms=events.Lifecycle.listed_ms if listed_ms is None else listed_ms,
            halted_ms=halted_ms,
            removed_ms=removed_ms,
        )
        with self._lock:
            self._lifecycles[symbol] = life

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
                "binance_archive": self.archive_url,
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
            self.peak_weight = max(self.peak_weight, self._weight_used)
            over = self._weight_used > self.weight_limit
            self.weight_rejections += over
            return self._weight_used, max(1, math.ceil(60 - now % 60)) if over else None

    def _take_faults(self, route: str, symbol: str | None) -> tuple[list[Fault], Fault | None, list[Fault]]:
        """Pick the faults that apply to one request (sorted by faults.classify) and use up one of the
        `times` of each fault that will act."""
        with self._lock:
            live = [f for f in self._faults if f.route == route and f.symbol in (None, symbol)]
            slow, first, data = classify(live)
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
            return Reply(
                200, json_body({"sandbox": "cryptoflow", "data": "synthetic", **self.state()["urls"]})
            )
        if path == "/alternative/fng":  # the real API redirects to the trailing-slash form
            location = "/alternative/fng/" + (f"?{parts.query}" if parts.query else "")
            return Reply(301, b"", "text/html", {"Location": location})
        if path.startswith(archive.PREFIX):  # the kline archive: no request weight, S3's answers
            if method != "GET":
                return Reply(405, json_body({"error": "Method Not Allowed"}))
            slow, first, data = self._take_faults("archive", None)
            if first is not None and first.kind in REPLACING_KINDS:
                return apply_modifiers(fault_reply("archive", first, {}), slow)
            return apply_modifiers(archive.answer(self.market, path, self.now(), data), slow)
        route_api = ROUTE_TABLE.get(path)
        if route_api is None:
            return Reply(404, json_body({"error": "Not Found", "path": path}))
        if method != "GET":
            return Reply(405, json_body({"error": "Method Not Allowed"}))
        route, api = route_api
        headers: dict[str, str] = {}
        if api == "binance":
            used, retry_after = self._charge(binance_api.WEIGHTS[route])
            headers["X-MBX-USED-WEIGHT-1M"] = str(used)
            if retry_after is not None:
                headers["Retry-After"] = str(retry_after)
                return binance_api.weight_exceeded(self.weight_limit, headers)
        if route == "coingecko_ping":
            return coingecko_api.ping()
        slow, first, data = self._take_faults(route, q.get("symbol") if route == "klines" else None)
        if first is not None and first.kind in REPLACING_KINDS:
            reply = fault_reply(api, first, headers, self.weight_limit)
        else:
            request = Request(
                q,
                data,
                headers,
                self.market,
                self.now(),
                self.calm,
                self.weight_limit,
                dict(self._lifecycles),
            )
            reply = HANDLERS[route](request)
            if first is not None:
                reply.truncate = first.params.get("content_length", "full")
        return apply_modifiers(reply, slow)

    # ---- control routes -------------------------------------------------------------------------

    def _control(self, method: str, path: str, q: dict[str, str], body: bytes) -> Reply:
        try:
            payload = json.loads(body) if body else {}
            if path == "/__sandbox/state" and method == "GET":
                return Reply(200, json_body(self.state()))
            if path == "/__sandbox/faults" and method == "POST":
                params = dict(payload)
                self.set_fault(params.pop("route", ""), params.pop("kind", ""), **params)
                return Reply(200, json_body({"ok": True, "faults": self.faults}))
            if path == "/__sandbox/faults" and method == "DELETE":
                self.clear_faults(q.get("route") or payload.get("route"))
                return Reply(200, json_body({"ok": True, "faults": self.faults}))
            if path == "/__sandbox/clock" and method == "POST":
                self.set_now(payload.get("now_ms"))
                return Reply(
                    200, json_body({"ok": True, "now_ms": self.now(), "frozen": self._now is not None})
                )
        except (ValueError, TypeError, AttributeError) as exc:
            return Reply(400, json_body({"error": str(exc)}))
        return Reply(404, json_body({"error": "Not Found", "path": path}))


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
