"""Every query the dashboard's pages run, timed uncached on representative parameters (for `cryptoflow bench`)."""

from __future__ import annotations

import datetime as dt
import importlib.util
import sys
import time
from collections.abc import Callable
from types import ModuleType
from typing import Any

from pipelines.runtime.dashboard_server import APP_DIR
from pipelines.settings import Settings

BENCH_SYMBOL = "BTCUSDT"
BENCH_DAYS = 90
BENCH_REPEATS = 3


def _queries_module() -> ModuleType:
    """app/dashboard_queries.py (app/ is not a package, on purpose)."""
    if "dashboard_queries" in sys.modules:
        return sys.modules["dashboard_queries"]
    spec = importlib.util.spec_from_file_location("dashboard_queries", APP_DIR / "dashboard_queries.py")
    assert spec is not None and spec.loader is not None, f"{APP_DIR} has no dashboard_queries.py"
    module = importlib.util.module_from_spec(spec)
    sys.modules["dashboard_queries"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _best_ms(call: Callable[[], object], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        best = min(best, (time.perf_counter() - started) * 1000)
    return round(best, 1)


def measure_queries(
    settings: Settings, repeats: int = BENCH_REPEATS, schema: str = "gold"
) -> dict[str, float]:
    """Best-of-`repeats` milliseconds of every query the pages run, uncached, with representative
    parameters: BTCUSDT over its last 90 days hourly and daily, a year of sentiment, 30 days of runs."""
    import logging

    logging.getLogger("streamlit").setLevel(logging.ERROR)  # "no runtime" warnings outside `streamlit run`
    q = _queries_module()
    url = q.reader_url(settings)

    def raw(name: str) -> Callable[..., Any]:
        wrapped: Callable[..., Any] = getattr(q, name).__wrapped__  # under st.cache_data: the query, no cache
        return wrapped

    symbols = raw("load_symbols")(url, schema).set_index("symbol")
    last = symbols.loc[BENCH_SYMBOL, "last_day"] if BENCH_SYMBOL in symbols.index else dt.date.today()
    start = last - dt.timedelta(days=BENCH_DAYS - 1)
    top10 = tuple(raw("load_top10")(url, schema)["symbol"].dropna())
    calls: dict[str, Callable[[], object]] = {
        "environments": lambda: raw("load_environments")(url),
        "table_rows": lambda: raw("load_table_rows")(url, schema, ("fct_prices", "fct_daily_summary")),
        "sandbox_runs": lambda: raw("load_sandbox_runs")(url),
        "top10": lambda: raw("load_top10")(url, schema),
        "sparklines": lambda: raw("load_sparklines")(url, schema, top10),
        "market_totals": lambda: raw("load_market_totals")(url, schema),
        "symbols": lambda: raw("load_symbols")(url, schema),
        "prices_hourly_90d": lambda: raw("load_prices_hourly")(url, schema, BENCH_SYMBOL, start, last),
        "prices_daily_90d": lambda: raw("load_prices_daily")(url, schema, BENCH_SYMBOL, start, last),
        "prices_daily_3y": lambda: raw("load_prices_daily")(
            url, schema, BENCH_SYMBOL, last - dt.timedelta(days=1094), last
        ),
        "sentiment_bounds": lambda: raw("load_sentiment_bounds")(url, schema),
        "sentiment_365d": lambda: raw("load_sentiment")(url, schema, last - dt.timedelta(days=364), last),
        "runs_30d": lambda: raw("load_runs")(url, 30),
        "run_summary_30d": lambda: raw("load_run_summary")(url, 30),
        "freshness": lambda: raw("load_freshness")(url, schema, q.freshness_thresholds(settings)),
        "check_results": lambda: raw("load_check_results")(url),
        "dead_letter_runs": lambda: raw("load_dead_letter_runs")(url),
        "gaps": lambda: raw("load_gaps")(url),
        "gap_counts": lambda: raw("load_gap_counts")(url),
        "pairs_not_trading": lambda: raw("load_pairs_not_trading")(url),
        "revisions": lambda: raw("load_revisions")(url),
    }
    return {name: _best_ms(call, repeats) for name, call in calls.items()}
