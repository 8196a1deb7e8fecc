"""Operator tools: the dead letter queue (list and replay), the read-only dashboard role, the rate limiter."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import subprocess
import sys
import time
from pathlib import Path

import psycopg2
import pytest
import yaml

from pipelines import http as http_module
from pipelines import ingest
from pipelines.cli import sandboxed
from pipelines.http import RateLimiter
from pipelines.ingest import dlq
from pipelines.runtime import db, embedded, schema
from pipelines.sandbox import SandboxServer

HOUR = 3_600_000
NOW_MS = int(dt.datetime(2026, 3, 10, 12, 30, tzinfo=dt.UTC).timestamp() * 1000)
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def settings(make_settings):
    with SandboxServer(seed=42, now_ms=NOW_MS) as sandbox:
        sandbox.set_fault("klines", "invalid_rows", symbol="ETHUSDT", every=7)
        active = sandboxed(make_settings(), sandbox)
        ingest.ingest_ohlcv(active, days=2)
        yield active


def execute(settings, sql, params=()):
    with db.cursor(settings) as cur:
        cur.execute(sql, params)
        return cur.fetchall() if cur.description else None


@pytest.mark.slow
def test_dlq_list_and_replay(settings, tmp_path):
    letters = dlq.list_dead_letters(settings)
    assert len(letters) == 7 and {x.source for x in letters} == {"binance"}
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "universe": {"mode": "pinned", "symbols": ["BTCUSDT", "ETHUSDT"]},
                "database": {
                    "embedded_dir": str(settings.path(settings.database.embedded_dir)),
                    "name": settings.database.name,
                },
                "storage": {"bronze_url": str(tmp_path / "bronze")},
            }
        )
    )
    listed = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "--config", str(config), "dlq", "list"],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=True,
    )
    assert len(listed.stdout.strip().splitlines()) == 7
    assert all(x.natural_key in listed.stdout for x in letters)

    # nothing changed: replay keeps every record queued
    assert dlq.replay(settings) == dlq.ReplayResult(replayed=0, still_invalid=7)
    # an operator corrects one payload (say, from the exchange's later data), then replays it
    fixed = next(x for x in letters if x.reason == "high < low")
    payload = list(fixed.payload)
    payload[2], payload[3] = payload[3], payload[2]
    execute(
        settings, "UPDATE raw.dead_letter SET payload = %s WHERE id = %s", (json.dumps(payload), fixed.id)
    )
    before = execute(settings, "SELECT count(*) FROM raw.binance_klines")[0][0]
    assert dlq.replay(settings, [fixed.id]) == dlq.ReplayResult(replayed=1, still_invalid=0)
    assert execute(settings, "SELECT count(*) FROM raw.binance_klines")[0][0] == before + 1
    symbol, ms = fixed.natural_key.split("@")
    high = execute(
        settings,
        "SELECT high FROM raw.binance_klines WHERE symbol = %s AND open_time = to_timestamp(%s / 1000.0)",
        (symbol, int(ms)),
    )[0][0]
    assert str(high) == payload[2]
    assert len(dlq.list_dead_letters(settings)) == 6  # the replayed one is no longer pending
    replayed = execute(
        settings,
        "SELECT replayed_at IS NOT NULL, replay_load_id FROM raw.dead_letter WHERE id = %s",
        (fixed.id,),
    )
    assert replayed[0][0] and replayed[0][1].startswith("binance-")


def test_dlq_replay_takes_the_sources_lock(settings):
    """A replay while an ingest of the same source runs would abort its dlt package, or be taken by it for
    an abandoned run: it waits for the source's lock like every writer, and is refused when it stays held."""
    before = execute(settings, "SELECT count(*) FROM raw.binance_klines")
    with contextlib.closing(db.connect(settings)) as holder, holder.cursor() as cur:
        cur.execute("SELECT pg_backend_pid(), pg_advisory_lock(%s)", (db.lock_key("ingest:binance"),))
        ((pid, _),) = cur.fetchall()
        with pytest.raises(
            db.LockBusy, match=f"another 'ingest:binance' run is in progress \\(Postgres backend pid {pid}\\)"
        ):
            dlq.replay(settings)
    assert len(dlq.list_dead_letters(settings)) == 7  # nothing replayed
    assert execute(settings, "SELECT count(*) FROM raw.binance_klines") == before
    assert execute(settings, "SELECT count(*) FROM ops.pipeline_runs WHERE command = 'dlq replay'") == [(0,)]


