"""The one HTTP client: retries with backoff and jitter, Retry-After, ban stop, client-side rate limits.

Sources call `ApiClient.get_json`; it knows nothing about which API (or the sandbox) it is talking to beyond
the limits it was configured with.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import requests
import urllib3

log = logging.getLogger(__name__)

T = TypeVar("T")
RETRYABLE_STATUS = {500, 502, 503, 504}
BAN_STATUS = {418: "IP banned by the API (HTTP 418)", 451: "region blocked by the API (HTTP 451)"}


class ApiError(Exception):
    """An API answered with an error the run cannot recover from (bad request, exhausted retries)."""

    def __init__(self, message: str, status: int | None = None, body: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.body = body


class ApiBanned(ApiError):
    """418/451: never retried; the run stops and nothing is written."""


class MalformedResponse(ApiError):
    """The body was not the JSON the endpoint promises (truncated, HTML, wrong shape)."""


@dataclass
class RateLimiter:
    """A sliding window on calls, plus an optional server-reported weight budget (Binance)."""

    calls_per_minute: int
    weight_limit: int | None = None
    weight_budget: float = 0.8
    window_s: float = 60.0
    _calls: deque[float] = field(default_factory=deque)
    _used_weight: int = 0
    _weight_minute: int = -1
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def pause_needed(self) -> float:
        """Seconds until one more call fits the budget (0 = now). Call with the lock held or for a reading."""
        now = time.monotonic()
        while self._calls and now - self._calls[0] >= self.window_s:
            self._calls.popleft()
        if len(self._calls) >= self.calls_per_minute:
            return self.window_s - (now - self._calls[0])
        spent = self.weight_limit and self._used_weight >= self.weight_limit * self.weight_budget
        if spent and self._weight_minute == int(time.time() // 60):
            return 60 - time.time() % 60 + 0.05  # the exchange's weight window is the calendar minute
        return 0.0

    def acquire(self) -> float:
        """Block until one more call fits the budget; return the seconds waited."""
        waited = 0.0
        while True:
            with self._lock:
                pause = self.pause_needed()
                if pause <= 0:
                    self._calls.append(time.monotonic())
                    return waited
            time.sleep(min(pause, 1.0))
            waited += min(pause, 1.0)

    def observe_weight(self, used: int) -> None:
        """Record the weight the server says this minute has used (X-MBX-USED-WEIGHT-1M)."""
        with self._lock:
            minute = int(time.time() // 60)
            if minute != self._weight_minute or used > self._used_weight:
                self._used_weight = used
                self._weight_minute = minute


@dataclass
class CallStats:
    requests: int = 0
    retries: int = 0
    rate_limited: int = 0
    waited_s: float = 0.0
    synthetic: int = 0  # answers labelled `X-Sandbox: synthetic` (the offline sandbox): data is not real
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, **counts: float) -> None:
        with self._lock:
            for key, value in counts.items():
                setattr(self, key, getattr(self, key) + value)


class ApiClient:
    """Thread-safe JSON GET client for one API."""

    def __init__(
        self,
        name: str,
        base_url: str,
        *,
        timeout_s: float,
        max_retries: int,
        backoff_base_s: float,
        backoff_max_s: float,
        limiter: RateLimiter,
        headers: dict[str, str] | None = None,
        weight_header: str | None = None,
        shared_budget: Any = None,
        request_weights: dict[str, int] | None = None,
        max_retry_after_s: float = 120,
        request_deadline_s: float = 120,
        max_response_bytes: int = 64 * 2**20,
    ) -> None:
        self.name = name
        self.request_deadline_s = request_deadline_s
        self.max_response_bytes = max_response_bytes
        self.max_retry_after_s = max_retry_after_s
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.limiter = limiter
        self.weight_header = weight_header
        # a budget shared with other processes (runtime/weight_budget.py): reserve a request's weight first
        self.shared_budget = shared_budget
        self.request_weights = request_weights or {}
        self.stats = CallStats()
        self._headers = {"Accept": "application/json", "User-Agent": "cryptoflow/0.1", **(headers or {})}
        self._local = threading.local()

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.headers.update(self._headers)
            self._local.session = session
        return session

    def _backoff(self, attempt: int) -> float:
        # Full jitter keeps parallel workers from retrying in lockstep.
        return random.uniform(0, min(self.backoff_max_s, self.backoff_base_s * 2**attempt))

    def get_raw(self, path: str, params: dict[str, Any] | None = None) -> bytes:
        """GET and return the body of a 2xx answer, retrying what is worth retrying."""
        url = f"{self.base_url}{path}"
        last_problem = ""
        for attempt in range(self.max_retries + 1):
            self.stats.add(waited_s=self.limiter.acquire(), requests=1)
            minute = None
            if self.shared_budget is not None:
                waited, minute = self.shared_budget.reserve(self.request_weights.get(path, 1))
                self.stats.add(waited_s=waited)
            try:
                resp = self._session().get(url, params=params, timeout=self.timeout_s, stream=True)
                content = self._read_bounded(resp, path)
            except (
                requests.ConnectionError,
                requests.Timeout,
                requests.exceptions.ChunkedEncodingError,
                DeadlinePassed,
            ) as exc:
                last_problem = f"{type(exc).__name__}: {exc}"
                self._sleep_before_retry(attempt, last_problem)
                continue
            if self.weight_header and (used := resp.headers.get(self.weight_header)):
                self.limiter.observe_weight(int(used))
                if self.shared_budget is not None:
                    self.shared_budget.observe(int(used), minute)
            status = resp.status_code
            if 200 <= status < 300:
                if resp.headers.get("X-Sandbox"):
                    self.stats.add(synthetic=1)  # only a label for what is shown later, never a behaviour
                return content
            body = content[:500].decode("utf-8", "replace")
            if status in BAN_STATUS:
                raise ApiBanned(
                    f"{self.name}: {BAN_STATUS[status]}; stopping without retry. "
                    f"Retry-After={resp.headers.get('Retry-After', '?')}s. Body: {body}",
                    status,
                    body,
                )
            if status == 429:
                wait = _retry_after(resp.headers.get("Retry-After"), default=self._backoff(attempt) + 1)
                self.stats.add(rate_limited=1)
                if wait > self.max_retry_after_s:  # never sleep for hours holding the source's lock
                    raise ApiError(
                        f"{self.name}: HTTP 429 with Retry-After {wait:.0f} s, more than "
                        f"sources.{self.name}.max_retry_after_s ({self.max_retry_after_s:.0f} s); stopping "
                        "without waiting: nothing half-written is kept, re-run later",
                        429,
                        body,
                    )
                last_problem = f"HTTP 429 (rate limited), waiting {wait:.1f}s as Retry-After asks"
                self._sleep_before_retry(attempt, last_problem, wait)
                continue
            if status in RETRYABLE_STATUS:
                last_problem = f"HTTP {status}: {body[:200]}"
                self._sleep_before_retry(attempt, last_problem)
                continue
            raise ApiError(f"{self.name}: HTTP {status} for {path} {params or ''}: {body}", status, body)
        raise ApiError(
            f"{self.name}: giving up on {path} after {self.max_retries + 1} attempts; last problem: {last_problem}"
        )

    def _read_bounded(self, resp: requests.Response, path: str) -> bytes:
        """The body, read as it arrives: at most max_response_bytes (decoded), by the request's deadline."""
        deadline = time.monotonic() + self.request_deadline_s
        parts, size = [], 0
        try:
            while True:
                if time.monotonic() > deadline:
                    raise DeadlinePassed(
                        f"{path}: the response was still arriving after request_deadline_s "
                        f"({self.request_deadline_s:g} s), {size} bytes in"
                    )
                try:
                    chunk = resp.raw.read1(CHUNK_BYTES, decode_content=True)
                except (urllib3.exceptions.ProtocolError, urllib3.exceptions.ReadTimeoutError) as exc:
                    raise requests.exceptions.ChunkedEncodingError(str(exc)) from None
                if not chunk:
                    break
                size += len(chunk)
                if size > self.max_response_bytes:
                    raise ApiError(
                        f"{self.name}: the response to {path} is larger than sources.{self.name}."
                        f"max_response_mb ({self.max_response_bytes / 2**20:g} MB); stopping without "
                        "retry: nothing half-written is kept. Raise the limit if the API really sends that much"
                    )
                parts.append(chunk)
        finally:
            resp.close()
        body = b"".join(parts)
        expected = resp.headers.get("Content-Length")
        if expected and "Content-Encoding" not in resp.headers and int(expected) != len(body):
            raise requests.exceptions.ChunkedEncodingError(
                f"incomplete body: {len(body)} of {expected} declared bytes"
            )
        return body

    def _sleep_before_retry(self, attempt: int, problem: str, wait: float | None = None) -> None:
        if attempt >= self.max_retries:
            return
        wait = self._backoff(attempt) if wait is None else wait
        self.stats.add(retries=1, waited_s=wait)
        log.warning(
            "retrying request",
            extra={"source": self.name, "attempt": attempt + 1, "problem": problem, "wait_s": round(wait, 2)},
        )
        time.sleep(wait)

    def get_parsed(self, path: str, params: dict[str, Any] | None, parse: Callable[[bytes], T]) -> T:
        """GET and parse the body; a body `parse` rejects with ValueError is fetched once more, then fatal."""
        for attempt in range(2):
            body = self.get_raw(path, params)
            try:
                return parse(body)
            except ValueError as exc:
                problem = f"{self.name}: malformed response from {path} ({exc}); first bytes: {body[:80]!r}"
                if attempt == 0:
                    self.stats.add(retries=1)
                    log.warning(
                        "retrying malformed response", extra={"source": self.name, "problem": problem}
                    )
                    continue
                raise MalformedResponse(problem, 200, body[:500].decode("utf-8", "replace")) from None
        raise AssertionError("unreachable")

    def get_json(self, path: str, params: dict[str, Any] | None = None) -> Any:
        return self.get_parsed(path, params, json.loads)


