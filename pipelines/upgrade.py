"""`cryptoflow db migrate`: bring a deployment's state up to this release, in order - our schemas (`raw`,
`ops`: pipelines/migrations/), SQLMesh's state, Airflow's metadata - and say what each step did.

dlt needs no step: it upgrades its pipeline state and its `_dlt_*` tables itself at a pipeline's next load.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from pipelines.runtime import db, schema
from pipelines.settings import Settings


def migrate_all(settings: Settings, config_file: Path | None = None) -> list[str]:
    """Every migration this release needs, ours first (the others' state lives in our database)."""
    if settings.database.embedded:
        db.start_embedded(settings, check_schema=False)
    lines = [f"cryptoflow: {line}" for line in schema.migrate(settings)]
    lines.append(f"SQLMesh: {migrate_sqlmesh(settings)}")
    lines.append(f"Airflow: {migrate_airflow(settings, config_file)}")
    lines.append("dlt: nothing to do (it upgrades its own state at a pipeline's next load)")
    return lines


def migrate_sqlmesh(settings: Settings) -> str:
    """SQLMesh's `migrate` when its state was written by another SQLMesh version than the one installed."""
    from sqlmesh._version import __version__ as sqlmesh_version
    from sqlmesh.core.state_sync.base import SCHEMA_VERSION
    from sqlmesh.utils import major_minor

    from pipelines import transform

    with contextlib.closing(db.connect(settings)) as conn, conn.cursor() as cur:
        cur.execute("SELECT to_regclass('sqlmesh._versions')")
        if db.one(cur)[0] is None:
            return "no state yet (the first transform creates it)"
    ctx = transform.context(settings, load=False)
    before = ctx.state_sync.get_versions(validate=False)
    if before.schema_version == 0:
        return "no state yet (the first transform creates it)"
    if before.schema_version == SCHEMA_VERSION and major_minor(before.sqlmesh_version) == major_minor(
        sqlmesh_version
    ):
        return f"state at schema version {SCHEMA_VERSION} (sqlmesh {sqlmesh_version}): nothing to migrate"
    ctx.migrate()
    return (
        f"migrated its state from sqlmesh {before.sqlmesh_version} (schema {before.schema_version}) to "
        f"{sqlmesh_version} (schema {SCHEMA_VERSION})"
    )


def migrate_airflow(settings: Settings, config_file: Path | None) -> str:
    """`airflow db migrate` on Airflow's metadata database, once this deployment has one: embedded, once
    `cryptoflow up` made it; on a configured server, when AIRFLOW__DATABASE__SQL_ALCHEMY_CONN names it."""
    from pipelines.runtime import services

    if settings.database.embedded and not db.airflow_metadata_exists(settings):
        return "no metadata database yet (`cryptoflow up` creates it)"
    if not settings.database.embedded and not os.environ.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"):
        return "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN is not set: run `airflow db migrate` where Airflow runs"
    services.run_airflow(settings, config_file, "db", "migrate")
    return "metadata database migrated (`airflow db migrate`)"
