"""Alerts against real local servers: an HTTP receiver standing in for the Slack webhook and an aiosmtpd
SMTP server, both on 127.0.0.1, and the session's embedded Postgres. No mocks."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import json
import logging
import re
import socket

import pytest
from aiosmtpd.controller import Controller
from helpers.webhook import Receiver

from pipelines.ops import digest, ledger, slack
from pipelines.quality import CheckResult, CheckRun
from pipelines.runtime import db

NOW = dt.datetime(2026, 3, 10, 12, 0, tzinfo=dt.UTC)
CHECK = "newest closed candle is fresh (raw)"


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch):
    monkeypatch.setattr(ledger, "BACKOFF_S", 0.01)


class Inbox:
    def __init__(self):
        self.envelopes = []

    async def handle_DATA(self, server, session, envelope):
        self.envelopes.append(envelope)
        return "250 Message accepted for delivery"


@pytest.fixture
def smtp_server():
    inbox = Inbox()
    # aiosmtpd probes its own port once started, so it needs a real one (port 0 is not supported)
    controller = Controller(inbox, hostname="127.0.0.1", port=closed_port())
    controller.start()
    try:
        yield inbox, controller.port
    finally:
        controller.stop()


def with_webhook(settings, url: str):
    return settings.model_copy(
        update={"secrets": settings.secrets.model_copy(update={"slack_webhook_url": url})}
    )


def query(settings, sql, params=()):
    with db.cursor(settings) as cur:
        cur.execute(sql, params)
        return cur.fetchall() if cur.description else None


def run_of(outcome: str, value: float | None, run_id: str) -> CheckRun:
    return CheckRun(
        run_id,
        [
            CheckResult("raw", CHECK, "binance_klines", "fail", outcome, value, {}),
            CheckResult("raw", "every raw price is positive", "binance_klines", "fail", "pass", 0.0, {}),
        ],
    )


@pytest.fixture
def settings(make_settings):
    s = make_settings()
    db.ensure_database(s)
    return s


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # closed when the block ends: nothing listens there


def test_failure_alerts_once_then_resolves_once(settings, caplog):
    caplog.set_level(logging.DEBUG)
    with Receiver() as receiver:
        s = with_webhook(settings, receiver.url)
        sent = slack.notify_check_run(s, run_of("fail", 11100.0, "dq-1"), now=NOW)
        assert len(sent) == 1 and CHECK in sent[0] and "delivered" in sent[0]
        assert len(receiver.received) == 1
        message = receiver.received[0]
        header, section = message["blocks"]
        assert header["type"] == "header" and "failing" in header["text"]["text"]
        fields = "\n".join(f["text"] for f in section["fields"])
        assert section["type"] == "section"
        assert CHECK in fields and "11100" in fields and "raw.binance_klines" in fields and "dq-1" in fields

        # still failing in two more runs: nothing more is sent, the incident stays open and is updated
        for i, later in enumerate((NOW + dt.timedelta(hours=1), NOW + dt.timedelta(hours=2)), start=2):
            assert slack.notify_check_run(s, run_of("error", 14000.0 + i, f"dq-{i}"), now=later) == []
        assert len(receiver.received) == 1
        assert query(s, "SELECT status, opened_at, last_seen_at, last_value FROM ops.alert_incidents") == [
            ("open", NOW, NOW + dt.timedelta(hours=2), 14003.0)
        ]

        resolved_at = NOW + dt.timedelta(hours=3)
        sent = slack.notify_check_run(s, run_of("pass", 300.0, "dq-4"), now=resolved_at)
        assert len(sent) == 1 and "resolved" in sent[0]
        assert len(receiver.received) == 2
        resolved = receiver.received[1]
        assert "resolved" in resolved["blocks"][0]["text"]["text"]
        assert CHECK in json.dumps(resolved["blocks"][1])
        assert slack.notify_check_run(s, run_of("pass", 300.0, "dq-5"), now=resolved_at) == []
        assert len(receiver.received) == 2
        assert query(s, "SELECT status, resolved_at FROM ops.alert_incidents") == [("resolved", resolved_at)]

        # failing again later opens a new incident and alerts again
        assert len(slack.notify_check_run(s, run_of("fail", 9000.0, "dq-6"), now=resolved_at)) == 1
        assert len(receiver.received) == 3

    log = query(s, "SELECT check_name, kind, channel, ok, attempts, error FROM ops.alerts_sent ORDER BY id")
    assert log == [
        (CHECK, "opened", "slack", True, 1, None),
        (CHECK, "resolved", "slack", True, 1, None),
        (CHECK, "opened", "slack", True, 1, None),
    ]
    assert receiver.url not in caplog.text and "s3cr3t-hook-token" not in caplog.text


def test_one_route_per_condition_alertmanager_pages_and_the_pipeline_posts_nothing(settings):
    """alerts.route: alertmanager: a failing check and a failed run still open incidents (ops.alert_incidents),
    but nothing reaches the webhook; the endpoint tells the rules (monitoring/alerts.yml) to page instead."""
    from pipelines.ops.metrics_server import collector

    def routed_to_alertmanager(s) -> list[float]:
        return [
            sample.value
            for family in collector(s, cache_s=0).collect()
            for sample in family.samples
            if sample.name == "cryptoflow_alerts_via_alertmanager"
        ]

    with Receiver() as receiver:
        direct = with_webhook(settings, receiver.url)
        routed = direct.model_copy(
            update={"alerts": direct.alerts.model_copy(update={"route": "alertmanager"})}
        )
        sent = slack.notify_check_run(routed, run_of("fail", 11100.0, "dq-1"), now=NOW)
        assert sent == [f"slack opened: {CHECK} (value 11100) - not sent: alerts.route is alertmanager"]
        line = slack.notify_run(routed, "ingest ohlcv", failed=True, run_id="r-1", error="boom", now=NOW)
        assert line == "slack opened: run:ingest ohlcv - not sent: alerts.route is alertmanager"
        assert receiver.requests == 0
        assert query(routed, "SELECT check_name, status FROM ops.alert_incidents ORDER BY 1") == [
            (CHECK, "open"),
            ("run:ingest ohlcv", "open"),
        ]
        assert routed_to_alertmanager(routed) == [1.0] and routed_to_alertmanager(direct) == [0.0]
        # the default route posts the same condition itself (its recovery here), exactly once
        assert slack.notify_run(direct, "ingest ohlcv", failed=False, now=NOW) == (
            "slack resolved: run:ingest ohlcv - delivered"
        )
        assert receiver.requests == 1


def test_5xx_is_retried_until_delivered(settings, caplog):
    caplog.set_level(logging.DEBUG)
    with Receiver(fail_first=2) as receiver:
        s = with_webhook(settings, receiver.url)
        assert slack.send_slack(s, {"text": "hello"}, check_name=CHECK, kind="opened") is True
    assert receiver.requests == 3
    assert receiver.received == [{"text": "hello"}]
    assert query(s, "SELECT ok, attempts, error FROM ops.alerts_sent") == [(True, 3, None)]
    assert "s3cr3t-hook-token" not in caplog.text


def test_receiver_down_returns_false_records_and_does_not_raise(settings, caplog):
    caplog.set_level(logging.DEBUG)
    url = f"http://127.0.0.1:{closed_port()}/services/T000/B000/s3cr3t-hook-token"
    s = with_webhook(settings, url)
    assert slack.send_slack(s, {"text": "hello"}, check_name=CHECK, kind="opened") is False
    [(ok, attempts, error)] = query(s, "SELECT ok, attempts, error FROM ops.alerts_sent")
    assert ok is False and attempts == 3 and error
    assert "s3cr3t-hook-token" not in error
    # the check run carries on: the incident is opened even though the message could not be delivered
    sent = slack.notify_check_run(s, run_of("fail", 1.0, "dq-1"), now=NOW)
    assert len(sent) == 1 and "FAILED" in sent[0]
    assert query(s, "SELECT status FROM ops.alert_incidents") == [("open",)]
    assert "not delivered" in caplog.text
    assert url not in caplog.text and "s3cr3t-hook-token" not in caplog.text


def test_no_webhook_configured_skips_quietly(settings, caplog):
    caplog.set_level(logging.INFO)
    assert slack.send_slack(settings, {"text": "hello"}) is False
    assert "not configured" in caplog.text
    assert query(settings, "SELECT count(*) FROM ops.alerts_sent") == [(0,)]


def seed(settings):
    hour = dt.timedelta(hours=1)
    runs = [  # run_id, source, started, status, rows_raw
        ("r1", "binance", NOW - 2 * hour, "success", 1200),
        ("r2", "binance", NOW - 5 * hour, "success", 345),
        ("r3", "binance", NOW - 6 * hour, "failed", 0),
        ("r4", "coingecko", NOW - 3 * hour, "success", 100),
        ("r5", "binance", NOW - 30 * hour, "success", 99999),  # older than 24 h: not counted
    ]
    for run_id, source, started, status, rows in runs:
        query(
            settings,
            "INSERT INTO ops.pipeline_runs (run_id, source, command, started_at, status, rows_raw) "
            "VALUES (%s, %s, 'ingest', %s, %s, %s)",
            (run_id, source, started, status, rows),
        )
    results = [  # run_id, check, outcome, value, when
        ("dq-1", "every raw price is positive", "fail", -7.5, NOW - 4 * hour),
        ("dq-2", "every raw price is positive", "fail", -3.25, NOW - hour),
        ("dq-2", "market snapshot is fresh", "pass", 10.0, NOW - hour),
        ("dq-0", "ancient failure", "fail", 1.0, NOW - 48 * hour),
    ]
    for run_id, check, outcome, value, when in results:
        query(
            settings,
            "INSERT INTO ops.dq_results (run_id, layer, check_name, table_name, level, outcome, "
            "measured_value, checked_at) VALUES (%s, 'raw', %s, 'binance_klines', 'fail', %s, %s, %s)",
            (run_id, check, outcome, value, when),
        )
    for i, replayed in enumerate([None, None, None, NOW]):
        query(
            settings,
            "INSERT INTO raw.dead_letter (source, table_name, natural_key, payload, reason, load_id, "
            "replayed_at) VALUES ('coingecko', 'coingecko_markets', %s, '{}', 'bad', 'l1', %s)",
            (f"k{i}", replayed),
        )
    query(settings, "CREATE TABLE raw.fear_greed (ts timestamptz, value int)")
    query(settings, "INSERT INTO raw.fear_greed VALUES (%s, 50)", (NOW - dt.timedelta(hours=26),))


def test_digest_arrives_as_text_and_html_with_the_numbers(make_settings, smtp_server, caplog):
    inbox, port = smtp_server
    s = make_settings(
        alerts={
            "smtp_host": "127.0.0.1",
            "smtp_port": port,
            "email_to": ["ops@example.com", "data@example.com"],
            "email_from": "cryptoflow@example.com",
        }
    )
    db.ensure_database(s)
    seed(s)
    assert digest.send_digest(s, now=NOW) is True

    [envelope] = inbox.envelopes
    assert envelope.mail_from == "cryptoflow@example.com"
    assert envelope.rcpt_tos == ["ops@example.com", "data@example.com"]
    message = email.message_from_bytes(envelope.content, policy=email.policy.default)
    assert message["Subject"] == (
        "[cryptoflow] digest 2026-03-10 12:00 UTC: 1 failed runs, 1 failed checks, 3 dead letters pending"
    )
    assert message["To"] == "ops@example.com, data@example.com"
    assert message.get_content_type() == "multipart/alternative"
    text = message.get_body(("plain",)).get_content()
    html = message.get_body(("html",)).get_content()
    for body in (text, html):
        assert "rows loaded" in body and "1645" in body  # 1200 + 345 + 0 + 100 in the last 24 h
        assert "99999" not in body and "ancient failure" not in body
        assert "every raw price is positive" in body and "-3.25" in body  # the latest value
        assert "raw.fear_greed" in body and "26.0" in body  # hours since the newest row
        assert "raw.binance_klines" in body and "no rows" in body
    assert re.search(r"binance\s+failed\s+1\s+0\s", text)
    assert re.search(r"binance\s+success\s+2\s+1545\s", text)
    assert re.search(r"coingecko\s+success\s+1\s+100\s", text)
    assert re.search(r"coingecko\s+3\s", text)  # pending dead letters (the replayed one is not counted)
    assert "<td>coingecko</td><td>3</td>" in html
    assert query(s, "SELECT kind, channel, ok, attempts FROM ops.alerts_sent") == [
        ("digest", "email", True, 1)
    ]


def test_digest_with_mail_server_down_returns_false(make_settings, caplog):
    s = make_settings(alerts={"smtp_host": "127.0.0.1", "smtp_port": closed_port(), "email_to": ["a@b.c"]})
    db.ensure_database(s)
    assert digest.send_digest(s, now=NOW) is False
    [(ok, attempts, error)] = query(s, "SELECT ok, attempts, error FROM ops.alerts_sent")
    assert ok is False and attempts == 3 and "Connection" in error


# --------------------------------------------------------------------------------------------- run alerts


def test_failed_pipeline_run_alerts_once_then_recovers(make_settings, caplog):
    """`cryptoflow ingest ohlcv` against a sandbox answering 500 to everything: the first failed run posts
    one message naming the run, the second stays quiet, the first success after the storm posts
    "recovered". The webhook secret never reaches a log line."""
    import argparse

    from pipelines import cli
    from pipelines.sandbox import SandboxServer

    caplog.set_level(logging.DEBUG)
    args = argparse.Namespace(what="ohlcv", sandbox=False)
    retries = {"max_retries": 1, "backoff_base_s": 0.01, "backoff_max_s": 0.02, "timeout_s": 2}
    with SandboxServer(seed=42) as sandbox, Receiver() as receiver:
        base = make_settings(sources={"binance": retries}, backfill={"days": 1})
        s = with_webhook(cli.sandboxed(base, sandbox), receiver.url)
        sandbox.set_fault("klines", "500")  # every klines request, until cleared
        for _ in range(2):
            with pytest.raises(Exception, match="HTTP 500"):
                cli.cmd_ingest(s, args)
        failed = query(
            s,
            "SELECT run_id, status FROM ops.pipeline_runs WHERE source = 'binance' ORDER BY started_at",
        )
        assert [status for _, status in failed] == ["failed", "failed"]
        assert len(receiver.received) == 1
        opened = receiver.received[0]
        fields = "\n".join(f["text"] for f in opened["blocks"][1]["fields"])
        assert "Pipeline run failed" in opened["blocks"][0]["text"]["text"]
        assert "ingest ohlcv" in fields and failed[0][0] in fields and "HTTP 500" in fields

        sandbox.clear_faults()
        assert cli.cmd_ingest(s, args) == 0
        assert len(receiver.received) == 2
        recovered = receiver.received[1]
        assert "recovered" in recovered["blocks"][0]["text"]["text"]
        assert "ingest ohlcv" in json.dumps(recovered)
        assert cli.cmd_ingest(s, args) == 0  # still fine: nothing more to say
        assert len(receiver.received) == 2

    assert query(s, "SELECT check_name, status FROM ops.alert_incidents") == [
        ("run:ingest ohlcv", "resolved")
    ]
    assert query(s, "SELECT check_name, kind, ok FROM ops.alerts_sent ORDER BY id") == [
        ("run:ingest ohlcv", "opened", True),
        ("run:ingest ohlcv", "resolved", True),
    ]
    assert "s3cr3t-hook-token" not in caplog.text


def test_run_failure_is_alerted_even_when_the_database_is_down(make_settings):
    """No incident state without a database: the failure is announced anyway (an alert too many beats
    silence), and notify_run does not raise."""
    with Receiver() as receiver:
        down = make_settings(
            database={"url": f"postgresql://cryptoflow@127.0.0.1:{closed_port()}/cryptoflow"}
        )
        s = with_webhook(down, receiver.url)
        line = slack.notify_run(s, "ingest ohlcv", failed=True, run_id="r-1", error="database unreachable")
        assert line is not None and "delivered" in line
        assert slack.notify_run(s, "ingest ohlcv", failed=False) is None  # no state: no "recovered" claim
    [message] = receiver.received
    assert "database unreachable" in json.dumps(message) and "r-1" in json.dumps(message)


# --------------------------------------------------------------------------------------------- smtp auth


@pytest.fixture
def tls_smtp_server(tmp_path, monkeypatch):
    """aiosmtpd with STARTTLS (a throwaway self-signed cert the client is told to trust) and AUTH
    (PLAIN, LOGIN) accepting one user and password."""
    import ssl

    from aiosmtpd.smtp import AuthResult
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert_file, key_file)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert_file))  # the client's default context trusts our cert
    logins = []

    def authenticator(server, session, envelope, mechanism, auth_data):
        logins.append((mechanism, auth_data.login.decode(), auth_data.password.decode()))
        ok = (auth_data.login, auth_data.password) == (b"mailer", b"m4il-s3cret")
        return AuthResult(success=ok, handled=False)  # aiosmtpd answers 535 itself

    inbox = Inbox()
    controller = Controller(
        inbox,
        hostname="127.0.0.1",
        port=closed_port(),
        server_hostname="localhost",
        tls_context=server_tls,
        require_starttls=True,
        authenticator=authenticator,
        auth_require_tls=True,
    )
    controller.start()
    try:
        yield inbox, controller.port, logins
    finally:
        controller.stop()


def test_digest_over_starttls_with_login(make_settings, tls_smtp_server, caplog):
    caplog.set_level(logging.DEBUG)
    inbox, port, logins = tls_smtp_server
    smtp = {"smtp_host": "localhost", "smtp_port": port, "email_to": ["ops@example.com"]}
    s = make_settings(alerts={**smtp, "smtp_starttls": True, "smtp_user": "mailer"})
    s = s.model_copy(update={"secrets": s.secrets.model_copy(update={"smtp_password": "m4il-s3cret"})})
    db.ensure_database(s)
    assert digest.send_digest(s, now=NOW) is True
    assert [login[1:] for login in logins] == [("mailer", "m4il-s3cret")]
    [envelope] = inbox.envelopes
    assert envelope.rcpt_tos == ["ops@example.com"]

    # a wrong password is a permanent error: one attempt, recorded, never logged
    wrong = s.model_copy(update={"secrets": s.secrets.model_copy(update={"smtp_password": "wr0ng-pw"})})
    assert digest.send_digest(wrong, now=NOW) is False
    rows = query(s, "SELECT ok, attempts, error FROM ops.alerts_sent ORDER BY id")
    assert rows[0] == (True, 1, None)
    assert rows[1][:2] == (False, 1) and "SMTPAuthenticationError" in rows[1][2]
    assert "m4il-s3cret" not in caplog.text and "wr0ng-pw" not in caplog.text
    assert all("wr0ng-pw" not in (r[2] or "") for r in rows)

    # without STARTTLS the server refuses to take the mail at all: a clear error, not a hang
    plain = make_settings(alerts=smtp)
    db.ensure_database(plain)
    assert digest.send_digest(plain, now=NOW) is False
    [(ok, error)] = query(plain, "SELECT ok, error FROM ops.alerts_sent")
    assert ok is False and "STARTTLS" in error


def test_the_smtp_password_never_crosses_a_connection_without_tls(make_settings, caplog):
    """A server that offers AUTH without TLS (as many relays do): the config refuses a login there unless
    it is explicitly allowed, and the sender refuses it too, before any AUTH command."""
    from aiosmtpd.smtp import AuthResult

    from pipelines.settings import ConfigError, load_settings

    logins = []

    def authenticator(server, session, envelope, mechanism, auth_data):
        logins.append((auth_data.login.decode(), auth_data.password.decode()))
        return AuthResult(success=True, handled=False)

    inbox = Inbox()
    controller = Controller(
        inbox, hostname="127.0.0.1", port=closed_port(), authenticator=authenticator, auth_require_tls=False
    )
    controller.start()
    try:
        smtp = {"smtp_host": "127.0.0.1", "smtp_port": controller.port, "email_to": ["ops@example.com"]}
        with pytest.raises(ConfigError, match="smtp_user is set but smtp_starttls is false"):
            load_settings(None, environ={"CRYPTOFLOW__ALERTS__SMTP_USER": "mailer"})
        s = make_settings(alerts=smtp)
        s = s.model_copy(
            update={
                "alerts": s.alerts.model_copy(update={"smtp_user": "mailer"}),  # past the config's check
                "secrets": s.secrets.model_copy(update={"smtp_password": "m4il-s3cret"}),
            }
        )
        db.ensure_database(s)
        assert digest.send_digest(s, now=NOW) is False
        assert logins == [] and inbox.envelopes == []
        [(ok, attempts, error)] = query(s, "SELECT ok, attempts, error FROM ops.alerts_sent")
        assert (ok, attempts) == (False, 1)
        assert "refusing to send the SMTP password over a connection without TLS" in error

        allowed = make_settings(alerts={**smtp, "smtp_user": "mailer", "smtp_allow_plaintext_login": True})
        allowed = allowed.model_copy(
            update={"secrets": allowed.secrets.model_copy(update={"smtp_password": "m4il-s3cret"})}
        )
        db.ensure_database(allowed)
        assert digest.send_digest(allowed, now=NOW) is True
        assert logins == [("mailer", "m4il-s3cret")] and len(inbox.envelopes) == 1
        assert "m4il-s3cret" not in caplog.text
    finally:
        controller.stop()
