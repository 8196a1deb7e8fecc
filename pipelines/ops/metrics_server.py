"""The /metrics HTTP endpoint around the cryptoflow collector (ops/metrics.py).

from pipelines.ops import metrics_server
server = metrics_server.start(settings, port=9108)   # background thread; server.stop() ends it
metrics_server.serve(settings, "127.0.0.1", 9108)    # the same, blocking until Ctrl-C or SIGTERM
"""

from __future__ import annotations

import logging
import signal
import threading
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server

from pipelines.ops.metrics import CACHE_S, DEFAULT_HOST, DEFAULT_PORT, CryptoflowCollector
from pipelines.settings import Settings

log = logging.getLogger(__name__)


def collector(settings: Settings, cache_s: float = CACHE_S) -> CryptoflowCollector:
    return CryptoflowCollector(settings, cache_s)


def registry(settings: Settings, cache_s: float = CACHE_S) -> tuple[CollectorRegistry, CryptoflowCollector]:
    """A registry of its own (not prometheus_client's global one) holding only the cryptoflow collector."""
    reg = CollectorRegistry()
    coll = collector(settings, cache_s)
    reg.register(coll)
    return reg, coll


@dataclass
class MetricsServer:
    """A running endpoint: `url` to scrape, `stop()` to shut it down."""

    server: Any
    thread: threading.Thread
    collector: CryptoflowCollector
    host: str
    port: int

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def start(
    settings: Settings, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, *, cache_s: float = CACHE_S
) -> MetricsServer:
    """Serve /metrics on host:port from a background thread (port 0: any free port, see `.port`)."""
    reg, coll = registry(settings, cache_s)
    server, thread = start_http_server(port, addr=host, registry=reg)
    return MetricsServer(server, thread, coll, host, server.server_port)


def serve(settings: Settings, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> None:
    """Serve /metrics until Ctrl-C or SIGTERM, then stop cleanly."""
    server = start(settings, host, port)
    log.info("serving metrics", extra={"url": server.url})
    stop = threading.Event()
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        log.info("metrics endpoint stopped")
