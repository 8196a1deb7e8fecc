"""`cryptoflow db migrate`: bring a deployment's state up to this release, in order - our schemas (`raw`,
`ops`: pipelines/migrations/), SQLMesh's state, Airflow's metadata - and say what each step did.

dlt needs no step: it upgrades its pipeline state and its `_dlt_*` tables itself at a pipeline's next load.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from pipelines.runtime import db, embedded, schema
from pipelines.runtime.migrations import SchemaError
from pipelines.settings import Settings

log = logging.getLogger(__name__)


def migrate_all(settings: Settings, config_file: Path | None = None) -> list[str]:
    """Every migration this release needs, ours first (the others' state lives in our database)."""
    if settings.database.embedded:
        embedded.start(settings, check_schema=False)
    lines = [f"cryptoflow: {line}" for line in schema.migrate(settings)]
    lines.append(f"SQLMesh: {migrate_sqlmesh(settings)}")
    lines.append(f"Airflow: {migrate_airflow(settings, config_file)}")
    lines.append("dlt: nothing to do (it upgrades its own state at a pipeline's next load)")
    return lines


@dataclass(frozen=True)
class SQLMeshState:
    """Who wrote SQLMesh's state, against what is installed (read from the state's own table: SQLMesh's
    Context refuses to open a state of another version, which is the point of migrating it)."""

    schema: int
    sqlmesh: str
    current: bool  # written by this SQLMesh (same schema, same major.minor of sqlmesh and sqlglot)
    newer: bool  # written by a newer SQLMesh: never migrated backwards

    def describe(self) -> str:
        return f"sqlmesh {self.sqlmesh} (schema {self.schema})"


def sqlmesh_state(settings: Settings) -> SQLMeshState | None:
    """None before the first transform created the state."""
    from sqlglot._version import __version__ as sqlglot_version
    from sqlmesh._version import __version__ as sqlmesh_version
    from sqlmesh.core.state_sync.base import SCHEMA_VERSION
    from sqlmesh.utils import major_minor

    with db.cursor(settings) as cur:
        cur.execute("SELECT to_regclass('sqlmesh._versions')")
        row = None
        if db.one(cur)[0] is not None:
            cur.execute("SELECT schema_version, sqlglot_version, sqlmesh_version FROM sqlmesh._versions")
            row = cur.fetchone()
    if row is None or row[0] == 0:
        return None
    schema_version, sqlglot_then, sqlmesh_then = row
    then = (schema_version, major_minor(sqlglot_then), major_minor(sqlmesh_then))
    now = (SCHEMA_VERSION, major_minor(sqlglot_version), major_minor(sqlmesh_version))
    newer = schema_version > SCHEMA_VERSION or then[2] > now[2]
    return SQLMeshState(schema_version, sqlmesh_then, then == now, newer)


def _installed() -> str:
    from sqlmesh._version import __version__ as sqlmesh_version
    from sqlmesh.core.state_sync.base import SCHEMA_VERSION

    return f"sqlmesh {sqlmesh_version} (schema {SCHEMA_VERSION})"


def migrate_sqlmesh(settings: Settings) -> str:
    """SQLMesh's `migrate` when its state was written by another SQLMesh (or sqlglot) version than the one
    installed; a state a newer one wrote is refused."""
    from pipelines import transform

    state = sqlmesh_state(settings)
    if state is None:
        return "no state yet (the first transform creates it)"
    if state.current:
        return f"state at schema version {state.schema} (sqlmesh {state.sqlmesh}): nothing to migrate"
    if state.newer:
        raise SchemaError(
            f"SQLMesh's state was written by {state.describe()}, newer than the installed {_installed()}: run "
            "that release (or restore the backup taken before the upgrade)"
        )
    with db.advisory_lock(settings, transform.LOCK):  # never beside a plan or a run
        transform.context(settings, load=False).migrate()
    return f"migrated its state from {state.describe()} to {_installed()}"


def check_sqlmesh(settings: Settings) -> None:
    """Before a transform: a state another SQLMesh wrote is migrated when database.auto_migrate says so
    (embedded mode by default), as the schema is; else refused in one line with the command to run."""
    state = sqlmesh_state(settings)
    if state is None or state.current:
        return
    if settings.database.migrates_itself and not state.newer:
        log.info(f"SQLMesh: {migrate_sqlmesh(settings)}")
        return
    if state.newer:
        migrate_sqlmesh(settings)  # raises its one-line refusal
    raise SchemaError(
        f"SQLMesh's state was written by {state.describe()}; this cryptoflow runs {_installed()}: back it up, "
        "then run `cryptoflow db migrate` (or set database.auto_migrate: true)"
    )


def migrate_airflow(settings: Settings, config_file: Path | None) -> str:
    """`airflow db migrate` on Airflow's metadata database, once this deployment has one: embedded, once
    `cryptoflow up` made it; on a configured server, when AIRFLOW__DATABASE__SQL_ALCHEMY_CONN names it."""
    from pipelines.runtime import services

    if settings.database.embedded and not embedded.airflow_metadata_exists(settings):
        return "no metadata database yet (`cryptoflow up` creates it)"
    if not settings.database.embedded and not os.environ.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"):
        return "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN is not set: run `airflow db migrate` where Airflow runs"
    services.run_airflow(settings, config_file, "db", "migrate")
    return "metadata database migrated (`airflow db migrate`)"
