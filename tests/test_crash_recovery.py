"""kill -9 in the middle of a backfill (a real `cryptoflow backfill` process), then a re-run: exact rows in
raw and bronze, no duplicates, one load id per key in both, and the killed run closed as abandoned. Plus the
CLI's answer to a concurrent run of the same source."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pyarrow.compute as pc
import pytest
import yaml

from pipelines import ingest
from pipelines.bronze import open_lake, read_bronze
from pipelines.runtime import db
from pipelines.sandbox import SandboxServer
from pipelines.settings import load_settings

HOUR = 3_600_000
NOW = dt.datetime(2026, 3, 10, 12, 30, tzinfo=dt.UTC)
NOW_MS = int(NOW.timestamp() * 1000)
LAST_CLOSED = NOW_MS // HOUR * HOUR - HOUR
SYMBOLS = ["BTCUSDT", "ETHUSDT", "BNBUSDT", "SOLUSDT"]
DAYS = 120  # 2880 hours: 3 pages of <= 1000 candles per symbol, 12 pages in all
FIRST = LAST_CLOSED - (DAYS * 24 - 1) * HOUR
EXPECTED_ROWS = len(SYMBOLS) * DAYS * 24
PARTITIONS = 121  # 12:00 on the first day .. 11:00 on the 10th of March
WAIT_S = 30


class KlinesGate:
    """Wraps the sandbox's request dispatch: records every klines request (symbol, startTime, endTime) and
    holds those `hold` selects until `release` is set, so a test knows exactly where a backfill is."""

    def __init__(self, server: SandboxServer, hold: Callable[[int, str, int, int], bool]) -> None:
        self.requests: list[tuple[str, int, int]] = []
        self.holding = threading.Event()
        self.release = threading.Event()
        self._hold = hold
        self._lock = threading.Lock()
        self._dispatch = server.dispatch
        server.dispatch = self.dispatch

    def dispatch(self, method: str, raw_path: str, body: bytes):
        parts = urlsplit(raw_path)
        q = {k: v[0] for k, v in parse_qs(parts.query).items()}
        if parts.path == "/binance/api/v3/klines" and "endTime" in q:  # pages (not the listing probe)
            request = (q["symbol"], int(q["startTime"]), int(q["endTime"]))
            with self._lock:
                self.requests.append(request)
                n = len(self.requests)
            if self._hold(n, *request):
                self.holding.set()
                self.release.wait(WAIT_S)
        return self._dispatch(method, raw_path, body)


@pytest.fixture
def sandbox():
    with SandboxServer(seed=42, now_ms=NOW_MS, calm=True) as server:  # crash mechanics, not market events
        yield server


@pytest.fixture
def gate(sandbox):
    gates: list[KlinesGate] = []

    def make(hold: Callable[[int, str, int, int], bool]) -> KlinesGate:
        g = KlinesGate(sandbox, hold)
        gates.append(g)
        return g

    yield make
    for g in gates:
        g.release.set()  # let held handler threads finish (their client is gone)


@pytest.fixture
def config(tmp_path: Path, pg_dir: Path, sandbox: SandboxServer) -> Path:
    """The config file both the killed process and the re-run use (same database, lake and dlt state)."""
    data = {
        "universe": {"mode": "pinned", "symbols": SYMBOLS},
        "backfill": {"days": DAYS, "source": "rest"},  # these tests hold and kill REST page fetches
        "sources": {
            "binance": {
                "base_url": sandbox.binance_url,
                "concurrency": 1,
                "max_retries": 2,
                "backoff_base_s": 0.01,
                "timeout_s": 60,
            },
            "coingecko": {"base_url": sandbox.coingecko_url},
            "fear_greed": {"base_url": sandbox.fear_greed_url},
        },
        "database": {"embedded_dir": str(pg_dir), "name": f"crash_{uuid.uuid4().hex[:10]}", "lock_wait_s": 0},
        "storage": {"bronze_url": str(tmp_path / "bronze")},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture
def settings(config: Path):
    s = load_settings(config, environ={})
    db.ensure_database(s)
    return s


def start_backfill(config: Path, name: str, days: int = DAYS, *extra: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CRYPTOFLOW", "AWS_"))}
    env["RUNTIME__DLTHUB_TELEMETRY"] = "false"
    with open(config.parent / f"{name}.out", "w") as out, open(config.parent / f"{name}.err", "w") as err:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pipelines.cli",
                "--config",
                str(config),
                "backfill",
                "--days",
                str(days),
                *extra,
            ],
            stdout=out,
            stderr=err,
            cwd=config.parent,
            env=env,
        )


def output(config: Path, name: str) -> tuple[str, str]:
    return (config.parent / f"{name}.out").read_text(), (config.parent / f"{name}.err").read_text()


def wait_for(
    condition: Callable[[], bool], proc: subprocess.Popen, what: str, timeout: float = WAIT_S
) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, f"the backfill ended (exit {proc.returncode}) before {what}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def kill9(proc: subprocess.Popen) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=10) == -signal.SIGKILL


def query(settings, sql, params=()):
    with db.cursor(settings) as cur:
        cur.execute(sql, params)
        return cur.fetchall()


def execute(settings, sql: str, params=()) -> None:
    with db.cursor(settings) as cur:
        cur.execute(sql, params)


def waiting_on_klines(settings) -> list[int]:
    """Backends waiting for a lock on raw.binance_klines."""
    sql = "SELECT pid FROM pg_locks WHERE relation = 'raw.binance_klines'::regclass AND NOT granted"
    return [pid for (pid,) in query(settings, sql)]


def advisory_lock_holders(settings) -> list[int]:
    return [
        pid
        for (pid,) in query(
            settings,
            "SELECT DISTINCT pid FROM pg_locks WHERE locktype = 'advisory' AND granted "
            "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        )
    ]


def raw_rows(settings) -> list[tuple[str, int, str]]:
    if query(settings, "SELECT to_regclass('raw.binance_klines')")[0][0] is None:
        return []
    return sorted(
        query(
            settings,
            "SELECT symbol, (extract(epoch FROM open_time) * 1000)::bigint, load_id FROM raw.binance_klines",
        )
    )


def bronze_rows(settings) -> list[tuple[str, int, str]]:
    table = read_bronze(open_lake(settings), "binance_klines")
    if table.num_rows == 0:
        return []
    ms = pc.cast(pc.cast(table["open_time"], "timestamp[ms]"), "int64").to_pylist()
    return sorted(zip(table["symbol"].to_pylist(), ms, table["load_id"].to_pylist(), strict=True))


def bronze_files(settings) -> list[Path]:
    return sorted(Path(open_lake(settings).root).rglob("*.parquet"))


def load_of(path: Path) -> str:
    """The load id a bronze file belongs to (the writer may add a -<n> file index)."""
    return re.sub(r"-\d+$", "", path.stem)


def runs(settings) -> dict[str, tuple[str, str | None, bool]]:
    rows = query(settings, "SELECT run_id, status, error, finished_at IS NOT NULL FROM ops.pipeline_runs")
    return {run_id: (status, error, finished) for run_id, status, error, finished in rows}


def the_running_run(settings) -> str:
    running = [run_id for run_id, (status, *_) in runs(settings).items() if status == "running"]
    assert len(running) == 1, running
    return running[0]


def rerun(settings, expected_rows: int = EXPECTED_ROWS) -> str:
    """The same backfill again, in-process, once the killed process's lock is gone: it loads exactly the
    rows raw lacks (the stored ones are compared, unchanged, and left as they are)."""
    with db.advisory_lock(settings, "ingest:binance", wait_s=10):
        pass  # the killed session's backend released it
    summary = ingest.ingest_ohlcv(settings, days=DAYS, command="backfill")
    assert (summary.rows_raw, summary.rows_bronze) == (expected_rows, expected_rows)
    assert summary.details["unchanged"] == EXPECTED_ROWS - expected_rows
    return summary.run_id


def assert_exactly_once(settings, load_id: str | Callable[[str, int], str]) -> None:
    """Every expected hour of every symbol once in raw and once in bronze, both carrying the load id that
    wrote it (one load id, or a function of (symbol, open time ms))."""
    load_of_key = load_id if callable(load_id) else (lambda _s, _ms: load_id)
    expected = [
        (s, ms, load_of_key(s, ms)) for s in sorted(SYMBOLS) for ms in range(FIRST, LAST_CLOSED + 1, HOUR)
    ]
    assert len(expected) == EXPECTED_ROWS == 11_520
    raw = raw_rows(settings)
    assert len(raw) == EXPECTED_ROWS
    assert raw == expected
    assert query(settings, "SELECT count(DISTINCT (symbol, open_time)) FROM raw.binance_klines") == [
        (EXPECTED_ROWS,)
    ]
    assert bronze_rows(settings) == raw  # same keys, each once, same load id per key
    files = bronze_files(settings)
    assert {load_of(p) for p in files} == {lid for *_, lid in expected}  # nothing left of the killed run
    if not callable(load_id):
        assert len(files) == len({p.parent for p in files}) == PARTITIONS


def assert_abandoned(settings, killed: str, rerun_id: str, previous: dict | None = None) -> None:
    assert runs(settings) == {
        **(previous or {}),
        killed: ("failed", "abandoned: the process ended without recording an outcome", True),
        rerun_id: ("success", None, True),
    }


@pytest.mark.slow
def test_kill_while_fetching_then_rerun_is_exact_and_a_concurrent_run_is_refused(config, settings, gate):
    g = gate(lambda n, *_: n == 4)  # pages 1-3 answered, page 4 in flight
    proc = start_backfill(config, "killed")
    wait_for(g.holding.is_set, proc, "the 4th klines page")
    killed = the_running_run(settings)

    # a second backfill while this one holds the source's lock: one clear line, exit 1, nothing touched
    second = start_backfill(config, "second")
    assert second.wait(timeout=WAIT_S) == 1
    out, err = output(config, "second")
    (holder_pid,) = advisory_lock_holders(settings)
    # the holder's backend pid is part of the message when it can be found
    assert re.fullmatch(
        rf"error: another 'ingest:binance' run is in progress( \(Postgres backend pid {holder_pid}\))?; "
        r"it was left alone\. Wait for it to finish, or set database\.lock_wait_s to wait\.",
        err.strip().splitlines()[-1],
    )
    assert "Traceback" not in err + out
    assert proc.poll() is None and list(runs(settings)) == [killed]
    assert len(g.requests) == 4  # the refused process sent no request

    kill9(proc)
    assert g.requests == [
        ("BTCUSDT", FIRST, FIRST + 999 * HOUR),
        ("BTCUSDT", FIRST + 1000 * HOUR, FIRST + 1999 * HOUR),
        ("BTCUSDT", FIRST + 2000 * HOUR, LAST_CLOSED),
        ("ETHUSDT", FIRST, FIRST + 999 * HOUR),
    ]
    assert raw_rows(settings) == [] and bronze_files(settings) == []
    assert runs(settings)[killed] == ("running", None, False)

    rerun_id = rerun(settings)
    assert_exactly_once(settings, rerun_id)
    assert_abandoned(settings, killed, rerun_id)


@pytest.mark.slow
def test_kill_after_bronze_before_the_raw_commit_then_rerun_is_exact(config, settings):
    # the first backfill leaves out the window's oldest day, so the next one has rows to append
    first = ingest.ingest_ohlcv(settings, days=DAYS - 1, command="backfill")
    oldest_day = FIRST + 24 * HOUR
    assert len(raw_rows(settings)) == EXPECTED_ROWS - 24 * len(SYMBOLS)
    previous = runs(settings)

    # hold the raw load of the next run on a table lock (reads such as the cursors pass, writes wait):
    # by the time it waits, its bronze files are written
    blocker = db.connect(settings)
    try:
        with blocker.cursor() as cur:
            cur.execute("LOCK TABLE raw.binance_klines IN EXCLUSIVE MODE")
        proc = start_backfill(config, "killed")
        wait_for(lambda: waiting_on_klines(settings), proc, "the raw load to wait on the lock")
        killed = the_running_run(settings)
        kill9(proc)
        # A backend waiting on a lock cannot notice that its client died: given the table it would run the
        # dead client's merge, which dlt sends in autocommit, and commit it. End that session the way a
        # lost connection does, so the raw load never commits.
        waiting = waiting_on_klines(settings)
        execute(settings, "SELECT pg_terminate_backend(pid) FROM unnest(%s) AS pid", (waiting,))
        deadline = time.monotonic() + WAIT_S
        while query(settings, "SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(%s)", (waiting,))[0][0]:
            assert time.monotonic() < deadline, "the killed process's session did not end"
            time.sleep(0.01)
    finally:
        blocker.rollback()
        blocker.close()

    # bronze holds the killed run's new files next to the first run's, which are only settled once raw
    # commits; raw still holds the first run's load
    assert {load_of(p) for p in bronze_files(settings)} == {first.run_id, killed}
    bronze = bronze_rows(settings)
    assert [(s, ms) for s, ms, lid in bronze if lid != killed] == [(s, ms) for s, ms, _ in raw_rows(settings)]
    assert sorted((s, ms) for s, ms, lid in bronze if lid == killed) == [
        (s, ms) for s in sorted(SYMBOLS) for ms in range(FIRST, oldest_day, HOUR)
    ]  # the killed load's new rows: bronze only, until the next run removes them
    assert {lid for *_, lid in raw_rows(settings)} == {first.run_id}
    assert len(raw_rows(settings)) == EXPECTED_ROWS - 24 * len(SYMBOLS)

    rerun_id = rerun(settings, 24 * len(SYMBOLS))
    assert_exactly_once(settings, lambda _s, ms: rerun_id if ms < oldest_day else first.run_id)
    assert_abandoned(settings, killed, rerun_id, previous)


@pytest.mark.slow
def test_kill_after_the_raw_commit_during_the_gap_refetch_then_rerun_is_exact(
    config, settings, sandbox, gate
):
    outage = (LAST_CLOSED - 100 * HOUR, LAST_CLOSED - 98 * HOUR)  # not a page boundary
    sandbox.set_fault("klines", "missing_hours", symbol="SOLUSDT", start_ms=outage[0], end_ms=outage[1])
    g = gate(lambda n, symbol, start, end: (symbol, start, end) == ("SOLUSDT", *outage))
    proc = start_backfill(config, "killed")
    wait_for(g.holding.is_set, proc, "the gap re-fetch")
    kill9(proc)
    killed = the_running_run(settings)
    assert len(g.requests) == 13  # 12 pages, then the re-fetch of the 3 missing hours

    # raw and bronze had committed the first delivery, without the outage
    raw = raw_rows(settings)
    assert len(raw) == EXPECTED_ROWS - 3 and {lid for *_, lid in raw} == {killed}
    assert bronze_rows(settings) == raw
    gaps = query(settings, "SELECT symbol, status, detected_run_id FROM ops.gaps")
    assert sorted(gaps) == [("SOLUSDT", "missing", killed)] * 3

    sandbox.clear_faults()
    rerun_id = rerun(settings, 3)  # the three hours the exchange has again
    assert_exactly_once(
        settings,
        lambda s, ms: rerun_id if s == "SOLUSDT" and outage[0] <= ms <= outage[1] else killed,
    )
    assert query(settings, "SELECT DISTINCT status, gap_class FROM ops.gaps") == [
        ("refilled", "ingest_failure")
    ]
    assert_abandoned(settings, killed, rerun_id)


@pytest.mark.slow
def test_kill_right_after_the_raw_commit_keeps_its_dead_letters_and_the_next_run_searches_its_gaps(
    config, settings, sandbox
):
    """The new rows are in raw; the process dies before its gap search. An incremental run cannot see those
    hours (the cursor moved past them), so the killed run's windows must be left for it; its dead letters
    must already be stored."""
    first = ingest.ingest_ohlcv(settings, days=DAYS - 1, command="backfill")
    oldest_day = FIRST + 24 * HOUR
    outage = (FIRST + 5 * HOUR, FIRST + 7 * HOUR)  # in the day only the killed run fetches
    bad_hour = FIRST + 10 * HOUR
    sandbox.set_fault("klines", "missing_hours", symbol="SOLUSDT", start_ms=outage[0], end_ms=outage[1])
    sandbox.set_fault("klines", "invalid_rows", symbol="BTCUSDT", rows=[bad_hour])
    # COPY takes ROW EXCLUSIVE, which this lock lets through; the unique-index guard that follows the raw
    # commit needs SHARE and waits: the moment just after the commit
    blocker = db.connect(settings)
    try:
        with blocker.cursor() as cur:
            cur.execute("LOCK TABLE raw.binance_klines IN ROW EXCLUSIVE MODE")
        proc = start_backfill(config, "killed")
        wait_for(lambda: waiting_on_klines(settings), proc, "the unique-index guard after the raw commit")
        killed = the_running_run(settings)
        kill9(proc)
        waiting = waiting_on_klines(settings)
        execute(settings, "SELECT pg_terminate_backend(pid) FROM unnest(%s) AS pid", (waiting,))
    finally:
        blocker.rollback()
        blocker.close()

    new_hours = {(s, ms) for s in SYMBOLS for ms in range(FIRST, oldest_day, HOUR)}
    new_hours -= {("SOLUSDT", ms) for ms in range(outage[0], outage[1] + 1, HOUR)} | {("BTCUSDT", bad_hour)}
    assert {(s, ms) for s, ms, lid in raw_rows(settings) if lid == killed} == new_hours  # committed
    assert query(settings, "SELECT count(*) FROM ops.gaps")[0][0] == 0  # never searched
    dead = query(settings, "SELECT natural_key, load_id FROM raw.dead_letter")
    assert dead == [(f"BTCUSDT@{bad_hour}", killed)]

    sandbox.clear_faults()  # the exchange has the outage hours again
    with db.advisory_lock(settings, "ingest:binance", wait_s=10):
        pass
    rerun = ingest.ingest_ohlcv(settings)  # incremental: its own windows start near the cursor
    assert rerun.details["inherited_gap_checks"] == len(SYMBOLS)
    # the outage hours, and the dead-lettered hour, which the exchange now serves valid
    assert rerun.details["refetched_rows"] == 4
    gaps = sorted(query(settings, "SELECT symbol, status, gap_class, detected_run_id FROM ops.gaps"))
    assert (
        gaps
        == [("BTCUSDT", "refilled", "ingest_failure", rerun.run_id)]
        + [("SOLUSDT", "refilled", "ingest_failure", rerun.run_id)] * 3
    )
    assert query(settings, "SELECT count(*) FROM ops.pending_gap_checks")[0][0] == 0
    assert query(settings, "SELECT natural_key, load_id FROM raw.dead_letter") == dead  # not queued twice
    raw = raw_rows(settings)
    assert [(s, ms) for s, ms, _ in raw] == [
        (s, ms) for s in sorted(SYMBOLS) for ms in range(FIRST, LAST_CLOSED + 1, HOUR)
    ]
    assert bronze_rows(settings) == raw
    assert {lid for *_, lid in raw} == {first.run_id, killed, f"{rerun.run_id}-refetch"}
    assert runs(settings)[killed] == (
        "failed",
        "abandoned: the process ended without recording an outcome",
        True,
    )


def test_the_refusal_names_the_backend_holding_the_lock(settings):
    with db.cursor(settings) as cur:
        cur.execute("SELECT pg_backend_pid()")
        (mine,) = cur.fetchone()
        cur.execute("SELECT pg_advisory_lock(%s)", (db.lock_key("ingest:binance"),))
        with pytest.raises(db.LockBusy) as refused:
            ingest.ingest_ohlcv(settings, days=1)
    assert str(refused.value) == (
        f"another 'ingest:binance' run is in progress (Postgres backend pid {mine}); it was left alone. "
        "Wait for it to finish, or set database.lock_wait_s to wait."
    )


@pytest.mark.slow
def test_a_failed_raw_load_leaves_bronze_as_it_was(settings, sandbox):
    first = ingest.ingest_ohlcv(settings, days=2)
    before = raw_rows(settings)
    assert len(before) == len(SYMBOLS) * 48 and bronze_rows(settings) == before
    # any database-side failure of the raw load will do: here a constraint only the stored rows satisfy
    execute(
        settings,
        "ALTER TABLE raw.binance_klines ADD CONSTRAINT refuse_new_loads "
        f"CHECK (load_id = '{first.run_id}') NOT VALID",
    )
    sandbox.set_now(NOW_MS + 2 * HOUR)  # two new hours per symbol to load
    with pytest.raises(Exception, match="refuse_new_loads"):
        ingest.ingest_ohlcv(settings, days=2)
    assert raw_rows(settings) == before  # raw is as it was
    assert bronze_rows(settings) == before  # and so is bronze: the new files went, the old ones stayed


INTERRUPTED = "interrupted; nothing half-written was kept (re-run to resume)"


@pytest.mark.slow
def test_sigint_at_20_random_moments_stops_cleanly_and_a_rerun_is_exact(config, settings, sandbox):
    """Ctrl-C anywhere in a backfill: out within 10 s, one line, the lock released, nothing half-written."""
    import random

    # every page a little slow, so a backfill outlasts the latest signal (5 s) however fast the machine: what
    # the signals hit must not depend on its speed
    sandbox.set_fault("klines", "slow", delay=0.3)

    rng = random.Random(20261202)
    outcomes = []
    for i in range(20):
        name = f"interrupted-{i}"
        proc = start_backfill(config, name)
        time.sleep(rng.uniform(0.3, 5.0))  # start-up (imports) takes about 1.5 s: some land there, most later
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        try:
            rc = proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            pytest.fail(f"try {i}: still running 10 s after SIGINT")
        out, err = output(config, name)
        outcomes.append(rc)
        assert "Traceback" not in err + out, f"try {i}: {err[-2000:]}"
        if rc != 0:  # 0: the backfill finished before the signal came
            assert rc == 130 and err.strip().splitlines()[-1] == INTERRUPTED, (
                f"try {i}: rc {rc}: {err[-500:]}"
            )
        deadline = time.monotonic() + 5
        while advisory_lock_holders(settings):  # the dead process's backend lets go of the source's lock
            assert time.monotonic() < deadline, f"try {i}: the lock is still held"
            time.sleep(0.05)
        if raw_rows(settings):  # what any try committed, bronze holds too (same keys, same load ids)
            assert bronze_rows(settings) == raw_rows(settings), f"try {i}"
    assert outcomes.count(130) >= 10  # most signals landed inside a run
    sandbox.clear_faults()

    summary = ingest.ingest_ohlcv(settings, days=DAYS, command="backfill")
    raw = raw_rows(settings)
    expected = [(s, ms) for s in sorted(SYMBOLS) for ms in range(FIRST, LAST_CLOSED + 1, HOUR)]
    assert [(s, ms) for s, ms, _ in raw] == expected  # every hour once
    assert bronze_rows(settings) == raw
    assert summary.rows_raw + summary.details["unchanged"] == EXPECTED_ROWS


@pytest.mark.slow
def test_a_lock_held_elsewhere_fails_the_run_within_its_bound_with_a_clear_message(config, settings):
    """A session (an analyst's open transaction, a stuck migration) holds raw.binance_klines: the run waits
    at most database.lock_timeout_s, then says so; raw keeps what it had and the source's lock is free."""
    first = ingest.ingest_ohlcv(settings, days=1)
    before = raw_rows(settings)
    data = yaml.safe_load(config.read_text())
    data["database"] |= {"lock_timeout_s": 1, "statement_timeout_s": 30}
    config.write_text(yaml.safe_dump(data))
    with contextlib.closing(db.connect(settings)) as check, check.cursor() as cur:
        bounded = load_settings(config, environ={})
        with contextlib.closing(db.connect(bounded)) as session, session.cursor() as own:
            own.execute("SHOW statement_timeout")
            assert own.fetchone() == ("30s",)
            own.execute("SHOW lock_timeout")
            assert own.fetchone() == ("1s",)
        cur.execute("LOCK TABLE raw.binance_klines IN ACCESS EXCLUSIVE MODE")
        proc = start_backfill(config, "blocked", days=2)
        assert proc.wait(timeout=120) == 1  # without the bound it waits for as long as the lock is held
        check.rollback()
    _out, err = output(config, "blocked")
    assert "error: the database kept a lock this run needs for longer than database.lock_timeout_s" in err
    assert "Traceback" not in err
    assert raw_rows(settings) == before and {lid for *_, lid in before} == {first.run_id}
    assert advisory_lock_holders(settings) == []


@pytest.mark.slow
def test_backfills_of_other_pairs_run_side_by_side_and_a_killed_one_is_recovered_alone(
    config, settings, gate
):
    """Two `backfill --shared` processes of disjoint pairs (two Airflow workers' batches): one finishes while
    the other is in the middle of its pages; runs that overlap them are refused; the one killed with -9 is
    closed as abandoned by the re-run of its batch only, and every candle is in raw and bronze exactly once."""
    first, second = ["BTCUSDT", "ETHUSDT"], ["BNBUSDT", "SOLUSDT"]
    g = gate(lambda _n, symbol, *_: symbol in first)  # the first batch's pages wait until released
    proc = start_backfill(config, "first", DAYS, "--shared", "--symbols", *first)
    wait_for(g.holding.is_set, proc, "the first batch's first klines page")
    killed = the_running_run(settings)

    other = start_backfill(config, "second", DAYS, "--shared", "--symbols", *second)
    assert other.wait(timeout=WAIT_S * 4) == 0, output(config, "second")
    assert proc.poll() is None and runs(settings)[killed] == ("running", None, False)  # left alone
    (done,) = [r for r, (status, *_) in runs(settings).items() if status == "success"]
    assert {s for s, *_ in raw_rows(settings)} == set(second)

    # a batch overlapping the running one, and a backfill that wants the source to itself: refused, one line
    overlapping = start_backfill(config, "overlapping", DAYS, "--shared", "--symbols", "ETHUSDT", "XRPUSDT")
    exclusive = start_backfill(config, "exclusive")
    for name, p, lock in (
        ("overlapping", overlapping, "ingest:binance:ETHUSDT"),
        ("exclusive", exclusive, "ingest:binance"),
    ):
        assert p.wait(timeout=WAIT_S) == 1
        out, err = output(config, name)
        assert err.strip().splitlines()[-1].startswith(f"error: another '{lock}' run is in progress"), err
        assert "Traceback" not in out + err

    kill9(proc)
    g.release.set()
    summary = ingest.ingest_ohlcv(settings, symbols=first, days=DAYS, command="backfill", shared=True)
    assert (summary.rows_raw, summary.rows_bronze) == (2 * DAYS * 24, 2 * DAYS * 24)
    assert_exactly_once(settings, lambda symbol, _ms: summary.run_id if symbol in first else done)
    assert runs(settings) == {
        killed: ("failed", "abandoned: the process ended without recording an outcome", True),
        done: ("success", None, True),
        summary.run_id: ("success", None, True),
    }
    assert not list((settings.state_dir / "dlt").glob("cryptoflow_binance_*"))  # the shared runs' dlt folders
    assert advisory_lock_holders(settings) == []