def test_reader_role_reads_gold_ops_and_raw_and_writes_nothing(settings):
    execute(settings, "CREATE TABLE IF NOT EXISTS gold.probe AS SELECT 1 AS x")
    with contextlib.closing(psycopg2.connect(db.reader_url(settings))) as conn, conn.cursor() as cur:
        cur.execute("SELECT current_user, x FROM gold.probe")
        assert cur.fetchall() == [(settings.database.reader_role, 1)]
        cur.execute("SELECT count(*) FROM ops.pipeline_runs")
        assert cur.fetchall() == execute(settings, "SELECT count(*) FROM ops.pipeline_runs") == [(1,)]
        cur.execute("SELECT count(*) FROM raw.binance_klines")  # the metrics' freshness reads raw
        assert cur.fetchall() == execute(settings, "SELECT count(*) FROM raw.binance_klines") == [(89,)]
        for statement in (
            "INSERT INTO gold.probe VALUES (2)",
            "DELETE FROM raw.binance_klines",
            "UPDATE ops.pipeline_runs SET error = NULL",
            "CREATE TABLE gold.mine (x int)",
        ):
            with pytest.raises(psycopg2.errors.ReadOnlySqlTransaction):  # the role's default
                cur.execute(statement)
            conn.rollback()
            cur.execute("SET TRANSACTION READ WRITE")  # past the default: still no write grant
            with pytest.raises(psycopg2.errors.InsufficientPrivilege):
                cur.execute(statement)
            conn.rollback()


def test_on_a_configured_server_the_reader_is_created_and_reader_url_is_never_the_writer(
    settings, capsys, monkeypatch
):
    """database.url set (here: the embedded server reached as its superuser, who may create roles): the
    reader role is created with CRYPTOFLOW_READER_PASSWORD, and everything read-only connects as it."""
    from pipelines import cli
    from pipelines.settings import load_settings

    status = embedded.status(settings)
    admin_pw = embedded.role_passwords(settings)[embedded.SUPERUSER]
    url = f"postgresql://postgres:{admin_pw}@localhost/{settings.database.name}?host={status.socket_dir}"
    reader = f"r_{settings.database.name}"
    environ = {"CRYPTOFLOW__DATABASE__URL": url, "CRYPTOFLOW__DATABASE__READER_ROLE": reader}
    without = load_settings(None, environ=environ)
    assert db.reader_url(without) == (
        f"postgresql://{reader}@localhost/{settings.database.name}?host={status.socket_dir}"
    )  # no password known: libpq's own (.pgpass), still the reader
    configured = load_settings(None, environ={**environ, "CRYPTOFLOW_READER_PASSWORD": "r3ad-only"})
    schema.ensure_schema(configured)
    with contextlib.closing(psycopg2.connect(db.reader_url(configured))) as conn, conn.cursor() as cur:
        cur.execute("SELECT current_user, count(*) FROM raw.binance_klines")
        assert cur.fetchone() == (reader, 89)  # 96 candles, 7 of them dead letters
        with pytest.raises(psycopg2.errors.ReadOnlySqlTransaction):  # read-only by default, too
            cur.execute("CREATE TEMP TABLE t (x int)")
    for name, value in {**environ, "CRYPTOFLOW_READER_PASSWORD": "r3ad-only"}.items():
        monkeypatch.setenv(name, value)
    assert cli.main(["db", "url", "--reader"]) == 0
    assert capsys.readouterr().out.strip() == db.reader_url(configured)
    assert db.reader_url(configured).startswith(f"postgresql://{reader}:r3ad-only@localhost/")


class FakeClock:
    """pipelines.http's `time` on a clock that only moves when the code sleeps: every wait is exact."""

    def __init__(self, now: float):
        self.now = now
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_rate_limiter_keeps_under_the_call_budget(monkeypatch):
    clock = FakeClock(1000.0)
    monkeypatch.setattr(http_module, "time", clock)
    limiter = RateLimiter(calls_per_minute=3, window_s=1.0)
    granted = []
    for step in (0.0, 0.25, 0.25, 0.0, 0.0):  # calls at 1000, 1000.25, 1000.5, then two more at once
        clock.now += step
        waited = limiter.acquire()
        granted.append((waited, clock.now))
    assert granted == [
        (0.0, 1000.0),
        (0.0, 1000.25),
        (0.0, 1000.5),
        (0.5, 1001.0),  # the 4th waits until the 1st call leaves the 1 s window ...
        (0.25, 1001.25),  # ... and the 5th until the 2nd does
    ]
    assert clock.sleeps == [0.5, 0.25]
    assert list(limiter._calls) == [1000.5, 1001.0, 1001.25]  # never more than 3 in any window


