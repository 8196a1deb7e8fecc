"""`cryptoflow soak --days N`: weeks of production in minutes. The real hourly cycle - ingest every source,
transform, checks with their alerts - runs once per simulated hour on the sandbox's clock, with the daily
maintenance (compaction, retention, vacuum) at its hour, on a deployment of its own: its own embedded
Postgres, its lake on an S3 endpoint (moto, in this process) and its Slack receiver. Faults arrive on a seeded
schedule: a 429 storm past what the client waits, an exchange outage hour, a run killed by SIGKILL, a Postgres
restart, the S3 endpoint gone for an hour, a pair delisted (BREAK, then removed a day later) and a burst of
revised candles; the market itself revises candles too. The report says whether a long run stays fast, small
and exact.

Time-lapse: an hour takes seconds here, so autovacuum's nap (a minute between rounds) would span half a
simulated day. The soak's server naps AUTOVACUUM_NAPTIME instead: about as many rounds per simulated hour as a
real server makes per real hour's share of its work, so dead rows pile up as they would in production, not
17 times faster.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import json
import logging
import os
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

from pipelines import maintenance, quality, soak_report, transform
from pipelines.runtime import db, embedded
from pipelines.settings import Settings
from pipelines.sqlmesh_console import sqlmesh_console_to_log

log = logging.getLogger(__name__)

HOUR = dt.timedelta(hours=1)
START = dt.datetime(2026, 3, 1, 0, 30, tzinfo=dt.UTC)  # the sandbox's clock at the first cycle's start
HISTORY_DAYS = 7  # backfilled before the first cycle: the 7-day indicators have their window
SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT", "XRPUSDT"]
FAULTS = (
    "429_storm",
    "outage_hour",
    "killed_run",
    "postgres_restart",
    "s3_gone",
    "pair_delisted",
    "revision_burst",
)
BUCKET = "soak-bronze"
AWS_KEYS = {"AWS_ACCESS_KEY_ID": "soak", "AWS_SECRET_ACCESS_KEY": "soak"}  # moto takes any
AUTOVACUUM_NAPTIME = "1s"
REMOVED_AFTER = dt.timedelta(days=1)  # a delisted pair: BREAK first, gone from exchangeInfo a day later
BURST_HOURS = 30  # a revision burst re-publishes the closed hours of the last 30 h (inside restate_hours)
MAINTENANCE_HOUR = 3  # as orchestration.maintenance_schedule's default (03:30)


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


class _S3:
    """The lake's S3 endpoint: moto in this process (its buckets live in the process, so they outlive a stop),
    which the s3_gone fault takes away - the port closed, connections refused - and brings back."""

    def __init__(self) -> None:
        try:
            from moto.server import ThreadedMotoServer
        except ImportError as exc:
            raise RuntimeError(
                "the soak's S3 endpoint is moto, from the dev dependencies: run `make install` (or `uv sync`)"
            ) from exc
        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # a line per S3 request otherwise
        self._server_class = ThreadedMotoServer
        self.port = 0
        self.start()
        import boto3

        boto3.client(
            "s3",
            endpoint_url=self.url,
            region_name="us-east-1",
            aws_access_key_id="soak",
            aws_secret_access_key="soak",
        ).create_bucket(Bucket=BUCKET)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.server = self._server_class(ip_address="127.0.0.1", port=self.port, verbose=False)
        self.server.start()
        self.port = self.server.get_host_and_port()[1]

    def stop(self) -> None:
        self.server.stop()  # stops serving; closing the socket makes connections fail at once, as a dead host's
        if self.server._server is not None:
            self.server._server.server_close()


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
    s3: _S3
    failures: list[dict[str, Any]]
    delisted: str | None = None

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
            env={**os.environ, **AWS_KEYS},
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

    def inject(self, fault: str | None, now: dt.datetime) -> None:
        """The cycle's fault, before its hourly run (the S3 endpoint comes back the hour after it went)."""
        closed = now.replace(minute=0) - HOUR  # the hour that just closed
        if fault == "postgres_restart":
            embedded.stop(self.settings)
            embedded.start(self.settings)
        elif fault == "killed_run":
            self.killed_run()
        elif fault == "429_storm":  # Retry-After past what the client waits: the run stops at once
            self.sandbox.set_fault("klines", "429", times=1, retry_after=600)
        elif fault == "outage_hour":  # the exchange never has the hour that just closed
            self.sandbox.set_fault(
                "klines", "missing_hours", start_ms=_ms(closed), end_ms=_ms(closed + HOUR) - 1
            )
        elif fault == "s3_gone":
            self.s3.stop()
        elif fault == "pair_delisted":  # the universe's last pair: no candle from the hour that just closed
            self.delisted = self.settings.universe.symbols[-1]
            self.sandbox.set_lifecycle(
                self.delisted, halted_ms=_ms(closed), removed_ms=_ms(closed + REMOVED_AFTER)
            )
        elif fault == "revision_burst":  # every pair re-publishes its closed hours of the last BURST_HOURS
            self.sandbox.set_fault(
                "klines",
                "revised",
                start_ms=_ms(closed - (BURST_HOURS - 1) * HOUR),
                end_ms=_ms(closed),
                per_mille=5,
            )

    def recover(self, fault: str | None) -> None:
        """After the hour a fault lasts: the S3 endpoint is back."""
        if fault == "s3_gone":
            self.s3.start()


