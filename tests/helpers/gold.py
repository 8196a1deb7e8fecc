"""Gold compared across two databases (a deployment against a build of the same raw from scratch): the
comparison `cryptoflow soak` makes, so the tests and the soak judge "exact" by one rule."""

from __future__ import annotations

import contextlib

from pipelines.runtime import db, schema
from pipelines.soak_report import RTOL, gold_differences

__all__ = ["RTOL", "assert_same_gold", "execute", "stored_options"]


def execute(settings, sql: str, params=()) -> list[tuple]:
    with contextlib.closing(db.connect(settings)) as conn, conn, conn.cursor() as cur:
        cur.execute(sql, params)
        return cur.fetchall() if cur.description else []


def assert_same_gold(late, fresh) -> None:
    """The same facts in two databases: keys, prices and counts exactly, floats to RTOL (volatility comes from
    float running sums since the pair's first candle in the query, so rows built in another pass can differ
    in the last bits)."""
    assert gold_differences(late, fresh) == []


def stored_options(settings) -> dict[str, dict[str, str]]:
    """The storage parameters the database has on the tables catalog.AUTOVACUUM names."""
    with contextlib.closing(db.connect(settings)) as conn, conn.cursor() as cur:
        return schema.storage_options(cur)