def test_rate_limiter_pauses_when_the_server_reports_the_weight_budget_spent(monkeypatch):
    clock = FakeClock(60 * 29_000_000 + 10.0)  # 10 s into a calendar minute
    monkeypatch.setattr(http_module, "time", clock)
    limiter = RateLimiter(calls_per_minute=1000, weight_limit=100, weight_budget=0.8)
    limiter.observe_weight(79)
    assert limiter.pause_needed() == 0
    limiter.observe_weight(80)
    assert limiter.pause_needed() == pytest.approx(50.05)  # until the exchange's next minute (+ 50 ms)
    # acquire sleeps in steps of at most 1 s and lets the call through as the next minute starts
    assert limiter.acquire() == 50.0 and clock.sleeps == [1.0] * 50
    assert clock.now == 60 * 29_000_001


def test_the_embedded_server_asks_every_connection_for_a_password(make_settings, tmp_path):
    """pgserver's initdb trusts local connections, and as root its socket folder is open to every user:
    on our server no role, the superuser included, gets in over the socket without its password."""
    settings = make_settings(database={"embedded_dir": str(tmp_path / "pg"), "name": "own"})
    embedded.start(settings)
    try:
        socket_dir = embedded.status(settings).socket_dir
        for role in ("postgres", settings.database.writer_role, settings.database.reader_role):
            with pytest.raises(psycopg2.OperationalError, match="password"):
                psycopg2.connect(host=socket_dir, user=role, dbname="postgres")
            with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
                psycopg2.connect(host=socket_dir, user=role, dbname="postgres", password="guess")
        with contextlib.closing(db.connect(settings)) as conn, conn.cursor() as cur:  # with it: in
            cur.execute("SELECT current_user")
            assert cur.fetchone() == (settings.database.writer_role,)
        credentials = tmp_path / "credentials.json"
        assert credentials.stat().st_mode & 0o777 == 0o600
        embedded.start(settings)  # the next command's bootstrap still gets in, as the superuser
        with contextlib.closing(psycopg2.connect(db.reader_url(settings))) as conn, conn.cursor() as cur:
            cur.execute("SELECT current_user")
            assert cur.fetchone() == (settings.database.reader_role,)
    finally:
        embedded.stop(settings)


def test_what_the_reader_can_read_of_check_results_carries_no_password(settings):
    """ops.dq_results is readable by the dashboard's role: a scan error that quotes its connection (libpq
    keywords or a URL) is stored without the password."""
    from pipelines import quality

    when = dt.datetime(2026, 3, 10, tzinfo=dt.UTC)
    error = (
        "Could not connect to data source 'raw': host=db user=w password=S3cret dbname=x; "
        "retry with postgresql://w:S3cret@db/x"
    )
    result = quality.CheckResult(
        "raw", "raw scan ran without errors", "raw", "fail", "error", None, {"errors": error}
    )
    quality.store_results(settings, "dq-probe", [result], when)
    with contextlib.closing(psycopg2.connect(db.reader_url(settings))) as conn, conn.cursor() as cur:
        cur.execute("SELECT diagnostics FROM ops.dq_results WHERE run_id = 'dq-probe'")
        assert cur.fetchall() == [
            (
                {
                    "errors": "Could not connect to data source 'raw': host=db user=w password=*** dbname=x; "
                    "retry with postgresql://w:***@db/x"
                },
            )
        ]


def test_every_advisory_lock_wait_is_bounded(make_settings):
    """The schema and bootstrap locks are waited for in one statement (pg_advisory_lock): lock_timeout
    bounds them like any lock, so a stuck session holding one fails the next run clearly instead of hanging."""
    from pipelines.errors import user_facing

    settings = make_settings(database={"lock_timeout_s": 1})
    db.ensure_database(settings)
    with contextlib.closing(db.connect(settings)) as holder, holder.cursor() as cur:
        cur.execute("SELECT pg_advisory_lock(%s)", (db.lock_key("cryptoflow:schema"),))
        with pytest.raises(psycopg2.errors.LockNotAvailable) as waited:
            schema.ensure_schema(settings)
        assert user_facing(waited.value).startswith(
            "the database kept a lock this run needs for longer than database.lock_timeout_s"
        )
        cur.execute("SELECT pg_advisory_lock(%s)", (db.lock_key("cryptoflow:bootstrap"),))
        with pytest.raises(psycopg2.errors.LockNotAvailable):
            embedded.start(settings)


