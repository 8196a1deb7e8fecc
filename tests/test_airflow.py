"""Airflow 3 for real: the DAG files parsed by Airflow's own DagBag, `airflow dags test` runs of the
pipeline on the embedded Postgres + the sandbox over HTTP, the failure callback under a 500 storm, and a
real `airflow standalone` started by `cryptoflow up`, driven through its REST API.

Airflow runs in subprocesses with their own AIRFLOW_HOME (SQLite metadata for `dags test`, Postgres for
`up`), so nothing here touches ~/airflow or imports Airflow into the test process."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import urllib.request
import uuid
from pathlib import Path

import psutil
import pytest
import yaml
from helpers.webhook import Receiver

from pipelines.runtime import db, embedded, services
from pipelines.sandbox import SandboxServer
from pipelines.settings import load_settings

ROOT = Path(__file__).resolve().parent.parent
DAGS = ROOT / "airflow" / "dags"
BIN = Path(sys.executable).parent
SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
# the pipeline's heavy libraries: only its tasks import them, never the DAG files as they are parsed
HEAVY = {"dlt", "sqlmesh", "soda", "pandas", "pyarrow", "numpy", "streamlit", "plotly", "boto3"}
DAG_IDS = {
    "ingest_ohlcv_hourly",
    "ingest_market_data_daily",
    "backfill_historical",
    "transform_sqlmesh",
    "data_quality",
    "daily_digest",
    "maintenance_daily",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_config(root: Path, pg_dir: Path, sandbox_port: int, **sections) -> Path:
    config = {
        "universe": {"mode": "pinned", "symbols": SYMBOLS},
        "backfill": {"days": 2},
        "database": {"embedded_dir": str(pg_dir), "name": f"t_{uuid.uuid4().hex[:10]}"},
        "storage": {"bronze_url": str(root / "bronze")},
        "sandbox": {"enabled": True, "port": sandbox_port},
        "sources": {"binance": {"max_retries": 1, "backoff_base_s": 0.01, "backoff_max_s": 0.02}},
        "orchestration": {"retries": 1, "retry_delay_s": 1, "retry_max_delay_s": 1},
    }
    for section, values in sections.items():
        config.setdefault(section, {}).update(values)
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def airflow_env(root: Path, config: Path, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AIRFLOW", "CRYPTOFLOW")) and k != "PYTEST_CURRENT_TEST"
    }
    env.update(
        AIRFLOW_HOME=str(root / "airflow_home"),
        AIRFLOW__CORE__DAGS_FOLDER=str(DAGS),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        CRYPTOFLOW_CONFIG=str(config),
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        RUNTIME__DLTHUB_TELEMETRY="false",
        SQLMESH__DISABLE_ANONYMIZED_ANALYTICS="true",
        **extra,
    )
    return env


def run(argv: list[str], env: dict[str, str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def query(settings, sql, params=()):
    with db.cursor(settings) as cur:
        cur.execute(sql, params)
        return cur.fetchall()


# --------------------------------------------------------------------------------------------- parsing

PARSE_PROBE = r"""
import json, socket, sys, time
attempts = []
def names(callbacks):
    callbacks = callbacks if isinstance(callbacks, list) else [callbacks] if callbacks else []
    return [f"{c.__module__}.{c.__name__}" for c in callbacks]
def refuse(*args, **kwargs):
    attempts.append(repr(args)[:200])
    raise OSError("no network or database access at parse time")
socket.socket.connect = refuse
socket.create_connection = refuse
import psycopg2
psycopg2.connect = refuse
from airflow.dag_processing.dagbag import DagBag
before = set(sys.modules)
bag = DagBag(dag_folder=sys.argv[1])
out = {"errors": {k: str(v)[-800:] for k, v in bag.import_errors.items()}, "attempts": attempts, "dags": {},
       "imported": sorted({m.split(".")[0] for m in set(sys.modules) - before})}
