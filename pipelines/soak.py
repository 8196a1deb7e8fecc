"""`cryptoflow soak --days N`: weeks of production in minutes. The real hourly cycle - ingest every source,
transform, checks with their alerts - runs once per simulated hour on the sandbox's clock, with the daily
maintenance (compaction, retention) at its hour, on a deployment of its own (its own embedded Postgres, lake
and Slack receiver). Faults arrive on a seeded schedule: a 429 storm past what the client waits, an exchange
outage hour, a run killed by SIGKILL, a Postgres restart; the market itself revises candles and moves
through its listings. The report says whether a long run stays fast, small and exact.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import json
import logging
import math
import random
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

from pipelines import catalog, compaction, maintenance, quality, transform
from pipelines.bronze import existing_files, open_lake
from pipelines.runtime import db
from pipelines.settings import Settings
from pipelines.sqlmesh_console import sqlmesh_console_to_log

log = logging.getLogger(__name__)

HOUR = dt.timedelta(hours=1)
START = dt.datetime(2026, 3, 1, 0, 30, tzinfo=dt.UTC)  # the sandbox's clock at the first cycle's start
HISTORY_DAYS = 7  # backfilled before the first cycle: the 7-day indicators have their window
SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT", "XRPUSDT"]
FAULTS = ("429_storm", "outage_hour", "killed_run", "postgres_restart")
MAINTENANCE_HOUR = 3  # as orchestration.maintenance_schedule's default (03:30)
OPENED = ("Data-quality check failing", "Pipeline run failed")  # the first words of an opening alert
RTOL = 1e-9  # gold against a rebuild: volatility's float sums may differ in the last bits
FACTS = (
    "SELECT symbol, open_time, close, change_1h, change_24h, change_7d, ma_7d, ma_30d, vwap_24h, "
    "volatility_24h, volatility_7d, volatility_30d, candles_in_7d, returns_in_30d, fng_value "
    "FROM gold.fct_prices ORDER BY symbol, open_time"
)
DAILY = "SELECT symbol, day, close, candles, ma_7d, ma_30d FROM gold.fct_daily_summary ORDER BY 1, 2"


class _Webhook:
    """The Slack webhook, on 127.0.0.1: counts what each alert said."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                hook.received.append(json.loads(body))
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/services/soak"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def schedule(cycles: int, seed: int) -> dict[int, str]:
    """Cycle -> fault: each fault once, at seeded cycles after the first two and before the last."""
    room = list(range(3, cycles - 1))
    if len(room) < len(FAULTS):
        return {}
    return dict(zip(sorted(random.Random(seed).sample(room, len(FAULTS))), FAULTS, strict=True))


