"""The Streamlit dashboard as a process: its command line, its environment, serving it, and timing its queries.

`cryptoflow dashboard` and `cryptoflow up` start `command(...)` with `env(...)`; `measure_queries` runs every
query the pages run (uncached) for the benchmark.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

from pipelines.settings import Settings

PROJECT_ROOT = Path(__file__).resolve().parent.parent
APP_DIR = PROJECT_ROOT / "app"
ENTRY_POINT = APP_DIR / "streamlit_app.py"
BENCH_SYMBOL = "BTCUSDT"
BENCH_DAYS = 90
BENCH_REPEATS = 3


def command(
    settings: Settings, port: int | None = None, headless: bool = True, host: str = "127.0.0.1"
) -> list[str]:
    """argv of `streamlit run` for the dashboard on host:port (default 127.0.0.1:services.dashboard_port;
    0.0.0.0 in a container)."""
    port = settings.services.dashboard_port if port is None else port
    return [
        str(Path(sys.executable).parent / "streamlit"),
        "run",
        str(ENTRY_POINT),
        "--server.port",
        str(port),
        "--server.headless",
        "true" if headless else "false",
        "--browser.gatherUsageStats",
        "false",
        "--server.address",
        host,
    ]


def env(settings: Settings, config_file: str | Path) -> dict[str, str]:
    """What the app process needs on top of the caller's environment: the config it reads, no usage stats."""
    return {
        "CRYPTOFLOW_CONFIG": str(Path(config_file).resolve()),
        "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false",
        "STREAMLIT_SERVER_HEADLESS": "true",
        "STREAMLIT_SERVER_FILE_WATCHER_TYPE": "none",  # served, not developed: no polling of the source tree
        # the app imports `pipelines` (installed in the venv; the project root also works from a checkout)
        "PYTHONPATH": os.pathsep.join(p for p in (str(PROJECT_ROOT), os.environ.get("PYTHONPATH", "")) if p),
    }


def serve(
    settings: Settings, config_file: str | Path, port: int | None = None, host: str = "127.0.0.1"
) -> int:
    """Become the dashboard server (exec): signals reach Streamlit itself, so a SIGTERM to this pid (from
    `cryptoflow down`, a container runtime or a terminal) can never leave an orphan holding the port."""
    argv = command(settings, port, host=host)
    print(f"dashboard: http://{host}:{argv[argv.index('--server.port') + 1]}", file=sys.stderr, flush=True)
    os.chdir(APP_DIR)
    os.execve(argv[0], argv, {**os.environ, **env(settings, config_file)})
    return 0  # not reached


def _queries_module() -> ModuleType:
    """app/dashboard_queries.py (app/ is not a package, on purpose)."""
    if "dashboard_queries" in sys.modules:
        return sys.modules["dashboard_queries"]
    spec = importlib.util.spec_from_file_location("dashboard_queries", APP_DIR / "dashboard_queries.py")
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

    def raw(name: str) -> Callable:
        return getattr(
            q, name
        ).__wrapped__  # the function under st.cache_data: measure the query, not the cache

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
