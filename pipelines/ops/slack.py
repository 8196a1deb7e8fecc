"""Slack incidents: one message when a check or a pipeline starts failing, one when it passes again.

Only with alerts.route: slack (the default). With alertmanager, the incidents are still tracked here but the
Prometheus rules (monitoring/alerts.yml) page instead, so a condition never pages twice.

Incident state lives in ops.alert_incidents, so a condition that keeps failing pages once, not every run.
Every delivery is recorded in ops.alerts_sent (ops/ledger.py). The webhook URL is a secret and never
appears in a log line or in ops.alerts_sent.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

from pipelines.ops import ledger
from pipelines.quality import CheckResult, CheckRun
from pipelines.runtime import db
from pipelines.settings import Settings

log = logging.getLogger(__name__)
FAILING = ("fail", "error")


# --------------------------------------------------------------------------------------------- slack


def _mrkdwn(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _blocks(title: str, emoji: str, fields: list[tuple[str, str]], text: str) -> dict[str, Any]:
    """Block Kit message: a header, then a section of labelled fields; `text` is the notification line."""
    return {
        "text": text,
        "blocks": [
            {
                "type": "header",
                "text": {"type": "plain_text", "text": f"{emoji} {title}"[:150], "emoji": True},
            },
            {
                "type": "section",
                "fields": [
                    {"type": "mrkdwn", "text": f"*{label}*\n{_mrkdwn(str(value))}"[:2000]}
                    for label, value in fields
                ],
            },
        ],
    }


def slack_payload(kind: str, result: CheckResult, run_id: str) -> dict[str, Any]:
    """A data-quality incident opened or resolved: check, table, measured value and run id."""
    title = "Data-quality check failing" if kind == "opened" else "Data-quality check resolved"
    emoji = ":rotating_light:" if kind == "opened" else ":white_check_mark:"
    fields = [
        ("Check", result.name),
        ("Table", f"{result.layer}.{result.table}" if result.table else result.layer),
        ("Measured value", ledger.shown(result.value)),
        ("Run id", run_id),
    ]
    return _blocks(
        title, emoji, fields, f"{title}: {result.name} (value {ledger.shown(result.value)}, run {run_id})"
    )


def run_payload(
    kind: str, pipeline: str, run_id: str, error: str | None, extra: dict[str, str] | None = None
) -> dict[str, Any]:
    """A pipeline-run incident opened (the run failed) or resolved (a later run succeeded)."""
    title = "Pipeline run failed" if kind == "opened" else "Pipeline run recovered"
    emoji = ":rotating_light:" if kind == "opened" else ":white_check_mark:"
    fields = [("Pipeline", pipeline), ("Run id", run_id or "n/a"), *(extra or {}).items()]
    if kind == "opened":
        fields.append(("Error", (error or "unknown error")[:1500]))
    return _blocks(title, emoji, fields, f"{title}: {pipeline} (run {run_id or 'n/a'})")


def _post(url: str, body: bytes) -> tuple[bool, bool, str | None]:
    """One POST. Returns (delivered, worth retrying, error)."""
    request = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=ledger.TIMEOUT_S) as response:
            response.read()
            return True, False, None
    except urllib.error.HTTPError as exc:
        return False, exc.code >= 500 or exc.code == 429, f"HTTP {exc.code} {exc.reason}"
    except (urllib.error.URLError, OSError) as exc:  # refused, reset, timeout, DNS
        reason = getattr(exc, "reason", exc)
        return False, True, f"{type(exc).__name__}: {reason}"


def send_slack(
    settings: Settings, payload: dict[str, Any], *, check_name: str | None = None, kind: str = "opened"
) -> bool:
    """POST payload to the Slack webhook (3 attempts, short backoff on connection errors and 5xx).

    Records the outcome in ops.alerts_sent; returns whether it was delivered; never raises."""
    url = settings.secrets.slack_webhook_url
    if not url:
        log.info("slack webhook not configured (CRYPTOFLOW_SLACK_WEBHOOK_URL); alert not sent")
        return False
    attempts, ok, error = 0, False, None
    try:
        body = json.dumps(payload, default=str).encode()
        for attempt in range(1, ledger.ATTEMPTS + 1):
            attempts = attempt
            ok, retry, error = _post(url, body)
            if ok or not retry:
                break
            if attempt < ledger.ATTEMPTS:
                time.sleep(ledger.BACKOFF_S * 2 ** (attempt - 1))
    except Exception as exc:  # anything unexpected (a bad URL, say) is a failed delivery, not a crash
        ok, error = False, f"{type(exc).__name__}: {exc}"
    if error:
        error = error.replace(url, "<webhook>")[:1000]  # the URL is a secret
    if ok:
        log.info("slack alert delivered", extra={"check": check_name, "kind": kind, "attempts": attempts})
    else:
        log.error(
            "slack alert not delivered",
            extra={"check": check_name, "kind": kind, "attempts": attempts, "error": error},
        )
    ledger.record(settings, kind, "slack", ok, attempts, error, check_name)
    return ok


# --------------------------------------------------------------------------------------------- incidents


def _transition(cur: db.Cursor, name: str, outcome: str, value: float | None, now: dt.datetime) -> str | None:
    """Update the incident `name`; returns 'opened', 'resolved' or None (nothing to announce).

    Each transition is a single conditional statement, so two concurrent runs cannot both announce it."""
    if outcome in FAILING:
        cur.execute(
            "INSERT INTO ops.alert_incidents AS i (check_name, opened_at, last_seen_at, status, last_value) "
            "VALUES (%(name)s, %(now)s, %(now)s, 'open', %(value)s) "
            "ON CONFLICT (check_name) DO UPDATE SET opened_at = EXCLUDED.opened_at, "
            "last_seen_at = EXCLUDED.last_seen_at, resolved_at = NULL, status = 'open', "
            "last_value = EXCLUDED.last_value WHERE i.status = 'resolved' RETURNING check_name",
            {"name": name, "now": now, "value": value},
        )
        if cur.fetchone():
            return "opened"
        cur.execute(
            "UPDATE ops.alert_incidents SET last_seen_at = %s, last_value = %s WHERE check_name = %s",
            (now, value, name),
        )
        return None
    if outcome == "pass":
        cur.execute(
            "UPDATE ops.alert_incidents SET status = 'resolved', resolved_at = %s, last_value = %s "
            "WHERE check_name = %s AND status = 'open' RETURNING check_name",
            (now, value, name),
        )
        return "resolved" if cur.fetchone() else None
    return None  # 'warn' neither opens nor resolves an incident


def _deliver(settings: Settings, payload: dict[str, Any], name: str, kind: str) -> str:
    if settings.alerts.route == "alertmanager":  # its rules page for this condition: one route, never both
        return "not sent: alerts.route is alertmanager"
    if not settings.secrets.slack_webhook_url:
        return "not sent: no slack webhook configured"
    if send_slack(settings, payload, check_name=name, kind=kind):
        return "delivered"
    return "delivery FAILED (see ops.alerts_sent)"


def notify_check_run(settings: Settings, run: CheckRun, now: dt.datetime | None = None) -> list[str]:
    """Open/resolve incidents for the checks in run and send one Slack message per transition.

    A check that keeps failing is announced once; checks absent from run (other layers) are left alone.
    Returns one line per message, saying whether it was delivered. Never raises."""
    now = now or dt.datetime.now(dt.UTC)
    try:
        with db.cursor(settings) as cur:
            transitions = [
                (kind, r) for r in run.results if (kind := _transition(cur, r.name, r.outcome, r.value, now))
            ]
    except Exception as exc:
        log.error("could not update alert incidents", extra={"error": str(exc)[:500]})
        return []
    sent = []
    for kind, result in transitions:
        status = _deliver(settings, slack_payload(kind, result, run.run_id), result.name, kind)
        sent.append(f"slack {kind}: {result.name} (value {ledger.shown(result.value)}) - {status}")
    return sent


RUN_INCIDENT = "run:"  # incident names of pipeline runs, next to the checks' names in ops.alert_incidents


def notify_run(
    settings: Settings,
    pipeline: str,
    *,
    failed: bool,
    run_id: str = "",
    error: str | None = None,
    extra: dict[str, str] | None = None,
    now: dt.datetime | None = None,
) -> str | None:
    """Announce a pipeline run's outcome once per incident: the first failure opens `run:<pipeline>` and
    posts to Slack; further failures stay quiet; the next success posts "recovered".

    When the incident state cannot be read (the database is down), a failure is announced anyway: an
    alert too many beats silence. Returns a line describing the message, or None. Never raises."""
    now = now or dt.datetime.now(dt.UTC)
    name = RUN_INCIDENT + pipeline
    try:
        with db.cursor(settings) as cur:
            kind = _transition(cur, name, "fail" if failed else "pass", None, now)
    except Exception as exc:
        log.error("could not update the run incident", extra={"pipeline": pipeline, "error": str(exc)[:500]})
        kind = "opened" if failed else None
    if kind is None:
        return None
    status = _deliver(settings, run_payload(kind, pipeline, run_id, error, extra), name, kind)
    return f"slack {kind}: {name} - {status}"


@contextlib.contextmanager
def alerting(settings: Settings, pipeline: str) -> Iterator[None]:
    """Run a pipeline step; alert when it fails (once per incident) and when it succeeds again.

    The exception propagates unchanged; its run id (set by the run ledger) goes into the message."""
    from pipelines.errors import user_facing

    try:
        yield
    except Exception as exc:
        error = user_facing(exc) or f"{type(exc).__name__}: {exc}"
        notify_run(settings, pipeline, failed=True, run_id=getattr(exc, "run_id", ""), error=error)
        raise
    notify_run(settings, pipeline, failed=False)
