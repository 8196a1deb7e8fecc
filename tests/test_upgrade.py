"""An in-place upgrade from the previous release, for real: v0.1.0 (fd6a1b8), taken from git and installed
from its own lock into its own environment, builds a small deployment (a backfill of two pairs, the hourly
run: every source, the transform, the checks); then this code runs `cryptoflow db migrate` and an hourly
run on the same database and lake. Nothing is lost: the old rows stay exact, raw and bronze agree per load
id, gold equals a build of the same raw from scratch, and SQLMesh carries on from its state (fct_prices'
physical table is the one v0.1.0 built: no full rebuild)."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.compute as pc
import pytest
import yaml
from helpers.gold import assert_same_gold, execute, stored_options

from pipelines import catalog, ingest, transform
from pipelines.bronze import open_lake, read_bronze
from pipelines.cli import sandboxed
from pipelines.runtime import migrations
from pipelines.sandbox import SandboxServer
from pipelines.settings import load_settings

pytestmark = pytest.mark.slow  # installs a release into its own environment (from uv's cache), two builds

ROOT = Path(__file__).resolve().parent.parent
PREVIOUS = "fd6a1b8"  # v0.1.0
UV = ROOT / ".cryptoflow" / "tools" / "bin" / "uv"  # what `make install` put there
SYMBOLS = ["BTCUSDT", "ETHUSDT"]
HOUR = dt.timedelta(hours=1)
CANDLES = (
    "SELECT symbol, open_time, open, high, low, close, volume, quote_volume, trades, load_id "
    "FROM raw.binance_klines ORDER BY symbol, open_time"
)
FCT_PRICES_TABLE = "SELECT definition FROM pg_views WHERE schemaname = 'gold' AND viewname = 'fct_prices'"


def previous_release(root: Path) -> Path:
    """v0.1.0's tree (git archive: no worktree, nothing in .git changes) with its own environment, installed
    from its own uv.lock, offline: every wheel it needs is in uv's cache from installing this checkout."""
    tree = root / "v0.1.0"
    tree.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", PREVIOUS], capture_output=True, check=False)
    assert archive.returncode == 0, (
        f"git archive {PREVIOUS} failed (a shallow clone? fetch the history): {archive.stderr.decode()[-500:]}"
    )
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive.stdout, check=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "UV_PROJECT"))}
    env |= {"UV_PROJECT_ENVIRONMENT": str(tree / ".venv"), "UV_PYTHON_DOWNLOADS": "never"}
    sync = subprocess.run(
        [str(UV), "sync", "--frozen", "--no-build", "--no-dev", "--offline", "--python", sys.executable],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert sync.returncode == 0, sync.stderr[-2000:]
    return tree / ".venv" / "bin" / "cryptoflow"


def cli(program: Path, config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CRYPTOFLOW", "VIRTUAL_ENV"))}
    done = subprocess.run(
        [str(program), "--config", str(config), *args],
        cwd=config.parent,
        env=env | {"RUNTIME__DLTHUB_TELEMETRY": "false", "SQLMESH__DISABLE_ANONYMIZED_ANALYTICS": "true"},
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, f"{program} {args}: {done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done


def test_v0_1_0_deployment_upgrades_in_place_with_its_data_exact(tmp_path, pg_dir, settings_in):
    old = previous_release(tmp_path)
    new = Path(sys.executable).parent / "cryptoflow"
    # the sandbox's clock: v0.1.0 builds up to `first`, this code's hourly run takes the hours to `second`
    # v0.1.0's checks read the wall clock: its data must hold every UTC day the wall clock has closed, so it
    # never ends before today's first hour (in the first hours of a day, 3 h back would be yesterday)
    hour = dt.datetime.now(dt.UTC).replace(minute=0, second=0, microsecond=0)
    first = max(hour - 3 * HOUR, hour.replace(hour=0)) + dt.timedelta(minutes=30)
    second = max(hour, first.replace(minute=0) + HOUR) + dt.timedelta(minutes=30)
    since = (first - 3 * dt.timedelta(days=1)).replace(hour=0, minute=0)

    with SandboxServer(seed=11, now_ms=int(first.timestamp() * 1000), calm=True) as sandbox:
        project = tmp_path / "deployment"
        project.mkdir()
        config = project / "config.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "universe": {"mode": "pinned", "symbols": SYMBOLS},
                    # v0.1.0's data ends 3 h before the wall clock, which the checks read
                    "checks": {"freshness_ohlcv_hours": 8},
                    "database": {"embedded_dir": str(pg_dir), "name": "upgrade_from_v0_1_0"},
                    "storage": {"bronze_url": str(project / "bronze")},
                    "sources": {
                        "binance": {"base_url": f"{sandbox.url}/binance"},
                        "binance_archive": {"base_url": f"{sandbox.url}/archive"},
                        "coingecko": {"base_url": f"{sandbox.url}/coingecko"},
                        "fear_greed": {"base_url": f"{sandbox.url}/alternative"},
                    },
                }
            )
        )
        cli(old, config, "backfill", "--since", since.date().isoformat(), "--source", "rest")
        cli(old, config, "run")  # every source, the transform, the checks (exit 0: all passed)
        deployment = load_settings(config, environ={})
        old_candles = execute(deployment, CANDLES)
        old_runs = execute(deployment, "SELECT * FROM ops.pipeline_runs ORDER BY run_id")
        built_by_old = execute(deployment, FCT_PRICES_TABLE)
        assert len(old_candles) == len(SYMBOLS) * int((first.replace(minute=0) - since) / HOUR)

        migrated = cli(new, config, "db", "migrate").stdout.splitlines()
        shipped = [f"cryptoflow: applied migration {m.path.stem}" for m in migrations.available()]
        assert migrated[: 1 + len(shipped)] == [
            "cryptoflow: recognised a database built before versioned migrations (v0.1.0): its schema is "
            "migration 1",
            *shipped,
        ]
        assert migrated[1 + len(shipped)].startswith("SQLMesh: state at schema version"), migrated  # same pin
        sandbox.set_now(int(second.timestamp() * 1000))
        cli(new, config, "run")  # the hourly cycle, checks included

        # raw: every hour once, v0.1.0's rows exactly as they were (a calm market revises nothing)
        candles = execute(deployment, CANDLES)
        hours = int((second.replace(minute=0) - since) / HOUR)
        assert len(candles) == len(SYMBOLS) * hours
        assert len({(c[0], c[1]) for c in candles}) == len(candles)
        assert [c for c in candles if c[1] < first.replace(minute=0)] == old_candles
        assert (
            execute(
                deployment,
                "SELECT * FROM ops.pipeline_runs WHERE run_id = ANY(%s) ORDER BY run_id",
                ([r[0] for r in old_runs],),
            )
            == old_runs
        )
        # bronze: the same rows per load id as raw, old loads and new
        bronze = read_bronze(open_lake(deployment), "binance_klines")
        in_bronze = dict(zip(*pc.value_counts(bronze["load_id"]).flatten(), strict=True))
        in_raw = dict(execute(deployment, "SELECT load_id, count(*) FROM raw.binance_klines GROUP BY 1"))
        assert {str(k): int(v) for k, v in in_bronze.items()} == in_raw
        # the hot tables' autovacuum settings: the ops ones by migration, raw's by the first load after it
        assert stored_options(deployment) == catalog.AUTOVACUUM
        # SQLMesh carried on: fct_prices is still the table v0.1.0 built, now with the new hours
        assert execute(deployment, FCT_PRICES_TABLE) == built_by_old
        assert execute(deployment, "SELECT count(*) FROM gold.fct_prices") == [(len(candles),)]

        # gold equals a build of the same raw from scratch, by this code
        fresh = settings_in(tmp_path / "fresh", universe={"symbols": SYMBOLS})
        active = sandboxed(fresh, sandbox)
        ingest.ingest_ohlcv(active, since=since)
        ingest.ingest_markets(active)
        ingest.ingest_fear_greed(active)
        transform.transform(fresh)
    assert execute(fresh, CANDLES.replace(", load_id", "")) == [c[:-1] for c in candles]
    assert_same_gold(deployment, fresh)
