"""Shared fixtures: a real embedded Postgres (one server per session, one database per test), real
sandbox HTTP servers on 127.0.0.1, settings pointing at both. No network, no mocks."""

from __future__ import annotations

import logging
import os
import uuid
import warnings
from pathlib import Path

import pytest

# tests/helpers: code shared by test modules (which never import each other); its asserts are rewritten too
pytest.register_assert_rewrite("helpers")
pytest_plugins = ["helpers.dashboard_data"]  # the dashboard's databases, for test_dashboard{,_browser}.py

os.environ["RUNTIME__DLTHUB_TELEMETRY"] = "false"
warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")

# Real API responses (see fixtures/real/SOURCES.md for provenance), vendored so CI needs nothing else.
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "real"


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    return FIXTURES


@pytest.fixture(scope="session")
def pg_dir(tmp_path_factory: pytest.TempPathFactory):
    """One embedded Postgres for the whole session, stopped at the end (we started it)."""
    from pipelines.runtime import embedded
    from pipelines.settings import load_settings

    root = tmp_path_factory.mktemp("pg")
    settings = load_settings(environ={}, overrides={"database": {"embedded_dir": str(root / "pg")}})
    embedded.start(settings)
    yield root / "pg"
    embedded.stop(settings)


@pytest.fixture(scope="session")
def settings_in(pg_dir: Path):
    """A factory: settings rooted in a folder, with their own database on the session's server."""
    from pipelines.settings import load_settings

    def make(root: Path, **sections: dict):
        overrides: dict[str, dict] = {
            "database": {"embedded_dir": str(pg_dir), "name": f"t_{uuid.uuid4().hex[:10]}"},
            "storage": {"bronze_url": str(root / "bronze")},
            "universe": {"mode": "pinned", "symbols": ["BTCUSDT", "ETHUSDT"]},
        }
        for section, values in sections.items():
            overrides.setdefault(section, {}).update(values)
        return load_settings(environ={}, overrides=overrides).model_copy(update={"project_dir": root})

    return make


@pytest.fixture
def make_settings(tmp_path: Path, settings_in):
    """Settings for one test: its own database, bronze folder and dlt state; extra overrides merged in."""
    return lambda **sections: settings_in(tmp_path, **sections)


@pytest.fixture(autouse=True)
def _no_airflow_log_filter_left_behind():
    """Orchestration's task functions, called in-process, fold `extra` fields into every root handler's
    messages (pipelines.ops.observability.airflow_task_logging): pytest's own capture handlers are reused by every
    test, so the filter is taken off them again before the next test reads caplog."""
    yield
    from pipelines.ops.observability import _ExtrasIntoMessage

    for handler in logging.getLogger().handlers:
        for f in [f for f in handler.filters if isinstance(f, _ExtrasIntoMessage)]:
            handler.removeFilter(f)
