"""Embedded (pgserver) or configured Postgres: roles, schemas, connections, advisory locks."""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import json
import logging
import os
import secrets
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import quote, urlsplit

import psycopg2
import psycopg2.extensions

from pipelines import redaction
from pipelines.settings import Settings

log = logging.getLogger(__name__)

EMBEDDED_WORK_MEM = "64MB"
EMBEDDED_SETTINGS = {"max_wal_size": "4GB", "checkpoint_timeout": "15min", "wal_compression": "on"}


Cursor = psycopg2.extensions.cursor


def one(cur: Cursor) -> tuple[Any, ...]:
    """The row a statement always returns (an aggregate, a function's result, RETURNING of an upsert)."""
    row = cur.fetchone()
    if row is None:  # a broken invariant, never a user's error
        raise RuntimeError(f"no row returned by: {cur.query!r}")
    return row


class DatabaseUnavailable(Exception):
    """Postgres cannot be reached; the message says how to fix it."""


class LockBusy(Exception):
    """Another run holds the advisory lock."""


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


def _role_passwords(settings: Settings) -> dict[str, str]:
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
PG_HBA = """# written by cryptoflow (pipelines/runtime/db.py): every connection needs a password
local   all  all                scram-sha-256
host    all  all  127.0.0.1/32  scram-sha-256
host    all  all  ::1/128       scram-sha-256
"""


def _admin_connect(settings: Settings, admin_uri: str) -> psycopg2.extensions.connection:
    """The embedded server's superuser, with its password (a first start still trusts, and takes it)."""
    conn = psycopg2.connect(
        admin_uri, password=_role_passwords(settings)[SUPERUSER], options=session_options(settings)
    )
    conn.autocommit = True
    return conn


def _require_passwords(cur: Cursor, settings: Settings) -> None:
    """Give the superuser its password, then make pg_hba.conf ask every connection for one."""
    cur.execute("ALTER ROLE CURRENT_USER PASSWORD %s", (_role_passwords(settings)[SUPERUSER],))
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
        raise DatabaseUnavailable(
            "the embedded Postgres (pgserver) is not installed: it has no build for this platform; "
            "set database.url (or CRYPTOFLOW__DATABASE__URL) to a PostgreSQL server"
        ) from None
    return pgserver


def server_program(name: str) -> Path:
    """A program of the embedded server's PostgreSQL (pg_dump, psql ...), the server's own version."""
    return Path(str(_pgserver().__file__)).parent / "pginstall" / "bin" / name


def embedded_status(settings: Settings) -> EmbeddedStatus:
    PostmasterInfo = _pgserver().utils.PostmasterInfo

    datadir = _datadir(settings)
    info = PostmasterInfo.read_from_pgdata(datadir) if datadir.exists() else None
    if info is None or not info.is_running():
        return EmbeddedStatus(False, None, datadir, None)
    return EmbeddedStatus(True, info.pid, datadir, str(info.socket_dir))


def start_embedded(settings: Settings, *, check_schema: bool = True) -> EmbeddedStatus:
    """Start (or find running) the private Postgres; it stays up after this process exits. check_schema
    False: leave the schema as it is (`cryptoflow db migrate` migrates it itself, and says what it did)."""
    pgserver = _pgserver()

    datadir = _datadir(settings)
    datadir.mkdir(parents=True, exist_ok=True)
    server = pgserver.get_server(datadir, cleanup_mode=None)
    _bootstrap(server.get_uri(), settings, check_schema)
    return embedded_status(settings)


def configure_embedded(settings: Settings, options: dict[str, str]) -> None:
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


def stop_embedded(settings: Settings) -> bool:
    """Stop the embedded server; returns False when it was not running."""
    pg_ctl = _pgserver().pg_ctl

    status = embedded_status(settings)
    if not status.running:
        return False
    user = "pgserver" if os.geteuid() == 0 else None
    pg_ctl(["-w", "stop", "-m", "fast"], pgdata=status.datadir, user=user)
    # pgserver keeps a handle per data folder and hands it out again as a running server: forget it, so a
    # start in this process (a restart) starts the server again
    instances = _pgserver().PostgresServer._instances
    for folder in [f for f in instances if Path(f).resolve() == status.datadir.resolve()]:
        atexit.unregister(instances.pop(folder)._cleanup)  # its exit hook would look it up again
    return True