def _running_run(settings: Settings) -> bool:
    with db.cursor(settings) as cur:
        cur.execute("SELECT count(*) FROM ops.pipeline_runs WHERE status = 'running' AND source = 'binance'")
        return bool(db.one(cur)[0])


def _settings(base: Settings, workdir: Path, pairs: int, webhook: str, s3: str) -> Settings:
    raw = {
        "universe": {"mode": "pinned", "symbols": SYMBOLS[:pairs]},
        "database": {"embedded_dir": str(workdir / "pg"), "name": "soak"},
        "storage": {"bronze_url": f"s3://{BUCKET}/lake", "s3_endpoint_url": s3},
        "sources": {"binance": {"max_retries": 2, "backoff_base_s": 0.05, "backoff_max_s": 0.2}},
        "alerts": {"route": "slack"},
    }
    from pipelines.settings import load_settings

    (workdir / "config.yaml").write_text(yaml.safe_dump(raw))
    loaded = load_settings(
        workdir / "config.yaml", environ={"CRYPTOFLOW_SLACK_WEBHOOK_URL": webhook, **AWS_KEYS}
    )
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
    webhook, s3 = _Webhook(), _S3()
    settings = _settings(base, workdir, pairs, webhook.url, s3.url)
    try:
        with SandboxServer(seed=seed, now_ms=_ms(START), calm=False) as sandbox, sqlmesh_console_to_log():
            settings = settings.with_sandbox(sandbox.url)
            _point_config_at(workdir / "config.yaml", sandbox.url)
            soak = Soak(settings, workdir / "config.yaml", sandbox, webhook, s3, [])
            db.ensure_database(settings)
            embedded.configure(settings, {"autovacuum_naptime": AUTOVACUUM_NAPTIME})
            ingest.ingest_ohlcv(settings, days=HISTORY_DAYS, command="soak backfill")
            ingest.ingest_markets(settings, command="soak")
            ingest.ingest_fear_greed(settings, command="soak")
            transform.transform(settings, execution_time=START)
            db_bytes_start = soak_report.db_bytes(settings)
            durations = []
            for cycle in range(1, cycles + 1):
                now = START + cycle * HOUR
                sandbox.set_now(_ms(now))
                soak.recover(faults.get(cycle - 1))
                soak.inject(faults.get(cycle), now)
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
            report = soak_report.report(
                settings,
                received=webhook.received,
                failures=soak.failures,
                faults=faults,
                durations=durations,
                db_bytes_start=db_bytes_start,
                end=START + cycles * HOUR,
                delisted=soak.delisted,
            )
    finally:
        webhook.close()
        s3.stop()
        with contextlib.suppress(Exception):
            embedded.stop(settings)
    return report


def _ms(t: dt.datetime) -> int:
    return int(t.timestamp() * 1000)
