"""`make demo` runs `cryptoflow demo`: the main job, offline, on the sandbox. Here on a short horizon, through
the command itself, with exact rows: the backfill (from the kline archive, as of a day ago), the day's
incremental run, the transform, the checks, and the closing summary."""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import types
from pathlib import Path

import pytest

from pipelines import cli, sandbox, sqlmesh_console
from pipelines.runtime import db
from pipelines.sandbox import archive

# a line SQLMesh prints per model batch, longer than rich's 80 columns when not on a terminal
BATCH_LINE = re.compile(r"^\[1/1\] gold\.fct_prices +\[insert .+, audits \u2714\d+\] +\d+\.\d+s$")


@pytest.mark.slow
def test_the_demo_runs_the_main_job_end_to_end(tmp_path, settings_in, capsys, monkeypatch):
    settings = settings_in(tmp_path, universe={"symbols": ["BTCUSDT", "ETHUSDT"], "successors": {}})
    config = tmp_path / "config.yaml"
    config.write_text(
        json.dumps(
            {
                "universe": {"mode": "pinned", "symbols": ["BTCUSDT", "ETHUSDT"], "successors": {}},
                "database": {
                    "embedded_dir": str(settings.path(settings.database.embedded_dir)),
                    "name": settings.database.name,
                },
                "storage": {"bronze_url": settings.storage.bronze_url},
                "checks": {"expected_market_coins": 100},
                "sandbox": {"calm": True},  # the demo runs on the real clock: no revisions, so exact counts
            }
        )
    )
    monkeypatch.chdir(tmp_path)
    assert cli.main(["--config", str(config), "demo", "--days", "3"]) == 0
    captured = capsys.readouterr()
    out = captured.out
    runs = re.findall(r"^binance: run \S+: ([\d,]+) rows to raw, ([\d,]+) to bronze", out, re.M)
    assert runs == [("144", "144"), ("48", "48")]  # 3 days as of a day ago, then the day's 24 hours
    assert re.search(r"^transform: silver and gold built in [0-9.]+ s$", out, re.M)
    checks = re.search(r"^checks: (\d+) run, (\d+) failed", out, re.M)
    assert checks and int(checks.group(2)) == 0, out  # a calm market: every check passes
    assert re.search(r"^  raw\.binance_klines\s+192 rows$", out, re.M)
    with db.cursor(settings) as cur:
        cur.execute("SELECT count(*), count(DISTINCT (symbol, open_time)) FROM gold.fct_prices")
        assert cur.fetchone() == (192, 192)
        # the backfill read the archive's daily files: one per pair for each whole UTC day of its window that
        # the archive had published by the backfill's clock (the demo's start, a day back; a day's file comes
        # 6 hours after the day: in the first hours of a UTC day the day before is still REST's); a day it
        # read only some hours of stays out of the manifest
        cur.execute(
            "SELECT window_start, window_end, started_at FROM ops.pipeline_runs WHERE source = 'binance' "
            "ORDER BY started_at LIMIT 1"
        )
        start, end, started = cur.fetchone()
        clock = started - dt.timedelta(days=1)
        published = dt.timedelta(days=1, milliseconds=archive.DAILY_DELAY_MS)
        whole_days = sum(
            1
            for d in range(-1, 5)
            if start <= (day := start.replace(hour=0) + dt.timedelta(days=d))
            and day + dt.timedelta(days=1) <= end
            and day + published <= clock
        )
        cur.execute("SELECT count(*), count(*) FILTER (WHERE rows = 24) FROM ops.archive_files")
        assert cur.fetchone() == (2 * whole_days, 2 * whole_days)
    # the human summary on stdout, the log beside it: every record as JSON lines in .cryptoflow/logs/demo.log,
    # only warnings on the console (none in a calm market on two trading pairs)
    assert not [line for line in out.splitlines() if line.startswith("{")]
    assert captured.err.count("{") == 0, captured.err
    log = [
        json.loads(line) for line in (tmp_path / ".cryptoflow" / "logs" / "demo.log").read_text().splitlines()
    ]
    # SQLMesh's own output (its plan, a line per model batch, the intended warning of the ANALYZE after a
    # backfill, the run's "nothing due" right after the plan built everything) is in the log, not on the
    # console: there only our summary lines (SQLMesh's progress bars show on a terminal only)
    console = out + captured.err
    for said in ("ANALYZE", "No models are ready to run", "Model batches executed", "[1/1]", "SyntaxWarning"):
        assert said not in console, said
    sqlmesh = [r for r in log if r["logger"] == "pipelines.transform.sqlmesh"]
    assert {r["level"] for r in sqlmesh} == {"info"}
    said = [r["message"] for r in sqlmesh]
    assert any(m.startswith("Models needing backfill:") for m in said), said
    assert "\u2714 Model batches executed" in said
    assert [m for m in said if m.startswith("No models are ready to run")], said
    analyze = [m for m in said if sqlmesh_console.INTENDED_WARNING.match(m)]
    assert len(analyze) == 3, (
        said
    )  # stg_binance__ohlcv, int_crypto_daily, fct_prices: a first build's ANALYZE
    assert not [r for r in log if "ANALYZE" in r["message"] and r["level"] != "info"]
    # one record per line SQLMesh printed, as long as it is: none cut at 80 columns
    assert [m for m in said if BATCH_LINE.match(m) and len(m) > 80], said
    with db.cursor(settings) as cur:
        cur.execute(
            "SELECT (SELECT count(*) FROM raw.coingecko_markets), (SELECT count(*) FROM raw.fear_greed)"
        )
        markets, fear_greed = cur.fetchone()
    assert markets == len(json.loads((Path(sandbox.__file__).parent / "coins.json").read_text()))
    successes = [(r["source"], r["rows_raw"]) for r in log if r["message"] == "run success"]
    assert successes == [
        ("binance", 144),
        ("binance", 48),
        ("coingecko", markets),
        ("fear_greed", fear_greed),
        ("sqlmesh", 0),
    ]


