"""Gold compared across two databases (a deployment against a build of the same raw from scratch): the
comparison `cryptoflow soak` makes, so the tests and the soak judge "exact" by one rule."""

from __future__ import annotations

from pipelines.runtime import db, schema
from pipelines.soak_report import RTOL, gold_differences

__all__ = ["RTOL", "assert_same_gold", "execute", "small_deployment", "stored_options"]


def execute(settings, sql: str, params=()) -> list[tuple]:
    with db.cursor(settings) as cur:
        cur.execute(sql, params)
        return cur.fetchall() if cur.description else []


def assert_same_gold(late, fresh) -> None:
    """The same facts in two databases: keys, prices and counts exactly, floats to RTOL (volatility comes from
    float running sums since the pair's first candle in the query, so rows built in another pass can differ
    in the last bits)."""
    assert gold_differences(late, fresh) == []


def stored_options(settings) -> dict[str, dict[str, str]]:
    """The storage parameters the database has on the tables catalog.AUTOVACUUM names."""
    with db.cursor(settings) as cur:
        return schema.storage_options(cur)


def small_deployment(settings, seed: int, days: int = 2) -> None:
    """Every source loaded from a calm sandbox (`days` of candles) and transformed into prod."""
    from pipelines import ingest, transform
    from pipelines.cli import sandboxed
    from pipelines.sandbox import SandboxServer

    with SandboxServer(seed=seed, calm=True) as sandbox:
        active = sandboxed(settings, sandbox)
        ingest.ingest_ohlcv(active, days=days)
        ingest.ingest_markets(active)
        ingest.ingest_fear_greed(active)
    transform.transform(settings)
