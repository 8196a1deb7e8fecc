"""Gold compared across two databases (a deployment against a build of the same raw from scratch)."""

from __future__ import annotations

import contextlib
import math

from pipelines.runtime import db

RTOL = 1e-9

FACTS = (
    "SELECT symbol, open_time, close, change_1h, change_24h, change_7d, ma_7d, ma_30d, vwap_24h, "
    "volatility_24h, volatility_7d, volatility_30d, candles_in_7d, returns_in_30d, fng_value "
    "FROM gold.fct_prices ORDER BY symbol, open_time"
)
DAILY = "SELECT symbol, day, close, candles, ma_7d, ma_30d FROM gold.fct_daily_summary ORDER BY 1, 2"


def execute(settings, sql: str, params=()) -> list[tuple]:
    with contextlib.closing(db.connect(settings)) as conn, conn, conn.cursor() as cur:
        cur.execute(sql, params)
        return cur.fetchall() if cur.description else []


def assert_same_gold(late, fresh) -> None:
    """The same facts in two databases: keys, prices and counts exactly, floats to RTOL (volatility comes from
    float running sums since the pair's first candle in the query, so rows built in another pass can differ
    in the last bits)."""
    for sql in (FACTS, DAILY):
        a, b = execute(late, sql), execute(fresh, sql)
        assert len(a) == len(b) > 0
        for x, y in zip(a, b, strict=True):
            for u, v in zip(x, y, strict=True):
                same = (
                    math.isclose(u, v, rel_tol=RTOL)
                    if isinstance(u, float) and isinstance(v, float)
                    else u == v
                )
                assert same, (x, y)
