"""The schemas this code needs and who may read them: versioned migrations checked (and applied when allowed)
by every command (pipelines.runtime.migrations), and the read-only reader role's grants."""

from __future__ import annotations

import contextlib
import logging

import psycopg2

from pipelines import catalog
from pipelines.runtime import db, migrations
from pipelines.settings import Settings

log = logging.getLogger(__name__)


def ensure_schema(settings: Settings) -> list[str]:
    """The schema as this code needs it (pipelines.runtime.migrations.check: migrated if allowed, else a
    one-line refusal), then the reader's grants. Returns what was migrated, one line each."""
    with contextlib.closing(db.connect(settings)) as conn:
        conn.autocommit = True  # each migration commits on its own; the session lock spans them
        with conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_lock(%s)", (db.lock_key(migrations.LOCK),))
            done = migrations.check(cur, settings.database.migrates_itself)
        conn.autocommit = False
        with conn, conn.cursor() as cur:
            _grant_reader(cur, settings)
    return done  # closing the session released the lock


def migrate(settings: Settings) -> list[str]:
    """`cryptoflow db migrate`: apply this code's pending migrations (whatever database.auto_migrate says)."""
    with contextlib.closing(db.connect(settings)) as conn:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_lock(%s)", (db.lock_key(migrations.LOCK),))
            done = migrations.migrate(cur)
            state = migrations.status(cur)
    ensure_schema(settings)  # the grants
    return done or [f"the schema is at version {state.current}: nothing to migrate"]


def _grant_reader(cur: db.Cursor, settings: Settings) -> None:
    """The reader reads gold, ops and raw (created on a configured server when its password is given)."""
    reader = settings.database.reader_role
    cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (reader,))
    exists = cur.fetchone() is not None
    if not exists and not settings.database.embedded:
        exists = _create_reader(cur, settings)
    if exists:
        for schema in READER_SCHEMAS:
            cur.execute(f'GRANT USAGE ON SCHEMA {schema} TO "{reader}"')
            cur.execute(f'GRANT SELECT ON ALL TABLES IN SCHEMA {schema} TO "{reader}"')
            cur.execute(f'ALTER DEFAULT PRIVILEGES IN SCHEMA {schema} GRANT SELECT ON TABLES TO "{reader}"')


READER_SCHEMAS = ("gold", "ops", "raw")  # read-only: the dashboard reads gold and ops, the metrics raw too


def _create_reader(cur: db.Cursor, settings: Settings) -> bool:
    """A configured server without the reader role: create it (read-only by default) with the password from
    CRYPTOFLOW_READER_PASSWORD. Returns whether the role exists afterwards."""
    reader = settings.database.reader_role
    if not settings.secrets.reader_password:
        log.warning(
            f"the reader role {reader} does not exist: set CRYPTOFLOW_READER_PASSWORD and run `cryptoflow db "
            "start` to create it (the dashboard and the metrics connect only as the reader)"
        )
        return False
    cur.execute("SAVEPOINT create_reader")
    try:
        cur.execute(f'CREATE ROLE "{reader}" LOGIN PASSWORD %s', (settings.secrets.reader_password,))
        cur.execute(f'ALTER ROLE "{reader}" SET default_transaction_read_only = on')
        cur.execute(f'GRANT CONNECT ON DATABASE "{_current_database(cur)}" TO "{reader}"')
    except psycopg2.errors.InsufficientPrivilege:
        cur.execute("ROLLBACK TO SAVEPOINT create_reader")
        log.warning(
            f"the reader role {reader} does not exist and the writer may not create roles: create it as an "
            "administrator (docker/postgres-init.sh shows how), with the password in CRYPTOFLOW_READER_PASSWORD"
        )
        return False
    log.info("created the read-only reader role", extra={"role": reader})
    return True


def _current_database(cur: db.Cursor) -> str:
    cur.execute("SELECT current_database()")
    return str(db.one(cur)[0])


def storage_options(cur: db.Cursor) -> dict[str, dict[str, str]]:
    """The storage parameters (autovacuum, fillfactor) set on each table catalog.AUTOVACUUM names, as the
    database has them; a table not created yet is left out."""
    cur.execute(
        "SELECT n.nspname || '.' || c.relname, coalesce(c.reloptions, '{}') FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname || '.' || c.relname = ANY(%s)",
        (list(catalog.AUTOVACUUM),),
    )
    return {name: dict(o.split("=", 1) for o in options) for name, options in cur.fetchall()}


def ensure_storage_options(cur: db.Cursor, table: str) -> bool:
    """Set a table's storage parameters from catalog.AUTOVACUUM where the database's differ (a raw table dlt
    just created; one an older release created). Returns whether it changed them. Compared first: ALTER
    TABLE ... SET would otherwise wait for (and cancel) an autovacuum of the table on every load."""
    wanted = catalog.AUTOVACUUM.get(table)
    if not wanted or storage_options(cur).get(table, {}) == wanted:
        return False
    cur.execute(f"ALTER TABLE {table} SET ({', '.join(f'{k} = {v}' for k, v in wanted.items())})")
    return True
