"""The embedded Postgres (pgserver), for a deployment without a server of its own: its data folder, its
roles and their passwords (kept 0600 beside it), start and stop, its server settings, and Airflow's metadata
database on the same server."""

from __future__ import annotations

import atexit
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from urllib.parse import quote, urlsplit

import psycopg2
import psycopg2.extensions

from pipelines.runtime import db
from pipelines.settings import Settings

EMBEDDED_WORK_MEM = "64MB"
EMBEDDED_SETTINGS = {"max_wal_size": "4GB", "checkpoint_timeout": "15min", "wal_compression": "on"}


@dataclass(frozen=True)
class EmbeddedStatus:
    running: bool
    pid: int | None
    datadir: Path
    socket_dir: str | None


def _datadir(settings: Settings) -> Path:
    return settings.path(settings.database.embedded_dir)


def _credentials_file(settings: Settings) -> Path:
    return _datadir(settings).parent / "credentials.json"


def role_passwords(settings: Settings) -> dict[str, str]:
    """Embedded-mode passwords: from the environment if given, else generated once and kept 0600."""
    path = _credentials_file(settings)
    stored = json.loads(path.read_text()) if path.exists() else {}
    changed = False
    for role in (settings.database.writer_role, settings.database.reader_role, SUPERUSER):
        if role not in stored:
            stored[role] = secrets.token_urlsafe(18)
            changed = True
    given = settings.secrets.database_password
    if given and stored.get(settings.database.writer_role) != given:
        # the bootstrap sets the writer's password to the given one: keep it, for runs without the variable
        stored[settings.database.writer_role] = given
        changed = True
    if changed:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600, exist_ok=True)
        path.write_text(json.dumps(stored))
    return stored


SUPERUSER = "postgres"  # pgserver's initdb superuser; its password is kept with the roles' (0600)
# pgserver's initdb trusts every local connection, and as root its socket folder is world-writable: any local
# user would connect as superuser. Every connection needs a password instead.
PG_HBA = """# written by cryptoflow (pipelines/runtime/embedded.py): every connection needs a password
local   all  all                scram-sha-256
host    all  all  127.0.0.1/32  scram-sha-256
host    all  all  ::1/128       scram-sha-256
"""


def _admin_connect(settings: Settings, admin_uri: str) -> psycopg2.extensions.connection:
    """The embedded server's superuser, with its password (a first start still trusts, and takes it)."""
    conn = psycopg2.connect(
        admin_uri, password=role_passwords(settings)[SUPERUSER], options=db.session_options(settings)
    )
    conn.autocommit = True
    return conn


def _require_passwords(cur: db.Cursor, settings: Settings) -> None:
    """Give the superuser its password, then make pg_hba.conf ask every connection for one."""
    cur.execute("ALTER ROLE CURRENT_USER PASSWORD %s", (role_passwords(settings)[SUPERUSER],))
    hba = _datadir(settings) / "pg_hba.conf"
    if hba.read_text() != PG_HBA:
        hba.write_text(PG_HBA)  # an existing file keeps its owner (the server's user when run as root)
        cur.execute("SELECT pg_reload_conf()")


def _pgserver() -> ModuleType:
    """The embedded server's package; it has no linux/aarch64 build, so it is not installed there."""
    try:
        import pgserver
        import pgserver.utils
    except ImportError:
        raise db.DatabaseUnavailable(
            "the embedded Postgres (pgserver) is not installed: it has no build for this platform; "
            "set database.url (or CRYPTOFLOW__DATABASE__URL) to a PostgreSQL server"
        ) from None
    return pgserver


def server_program(name: str) -> Path:
    """A program of the embedded server's PostgreSQL (pg_dump, psql ...), the server's own version."""
    return Path(str(_pgserver().__file__)).parent / "pginstall" / "bin" / name


def status(settings: Settings) -> EmbeddedStatus:
    PostmasterInfo = _pgserver().utils.PostmasterInfo

    datadir = _datadir(settings)
    info = PostmasterInfo.read_from_pgdata(datadir) if datadir.exists() else None
    if info is None or not info.is_running():
        return EmbeddedStatus(False, None, datadir, None)
    return EmbeddedStatus(True, info.pid, datadir, str(info.socket_dir))


def start(settings: Settings, *, check_schema: bool = True) -> EmbeddedStatus:
    """Start (or find running) the private Postgres; it stays up after this process exits. check_schema
    False: leave the schema as it is (`cryptoflow db migrate` migrates it itself, and says what it did)."""
    pgserver = _pgserver()

    datadir = _datadir(settings)
    datadir.mkdir(parents=True, exist_ok=True)
    server = pgserver.get_server(datadir, cleanup_mode=None)
    _bootstrap(server.get_uri(), settings, check_schema)
    return status(settings)


def configure(settings: Settings, options: dict[str, str]) -> None:
    """Server settings of the embedded Postgres beyond EMBEDDED_SETTINGS (reloadable ones: no restart), kept
    across restarts (ALTER SYSTEM). The soak shortens autovacuum's nap to its own clock with it."""
    conn = _admin_connect(settings, _pgserver().get_server(_datadir(settings), cleanup_mode=None).get_uri())
    try:
        with conn.cursor() as cur:
            for name, value in options.items():
                cur.execute(f"ALTER SYSTEM SET {name} = %s", (value,))
            cur.execute("SELECT pg_reload_conf()")
    finally:
        conn.close()