for dag_id, dag in bag.dags.items():
    out["dags"][dag_id] = {
        "file": dag.fileloc.rsplit("/", 1)[-1],
        "tags": sorted(dag.tags),
        "timetable": type(dag.timetable).__name__,
        "cron": getattr(dag.timetable, "expression", None),
        "assets": sorted(a.name for a in dag.timetable.asset_condition.objects)
        if getattr(dag.timetable, "asset_condition", None) is not None else [],
        "catchup": dag.catchup,
        "max_active_runs": dag.max_active_runs,
        "params": sorted(dag.params.keys()),
        "tasks": {
            t.task_id: {
                "retries": t.retries,
                "backoff": t.retry_exponential_backoff,
                "retry_delay_s": t.retry_delay.total_seconds(),
                "timeout_s": t.execution_timeout.total_seconds() if t.execution_timeout else None,
                "on_failure": names(t.on_failure_callback),
                "on_success": names(t.on_success_callback),
                "on_retry": names(t.on_retry_callback),
                "no_retry": sorted(r.exception for r in t.retry_policy.rules) if t.retry_policy else [],
                "outlets": sorted(o.name for o in t.outlets),
                "mapped": any(c.__name__ == "MappedOperator" for c in type(t).__mro__),
                "max_active_tis_per_dagrun": t.max_active_tis_per_dagrun,
            }
            for t in dag.tasks
        },
    }