def _bootstrap(admin_uri: str, settings: Settings, check_schema: bool = True) -> None:
    """Create the database, the writer and the read-only reader role (idempotent; serialised across
    processes, since concurrent DDL on roles fails with 'tuple concurrently updated')."""
    db = settings.database
    passwords = _role_passwords(settings)
    conn = _admin_connect(settings, admin_uri)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_lock(%s)", (lock_key("cryptoflow:bootstrap"),))
            # Bulk builds write GBs of WAL: fewer forced checkpoints (reloadable settings, no restart).
            for name, value in EMBEDDED_SETTINGS.items():
                cur.execute(f"ALTER SYSTEM SET {name} = %s", (value,))
            cur.execute("SELECT pg_reload_conf()")
            for role, extra in ((db.writer_role, "CREATEDB"), (db.reader_role, "")):
                cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,))
                if not cur.fetchone():
                    cur.execute(f'CREATE ROLE "{role}" LOGIN {extra} PASSWORD %s', (passwords[role],))
                    # window sorts and hash joins over millions of rows stay in memory instead of spilling
                    cur.execute(f"ALTER ROLE \"{role}\" SET work_mem = '{EMBEDDED_WORK_MEM}'")
                elif role == db.writer_role and settings.secrets.database_password:
                    cur.execute(f'ALTER ROLE "{role}" PASSWORD %s', (passwords[role],))
            # the reader writes nothing, not even a temporary table (as docker/postgres-init.sh sets it)
            cur.execute(f'ALTER ROLE "{db.reader_role}" SET default_transaction_read_only = on')
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (db.name,))
            if not cur.fetchone():
                cur.execute(f'CREATE DATABASE "{db.name}" OWNER "{db.writer_role}"')
            conn2 = _admin_connect(settings, _with_database(admin_uri, db.name))
            with conn2, conn2.cursor() as cur2:
                cur2.execute(f'GRANT ALL ON SCHEMA public TO "{db.writer_role}"')
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
        raise DatabaseUnavailable(
            "database.url is set: give Airflow its metadata database with AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"
        )
    start_embedded(settings)
    path = _credentials_file(settings)
    stored = json.loads(path.read_text())
    if AIRFLOW_ROLE not in stored:
        stored[AIRFLOW_ROLE] = secrets.token_urlsafe(18)
        path.write_text(json.dumps(stored))
    password = stored[AIRFLOW_ROLE]
    conn = _admin_connect(settings, _pgserver().get_server(_datadir(settings), cleanup_mode=None).get_uri())
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_lock(%s)", (lock_key("cryptoflow:bootstrap"),))
            cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (AIRFLOW_ROLE,))
            verb = "ALTER" if cur.fetchone() else "CREATE"
            cur.execute(f'{verb} ROLE "{AIRFLOW_ROLE}" LOGIN PASSWORD %s', (password,))
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (AIRFLOW_ROLE,))
            if not cur.fetchone():
                cur.execute(f'CREATE DATABASE "{AIRFLOW_ROLE}" OWNER "{AIRFLOW_ROLE}"')
    finally:
        conn.close()
    socket_dir = embedded_status(settings).socket_dir
    return (
        f"postgresql+psycopg2://{AIRFLOW_ROLE}:{quote(password, safe='')}@localhost/{AIRFLOW_ROLE}"
        f"?host={socket_dir}"
    )


def _with_database(uri: str, name: str) -> str:
    parts = urlsplit(uri)
    return parts._replace(path=f"/{name}").geturl()


def writer_url(settings: Settings) -> str:
    """The pipeline's connection URL (embedded: writer role over the unix socket)."""
    if not settings.database.embedded:
        url = settings.database.url
        if (
            settings.secrets.database_password
            and "@" in url
            and ":" not in urlsplit(url).netloc.split("@")[0]
        ):
            user, rest = url.split("://", 1)[1].split("@", 1)
            url = f"postgresql://{user}:{quote(settings.secrets.database_password, safe='')}@{rest}"
        return url
    return _embedded_url(settings, settings.database.writer_role)


def reader_url(settings: Settings) -> str:
    """Read-only URL for the dashboard and the metrics: always database.reader_role, never the writer. On a
    configured server: database.url's host, port, database and options, with the reader role and its
    password from CRYPTOFLOW_READER_PASSWORD (none given: libpq's own, e.g. ~/.pgpass)."""
    if settings.database.embedded:
        return _embedded_url(settings, settings.database.reader_role)
    parts = urlsplit(settings.database.url)
    host = parts.netloc.rsplit("@", 1)[-1]
    user = quote(settings.database.reader_role, safe="")
    if settings.secrets.reader_password:
        user += ":" + quote(settings.secrets.reader_password, safe="")
    query = "&".join(p for p in parts.query.split("&") if p and not p.lower().startswith("password="))
    return parts._replace(scheme="postgresql", netloc=f"{user}@{host}", query=query).geturl()


def _embedded_url(settings: Settings, role: str) -> str:
    status = embedded_status(settings)
    if not status.running:
        raise DatabaseUnavailable(
            f"the embedded Postgres is not running (data dir {status.datadir}); start it with `cryptoflow db start`"
        )
    password = quote(_role_passwords(settings)[role], safe="")
    return f"postgresql://{role}:{password}@localhost/{settings.database.name}?host={status.socket_dir}"


