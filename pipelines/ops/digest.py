"""The daily email digest: runs, rows loaded, failed checks, freshness per raw table, dead letters.

Sent as text and HTML over SMTP (TLS unless the config explicitly allows a plain login); every attempt is
recorded in ops.alerts_sent (ops/ledger.py) and a failure never raises.
"""

from __future__ import annotations

import datetime as dt
import html
import logging
import smtplib
import ssl
import time
from dataclasses import dataclass
from email.message import EmailMessage

from pipelines import catalog
from pipelines.ops import ledger
from pipelines.runtime import db
from pipelines.settings import Settings

log = logging.getLogger(__name__)


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
    with db.cursor(settings) as cur:
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
            if db.one(cur)[0] is not None:
                cur.execute(f"SELECT max({raw.fresh_column}) FROM {table}")
                newest = db.one(cur)[0]
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
            [[la, c, t, str(n), ledger.shown(v)] for la, c, t, n, v in d.failed_checks],
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
    with smtplib.SMTP(a.smtp_host, a.smtp_port, timeout=ledger.TIMEOUT_S) as smtp:
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
        failure = f"collecting the digest failed: {type(exc).__name__}: {str(exc)[:500]}"
        log.error("digest not sent", extra={"error": failure})
        ledger.record(settings, "digest", "email", False, 0, failure)
        return False
    message = EmailMessage()
    message["Subject"] = digest_subject(digest)
    message["From"] = a.email_from
    message["To"] = ", ".join(a.email_to)
    message.set_content(render_text(digest))
    message.add_alternative(render_html(digest), subtype="html")
    attempts, ok = 0, False
    error: str | None = None
    for attempt in range(1, ledger.ATTEMPTS + 1):
        attempts = attempt
        try:
            _smtp_send(settings, message)
            ok, error = True, None
            break
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"[:1000]
            if not _transient(exc):
                break
        if attempt < ledger.ATTEMPTS:
            time.sleep(ledger.BACKOFF_S * 2 ** (attempt - 1))
    if ok:
        log.info("digest delivered", extra={"recipients": len(a.email_to), "attempts": attempts})
    else:
        log.error("digest not delivered", extra={"attempts": attempts, "error": error})
    ledger.record(settings, "digest", "email", ok, attempts, error)
    return ok