print("JSON:" + json.dumps(out))
"""


@pytest.fixture(scope="module")
def dagbag(tmp_path_factory):
    root = tmp_path_factory.mktemp("dagbag")
    env = airflow_env(root, ROOT / "config.yaml")
    result = run([sys.executable, "-c", PARSE_PROBE, str(DAGS)], env, root, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    line = next(x for x in result.stdout.splitlines() if x.startswith("JSON:"))
    return json.loads(line[5:])


def test_dags_import_without_errors_or_database_access(dagbag):
    assert dagbag["errors"] == {}
    assert dagbag["attempts"] == []  # no socket (database, API) was opened while parsing
    assert set(dagbag["dags"]) == DAG_IDS
    assert not (ROOT / "airflow" / "__init__.py").exists() and not (DAGS / "__init__.py").exists()
    # the scheduler parses the files every few seconds: the pipeline's heavy libraries are imported inside
    # the tasks, never at parse time (how fast parsing is, is the benchmark's business)
    assert "pipelines" in dagbag["imported"]
    assert HEAVY.isdisjoint(dagbag["imported"]), HEAVY & set(dagbag["imported"])


def test_schedules_and_dependencies_as_specified(dagbag):
    dags = dagbag["dags"]
    settings = load_settings(ROOT / "config.yaml", environ={})
    crons = {d: v["cron"] for d, v in dags.items() if v["timetable"] == "CronTriggerTimetable"}
    assert crons == {
        "ingest_ohlcv_hourly": settings.orchestration.ohlcv_schedule,
        "ingest_market_data_daily": settings.orchestration.market_data_schedule,
        "daily_digest": settings.orchestration.digest_schedule,
        "maintenance_daily": settings.orchestration.maintenance_schedule,
    }
    assert dags["backfill_historical"]["timetable"] == "NullTimetable"  # manual only
    assert dags["backfill_historical"]["params"] == ["batch_size", "days", "since", "symbols", "until"]
    assert dags["transform_sqlmesh"]["assets"] == [
        "raw.binance_klines",
        "raw.coingecko_markets",
        "raw.fear_greed",
    ]
    assert dags["data_quality"]["assets"] == ["gold"]
    outlets = {
        f"{d}.{t}": v["outlets"] for d, dag in dags.items() for t, v in dag["tasks"].items() if v["outlets"]
    }
    assert outlets == {
        "ingest_ohlcv_hourly.ingest_klines": ["raw.binance_klines"],
        "ingest_market_data_daily.ingest_markets": ["raw.coingecko_markets"],
        "ingest_market_data_daily.ingest_fear_greed": ["raw.fear_greed"],
        "backfill_historical.load_batch": ["raw.binance_klines"],
        "transform_sqlmesh.sqlmesh_run": ["gold"],
    }
    assert dags["backfill_historical"]["tasks"]["load_batch"]["mapped"] is True  # dynamic task mapping
    # batches at once, on as many workers: from config.yaml
    assert dags["backfill_historical"]["tasks"]["load_batch"]["max_active_tis_per_dagrun"] == 2
    assert settings.orchestration.backfill_concurrency == 2
    for dag_id, dag in dags.items():
        assert "cryptoflow" in dag["tags"], dag_id
        assert dag["catchup"] is False and dag["max_active_runs"] == 1, dag_id


def test_every_task_retries_with_backoff_times_out_and_reports(dagbag):
    settings = load_settings(ROOT / "config.yaml", environ={})
    for dag_id, dag in dagbag["dags"].items():
        for task_id, t in dag["tasks"].items():
            where = f"{dag_id}.{task_id}"
            assert t["retries"] == settings.orchestration.retries, where
            assert t["backoff"] and t["retry_delay_s"] == settings.orchestration.retry_delay_s, where
            assert t["timeout_s"] and t["timeout_s"] <= 2 * 3600, where
            assert t["on_failure"] == ["pipelines.airflow_callbacks.on_failure"], where
            assert t["on_success"] == ["pipelines.airflow_callbacks.on_success"], where
            assert t["on_retry"] == ["pipelines.airflow_callbacks.on_retry"], where
            assert "pipelines.http.ApiBanned" in t["no_retry"], where  # a 418 ban is never retried


# --------------------------------------------------------------------------------------------- dags test


@pytest.fixture(scope="module")
def airflow_home(tmp_path_factory):
    """One migrated SQLite metadata database for the module's `airflow dags test` runs."""
    root = tmp_path_factory.mktemp("airflow")
    env = airflow_env(root, ROOT / "config.yaml")
    result = run([str(BIN / "airflow"), "db", "migrate"], env, root, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    return root / "airflow_home"


def dags_test(dag_id: str, root: Path, config: Path, home: Path, **extra: str) -> subprocess.CompletedProcess:
    env = airflow_env(root, config, **extra)
    env["AIRFLOW_HOME"] = str(home)
    return run([str(BIN / "airflow"), "dags", "test", dag_id], env, root)


def finished(result: subprocess.CompletedProcess) -> str:
    """The DagRun's final state as Airflow logs it."""
    out = result.stdout + result.stderr
    marker = out.rfind("DagRun Finished")
    assert marker >= 0, out[-3000:]
    return out[marker:].split("state=", 1)[1].split(",", 1)[0]


@pytest.mark.slow
def test_dag_test_ingest_transform_quality_chain(tmp_path, pg_dir, airflow_home):
    with SandboxServer(port=0, seed=42) as sandbox:
        config = write_config(tmp_path, pg_dir, sandbox.port)
        settings = load_settings(config, environ={})
        output = {}
        for dag_id in (
            "ingest_market_data_daily",
            "ingest_ohlcv_hourly",
            "transform_sqlmesh",
            "data_quality",
        ):
            result = dags_test(dag_id, tmp_path, config, airflow_home)
            assert finished(result) == "success", (dag_id, (result.stdout + result.stderr)[-4000:])
            output[dag_id] = result.stdout + result.stderr
        # our log fields survive Airflow's task logging (folded into the message as JSON)
        marker = 'run success {"run_id": "binance-'
        line = next(x for x in output["ingest_ohlcv_hourly"].splitlines() if marker in x)
        fields = json.loads(line.split("run success ", 1)[1].rsplit("}", 1)[0] + "}")
        assert fields["source"] == "binance" and fields["rows_raw"] == 144 and fields["duration_s"] > 0
        with urllib.request.urlopen(f"{sandbox.fear_greed_url}/fng/?limit=0&format=json") as response:
            fear_greed_days = len(json.load(response)["data"])

        assert query(settings, "SELECT count(*), count(DISTINCT symbol) FROM raw.binance_klines") == [
            (144, 3)
        ]
        assert query(settings, "SELECT count(*) FROM gold.fct_prices") == [(144,)]
        assert query(settings, "SELECT count(*) FROM raw.fear_greed") == [(fear_greed_days,)]
        assert query(settings, "SELECT count(DISTINCT snapshot_ts) FROM raw.coingecko_markets") == [(1,)]
        # every task's try is in the run ledger, next to the pipeline's own runs
        runs = query(
            settings,
            "SELECT source, command, status, count(*) FROM ops.pipeline_runs GROUP BY 1, 2, 3 ORDER BY 1, 2",
        )
        assert runs == [
            ("airflow:data_quality.soda_checks", "soda_checks", "success", 1),
            ("airflow:ingest_market_data_daily.ingest_fear_greed", "ingest_fear_greed", "success", 1),
            ("airflow:ingest_market_data_daily.ingest_markets", "ingest_markets", "success", 1),
            ("airflow:ingest_ohlcv_hourly.ingest_klines", "ingest_klines", "success", 1),
            ("airflow:transform_sqlmesh.sqlmesh_run", "sqlmesh_run", "success", 1),
            ("binance", "airflow ingest ohlcv", "success", 1),
            ("coingecko", "airflow ingest markets", "success", 1),
            ("fear_greed", "airflow ingest fear-greed", "success", 1),
            ("sqlmesh", "transform prod", "success", 1),
        ]
        [(checks, failing)] = query(
            settings,
            "SELECT count(*), count(*) FILTER (WHERE outcome IN ('fail', 'error')) FROM ops.dq_results",
        )
        assert (checks, failing) == (20 + 3, 0)  # the Soda checks and bronze = raw per raw table

        # a second hourly run finds nothing new: no duplicates anywhere
        assert finished(dags_test("ingest_ohlcv_hourly", tmp_path, config, airflow_home)) == "success"
        assert query(settings, "SELECT count(*) FROM raw.binance_klines") == [(144,)]


@pytest.mark.slow
def test_task_failing_past_its_retries_is_recorded_and_alerted_once(tmp_path, pg_dir, airflow_home):
    """A 500 storm: try 1 -> up_for_retry, try 2 -> failed; the failure callback records both and posts
    one Slack message. A 418 ban afterwards fails at once (no retry) and stays in the same incident. The
    next success posts "recovered"."""
    with SandboxServer(port=0, seed=42) as sandbox, Receiver() as receiver:
        config = write_config(tmp_path, pg_dir, sandbox.port)
        settings = load_settings(config, environ={})
        hook = {"CRYPTOFLOW_SLACK_WEBHOOK_URL": receiver.url}

        sandbox.set_fault("klines", "500")
        assert finished(dags_test("ingest_ohlcv_hourly", tmp_path, config, airflow_home, **hook)) == "failed"
        tries = query(
            settings,
            "SELECT status, retries, error FROM ops.pipeline_runs WHERE source = 'airflow:ingest_ohlcv_hourly.ingest_klines' "
            "ORDER BY started_at",
        )
        assert [(status, retries) for status, retries, _ in tries] == [("up_for_retry", 0), ("failed", 1)]
        assert all("HTTP 500" in error for *_, error in tries)
        assert len(receiver.received) == 1
        message = json.dumps(receiver.received[0])
        assert "Pipeline run failed" in message and "ingest_ohlcv_hourly.ingest_klines" in message
        assert "HTTP 500" in message

        sandbox.clear_faults()
        sandbox.set_fault("klines", "418")
        assert finished(dags_test("ingest_ohlcv_hourly", tmp_path, config, airflow_home, **hook)) == "failed"
        banned = query(
            settings,
            "SELECT status FROM ops.pipeline_runs WHERE source = 'airflow:ingest_ohlcv_hourly.ingest_klines' "
            "AND error LIKE '%%418%%' ORDER BY started_at",
        )
        assert banned == [("failed",)]  # one try: the retry policy never retries a ban
        assert len(receiver.received) == 1  # the incident is still open: nothing new to say

        sandbox.clear_faults()
        assert finished(dags_test("ingest_ohlcv_hourly", tmp_path, config, airflow_home, **hook)) == "success"
        assert len(receiver.received) == 2
        assert "recovered" in json.dumps(receiver.received[1])
        assert query(settings, "SELECT count(*) FROM raw.binance_klines") == [(144,)]
    assert query(settings, "SELECT check_name, status FROM ops.alert_incidents") == [
        ("run:ingest_ohlcv_hourly.ingest_klines", "resolved")
    ]


# --------------------------------------------------------------------------------------------- standalone


@pytest.mark.slow
def test_cryptoflow_up_runs_airflow_standalone_and_down_stops_it(tmp_path, pg_dir):
    airflow_port, metrics_port, dashboard_port = free_port(), free_port(), free_port()
    with SandboxServer(port=0, seed=42) as sandbox:
        config = write_config(
            tmp_path,
            pg_dir,
            sandbox.port,
            services={
                "airflow_port": airflow_port,
                "metrics_port": metrics_port,
                "dashboard_port": dashboard_port,
            },
        )
        settings = load_settings(config, environ={})
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "CRYPTOFLOW"))}
        # No cron-scheduled runs (the variable passes through `up`'s Airflow environment): `up` unpauses the
        # DAGs, and the scheduler would start each cron DAG's latest slot at once (catchup=False) beside the
        # runs triggered here, and another at each slot the clock passes, so what the ledger and raw hold
        # would depend on the time the test runs. Triggered runs run as before.
        env["AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE"] = "False"
        up = run([str(BIN / "cryptoflow"), "--config", str(config), "up"], env, tmp_path, timeout=400)
        try:
            assert up.returncode == 0, (up.stdout + up.stderr)[-4000:]
            assert f"http://127.0.0.1:{airflow_port}" in up.stdout and "login admin / " in up.stdout
            password = up.stdout.split("login admin / ", 1)[1].split()[0]
            assert password == services.airflow_password(settings)
            # the password sits in Airflow's log and its generated file: both the user's only
            logs = tmp_path / ".cryptoflow" / "logs"
            holding = [p for p in logs.glob("*.log") if password in p.read_text(errors="replace")]
            holding += [p for p in (tmp_path / ".cryptoflow").rglob(services.PASSWORDS_FILE)]
            assert holding, "the password was expected in the airflow log or its generated file"
            assert {p.name: p.stat().st_mode & 0o777 for p in holding} == {p.name: 0o600 for p in holding}
            assert {p.stat().st_mode & 0o777 for p in logs.glob("*.log")} == {0o600}
            assert logs.stat().st_mode & 0o777 == 0o700
            api = services.AirflowApi(settings, password)
            services.wait_for(lambda: api.dag_ids() >= DAG_IDS, 120, "the DAGs to be parsed")
            api.pause("ingest_ohlcv_hourly", False)
            run_id = api.trigger("ingest_ohlcv_hourly")
            state = services.wait_for(
                lambda: (s := api.state("ingest_ohlcv_hourly", run_id)) in ("success", "failed") and s,
                240,
                "ingest_ohlcv_hourly to finish",
            )
            assert state == "success"
            assert query(settings, "SELECT count(*) FROM raw.binance_klines") == [(144,)]
            # CI's compose smoke test (docker/smoke.py, stdlib only), against this real Airflow 3
            smoke = [
                sys.executable,
                str(ROOT / "docker" / "smoke.py"),
                "check",
                f"http://127.0.0.1:{airflow_port}",
            ]
            wrong = run([*smoke, "not-the-password"], env, tmp_path, timeout=60)
            assert wrong.returncode == 1 and "did not answer as expected" in wrong.stdout, wrong.stdout
            passed = run([*smoke, password], env, tmp_path, timeout=400)
            assert passed.returncode == 0, passed.stdout + passed.stderr
            assert "smoke test passed: 7 DAGs listed, ingest_market_data_daily succeeded" in passed.stdout
            ledger = query(
                settings,
                "SELECT status, details->>'dag_run_id', details->>'try_number', error FROM ops.pipeline_runs "
                "WHERE source = 'airflow:ingest_ohlcv_hourly.ingest_klines' AND command = 'ingest_klines'",
            )
            assert ledger == [("success", run_id, "1", None)]  # our run, first try, and no other
            runs = api.call("GET", "/api/v2/dags/ingest_ohlcv_hourly/dagRuns?limit=100")["dag_runs"]
            assert [r["dag_run_id"] for r in runs] == [run_id]  # the scheduler started none of its own
            with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=30) as response:
                metrics = response.read().decode()
            assert "cryptoflow_database_up 1.0" in metrics
            with urllib.request.urlopen(f"http://127.0.0.1:{dashboard_port}/_stcore/health", timeout=30) as r:
                assert r.read() == b"ok"
            run_dir = tmp_path / ".cryptoflow" / "run"
            assert {p.stem for p in run_dir.glob("*.json")} == {"airflow", "metrics", "dashboard"}
            records = [json.loads(p.read_text()) for p in run_dir.glob("*.json")]
        finally:
            down = run([str(BIN / "cryptoflow"), "--config", str(config), "down"], env, tmp_path, timeout=120)
        assert down.returncode == 0, down.stdout + down.stderr
        assert all(name in down.stdout for name in ("airflow", "metrics", "dashboard")), down.stdout
        for record in records:
            assert not psutil.pid_exists(record["pid"]) or psutil.Process(record["pid"]).status() == "zombie"
        for port in (airflow_port, metrics_port, dashboard_port):
            with socket.socket() as sock:
                assert sock.connect_ex(("127.0.0.1", port)) != 0, f"port {port} still answers after down"
        assert embedded.status(settings).running  # it was running before `up`: left alone


