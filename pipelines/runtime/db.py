"""Postgres as the pipeline uses it, embedded (runtime/embedded.py) or configured: URLs, connections with their
bounds, advisory locks, and the errors a user can act on."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import time
from collections.abc import Iterable, Iterator
from typing import Any
from urllib.parse import quote, urlsplit

import psycopg2
import psycopg2.extensions

from pipelines import redaction
from pipelines.settings import Settings

log = logging.getLogger(__name__)


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
    from pipelines.runtime import embedded

    return embedded.role_url(settings, settings.database.writer_role)


def reader_url(settings: Settings) -> str:
    """Read-only URL for the dashboard and the metrics: always database.reader_role, never the writer. On a
    configured server: database.url's host, port, database and options, with the reader role and its
    password from CRYPTOFLOW_READER_PASSWORD (none given: libpq's own, e.g. ~/.pgpass)."""
    if settings.database.embedded:
        from pipelines.runtime import embedded

        return embedded.role_url(settings, settings.database.reader_role)
    parts = urlsplit(settings.database.url)
    host = parts.netloc.rsplit("@", 1)[-1]
    user = quote(settings.database.reader_role, safe="")
    if settings.secrets.reader_password:
        user += ":" + quote(settings.secrets.reader_password, safe="")
    query = "&".join(p for p in parts.query.split("&") if p and not p.lower().startswith("password="))
    return parts._replace(scheme="postgresql", netloc=f"{user}@{host}", query=query).geturl()


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


@contextlib.contextmanager
def cursor(settings: Settings, url: str | None = None) -> Iterator[Cursor]:
    """A cursor on a connection of its own, in one transaction: committed when the block ends, rolled back
    if it raises; the connection is closed either way."""
    with contextlib.closing(connect(settings, url)) as conn, conn, conn.cursor() as cur:
        yield cur


def ensure_database(settings: Settings) -> None:
    """Make the database usable: start the embedded one if needed, create schemas and tables."""
    if settings.database.embedded:
        from pipelines.runtime import embedded

        embedded.start(settings)
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
