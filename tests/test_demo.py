"""`make demo` runs `cryptoflow demo`: the main job, offline, on the sandbox. Here on a short horizon, through
the command itself, with exact rows: the backfill (from the kline archive, as of a day ago), the day's
incremental run, the transform, the checks, and the closing summary."""

from __future__ import annotations

import contextlib
import json
import re

from pipelines import cli
from pipelines.runtime import db


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
    out = capsys.readouterr().out
    runs = re.findall(r"^binance: run \S+: (\d+) rows to raw, (\d+) to bronze", out, re.M)
    assert runs == [("144", "144"), ("48", "48")]  # 3 days as of a day ago, then the day's 24 hours
    assert re.search(r"^transform: silver and gold built in [0-9.]+ s$", out, re.M)
    checks = re.search(r"^checks: (\d+) run, (\d+) failed", out, re.M)
    assert checks and int(checks.group(2)) == 0, out  # a calm market: every check passes
    assert re.search(r"^  raw\.binance_klines\s+192 rows$", out, re.M)
    with contextlib.closing(db.connect(settings)) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*), count(DISTINCT (symbol, open_time)) FROM gold.fct_prices")
        assert cur.fetchone() == (192, 192)
        cur.execute("SELECT count(*) FROM ops.archive_files")
        assert cur.fetchone()[0] > 0  # the backfill read the archive's daily files