def stop(settings: Settings) -> bool:
    """Stop the embedded server; returns False when it was not running."""
    pg_ctl = _pgserver().pg_ctl

    found = status(settings)
    if not found.running:
        return False
    user = "pgserver" if os.geteuid() == 0 else None
    pg_ctl(["-w", "stop", "-m", "fast"], pgdata=found.datadir, user=user)
    # pgserver keeps a handle per data folder and hands it out again as a running server: forget it, so a
    # start in this process (a restart) starts the server again
    instances = _pgserver().PostgresServer._instances
    for folder in [f for f in instances if Path(f).resolve() == found.datadir.resolve()]:
        atexit.unregister(instances.pop(folder)._cleanup)  # its exit hook would look it up again
    return True


def _bootstrap(admin_uri: str, settings: Settings, check_schema: bool = True) -> None:
    """Create the database, the writer and the read-only reader role (idempotent; serialised across
    processes, since concurrent DDL on roles fails with 'tuple concurrently updated')."""
    cfg = settings.database
    passwords = role_passwords(settings)
    conn = _admin_connect(settings, admin_uri)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_lock(%s)", (db.lock_key("cryptoflow:bootstrap"),))
            # Bulk builds write GBs of WAL: fewer forced checkpoints (reloadable settings, no restart).
            for name, value in EMBEDDED_SETTINGS.items():
                cur.execute(f"ALTER SYSTEM SET {name} = %s", (value,))
            cur.execute("SELECT pg_reload_conf()")
            for role, extra in ((cfg.writer_role, "CREATEDB"), (cfg.reader_role, "")):
                cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,))
                if not cur.fetchone():
                    cur.execute(f'CREATE ROLE "{role}" LOGIN {extra} PASSWORD %s', (passwords[role],))
                    # window sorts and hash joins over millions of rows stay in memory instead of spilling
                    cur.execute(f"ALTER ROLE \"{role}\" SET work_mem = '{EMBEDDED_WORK_MEM}'")
                elif role == cfg.writer_role and settings.secrets.database_password:
                    cur.execute(f'ALTER ROLE "{role}" PASSWORD %s', (passwords[role],))
            # the reader writes nothing, not even a temporary table (as docker/postgres-init.sh sets it)
            cur.execute(f'ALTER ROLE "{cfg.reader_role}" SET default_transaction_read_only = on')
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (cfg.name,))
            if not cur.fetchone():
                cur.execute(f'CREATE DATABASE "{cfg.name}" OWNER "{cfg.writer_role}"')
            conn2 = _admin_connect(settings, _with_database(admin_uri, cfg.name))
            with conn2, conn2.cursor() as cur2:
                cur2.execute(f'GRANT ALL ON SCHEMA public TO "{cfg.writer_role}"')
            conn2.close()
            _require_passwords(cur, settings)
            if check_schema:
                from pipelines.runtime import schema

                schema.ensure_schema(settings)
    finally:
        conn.close()  # releases the session lock


AIRFLOW_ROLE = "airflow"


def airflow_metadata_exists(settings: Settings) -> bool:
    """Embedded mode: whether Airflow's metadata database was made (airflow_metadata_url, on first `up`)."""
    path = _credentials_file(settings)
    return path.exists() and AIRFLOW_ROLE in json.loads(path.read_text())


def airflow_metadata_url(settings: Settings) -> str:
    """Embedded mode: Airflow's metadata database `airflow` (own role, own database) on the same server,
    as a SQLAlchemy URL. Created on first use; the password is generated and kept with the others."""
    if not settings.database.embedded:
        raise db.DatabaseUnavailable(
            "database.url is set: give Airflow its metadata database with AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"
        )
    start(settings)
    path = _credentials_file(settings)
    stored = json.loads(path.read_text())
    if AIRFLOW_ROLE not in stored:
        stored[AIRFLOW_ROLE] = secrets.token_urlsafe(18)
        path.write_text(json.dumps(stored))
    password = stored[AIRFLOW_ROLE]
    conn = _admin_connect(settings, _pgserver().get_server(_datadir(settings), cleanup_mode=None).get_uri())
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_lock(%s)", (db.lock_key("cryptoflow:bootstrap"),))
            cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (AIRFLOW_ROLE,))
            verb = "ALTER" if cur.fetchone() else "CREATE"
            cur.execute(f'{verb} ROLE "{AIRFLOW_ROLE}" LOGIN PASSWORD %s', (password,))
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (AIRFLOW_ROLE,))
            if not cur.fetchone():
                cur.execute(f'CREATE DATABASE "{AIRFLOW_ROLE}" OWNER "{AIRFLOW_ROLE}"')
    finally:
        conn.close()
    socket_dir = status(settings).socket_dir
    return (
        f"postgresql+psycopg2://{AIRFLOW_ROLE}:{quote(password, safe='')}@localhost/{AIRFLOW_ROLE}"
        f"?host={socket_dir}"
    )


def _with_database(uri: str, name: str) -> str:
    parts = urlsplit(uri)
    return parts._replace(path=f"/{name}").geturl()


def role_url(settings: Settings, role: str) -> str:
    found = status(settings)
    if not found.running:
        raise db.DatabaseUnavailable(
            f"the embedded Postgres is not running (data dir {found.datadir}); start it with `cryptoflow db start`"
        )
    password = quote(role_passwords(settings)[role], safe="")
    return f"postgresql://{role}:{password}@localhost/{settings.database.name}?host={found.socket_dir}"
