"""Alerts: one Slack message when a check starts failing and one when it passes again (incident state in
ops.alert_incidents), and a daily email digest. Every delivery is recorded in ops.alerts_sent.

Delivery never raises: a broken webhook or mail server is logged and recorded, the pipeline carries on.
The webhook URL is a secret and never appears in a log line or in ops.alerts_sent.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import html
import json
import logging
import smtplib
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any

from pipelines import catalog, db
from pipelines.quality import CheckResult, CheckRun
from pipelines.redaction import redact
from pipelines.settings import Settings

log = logging.getLogger(__name__)

ATTEMPTS = 3
BACKOFF_S = 0.2  # doubled after each failed attempt: 0.2 s, 0.4 s
TIMEOUT_S = 10.0
FAILING = ("fail", "error")


# --------------------------------------------------------------------------------------------- recording


def _record(
    settings: Settings,
    kind: str,
    channel: str,
    ok: bool,
    attempts: int,
    error: str | None,
    check_name: str | None = None,
) -> None:
    try:
        with contextlib.closing(db.connect(settings)) as conn, conn, conn.cursor() as cur:
            cur.execute(
                "INSERT INTO ops.alerts_sent (check_name, kind, channel, ok, attempts, error) "
                "VALUES (%s, %s, %s, %s, %s, %s)",
                (check_name, kind, channel, ok, attempts, None if error is None else redact(error)),
            )
    except Exception as exc:  # recording is best effort too: never crash the pipeline
        log.error("could not record an alert delivery", extra={"error": str(exc)[:500]})


# --------------------------------------------------------------------------------------------- slack


def _mrkdwn(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _value(value: float | None) -> str:
    return "n/a" if value is None else f"{value:g}"


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
        ("Measured value", _value(result.value)),
        ("Run id", run_id),
    ]
    return _blocks(
        title, emoji, fields, f"{title}: {result.name} (value {_value(result.value)}, run {run_id})"
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
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
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
        for attempt in range(1, ATTEMPTS + 1):
            attempts = attempt
            ok, retry, error = _post(url, body)
            if ok or not retry:
                break
            if attempt < ATTEMPTS:
                time.sleep(BACKOFF_S * 2 ** (attempt - 1))
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
    _record(settings, kind, "slack", ok, attempts, error, check_name)
    return ok


# --------------------------------------------------------------------------------------------- incidents


def _transition(cur, name: str, outcome: str, value: float | None, now: dt.datetime) -> str | None:
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
        with contextlib.closing(db.connect(settings)) as conn, conn, conn.cursor() as cur:
            transitions = [
                (kind, r) for r in run.results if (kind := _transition(cur, r.name, r.outcome, r.value, now))
            ]
    except Exception as exc:
        log.error("could not update alert incidents", extra={"error": str(exc)[:500]})
        return []
    sent = []
    for kind, result in transitions:
        status = _deliver(settings, slack_payload(kind, result, run.run_id), result.name, kind)
        sent.append(f"slack {kind}: {result.name} (value {_value(result.value)}) - {status}")
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
        with contextlib.closing(db.connect(settings)) as conn, conn, conn.cursor() as cur:
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


# --------------------------------------------------------------------------------------------- digest


@dataclass(frozen=True)
class Digest:
    since: dt.datetime
    until: dt.datetime
    runs: list[tuple[str, str, int, int]]  # source, status, runs, rows loaded to raw
    failed_checks: list[tuple[str, str, str, int, float | None]]  # layer, check, table, failures, last value
    freshness: list[tuple[str, dt.datetime | None, float | None]]  # table, newest, age in hours
    dead_letters: list[tuple[str, int]]  # source, pending

    @property
    def failed_runs(self) -> int:
        return sum(n for _, status, n, _ in self.runs if status == "failed")

    @property
    def rows_loaded(self) -> int:
        return sum(rows for *_, rows in self.runs)

    @property
    def pending_dead_letters(self) -> int:
        return sum(n for _, n in self.dead_letters)


def collect_digest(settings: Settings, now: dt.datetime) -> Digest:
    since = now - dt.timedelta(hours=24)
    with contextlib.closing(db.connect(settings)) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT source, status, count(*), coalesce(sum(rows_raw), 0) FROM ops.pipeline_runs "
            "WHERE started_at >= %s AND started_at < %s GROUP BY source, status ORDER BY source, status",
            (since, now),
        )
        runs = [(s, st, int(n), int(rows)) for s, st, n, rows in cur.fetchall()]
        cur.execute(
            "SELECT layer, check_name, table_name, count(*), "
            "(array_agg(measured_value ORDER BY checked_at DESC))[1] FROM ops.dq_results "
            "WHERE checked_at >= %s AND checked_at < %s AND outcome IN ('fail', 'error') "
            "GROUP BY layer, check_name, table_name ORDER BY layer, check_name",
            (since, now),
        )
        failed = [(la, c, t, int(n), v) for la, c, t, n, v in cur.fetchall()]
        freshness = []
        for raw in catalog.RAW:
            table = raw.qualified
            cur.execute("SELECT to_regclass(%s)", (table,))
            newest = None
            if cur.fetchone()[0] is not None:
                cur.execute(f"SELECT max({raw.fresh_column}) FROM {table}")
                newest = cur.fetchone()[0]
                if newest is not None:
                    newest = (
                        newest.replace(tzinfo=dt.UTC) if newest.tzinfo is None else newest.astimezone(dt.UTC)
                    )
            age = None if newest is None else (now - newest).total_seconds() / 3600
            freshness.append((table, newest, age))
        cur.execute(
            "SELECT source, count(*) FROM raw.dead_letter WHERE replayed_at IS NULL "
            "GROUP BY source ORDER BY source"
        )
        dead = [(s, int(n)) for s, n in cur.fetchall()]
    return Digest(since, now, runs, failed, freshness, dead)


def digest_subject(digest: Digest) -> str:
    return (
        f"[cryptoflow] digest {digest.until:%Y-%m-%d %H:%M} UTC: {digest.failed_runs} failed runs, "
        f"{len(digest.failed_checks)} failed checks, {digest.pending_dead_letters} dead letters pending"
    )


def _sections(d: Digest) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, rows) per section, shared by the text and the HTML bodies."""
    return [
        (
            "Runs per source and status",
            ["source", "status", "runs", "rows loaded"],
            [[s, st, str(n), str(rows)] for s, st, n, rows in d.runs],
        ),
        (
            "Failed checks",
            ["layer", "check", "table", "failures", "last value"],
            [[la, c, t, str(n), _value(v)] for la, c, t, n, v in d.failed_checks],
        ),
        (
            "Freshness (newest row per raw table)",
            ["table", "newest", "age (h)"],
            [
                [t, "no rows" if newest is None else newest.isoformat(), "" if age is None else f"{age:.1f}"]
                for t, newest, age in d.freshness
            ],
        ),
        (
            "Dead letters pending replay",
            ["source", "pending"],
            [[s, str(n)] for s, n in d.dead_letters],
        ),
    ]