def _failed(model: str, cause: Exception) -> Exception:
    from sqlmesh.utils.concurrency import NodeExecutionFailedError

    error = NodeExecutionFailedError(types.SimpleNamespace(snapshot_name=model))
    error.__cause__ = cause
    return error


def test_sqlmesh_messages_to_the_log_keep_failures_on_the_console(capsys, caplog):
    """The demo's SQLMesh console: its messages go to the log, at INFO; a failure's details stay in front of
    the user (and in the log); a warning other than the intended ANALYZE one is shown, once, as a log record."""
    caplog.set_level(logging.INFO)
    with sqlmesh_console.sqlmesh_console_to_log():
        from sqlmesh.core.console import get_console

        console = get_console()
        console.log_status_update("Initializing new project state...")
        console.log_success("\u2714 Model batches executed")
        console.log_warning(
            """'DO $$ BEGIN ANALYZE "cryptoflow"."sqlmesh__gold"."sqlmesh_md5__4e240de" (op' could not be """
            "semantically understood as it contains unsupported syntax, SQLMesh will treat the command as is."
        )
        console.log_warning("a model's column will be dropped")
        console.log_failed_models(
            [_failed('"cryptoflow"."gold"."fct_prices"', RuntimeError("division by zero"))]
        )
    captured = capsys.readouterr()
    assert "Initializing" not in captured.out and "Model batches executed" not in captured.out
    assert "ANALYZE" not in captured.out + captured.err
    assert "Failed models" in captured.out and "division by zero" in captured.out  # the details, shown
    assert console.failures and get_console() is not console  # the previous console is back
    records = [(r.name, r.levelname, r.getMessage()) for r in caplog.records]
    ours = [(level, message) for name, level, message in records if name == "pipelines.transform.sqlmesh"]
    assert ("INFO", "Initializing new project state...") in ours
    assert ("INFO", "\u2714 Model batches executed") in ours
    assert [m for level, m in ours if level == "INFO" and m.startswith("'DO $$ BEGIN ANALYZE")]
    assert [m for level, m in ours if level == "INFO" and "division by zero" in m]  # logged too
    assert ("sqlmesh.core.console", "WARNING", "a model's column will be dropped") in records
    assert not [r for r in records if r[1] == "WARNING" and "ANALYZE" in r[2]]


def test_sqlmesh_console_off_a_terminal_does_not_wrap_and_drops_only_the_intended_warning(capsys, caplog):
    """`cryptoflow transform` (Airflow, CI, a pipe): SQLMesh prints as before, one message a line however
    long (not wrapped at rich's 80 columns), without the intended ANALYZE warning; after a plan, the run's
    "no models are ready to run" is not shown either (it is, on a run of its own)."""
    caplog.set_level(logging.DEBUG)
    console = sqlmesh_console.recording_console()
    long = "Models needing backfill: " + ", ".join(f"gold.model_{i}" for i in range(12))
    assert len(long) > 160
    console.log_status_update(long)
    console.log_warning(
        """'DO $$ BEGIN ANALYZE "cryptoflow"."sqlmesh__silver"."sqlmesh_md5__ebf9" (' could not be """
        "semantically understood as it contains unsupported syntax, SQLMesh will treat the command as is."
    )
    console.log_warning("a model's column will be dropped")
    console.after_plan = True
    console.log_status_update(
        "No models are ready to run. Please wait until a model `cron` interval has elapsed."
    )
    console.after_plan = False
    console.log_status_update("No models are ready to run. Next run will be ready at 01:00PM UTC.")
    out = capsys.readouterr().out.splitlines()
    assert long in out  # whole, on one line
    assert "[WARNING] a model's column will be dropped" in out
    assert not [line for line in out if "ANALYZE" in line]
    assert [line for line in out if line.startswith("No models are ready")] == [
        "No models are ready to run. Next run will be ready at 01:00PM UTC."
    ]
    dropped = [r for r in caplog.records if r.name == "pipelines.transform.sqlmesh"]
    assert [r.levelname for r in dropped] == [
        "DEBUG",
        "DEBUG",
    ]  # the ANALYZE warning, the run's "nothing due"
