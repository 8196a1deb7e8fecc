"""The package's logging: JSON lines off a terminal (with the Airflow task's ids when inside one), secrets
masked by key, and our fields kept inside Airflow's own task log."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

from pipelines.ops.observability import airflow_task_logging

EMIT = """
import logging
from pipelines.ops.observability import configure_logging
configure_logging()
logging.getLogger("pipelines.ingest.engine").info(
    "run success", extra={"run_id": "binance-1", "source": "binance", "rows_raw": 144, "duration_s": 1.5,
                          "smtp_password": "hunter2"})
"""


def emit(env: dict[str, str]) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", EMIT], env=env, capture_output=True, text=True, timeout=60, check=True
    )
    [line] = result.stderr.strip().splitlines()  # stderr is a pipe here, not a terminal: JSON
    return json.loads(line)


def test_json_lines_with_run_fields_and_masked_secrets():
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW_CTX")}
    record = emit(env)
    assert record["level"] == "info" and record["logger"] == "pipelines.ingest.engine"
    assert record["message"] == "run success" and record["timestamp"].endswith("+00:00")
    assert (record["run_id"], record["source"], record["rows_raw"], record["duration_s"]) == (
        "binance-1",
        "binance",
        144,
        1.5,
    )
    assert record["smtp_password"] == "***" and "hunter2" not in json.dumps(record)
    assert "dag_id" not in record


def test_inside_an_airflow_task_lines_carry_its_ids():
    env = {
        **os.environ,
        "AIRFLOW_CTX_DAG_ID": "ingest_ohlcv_hourly",
        "AIRFLOW_CTX_TASK_ID": "ingest_klines",
        "AIRFLOW_CTX_DAG_RUN_ID": "scheduled__2026-11-29T15:00:00+00:00",
        "AIRFLOW_CTX_TRY_NUMBER": "2",
    }
    record = emit(env)
    assert (record["dag_id"], record["task_id"], record["dag_run_id"], record["try_number"]) == (
        "ingest_ohlcv_hourly",
        "ingest_klines",
        "scheduled__2026-11-29T15:00:00+00:00",
        "2",
    )
    assert record["run_id"] == "binance-1"  # the pipeline's own run id stays its own field


def test_airflow_task_logging_folds_extras_into_the_message_once():
    """Airflow's handlers drop `extra`; ours are folded into the message (secrets masked), once even when
    two handlers see the same record, and other libraries' records are left alone."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    streams = [io.StringIO(), io.StringIO()]
    root.handlers[:] = [logging.StreamHandler(s) for s in streams]
    root.setLevel(logging.INFO)
    try:
        airflow_task_logging()
        airflow_task_logging()  # idempotent: one filter per handler
        assert all(len(h.filters) == 1 for h in root.handlers)
        logging.getLogger("pipelines.transform").info("transform done", extra={"run_s": 2.5, "api_key": "k"})
        logging.getLogger("another.library").info("plain", extra={"x": 1})
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
    for stream in streams:
        lines = stream.getvalue().splitlines()
        assert lines == ['transform done {"run_s": 2.5, "api_key": "***"}', "plain"]


def test_log_lines_never_carry_a_password_or_a_webhook_token():
    import logging

    from pipelines.ops.observability import JsonFormatter, TextFormatter

    record = logging.LogRecord(
        "pipelines.x", logging.ERROR, __file__, 1, "cannot connect to postgresql://w:S3cret@db/x", (), None
    )
    record.error = "HTTPError for https://hooks.slack.com/services/T01/B02/tok3n"
    for formatter in (JsonFormatter(), TextFormatter()):
        line = formatter.format(record)
        assert "S3cret" not in line and "tok3n" not in line
        assert "postgresql://w:***@db/x" in line and "hooks.slack.com/services/***" in line