@dataclass
class Soak:
    settings: Settings
    config: Path
    sandbox: Any  # a SandboxServer
    webhook: _Webhook
    failures: list[dict[str, Any]]

    def step(self, cycle: int, name: str, call: Callable[[], Any]) -> Any:
        from pipelines.ops import slack

        try:
            with slack.alerting(self.settings, name):
                return call()
        except Exception as exc:
            self.failures.append(
                {"cycle": cycle, "step": name, "error": f"{type(exc).__name__}: {exc}"[:300]}
            )
            return None

    def checks(self, cycle: int, now: dt.datetime) -> None:
        from pipelines.ops import slack

        run = self.step(cycle, "check", lambda: quality.run_checks(self.settings, now=now))
        if run is not None:
            slack.notify_check_run(self.settings, run, now=now)
            failed = [r.name for r in run.results if r.outcome in ("fail", "error")]
            if failed:
                self.failures.append({"cycle": cycle, "step": "check", "error": f"failed: {failed}"})

    def _running(self) -> bool:
        return _running_run(self.settings)

    def killed_run(self) -> None:
        """`cryptoflow ingest ohlcv` in its own process, SIGKILLed while it fetches (the sandbox answers
        slowly meanwhile): the next run must recover it."""
        self.sandbox.set_fault("klines", "slow", delay=2.0)
        proc = subprocess.Popen(
            [sys.executable, "-m", "pipelines.cli", "--config", str(self.config), "ingest", "ohlcv"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None and not self._running():
            time.sleep(0.2)
        time.sleep(1)  # into its fetch
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        self.sandbox.set_fault(
            "klines", "slow", delay=0.0
        )  # replaces it; other klines faults (an outage) stay


def _running_run(settings: Settings) -> bool:
    with contextlib.closing(db.connect(settings)) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM ops.pipeline_runs WHERE status = 'running' AND source = 'binance'")
        return bool(db.one(cur)[0])


def _settings(base: Settings, workdir: Path, pairs: int, webhook: str) -> Settings:
    raw = {
        "universe": {"mode": "pinned", "symbols": SYMBOLS[:pairs]},
        "database": {"embedded_dir": str(workdir / "pg"), "name": "soak"},
        "storage": {"bronze_url": str(workdir / "bronze")},
        "sources": {"binance": {"max_retries": 2, "backoff_base_s": 0.05, "backoff_max_s": 0.2}},
        "alerts": {"route": "slack"},
    }
    from pipelines.settings import load_settings

    (workdir / "config.yaml").write_text(yaml.safe_dump(raw))
    loaded = load_settings(workdir / "config.yaml", environ={"CRYPTOFLOW_SLACK_WEBHOOK_URL": webhook})
    return loaded.model_copy(update={"project_dir": workdir, "sandbox": base.sandbox})


def _point_config_at(config: Path, url: str) -> None:
    """The deployment's config.yaml names the sandbox too (the killed run is a process of its own)."""
    raw = yaml.safe_load(config.read_text())
    raw["sources"]["binance"]["base_url"] = f"{url}/binance"
    raw["sources"].setdefault("binance_archive", {})["base_url"] = f"{url}/archive"
    raw["sources"]["coingecko"] = {"base_url": f"{url}/coingecko"}
    raw["sources"]["fear_greed"] = {"base_url": f"{url}/alternative"}
    config.write_text(yaml.safe_dump(raw))


def run_soak(
    base: Settings,
    days: int,
    *,
    seed: int = 7,
    pairs: int = 3,
    workdir: Path | None = None,
    progress: Callable[[str], None] = print,
) -> dict[str, Any]:
    from pipelines import ingest
    from pipelines.sandbox import SandboxServer

    cycles = days * 24
    workdir = workdir or base.state_dir / "soak"
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    faults = schedule(cycles, seed)
    webhook = _Webhook()
    settings = _settings(base, workdir, pairs, webhook.url)
    try:
        with SandboxServer(seed=seed, now_ms=_ms(START), calm=False) as sandbox, sqlmesh_console_to_log():
            settings = settings.with_sandbox(sandbox.url)
            _point_config_at(workdir / "config.yaml", sandbox.url)
            soak = Soak(settings, workdir / "config.yaml", sandbox, webhook, [])
            db.ensure_database(settings)
            ingest.ingest_ohlcv(settings, days=HISTORY_DAYS, command="soak backfill")
            ingest.ingest_markets(settings, command="soak")
            ingest.ingest_fear_greed(settings, command="soak")
            transform.transform(settings, execution_time=START)
            db_bytes_start = _db_bytes(settings)
            durations = []
            for cycle in range(1, cycles + 1):
                now = START + cycle * HOUR
                sandbox.set_now(_ms(now))
                fault = faults.get(cycle)
                if fault == "postgres_restart":
                    db.stop_embedded(settings)
                    db.start_embedded(settings)
                elif fault == "killed_run":
                    soak.killed_run()
                elif fault == "429_storm":  # Retry-After past what the client waits: the run stops at once
                    sandbox.set_fault("klines", "429", times=1, retry_after=600)
                elif fault == "outage_hour":  # the exchange never has the hour that just closed
                    closed = now.replace(minute=0) - HOUR
                    sandbox.set_fault(
                        "klines", "missing_hours", start_ms=_ms(closed), end_ms=_ms(closed + HOUR) - 1
                    )
                started = time.perf_counter()
                soak.step(cycle, "ingest ohlcv", lambda: ingest.ingest_ohlcv(settings, command="soak"))
                if now.hour == 0:
                    soak.step(
                        cycle, "ingest markets", lambda: ingest.ingest_markets(settings, command="soak")
                    )
                    soak.step(
                        cycle, "ingest fear-greed", lambda: ingest.ingest_fear_greed(settings, command="soak")
                    )
                soak.step(
                    cycle, "transform", functools.partial(transform.transform, settings, execution_time=now)
                )
                soak.checks(cycle, now)
                durations.append(time.perf_counter() - started)
                if now.hour == MAINTENANCE_HOUR:
                    soak.step(cycle, "maintain", functools.partial(maintenance.maintain, settings, now=now))
                if cycle % 24 == 0:
                    progress(
                        f"soak: day {cycle // 24} of {days} done ({statistics.median(durations[-24:]):.1f} s a cycle)"
                    )
            end = START + cycles * HOUR
            report = _report(settings, soak, faults, durations, db_bytes_start, end, cycles)
    finally:
        webhook.close()
        with contextlib.suppress(Exception):
            db.stop_embedded(settings)
    return report


def _ms(t: dt.datetime) -> int:
    return int(t.timestamp() * 1000)


def _db_bytes(settings: Settings) -> int:
    with contextlib.closing(db.connect(settings)) as conn, conn.cursor() as cur:
        cur.execute("SELECT pg_database_size(current_database())")
        return int(db.one(cur)[0])


def _ops_rows(settings: Settings) -> dict[str, int]:
    with contextlib.closing(db.connect(settings)) as conn, conn.cursor() as cur:
        cur.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = 'ops' ORDER BY 1")
        tables = [name for (name,) in cur.fetchall()]
        counts = {}
        for table in tables:
            cur.execute(f'SELECT count(*) FROM ops."{table}"')
            counts[table] = int(db.one(cur)[0])
    return counts


def _bronze_files(settings: Settings, end: dt.datetime) -> tuple[dict[str, int], int]:
    """Files per bronze table, and the most any closed day's partition of any table holds."""
    lake, closed = open_lake(settings), compaction.closed_before(settings, end)
    files, most = {}, 0
    for table in catalog.RAW:
        partitions = existing_files(lake, table.name)
        files[table.name] = sum(len(f) for f in partitions.values())
        most = max([most, *(len(f) for p, f in partitions.items() if compaction.day_of(p) < closed)])
    return files, most


def gold_differences(a: Settings, b: Settings) -> list[str]:
    """Where two databases' gold facts differ: keys, prices and counts exactly, floats to RTOL."""
    found = []
    for sql in (FACTS, DAILY):
        rows = []
        for settings in (a, b):
            with contextlib.closing(db.connect(settings)) as conn, conn.cursor() as cur:
                cur.execute(sql)
                rows.append(cur.fetchall())
        if len(rows[0]) != len(rows[1]) or not rows[0]:
            found.append(f"{sql.split('FROM ')[1].split()[0]}: {len(rows[0])} rows against {len(rows[1])}")
            continue
        for x, y in zip(*rows, strict=True):
            if not all(
                math.isclose(u, v, rel_tol=RTOL) if isinstance(u, float) and isinstance(v, float) else u == v
                for u, v in zip(x, y, strict=True)
            ):
                found.append(f"{x} != {y}")
    return found


def _rebuild(settings: Settings, end: dt.datetime) -> Settings:
    """The same raw (and ops.pairs, which gold reads) in a database of its own, transformed from scratch."""
    fresh = settings.model_copy(
        update={"database": settings.database.model_copy(update={"name": "soak_rebuild"})}
    )
    db.ensure_database(fresh)
    dump = subprocess.run(
        [str(db.server_program("pg_dump")), "--no-owner", "--clean", "--if-exists", "-t", "raw.*", "-t", "ops.pairs",
         db.writer_url(settings)],
        capture_output=True, check=True,
    )  # fmt: skip
    subprocess.run([str(db.server_program("psql")), "-q", "-v", "ON_ERROR_STOP=1", db.writer_url(fresh)],
                   input=dump.stdout, capture_output=True, check=True)  # fmt: skip
    transform.transform(fresh, execution_time=end)
    return fresh


def _report(
    settings: Settings,
    soak: Soak,
    faults: dict[int, str],
    durations: list[float],
    db_bytes_start: int,
    end: dt.datetime,
    cycles: int,
) -> dict[str, Any]:
    files, most = _bronze_files(settings, end)
    reconciled = all(r.outcome == "pass" for r in quality.bronze_reconciliation(settings))
    differences = gold_differences(settings, _rebuild(settings, end))
    # an incident: a check or a run going from passing to failing (ops.alerts_sent has each one's delivery);
    # an alert: what reached Slack saying so
    with contextlib.closing(db.connect(settings)) as conn, conn.cursor() as cur:
        cur.execute("SELECT check_name FROM ops.alerts_sent WHERE kind = 'opened' ORDER BY id")
        incidents = [name for (name,) in cur.fetchall()]
        cur.execute(
            "SELECT gap_class, count(*) FROM ops.gaps WHERE gap_class IS NOT NULL GROUP BY 1 ORDER BY 1"
        )
        gaps = dict(cur.fetchall())
        cur.execute("SELECT count(*) FROM ops.revisions")
        revisions = int(db.one(cur)[0])
        cur.execute("SELECT count(*) FROM ops.pipeline_runs WHERE error LIKE '%%abandoned%%'")
        abandoned = int(db.one(cur)[0])
    alerts = sum(body["text"].startswith(OPENED) for body in soak.webhook.received)
    ops = _ops_rows(settings)
    retention = settings.retention
    report = {
        "cycles": cycles,
        "cycle_s_first_day_median": round(statistics.median(durations[:24]), 2),
        "cycle_s_last_day_median": round(statistics.median(durations[-24:]), 2),
        "bronze_files": files,
        "bronze_files_per_closed_day_max": most,
        "ops_rows": ops,
        "db_bytes": {"start": db_bytes_start, "end": _db_bytes(settings)},
        "incidents": len(incidents),
        "incident_names": incidents,
        "alerts_sent": alerts,
        "faults": [{"cycle": c, "fault": f} for c, f in sorted(faults.items())],
        "known_gaps": gaps,  # missing (pair, hour)s by class: the outage hour is an exchange_outage
        "revisions": revisions,  # candles the market revised after their close, restated
        "abandoned_runs": abandoned,  # killed runs the next run recovered
        "failures": soak.failures,
        "exact": reconciled and not differences,
        "exact_details": {"bronze_equals_raw": reconciled, "gold_differences": differences[:10]},
    }
    report["targets"] = {
        "cycle_time_flat": report["cycle_s_last_day_median"] <= 1.2 * report["cycle_s_first_day_median"],
        "one_bronze_file_per_closed_day": most <= 1,
        "ops_within_retention": _within_retention(settings, end, retention),
        "one_alert_per_incident": alerts == len(incidents),
        "exact": report["exact"],
    }
    return report


def _within_retention(settings: Settings, end: dt.datetime, retention: Any) -> bool:
    with contextlib.closing(db.connect(settings)) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT (SELECT count(*) FROM ops.dq_results WHERE checked_at < %(c)s AND run_id <> "
            "(SELECT run_id FROM ops.dq_results ORDER BY checked_at DESC LIMIT 1)) + "
            "(SELECT count(*) FROM ops.alerts_sent WHERE sent_at < %(a)s)",
            {
                "c": end - dt.timedelta(days=retention.checks_days + 1),
                "a": end - dt.timedelta(days=retention.alerts_days + 1),
            },
        )
        return int(db.one(cur)[0]) == 0