def render_text(d: Digest) -> str:
    lines = [
        f"cryptoflow digest for {d.since:%Y-%m-%d %H:%M} - {d.until:%Y-%m-%d %H:%M} UTC",
        f"rows loaded: {d.rows_loaded}; failed runs: {d.failed_runs}; failed checks: {len(d.failed_checks)}; "
        f"dead letters pending: {d.pending_dead_letters}",
    ]
    for title, header, rows in _sections(d):
        lines += ["", title]
        if not rows:
            lines.append("  (none)")
            continue
        widths = [max(len(x) for x in col) for col in zip(header, *rows, strict=True)]
        for row in [header, *rows]:
            lines.append("  " + "  ".join(x.ljust(w) for x, w in zip(row, widths, strict=True)).rstrip())
    return "\n".join(lines) + "\n"


def render_html(d: Digest) -> str:
    e = html.escape
    parts = [
        "<html><body>",
        f"<h2>cryptoflow digest for {d.since:%Y-%m-%d %H:%M} - {d.until:%Y-%m-%d %H:%M} UTC</h2>",
        f"<p>rows loaded: <b>{d.rows_loaded}</b>; failed runs: <b>{d.failed_runs}</b>; failed checks: "
        f"<b>{len(d.failed_checks)}</b>; dead letters pending: <b>{d.pending_dead_letters}</b></p>",
    ]
    for title, header, rows in _sections(d):
        parts.append(f"<h3>{e(title)}</h3>")
        if not rows:
            parts.append("<p>(none)</p>")
            continue
        parts.append('<table border="1" cellpadding="4" cellspacing="0">')
        parts.append("<tr>" + "".join(f"<th>{e(h)}</th>" for h in header) + "</tr>")
        parts += ["<tr>" + "".join(f"<td>{e(x)}</td>" for x in row) + "</tr>" for row in rows]
        parts.append("</table>")
    parts.append("</body></html>")
    return "\n".join(parts)


