"""The ledger of alert deliveries (ops.alerts_sent) and the retry rules Slack and email share.

Delivery never raises: a broken webhook or mail server is logged and recorded, the pipeline carries on.
"""

from __future__ import annotations

import logging

from pipelines.redaction import redact
from pipelines.runtime import db
from pipelines.settings import Settings

log = logging.getLogger(__name__)

ATTEMPTS = 3
BACKOFF_S = 0.2  # doubled after each failed attempt: 0.2 s, 0.4 s
TIMEOUT_S = 10.0


def record(
    settings: Settings,
    kind: str,
    channel: str,
    ok: bool,
    attempts: int,
    error: str | None,
    check_name: str | None = None,
) -> None:
    try:
        with db.cursor(settings) as cur:
            cur.execute(
                "INSERT INTO ops.alerts_sent (check_name, kind, channel, ok, attempts, error) "
                "VALUES (%s, %s, %s, %s, %s, %s)",
                (check_name, kind, channel, ok, attempts, None if error is None else redact(error)),
            )
    except Exception as exc:  # recording is best effort too: never crash the pipeline
        log.error("could not record an alert delivery", extra={"error": str(exc)[:500]})


def shown(value: float | None) -> str:
    """A measured value as a message shows it."""
    return "n/a" if value is None else f"{value:g}"