@pytest.mark.slow
def test_backfill_historical_maps_batches_and_resumes(tmp_path, pg_dir, airflow_home):
    """Params -> one mapped task per batch of symbols; a second trigger of the same window skips every
    batch (already complete in raw) and loads nothing; a bad window fails at planning, without retries."""
    with SandboxServer(port=0, seed=42) as sandbox:
        config = write_config(tmp_path, pg_dir, sandbox.port)
        settings = load_settings(config, environ={})
        conf = json.dumps({"days": 3, "symbols": SYMBOLS, "batch_size": 2})

        def backfill(conf: str) -> subprocess.CompletedProcess:
            env = airflow_env(tmp_path, config)
            env["AIRFLOW_HOME"] = str(airflow_home)
            return run(
                [str(BIN / "airflow"), "dags", "test", "backfill_historical", "-c", conf], env, tmp_path
            )

        first = backfill(conf)
        assert finished(first) == "success", (first.stdout + first.stderr)[-4000:]
        assert query(settings, "SELECT symbol, count(*) FROM raw.binance_klines GROUP BY 1 ORDER BY 1") == [
            ("BTCUSDT", 72),
            ("ETHUSDT", 72),
            ("SOLUSDT", 72),
        ]
        batches = query(
            settings,
            "SELECT command, status FROM ops.pipeline_runs WHERE source LIKE 'airflow:backfill_historical.%%' "
            "ORDER BY command",
        )
        assert batches == [
            ("load_batch[0]", "success"),
            ("load_batch[1]", "success"),
            ("plan_batches", "success"),
        ]
        loads = query(settings, "SELECT count(*) FROM ops.pipeline_runs WHERE source = 'binance'")

        again = backfill(conf)
        assert finished(again) == "success"
        assert query(settings, "SELECT count(*) FROM raw.binance_klines") == [(216,)]
        # complete batches were skipped: no new ingest run at all
        assert query(settings, "SELECT count(*) FROM ops.pipeline_runs WHERE source = 'binance'") == loads
        assert "backfill batch already complete: skipped" in again.stdout + again.stderr

        bad = backfill(json.dumps({"days": None, "since": None}))
        assert finished(bad) == "failed"
        planning = query(
            settings,
            "SELECT status, error FROM ops.pipeline_runs WHERE source LIKE 'airflow:backfill_historical.%%' "
            "AND command = 'plan_batches' AND status <> 'success'",
        )
        assert [status for status, _ in planning] == ["failed"]  # one try: bad params are not retried
        assert "exactly one of the params `days` or `since`" in planning[0][1]


