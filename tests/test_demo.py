"""`make demo` runs `cryptoflow demo`: the main job, offline, on the sandbox. Here on a short horizon, through
the command itself, with exact rows: the backfill (from the kline archive, as of a day ago), the day's
incremental run, the transform, the checks, and the closing summary."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import re
from pathlib import Path

import pytest

from pipelines import cli, sandbox
from pipelines.runtime import db


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
    with contextlib.closing(db.connect(settings)) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*), count(DISTINCT (symbol, open_time)) FROM gold.fct_prices")
        assert cur.fetchone() == (192, 192)
        # the backfill read the archive's daily files: one per pair for each whole UTC day of its window (a
        # day it read only some hours of stays out of the manifest)
        cur.execute(
            "SELECT window_start, window_end FROM ops.pipeline_runs WHERE source = 'binance' "
            "ORDER BY started_at LIMIT 1"
        )
        start, end = cur.fetchone()
        whole_days = sum(
            1 for d in range(-1, 5) if start <= (day := start.replace(hour=0) + dt.timedelta(days=d)) and
            day + dt.timedelta(days=1) <= end
        )  # fmt: skip
        cur.execute("SELECT count(*), count(*) FILTER (WHERE rows = 24) FROM ops.archive_files")
        assert cur.fetchone() == (2 * whole_days, 2 * whole_days)
    # the human summary on stdout, the log beside it: every record as JSON lines in .cryptoflow/logs/demo.log,
    # only warnings on the console (none in a calm market on two trading pairs)
    assert not [line for line in out.splitlines() if line.startswith("{")]
    assert captured.err.count("{") == 0, captured.err
    log = [
        json.loads(line) for line in (tmp_path / ".cryptoflow" / "logs" / "demo.log").read_text().splitlines()
    ]
    with contextlib.closing(db.connect(settings)) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT (SELECT count(*) FROM raw.coingecko_markets), (SELECT count(*) FROM raw.fear_greed)"
        )
        markets, fear_greed = cur.fetchone()
    assert markets == len(json.loads((Path(sandbox.__file__).parent / "coins.json").read_text()))
    successes = [(r["source"], r["rows_raw"]) for r in log if r["message"] == "run success"]
    assert successes == [
        ("binance", 144), ("binance", 48), ("coingecko", markets), ("fear_greed", fear_greed), ("sqlmesh", 0)
    ]  # fmt: skip
