"""SQLMesh as this deployment runs it: its Config (the gateway is our Postgres, embedded or configured), a
Context on the project, and what this pipeline last planned into each environment (ops.transform_state), so
an hourly transform whose project is unchanged runs without re-parsing and re-planning it."""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from pipelines.runtime import db
from pipelines.settings import Settings
from pipelines.sqlmesh_console import LITERAL_IS_NOT, recording_console

PROJECT_DIR = Path(__file__).resolve().parent.parent / "sqlmesh_project"
LOCK = "transform"  # the advisory lock every plan, run, restatement and janitor of SQLMesh takes


class TransformError(Exception):
    """A SQLMesh plan or run failed (a model error or a blocking audit); SQLMesh printed the details."""


def _no_usage_reporting() -> None:
    """SQLMesh reads this when it is first imported, before any Config: set it just before (never on import
    of this module). The Config below says the same for the `sqlmesh` CLI, which imports SQLMesh itself."""
    os.environ.setdefault("SQLMESH__DISABLE_ANONYMIZED_ANALYTICS", "true")


TRANSFORM_WORK_MEM = "256MB"  # per sort or hash of the transform's sessions (two models run at once)


def sqlmesh_config(settings: Settings) -> Any:
    """The SQLMesh Config whose gateway is this deployment's Postgres (embedded or configured)."""
    _no_usage_reporting()
    from sqlmesh.core.config import Config, GatewayConfig, ModelDefaultsConfig
    from sqlmesh.core.config.connection import PostgresConnectionConfig

    url = urlsplit(db.writer_url(settings))
    connection = PostgresConnectionConfig(
        host=parse_qs(url.query).get("host", [url.hostname or "localhost"])[0],
        port=url.port or 5432,
        user=unquote(url.username or ""),
        password=unquote(url.password or ""),
        database=url.path.lstrip("/"),
        concurrent_tasks=2,
        application_name="cryptoflow-sqlmesh",
    )
    return Config(
        # unit tests run on the same engine as the models (a Postgres dialect test on DuckDB proves little)
        gateways={"cryptoflow": GatewayConfig(connection=connection, test_connection=connection)},
        default_gateway="cryptoflow",
        model_defaults=ModelDefaultsConfig(
            dialect="postgres",
            start="2019-01-01",
            cron="@hourly",
            # Postgres's Memoize misjudges the (open_time, symbol) joins of a big build as cache hits and runs
            # 1.3M index probes (33 s) where a merge join over the same indexes takes 5 s
            # work_mem: a big build's sorts (the indicators' pass, staging's dedup) stay in memory
            pre_statements=[
                "@IF(@runtime_stage = 'evaluating', SET enable_memoize = off)",
                f"@IF(@runtime_stage = 'evaluating', SET work_mem = '{TRANSFORM_WORK_MEM}')",
            ],
        ),
        physical_table_naming_convention="hash_md5",  # Postgres truncates identifiers at 63 characters
        disable_anonymized_analytics=True,
    )


def context(settings: Settings, *, load: bool = True) -> Any:
    """A SQLMesh Context on this deployment's database; load=False reads nothing of the project (a run of
    what is already planned works from the state's snapshots)."""
    _no_usage_reporting()
    from sqlmesh import Context
    from sqlmesh.core.console import get_console, set_console

    if not hasattr(get_console(), "failures"):
        set_console(recording_console())
    warnings.filterwarnings("ignore", LITERAL_IS_NOT, SyntaxWarning, "<string>")
    db.ensure_database(settings)
    return Context(paths=str(PROJECT_DIR), config=sqlmesh_config(settings), load=load)


PROJECT_PARTS = ("models", "macros", "audits", "external_models.yaml")  # what a plan reads (tests aside)


def project_fingerprint(settings: Settings) -> str:
    """SHA-256 of what a plan depends on: the project's model, macro and audit files, the model defaults
    and the SQLMesh version. Equal fingerprints: nothing to plan."""
    import sqlmesh

    digest = hashlib.sha256(sqlmesh.__version__.encode())
    digest.update(sqlmesh_config(settings).model_defaults.model_dump_json().encode())
    for part in PROJECT_PARTS:
        root = PROJECT_DIR / part
        for path in sorted([root] if root.is_file() else root.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                digest.update(str(path.relative_to(PROJECT_DIR)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def planned_into(settings: Settings, environment: str) -> tuple[str, str] | None:
    """(project fingerprint, SQLMesh plan id) of this pipeline's last plan into the environment."""
    with db.cursor(settings) as cur:
        cur.execute(
            "SELECT project_sha256, plan_id FROM ops.transform_state WHERE environment = %s", (environment,)
        )
        row = cur.fetchone()
    return (row[0], row[1]) if row else None


def record_plan(settings: Settings, environment: str, fingerprint: str, plan_id: str) -> None:
    with db.cursor(settings) as cur:
        cur.execute(
            "INSERT INTO ops.transform_state (environment, project_sha256, plan_id) VALUES (%s, %s, %s) "
            "ON CONFLICT (environment) DO UPDATE SET project_sha256 = EXCLUDED.project_sha256, "
            "plan_id = EXCLUDED.plan_id, planned_at = now()",
            (environment, fingerprint, plan_id),
        )


def unchanged_context(settings: Settings, environment: str, fingerprint: str) -> Any | None:
    """Nothing to plan: a context that reads nothing of the project, when prod (a dev environment's plan
    also renews its expiry, so it always plans) holds exactly what this pipeline last planned into it, with
    this project, and that plan was finalized (not one from another checkout, nor one killed half-way)."""
    planned = planned_into(settings, environment) if environment == "prod" else None
    if planned is None or planned[0] != fingerprint:
        return None
    ctx = context(settings, load=False)
    env = ctx.state_reader.get_environment(environment)
    return ctx if env is not None and env.finalized_ts is not None and env.plan_id == planned[1] else None