def test_failure_callback_alerts_even_when_the_database_is_down(tmp_path, monkeypatch):
    """The callback cannot record the try (no database), but the Slack message still goes out."""
    import datetime as dt
    from types import SimpleNamespace

    from pipelines import airflow_callbacks

    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"database": {"url": f"postgresql://x@127.0.0.1:{free_port()}/x"}}))
    with Receiver() as receiver:
        monkeypatch.setenv("CRYPTOFLOW_CONFIG", str(config))
        monkeypatch.setenv("CRYPTOFLOW_SLACK_WEBHOOK_URL", receiver.url)
        ti = SimpleNamespace(
            dag_id="ingest_ohlcv_hourly",
            task_id="ingest_klines",
            run_id="scheduled__2026-11-29T15:00:00+00:00",
            try_number=4,
            map_index=-1,
            max_tries=3,
            start_date=dt.datetime(2026, 11, 29, 15, 0, 5, tzinfo=dt.UTC),
        )
        airflow_callbacks.on_failure({"ti": ti, "exception": RuntimeError("database went away")})
    [message] = receiver.received
    text = json.dumps(message)
    assert "Pipeline run failed" in text and "ingest_ohlcv_hourly.ingest_klines" in text
    assert "database went away" in text and "scheduled__2026-11-29T15:00:00+00:00" in text