class PlaintextLoginRefused(smtplib.SMTPException):
    """The config asks for a login on a connection without TLS and does not allow it."""


def _smtp_send(settings: Settings, message: EmailMessage) -> None:
    a = settings.alerts
    with smtplib.SMTP(a.smtp_host, a.smtp_port, timeout=TIMEOUT_S) as smtp:
        smtp.ehlo()
        if a.smtp_starttls:
            smtp.starttls(context=ssl.create_default_context())
            smtp.ehlo()
        if a.smtp_user:
            if not (a.smtp_starttls or a.smtp_allow_plaintext_login):  # the config refuses it too
                raise PlaintextLoginRefused(
                    "refusing to send the SMTP password over a connection without TLS: set "
                    "alerts.smtp_starttls: true (or smtp_allow_plaintext_login: true for a trusted local relay)"
                )
            smtp.login(a.smtp_user, settings.secrets.smtp_password)
        smtp.send_message(message, from_addr=a.email_from, to_addrs=list(a.email_to))


def _transient(exc: Exception) -> bool:
    if isinstance(
        exc, smtplib.SMTPAuthenticationError | smtplib.SMTPRecipientsRefused | PlaintextLoginRefused
    ):
        return False
    if isinstance(exc, smtplib.SMTPResponseException):
        return 400 <= exc.smtp_code < 500 or exc.smtp_code == 421
    return isinstance(exc, smtplib.SMTPException | OSError)


def send_digest(settings: Settings, now: dt.datetime | None = None) -> bool:
    """Email the last 24 h (runs, rows, failed checks, freshness, dead letters) as text + HTML.

    3 attempts on connection errors and 4xx replies; recorded in ops.alerts_sent; never raises."""
    a = settings.alerts
    if not (a.smtp_host and a.email_to):
        log.info("digest not sent: alerts.smtp_host and alerts.email_to must both be set")
        return False
    now = now or dt.datetime.now(dt.UTC)
    try:
        digest = collect_digest(settings, now)
    except Exception as exc:
        error = f"collecting the digest failed: {type(exc).__name__}: {str(exc)[:500]}"
        log.error("digest not sent", extra={"error": error})
        _record(settings, "digest", "email", False, 0, error)
        return False
    message = EmailMessage()
    message["Subject"] = digest_subject(digest)
    message["From"] = a.email_from
    message["To"] = ", ".join(a.email_to)
    message.set_content(render_text(digest))
    message.add_alternative(render_html(digest), subtype="html")
    attempts, ok, error = 0, False, None
    for attempt in range(1, ATTEMPTS + 1):
        attempts = attempt
        try:
            _smtp_send(settings, message)
            ok, error = True, None
            break
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"[:1000]
            if not _transient(exc):
                break
        if attempt < ATTEMPTS:
            time.sleep(BACKOFF_S * 2 ** (attempt - 1))
    if ok:
        log.info("digest delivered", extra={"recipients": len(a.email_to), "attempts": attempts})
    else:
        log.error("digest not delivered", extra={"attempts": attempts, "error": error})
    _record(settings, "digest", "email", ok, attempts, error)
    return ok
