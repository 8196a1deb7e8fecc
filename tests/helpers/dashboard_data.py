"""The dashboard's databases (tests/test_dashboard.py, tests/test_dashboard_browser.py): real gold data
built by the pipeline (sandbox -> raw -> SQLMesh -> Soda) on the session's embedded Postgres, and an empty
database. A pytest plugin (tests/conftest.py's `pytest_plugins`): the fixtures each return
(settings, config file), and are requested by name."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import yaml

from pipelines import ingest, quality, transform
from pipelines.cli import sandboxed
from pipelines.runtime import db
from pipelines.sandbox import SandboxServer

NOW = dt.datetime(2026, 3, 10, 12, 5, tzinfo=dt.UTC)
NOW_MS = int(NOW.timestamp() * 1000)
SNAPSHOT = dt.datetime(2026, 3, 9, 12, 0, tzinfo=dt.UTC)  # a complete UTC day, so its totals reach gold
SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
DAYS = 15
HISTORICAL_NOW = dt.datetime(2025, 1, 20, 0, 30, tzinfo=dt.UTC)  # historical_db's clock


def execute(settings, sql: str, params=()) -> list[tuple]:
    with db.cursor(settings) as cur:
        cur.execute(sql, params)
        return cur.fetchall() if cur.description else []


def write_config(settings, path: Path, **sections) -> Path:
    data = {
        "universe": {"mode": "pinned", "symbols": SYMBOLS},
        "database": {
            "embedded_dir": str(settings.path(settings.database.embedded_dir)),
            "name": settings.database.name,
        },
        "storage": {"bronze_url": str(path.parent / "bronze")},
        **sections,
    }
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope="module")
def gold_db(tmp_path_factory, settings_in):
    """3 symbols x 15 days through the whole pipeline, checks included; returns (settings, config file)."""
    root = tmp_path_factory.mktemp("dashboard")
    settings = settings_in(root, universe={"symbols": SYMBOLS}, checks={"expected_market_coins": 50})
    with SandboxServer(seed=11, now_ms=NOW_MS) as sandbox:
        active = sandboxed(settings, sandbox)
        ingest.ingest_ohlcv(active, days=DAYS)
        ingest.ingest_markets(active)
        ingest.ingest_fear_greed(active)
    # the snapshot is stamped with the real clock; put it on the sandbox's (previous, complete) day
    execute(settings, "UPDATE raw.coingecko_markets SET snapshot_ts = %s", (SNAPSHOT,))
    transform.transform(settings, execution_time=NOW)
    quality.run_checks(settings, now=NOW)
    return settings, write_config(settings, root / "config.yaml")


@pytest.fixture
def empty_db(make_settings, tmp_path):
    """A fresh database with its schemas and ops tables, before any load."""
    settings = make_settings()
    db.ensure_database(settings)
    return settings, write_config(settings, tmp_path / "config.yaml")


@pytest.fixture(scope="module")
def historical_db(tmp_path_factory, settings_in):
    """Only a historical window, with a delisted pair and no market snapshot inside it (CoinGecko's only
    snapshot is years later): what a backfill of the past gives a new user."""
    root = tmp_path_factory.mktemp("historical")
    symbols = ["BTCUSDT", "FTMUSDT"]
    settings = settings_in(root, universe={"symbols": symbols})
    now = HISTORICAL_NOW  # FTM halted on 01-13: in BREAK, history kept
    with SandboxServer(seed=11, now_ms=int(now.timestamp() * 1000)) as sandbox:
        active = sandboxed(settings, sandbox)
        sandbox.set_now(int(dt.datetime(2025, 1, 12, 0, 30, tzinfo=dt.UTC).timestamp() * 1000))
        ingest.ingest_ohlcv(active, since=dt.datetime(2025, 1, 8, tzinfo=dt.UTC))
        sandbox.set_now(int(now.timestamp() * 1000))
        ingest.ingest_ohlcv(active)  # FTM is skipped now; BTC goes on
        ingest.ingest_fear_greed(active)
        ingest.ingest_markets(active)
    execute(settings, "UPDATE raw.coingecko_markets SET snapshot_ts = %s", (now + dt.timedelta(days=400),))
    transform.transform(settings, execution_time=now)
    return settings, write_config(
        settings, root / "config.yaml", universe={"mode": "pinned", "symbols": symbols}
    )


@pytest.fixture(scope="module")
def tiny_db(tmp_path_factory, settings_in):
    """One pair, one day, one snapshot: the smallest database a new user can have."""
    root = tmp_path_factory.mktemp("tiny")
    settings = settings_in(root, universe={"symbols": ["BTCUSDT"]})
    with SandboxServer(seed=11, now_ms=NOW_MS) as sandbox:
        active = sandboxed(settings, sandbox)
        ingest.ingest_ohlcv(active, days=1)
        ingest.ingest_markets(active)
        ingest.ingest_fear_greed(active)
    execute(settings, "UPDATE raw.coingecko_markets SET snapshot_ts = %s", (SNAPSHOT,))
    transform.transform(settings, execution_time=NOW)
    return settings, write_config(
        settings, root / "config.yaml", universe={"mode": "pinned", "symbols": ["BTCUSDT"]}
    )
