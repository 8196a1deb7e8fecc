"""Versioned migrations of the schemas the pipeline owns (`raw`, `ops`; dlt's landing tables and SQLMesh's
silver/gold are theirs), recorded in `ops.schema_migrations`.

A migration is a file in pipelines/migrations/ named `<version>_<name>.sql` or `.py` (a module with
`apply(cur)`), applied once, in version order, each in one transaction together with its record (version,
name, SHA-256 of the file, applied_at). An SQL file whose first line is `-- no-transaction` runs outside one
(what Postgres refuses inside a transaction: CREATE INDEX CONCURRENTLY ...); it must then be idempotent.

Every command checks the database against the code (`check`): a database behind it is migrated when
`database.auto_migrate` says so (embedded mode by default), else refused with the command to run; a database
ahead of it (a newer release wrote it) is refused; a recorded migration whose file changed is refused. A
database without `ops.schema_migrations` but with the pipeline's tables was built by v0.1.0 (fd6a1b8), whose
schema is migration 1, written to be idempotent: it is recognised and brought forward in place.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from pipelines.runtime import db

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.(sql|py)$")
NO_TRANSACTION = "-- no-transaction"
LOCK = "cryptoflow:schema"

LEDGER_DDL = """
CREATE SCHEMA IF NOT EXISTS ops;
CREATE TABLE IF NOT EXISTS ops.schema_migrations (
    version    integer PRIMARY KEY,
    name       text        NOT NULL,
    checksum   text        NOT NULL,  -- SHA-256 of the migration's file as applied
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


class SchemaError(db.DatabaseUnavailable):
    """The database's schema does not match this code: a one-line cause and what to do."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    path: Path

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest()

    @property
    def label(self) -> str:
        return f"{self.version:04d}_{self.name}"

    def apply(self, cur: db.Cursor) -> None:
        if self.path.suffix == ".sql":
            cur.execute(self.path.read_text())
            return
        spec = importlib.util.spec_from_file_location(f"cryptoflow_migration_{self.label}", self.path)
        assert spec is not None and spec.loader is not None, self.path
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        cast(Callable[[db.Cursor], None], module.apply)(cur)

    @property
    def transactional(self) -> bool:
        return not (self.path.suffix == ".sql" and self.path.read_text().startswith(NO_TRANSACTION))


def available(folder: Path = MIGRATIONS_DIR) -> list[Migration]:
    """The migrations this code ships, in version order (a gap or a duplicate version is a packaging bug)."""
    found = []
    for path in sorted(folder.iterdir()):
        if match := _FILE.match(path.name):
            found.append(Migration(int(match.group(1)), match.group(2), path))
        elif path.suffix in (".sql", ".py") and path.name != "__init__.py":
            raise SchemaError(f"{path.name}: a migration's file is named <4-digit version>_<name>.sql or .py")
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise SchemaError(f"migrations in {folder} must be numbered 1, 2, 3 ... without gaps: {versions}")
    return found


@dataclass(frozen=True)
class Status:
    applied: dict[int, str]  # version -> checksum recorded
    shipped: list[Migration]
    legacy: bool  # the pipeline's tables exist, the ledger does not: built before versioned migrations

    @property
    def current(self) -> int:
        return max(self.applied, default=0)

    @property
    def latest(self) -> int:
        return self.shipped[-1].version if self.shipped else 0

    @property
    def pending(self) -> list[Migration]:
        return [m for m in self.shipped if m.version not in self.applied]

    def problem(self) -> str | None:
        """Why this code must not use the database (None: it may, once the pending ones are applied)."""
        if self.current > self.latest:
            return (
                f"the database's schema is at version {self.current}, newer than this cryptoflow knows "
                f"({self.latest}): a newer release migrated it; run that release (or restore the backup "
                "taken before the upgrade)"
            )
        for m in self.shipped:
            if m.version in self.applied and self.applied[m.version] != m.checksum:
                return (
                    f"migration {m.label} differs from the one applied to this database (checksum): applied "
                    "migrations are never edited; restore the file, or add a new migration"
                )
        return None


def status(cur: db.Cursor, folder: Path = MIGRATIONS_DIR) -> Status:
    cur.execute("SELECT to_regclass('ops.schema_migrations') IS NOT NULL, to_regclass('ops.pipeline_runs')")
    has_ledger, old_table = db.one(cur)
    applied: dict[int, str] = {}
    if has_ledger:
        cur.execute("SELECT version, checksum FROM ops.schema_migrations")
        applied = {int(v): str(c) for v, c in cur.fetchall()}
    return Status(applied, available(folder), legacy=not has_ledger and old_table is not None)


def migrate(cur: db.Cursor, folder: Path = MIGRATIONS_DIR) -> list[str]:
    """Apply every pending migration, each in its own transaction with its record; returns what was done,
    one line each. `cur`'s connection is in autocommit mode; the caller holds the schema lock."""
    state = status(cur, folder)
    if problem := state.problem():
        raise SchemaError(problem)
    done = []
    if state.legacy:
        done.append(
            "recognised a database built before versioned migrations (v0.1.0): its schema is migration 1"
        )
    if state.pending:
        cur.execute(LEDGER_DDL)
    for migration in state.pending:
        if migration.transactional:
            cur.execute("BEGIN")
        try:
            migration.apply(cur)
            cur.execute(
                "INSERT INTO ops.schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                (migration.version, migration.name, migration.checksum),
            )
        except BaseException:
            if migration.transactional:
                cur.execute("ROLLBACK")
            raise
        if migration.transactional:
            cur.execute("COMMIT")
        log.info("applied migration", extra={"migration": migration.label})
        done.append(f"applied migration {migration.label}")
    return done


def check(cur: db.Cursor, auto_migrate: bool, folder: Path = MIGRATIONS_DIR) -> list[str]:
    """What every command does first: nothing when the database is current; migrate it when it is behind and
    `auto_migrate` (or it is new: no table of ours, nothing to lose); else SchemaError naming the command."""
    state = status(cur, folder)
    if problem := state.problem():
        raise SchemaError(problem)
    if not state.pending:
        return []
    fresh = not state.applied and not state.legacy
    if auto_migrate or fresh:
        return migrate(cur, folder)
    at = f"at version {state.current}" if state.applied else "from before versioned migrations (v0.1.0)"
    raise SchemaError(
        f"the database's schema is {at}; this cryptoflow needs version {state.latest}: back it up, then "
        "run `cryptoflow db migrate` (or set database.auto_migrate: true)"
    )