class DeadlinePassed(Exception):
    """A response did not finish within the request's deadline (retried like a timeout)."""


CHUNK_BYTES = 1 << 16


def _retry_after(value: str | None, default: float) -> float:
    try:
        return max(0.0, float(value)) if value is not None else default
    except ValueError:
        return default


def client_for(
    name: str,
    source: Any,
    headers: dict[str, str] | None = None,
    weight_limit: int | None = None,
    weight_header: str | None = None,
    shared_budget: Any = None,
    request_weights: dict[str, int] | None = None,
) -> ApiClient:
    """An ApiClient configured from one `sources.<name>` settings block."""
    limiter = RateLimiter(
        calls_per_minute=source.calls_per_minute,
        weight_limit=weight_limit,
        weight_budget=getattr(source, "weight_budget", 0.8),
    )
    return ApiClient(
        name,
        source.base_url,
        timeout_s=source.timeout_s,
        max_retries=source.max_retries,
        backoff_base_s=source.backoff_base_s,
        backoff_max_s=source.backoff_max_s,
        limiter=limiter,
        headers=headers,
        weight_header=weight_header,
        shared_budget=shared_budget,
        request_weights=request_weights,
        max_retry_after_s=source.max_retry_after_s,
        request_deadline_s=source.request_deadline_s,
        max_response_bytes=int(source.max_response_mb * 2**20),
    )


def answers(url: str, timeout_s: float = 3) -> bool:
    """Whether url answers 200 right now (health probes of local services: sandbox, Airflow, dashboard)."""
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return bool(response.status == 200)
    except OSError:
        return False