def test_shared_runs_go_side_by_side_and_a_run_wanting_the_source_alone_goes_first(make_settings):
    """Backfill batches share the source's lock; their pairs' locks keep overlapping batches apart; a run that
    wants the source to itself (the hourly ingest) waits for the batches running, and no new batch starts
    while it waits: overlapping batches would otherwise keep it out for as long as the backfill lasts."""
    import threading

    settings = make_settings()
    db.ensure_database(settings)
    source = "ingest:probe"
    with db.advisory_lock(settings, source, wait_s=0, shared=True, also=["ingest:probe:A"]):
        with db.advisory_lock(settings, source, wait_s=0, shared=True, also=["ingest:probe:B"]):
            pass  # a batch of other pairs: side by side
        with (
            pytest.raises(db.LockBusy, match="another 'ingest:probe:A' run is in progress"),
            db.advisory_lock(settings, source, wait_s=0, shared=True, also=["ingest:probe:A"]),
        ):
            pass  # the same pair: refused (or it waits, with a wait)
        got_it: list[int] = []

        def run_alone() -> None:
            with db.advisory_lock(settings, source, wait_s=20):
                got_it.append(1)

        alone = threading.Thread(target=run_alone)
        alone.start()
        deadline = time.monotonic() + 10
        turn = db.lock_key(f"{source}:next")
        while not execute(
            settings,
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
            "AND (classid::bigint << 32 | objid::bigint) = %s",
            (turn,),
        )[0][0]:
            assert time.monotonic() < deadline, "the exclusive run never queued"
            time.sleep(0.05)
        with (
            pytest.raises(db.LockBusy, match=f"another '{source}' run is in progress"),
            db.advisory_lock(settings, source, wait_s=1, shared=True, also=["ingest:probe:C"]),
        ):
            pass  # a new batch while the exclusive run waits: it does not start
        assert got_it == []  # the running batch still holds it
    alone.join(timeout=10)
    assert got_it == [1]  # the batch ended: the exclusive run got the source


def test_a_batch_takes_over_only_its_own_pairs_windows_from_a_killed_run(settings):
    """A run killed after its raw commit leaves windows unsearched. A backfill batch of other pairs must not
    search them: another batch may be loading those pairs right now, and their hours would be recorded as
    exchange gaps before they reach raw. The batch of the killed run's pairs takes them over; an exclusive run
    takes over everything; a live run's windows are nobody's but its own."""
    from pipelines.ingest import gaps

    killed, live = "binance-killed-1", "binance-live-1"
    execute(
        settings,
        "INSERT INTO ops.pipeline_runs (run_id, source, command, started_at, status) VALUES "
        "(%s, 'binance', 'backfill', now(), 'failed'), (%s, 'binance', 'backfill', now(), 'running')",
        (killed, live),
    )
    # the killed run committed (raw holds a row of its load); the live one has not yet
    execute(
        settings,
        "UPDATE raw.binance_klines SET load_id = %s WHERE ctid = (SELECT min(ctid) FROM raw.binance_klines)",
        (killed,),
    )
    day = 24 * 3_600_000
    windows = [
        (killed, "BTCUSDT"),
        (killed, "ETHUSDT"),
        (live, "BTCUSDT"),
        (live, "SOLUSDT"),
    ]
    execute(
        settings,
        "INSERT INTO ops.pending_gap_checks (run_id, symbol, start_time, end_time) "
        "SELECT r, s, to_timestamp(0), to_timestamp(%s / 1000.0) FROM unnest(%s::text[], %s::text[]) AS t(r, s)",
        (day, [r for r, _ in windows], [s for _, s in windows]),
    )
    mine, taken = gaps.inherited_gap_checks(settings, "binance-batch-eth", ["ETHUSDT", "XRPUSDT"])
    assert ([w.symbol for w in mine], taken) == (["ETHUSDT"], [killed])
    gaps.done_gap_checks(settings, "binance-batch-eth", taken, ["ETHUSDT", "XRPUSDT"])
    left = "SELECT run_id, symbol FROM ops.pending_gap_checks ORDER BY 1, 2"
    assert execute(settings, left) == [(killed, "BTCUSDT"), (live, "BTCUSDT"), (live, "SOLUSDT")]
    # a run with the source to itself takes over the rest of the killed run's, never the live run's
    rest, taken = gaps.inherited_gap_checks(settings, "binance-hourly")
    assert ([w.symbol for w in rest], taken) == (["BTCUSDT"], [killed])
    gaps.done_gap_checks(settings, "binance-hourly", taken)
    assert execute(settings, left) == [(live, "BTCUSDT"), (live, "SOLUSDT")]
