"""Turn the exceptions a user can act on into one clear line (dlt wraps ours in its own)."""

from __future__ import annotations

from pipelines.http import ApiError
from pipelines.runtime.db import DatabaseUnavailable, LockBusy
from pipelines.settings import ConfigError


class LakeUnavailable(Exception):
    """The bronze lake could not be read or written (an S3 endpoint gone, a bucket or folder missing)."""


class UniverseError(Exception):
    """A requested symbol is not a TRADING Binance pair (or the universe came out empty)."""


USER_ERRORS = (ApiError, DatabaseUnavailable, LakeUnavailable, LockBusy, ConfigError, ValueError)


def root_cause(exc: BaseException) -> BaseException:
    """The innermost exception of ours behind dlt's PipelineStepFailed / ResourceExtractionError wrappers."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, KeyboardInterrupt):  # a Ctrl-C or a task timeout, wrapped by dlt
            return current
        if isinstance(current, USER_ERRORS) and type(current).__module__.startswith("pipelines"):
            return current
        current = getattr(current, "exception", None) or current.__cause__ or current.__context__
    return exc


def user_facing(exc: BaseException) -> str | None:
    from pipelines.runtime.services import ServiceError
    from pipelines.transform import TransformError

    cause = root_cause(exc)
    if isinstance(cause, (*USER_ERRORS, UniverseError, TransformError, ServiceError)) and type(
        cause
    ).__module__.startswith("pipelines"):
        return str(cause)
    if isinstance(cause, ValueError) and "invalid symbol" in str(cause):
        return str(cause)
    return _database_timeout(cause)


def _database_timeout(exc: BaseException) -> str | None:
    """A statement or lock wait cut short by the session's bounds (db.session_options)."""
    import psycopg2.errors

    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, psycopg2.errors.LockNotAvailable):
            return (
                "the database kept a lock this run needs for longer than database.lock_timeout_s; nothing "
                "half-written was kept. Another session holds it: find it in pg_locks / pg_stat_activity, "
                "or raise database.lock_timeout_s"
            )
        if isinstance(current, psycopg2.errors.QueryCanceled):
            return (
                "a database statement ran longer than database.statement_timeout_s and was cancelled; "
                "nothing half-written was kept. Raise database.statement_timeout_s if the data grew"
            )
        current = getattr(current, "exception", None) or current.__cause__ or current.__context__
    return None
