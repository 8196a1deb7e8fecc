"""The exchange's request-weight budget, shared by every process and worker that loads into this database.

Binance counts request weight per IP and calendar minute. Two processes (two Celery workers, a backfill and
the hourly run) that each keep under the budget on their own would pass it together, since each learns the
other's weight only from a response header, after the fact. Here every request first reserves its weight
in the current minute's row of ops.request_weight, in one atomic statement on the database's clock; when the
minute's allowance (limit x weight_budget) is spent, the request waits for the next minute. The weight the
exchange reports (other clients on the same IP) is folded in, so the allowance covers them too.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from typing import Any

import psycopg2

from pipelines.runtime import db
from pipelines.settings import Settings

RESERVE = """
INSERT INTO ops.request_weight AS w (api, minute, used)
SELECT %(api)s, date_trunc('minute', now()), %(weight)s
WHERE now() < date_trunc('minute', now()) + interval '59.5 seconds'
ON CONFLICT (api, minute) DO UPDATE SET used = w.used + EXCLUDED.used
    WHERE w.used + EXCLUDED.used <= floor(%(share)s * LEAST(%(limit)s, coalesce((
        SELECT l.weight_limit FROM ops.exchange_limits l
        WHERE l.api = %(api)s AND l.reported_at > now() - interval '1 day'), %(limit)s)))
RETURNING minute
"""  # a minute's first request always fits (one heavier than the allowance runs alone); none is sent in a
# minute's last half second, where it could reach the exchange in the next minute and count there. The limit
# is the configured one or, when lower, the one the exchange last reported to any process (exchangeInfo):
# a run's first request, sent before it has heard the exchange itself, counts against that one too.
REPORT = """
INSERT INTO ops.exchange_limits (api, weight_limit, reported_at) VALUES (%(api)s, %(limit)s, now())
ON CONFLICT (api) DO UPDATE SET weight_limit = EXCLUDED.weight_limit, reported_at = EXCLUDED.reported_at
"""
OBSERVE = """
UPDATE ops.request_weight SET used = GREATEST(used, %(used)s) WHERE api = %(api)s AND minute = %(minute)s
"""  # into the minute the request was reserved in: a reply read after the minute turned is last minute's count
log = logging.getLogger(__name__)
SECONDS_LEFT = "SELECT 60 - extract(epoch FROM now() - date_trunc('minute', now()))::float8"


class SharedWeightBudget:
    """Reserve request weight in the shared minute before sending; thread-safe, one connection."""

    def __init__(self, settings: Settings, api: str, limit: int, share: float) -> None:
        self.settings, self.api, self.limit, self.share = settings, api, limit, share
        self._conn: Any = None
        self._lock = threading.Lock()

    def exchange_reports(self, limit: int) -> None:
        """The exchange's own weight limit (exchangeInfo's rateLimits): every process's budget follows it
        from now on, when it is below the configured one."""
        self.limit = min(self.limit, limit)
        self._execute(REPORT, {"api": self.api, "limit": limit})

    def _execute(self, sql: str, params: dict[str, Any]) -> Any:
        try:
            return self._execute_once(sql, params)
        except (psycopg2.OperationalError, psycopg2.InterfaceError):  # a dropped connection: one new one
            self.close()
            return self._execute_once(sql, params)

    def _execute_once(self, sql: str, params: dict[str, Any]) -> Any:
        with self._lock:
            if self._conn is None or self._conn.closed:
                if self._conn is None:  # a task's first request may come before anything made ops's tables
                    db.ensure_database(self.settings)
                self._conn = db.connect(self.settings)
                self._conn.autocommit = True
                with self._conn.cursor() as cur:  # yesterday's minutes are no one's budget
                    cur.execute("DELETE FROM ops.request_weight WHERE minute < now() - interval '1 day'")
            with self._conn.cursor() as cur:
                cur.execute(sql, params)
                return cur.fetchone() if cur.description else None

    def reserve(self, weight: int) -> tuple[float, Any]:
        """Block until `weight` fits the current minute's shared allowance; returns (seconds waited, the
        minute it was reserved in, for observe)."""
        waited = 0.0
        while True:
            params = {"api": self.api, "weight": weight, "limit": self.limit, "share": self.share}
            row = self._execute(RESERVE, params)
            if row:
                return waited, row[0]
            pause = max(0.05, self._execute(SECONDS_LEFT, {})[0] + 0.05)
            time.sleep(pause)
            waited += pause

    def observe(self, used: int, minute: Any) -> None:
        """The exchange's count for the request's minute (its header): other clients on the IP spend the
        budget too. Best effort: a reply already received is never lost to a database hiccup here."""
        try:
            self._execute(OBSERVE, {"api": self.api, "used": used, "minute": minute})
        except Exception as exc:  # the next reserve() reconnects, or fails with its own clear error
            log.warning("could not record the exchange's request weight", extra={"error": str(exc)[:300]})
            self.close()

    def close(self) -> None:
        with self._lock, contextlib.suppress(Exception):
            if self._conn is not None:
                self._conn.close()