def test_terminal_lines_are_short_and_sit_above_a_progress_bar(tmp_path: Path):
    """On a terminal: time, level, message and only the fields the message does not say (no run id); the
    handler writes to the sys.stderr of the moment, which a live rich progress bar swaps for its proxy, so a
    line is printed above the bar. The log file gets every field as JSON."""
    from rich.console import Console
    from rich.progress import Progress

    from pipelines.ops.observability import configure_logging

    terminal = io.StringIO()
    root = logging.getLogger()
    saved = root.handlers[:], root.level, sys.stderr
    try:
        configure_logging(log_format="text", log_file=tmp_path / "run.log")
        with Progress(console=Console(file=terminal, force_terminal=True, width=200)) as bar:
            assert type(sys.stderr).__name__ == "FileProxy"  # rich prints what is written there above the bar
            bar.add_task("pages", total=10)
            logging.getLogger("pipelines.ingest.engine").warning(
                "skipping MATICUSDT: not on the exchange",
                extra={"run_id": "binance-1", "symbol": "MATICUSDT", "status": "NOT_LISTED"},
            )
    finally:
        sys.stderr = saved[2]
        configure_logging()
        root.handlers[:], root.level = saved[0], saved[1]
    [line] = [
        x for x in re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", terminal.getvalue()).splitlines() if "WARNING" in x
    ]
    assert re.fullmatch(
        r"\d\d:\d\d:\d\d WARNING skipping MATICUSDT: not on the exchange  status=NOT_LISTED", line
    )
    [record] = [json.loads(x) for x in (tmp_path / "run.log").read_text().splitlines()]
    assert (record["run_id"], record["symbol"], record["status"]) == ("binance-1", "MATICUSDT", "NOT_LISTED")


def test_a_wrong_log_format_is_a_configuration_error(capsys, monkeypatch):
    from pipelines import cli

    monkeypatch.setenv("CRYPTOFLOW_LOG_FORMAT", "yaml")
    assert cli.main(["db", "status"]) == 2
    assert capsys.readouterr().err == (
        "configuration error:\nCRYPTOFLOW_LOG_FORMAT='yaml': use one of auto, text, json\n"
    )


def test_importing_any_module_of_the_package_changes_no_environment():
    """Telemetry switches (dlt, SQLMesh) are set where a pipeline or a SQLMesh context is made, never as an
    import side effect; a fresh interpreter imports every module and compares its environment."""
    script = (
        "import importlib, os, pkgutil, pipelines\n"
        "before = dict(os.environ)\n"
        "names = sorted(m.name for m in pkgutil.walk_packages(pipelines.__path__, 'pipelines.'))\n"
        "for name in names: importlib.import_module(name)\n"
        "changed = sorted(k for k in set(before) | set(os.environ) if before.get(k) != os.environ.get(k))\n"
        "print(len(names), changed)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNTIME__", "SQLMESH__", "PROVIDERS__"))}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    count, changed = out.stdout.split(" ", 1)
    package = Path(__file__).resolve().parent.parent / "pipelines"
    assert int(count) == len(list(package.rglob("*.py"))) - 1  # every module (the package itself aside)
    assert changed.strip() == "[]"


SQLMESH_CONFIG = Path(__file__).resolve().parent.parent / "sqlmesh_project" / "config.py"
LOAD_SQLMESH_CONFIG = (
    "import runpy, sys\n"
    "try:\n"
    "    config = runpy.run_path(sys.argv[1])['config']\n"
    "except Exception as exc:\n"
    "    print('error:', type(exc).__name__, exc)\n"
    "else:\n"
    "    c = config.gateways['cryptoflow'].connection\n"
    "    print('config:', c.database, c.host)\n"
)


def _load_sqlmesh_config(tmp_path: Path, database: dict) -> str:
    """Load sqlmesh_project/config.py as SQLMesh's CLI does, in a fresh interpreter, for a config file."""
    config_file = tmp_path / "cryptoflow.yaml"
    config_file.write_text(json.dumps({"database": database}))  # JSON is YAML
    env = {**os.environ, "CRYPTOFLOW_CONFIG": str(config_file)}
    out = subprocess.run(
        [sys.executable, "-c", LOAD_SQLMESH_CONFIG, str(SQLMESH_CONFIG)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_loading_the_sqlmesh_config_starts_no_server(tmp_path: Path, pg_dir: Path):
    """SQLMesh's CLI imports config.py for every command: that import starts nothing. With the embedded
    server down, it fails with the one instruction an analyst needs; with it up, the gateway is its socket."""
    down = tmp_path / "never-started" / "pg"
    assert _load_sqlmesh_config(tmp_path, {"embedded_dir": str(down)}) == (
        f"error: DatabaseUnavailable the embedded Postgres is not running (data dir {down}); "
        "start it with `cryptoflow db start`"
    )
    assert not down.exists()  # no server was initialised there
    from pipelines.runtime import embedded
    from pipelines.settings import load_settings

    running = embedded.status(
        load_settings(environ={}, overrides={"database": {"embedded_dir": str(pg_dir)}})
    )
    loaded = _load_sqlmesh_config(tmp_path, {"embedded_dir": str(pg_dir), "name": "analysts"})
    assert loaded == f"config: analysts {running.socket_dir}"