@pytest.fixture
def task_config(make_settings, tmp_path, monkeypatch):
    """Settings on a database of their own, and the config file naming it that task code reads
    (CRYPTOFLOW_CONFIG), as a task Airflow runs would."""
    settings = make_settings()
    db.ensure_database(settings)
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {"database": {"embedded_dir": settings.database.embedded_dir, "name": settings.database.name}}
        )
    )
    monkeypatch.setenv("CRYPTOFLOW_CONFIG", str(config))
    return settings


def test_retry_callback_records_the_cause_with_or_without_an_exception(task_config, tmp_path, monkeypatch):
    """A try that raised: its ledger row says what, as the operator reads it (our error behind its wrappers).
    A try Airflow failed from outside (the scheduler found its worker done before the task started or
    reported, e.g. the worker could not reach the API server while `airflow standalone` was starting; or a
    killed task, a lost heartbeat): Airflow's dag-processor runs the callback with no exception and no reason,
    and the row says that much and names the logs that tell which."""
    from types import SimpleNamespace

    from pipelines import airflow_callbacks
    from pipelines.runtime.db import LockBusy

    settings = task_config
    # Airflow's configuration, read to name the try's log file: from here, nothing from ~/airflow
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path / "airflow_home"))
    monkeypatch.setenv("AIRFLOW__LOGGING__BASE_LOG_FOLDER", str(tmp_path / "airflow_logs"))
    run_id = "scheduled__2026-12-07T20:00:00+00:00"

    def ti(try_number: int) -> SimpleNamespace:
        return SimpleNamespace(
            dag_id="ingest_ohlcv_hourly",
            task_id="ingest_klines",
            run_id=run_id,
            try_number=try_number,
            map_index=-1,
            max_tries=3,
            start_date=None,
        )

    busy = LockBusy("another 'ingest:binance' run is in progress; it was left alone.")
    try:
        try:
            raise busy
        except LockBusy as exc:
            raise RuntimeError("Pipeline execution failed at stage extract") from exc  # as dlt wraps it
    except RuntimeError as wrapped:
        airflow_callbacks.on_retry({"ti": ti(1), "exception": wrapped})

    # no exception, no log of the try or of the scheduler on this machine
    airflow_callbacks.on_retry({"ti": ti(2)})
    # no exception; the try's log where Airflow's configuration puts it, the scheduler's where `up` does
    task_dir = tmp_path / "airflow_logs" / "dag_id=ingest_ohlcv_hourly" / f"run_id={run_id}"
    task_log = task_dir / "task_id=ingest_klines" / "attempt=3.log"
    task_log.parent.mkdir(parents=True)
    task_log.write_text('{"event": "::group::Pre Execute"}\n')
    scheduler_log = tmp_path.resolve() / ".cryptoflow" / "logs" / "airflow.log"
    scheduler_log.parent.mkdir(parents=True)
    scheduler_log.write_text("Executor reported that the task instance ... finished with state failed\n")
    airflow_callbacks.on_retry({"ti": ti(3)})

    outside = (
        "Airflow failed the try from outside the task and no error reached it: the task process never "
        "started (e.g. its worker could not reach the Airflow API server), was killed, or lost its "
        "heartbeat; the scheduler's log says which"
    )
    assert query(
        settings,
        "SELECT run_id, status, retries, error FROM ops.pipeline_runs WHERE source = %s ORDER BY run_id",
        ("airflow:ingest_ohlcv_hourly.ingest_klines",),
    ) == [
        (f"ingest_ohlcv_hourly.ingest_klines:{run_id}:try1", "up_for_retry", 0, str(busy)),
        (f"ingest_ohlcv_hourly.ingest_klines:{run_id}:try2", "up_for_retry", 1, outside),
        (
            f"ingest_ohlcv_hourly.ingest_klines:{run_id}:try3",
            "up_for_retry",
            2,
            f"{outside} ({scheduler_log}); task log {task_log}",
        ),
    ]


def test_transform_task_skips_until_every_raw_table_has_loaded(task_config, monkeypatch):
    """A new deployment: the first raw table's asset event starts transform_sqlmesh before the other sources
    have loaded. The task is skipped, naming what is missing, and records no failed run (nothing to page
    for); the next raw update starts it again."""
    from airflow.sdk.exceptions import AirflowSkipException

    from pipelines import orchestration

    settings = task_config
    with pytest.raises(AirflowSkipException, match=r"raw\.binance_klines, raw\.coingecko_markets, raw\.fear"):
        orchestration.transform("prod")
    assert query(settings, "SELECT count(*) FROM ops.pipeline_runs") == [(0,)]