def redact(url: str) -> str:
    """A URL (or any text) safe to print in logs: passwords, in either form, replaced by ***."""
    return redaction.redact(url)


def session_options(settings: Settings) -> str:
    """libpq `options` bounding every wait of a session: statement_timeout and lock_timeout (advisory
    locks included) from database.statement_timeout_s / lock_timeout_s."""
    db = settings.database
    return (
        f"-c statement_timeout={int(db.statement_timeout_s * 1000)} "
        f"-c lock_timeout={int(db.lock_timeout_s * 1000)}"
    )


def connect(settings: Settings, url: str | None = None) -> psycopg2.extensions.connection:
    url = url or writer_url(settings)
    try:
        return psycopg2.connect(
            url, connect_timeout=10, application_name="cryptoflow", options=session_options(settings)
        )
    except psycopg2.OperationalError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        hint = (
            "start it with `cryptoflow db start`"
            if settings.database.embedded
            else "check database.url / CRYPTOFLOW__DATABASE__URL and that the server is up"
        )
        raise DatabaseUnavailable(f"cannot connect to Postgres at {redact(url)}: {first}; {hint}") from None


def ensure_database(settings: Settings) -> None:
    """Make the database usable: start the embedded one if needed, create schemas and tables."""
    if settings.database.embedded:
        start_embedded(settings)
    else:
        from pipelines.runtime import schema

        schema.ensure_schema(settings)


def lock_key(name: str) -> int:
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


@contextlib.contextmanager
def advisory_lock(
    settings: Settings,
    name: str,
    wait_s: float | None = None,
    *,
    shared: bool = False,
    also: Iterable[str] = (),
) -> Iterator[None]:
    """Serialise runs across processes; waits up to wait_s, then raises LockBusy with a clear message.

    `shared`: `name` is taken in shared mode, so holders of the shared lock run side by side and only an
    exclusive holder keeps them out (and they it). A run waiting for `name` exclusively goes first: it holds
    `<name>:next` while it waits, and no new shared holder starts while that is held (else overlapping shared
    runs could keep it out for hours). `also`: more locks, exclusive, taken in sorted order on the same
    session after `name` (two holders of overlapping sets never wait for each other in a circle). All of them,
    or none: the session's locks end with it. Waits poll (every 0.5 s), so Ctrl-C stops a waiting run."""
    wait_s = settings.database.lock_wait_s if wait_s is None else wait_s
    conn = connect(settings)
    conn.autocommit = True
    deadline = time.monotonic() + wait_s

    def take(cur: Cursor, lock: str, take_shared: bool) -> None:
        key, next_key = lock_key(lock), lock_key(f"{lock}:next")
        while True:
            if take_shared:  # only while no exclusive run waits: take its turn-lock for a moment
                cur.execute("SELECT pg_try_advisory_lock(%s)", (next_key,))
                if one(cur)[0]:
                    cur.execute(
                        "SELECT pg_try_advisory_lock_shared(%s), pg_advisory_unlock(%s)", (key, next_key)
                    )
                    if one(cur)[0]:
                        return
            else:
                if lock == name:  # first in line among exclusive waiters (taken again: it stacks, harmless)
                    cur.execute("SELECT pg_try_advisory_lock(%s)", (next_key,))
                    cur.fetchone()
                cur.execute("SELECT pg_try_advisory_lock(%s)", (key,))
                if one(cur)[0]:
                    return
            if time.monotonic() >= deadline:
                cur.execute(
                    "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted "
                    "AND (classid::bigint << 32 | objid::bigint) = %s AND pid <> pg_backend_pid()",
                    (key,),
                )
                holder = cur.fetchone()
                raise LockBusy(
                    f"another '{lock}' run is in progress"
                    f"{f' (Postgres backend pid {holder[0]})' if holder else ''}; "
                    "it was left alone. Wait for it to finish, or set database.lock_wait_s to wait."
                )
            time.sleep(0.5)

    try:
        with conn.cursor() as cur:
            take(cur, name, shared)
            for other in sorted(set(also)):
                take(cur, other, False)
        yield
    finally:
        conn.close()  # closing the session releases the locks even if the unlock is never reached


def lock_is_free(settings: Settings, name: str) -> bool:
    """Whether nobody holds the advisory lock `name` right now (taken and given back at once to tell)."""
    with contextlib.closing(connect(settings)) as conn, conn.cursor() as cur:
        cur.execute("SELECT pg_try_advisory_lock(%s)", (lock_key(name),))
        free = bool(one(cur)[0])
        if free:
            cur.execute("SELECT pg_advisory_unlock(%s)", (lock_key(name),))
        conn.rollback()
    return free
