"""The `cryptoflow` command line: every command, option and value check (pipelines/cli.py runs them)."""

from __future__ import annotations

import argparse
import datetime as dt
import os
from pathlib import Path
from typing import Any

from pipelines.settings import ConfigError

LOG_FORMATS = ("auto", "text", "json")

DESCRIPTION = (
    "cryptoflow: Binance klines, CoinGecko markets and the Fear & Greed index into a bronze Parquet lake "
    "and Postgres, shaped by SQLMesh into gold, checked by Soda, shown by a Streamlit dashboard."
)


def _date(value: str) -> dt.datetime:
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a date; use YYYY-MM-DD or YYYY-MM-DDTHH:MM"
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def _days(value: str) -> int:
    try:
        days = int(value)
    except ValueError:
        days = 0
    if days < 1:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of days (1 or more)")
    return days


def parser() -> argparse.ArgumentParser:
    """Every command and option of `cryptoflow` (pipelines/cli.py runs them)."""
    common = argparse.ArgumentParser(add_help=False)
    # SUPPRESS: `cryptoflow --config F db start` and `cryptoflow db start --config F` both work.
    common.add_argument(
        "--config",
        metavar="FILE",
        default=argparse.SUPPRESS,
        help="configuration file (default: ./config.yaml)",
    )
    common.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default=argparse.SUPPRESS,
        help="auto (default; or CRYPTOFLOW_LOG_FORMAT): short text on a terminal, JSON lines otherwise",
    )
    common.add_argument(
        "--log-file",
        metavar="FILE",
        default=argparse.SUPPRESS,
        help="also write every log record there as JSON lines (demo: .cryptoflow/logs/demo.log by default)",
    )
    sandboxed = argparse.ArgumentParser(add_help=False)
    sandboxed.add_argument(
        "--sandbox",
        action="store_true",
        help="start the offline API sandbox in-process and use it (synthetic data)",
    )

    top = argparse.ArgumentParser(prog="cryptoflow", description=DESCRIPTION, parents=[common])
    sub = top.add_subparsers(dest="command", required=True)

    p = sub.add_parser("db", parents=[common], help="the embedded Postgres")
    p.add_argument("action", choices=["start", "stop", "status", "url", "migrate"])
    p.add_argument("--reader", action="store_true", help="with url: the read-only dashboard role")

    p = sub.add_parser("sandbox", parents=[common], help="serve the three APIs offline (synthetic markets)")
    p.add_argument("--port", type=int, default=None)
    p.add_argument("--seed", type=int, default=None, help="market seed (default: sandbox.seed)")
    p.add_argument(
        "--calm",
        action="store_true",
        default=None,
        help="every pair trades forever, no outages or revisions (default: sandbox.calm)",
    )

    p = sub.add_parser("ingest", parents=[common, sandboxed], help="incremental ingest")
    p.add_argument("what", nargs="?", default="all", choices=["ohlcv", "markets", "fear-greed", "all"])

    p = sub.add_parser("backfill", parents=[common, sandboxed], help="load a historical window of klines")
    window = p.add_mutually_exclusive_group(required=True)
    window.add_argument("--days", type=_days, help="the last N days up to the last closed hour")
    window.add_argument("--since", type=_date, help="from this UTC date (YYYY-MM-DD), included")
    p.add_argument(
        "--until",
        type=_date,
        help="up to this UTC time, excluded: [since, until), so 10 days are 240 hourly candles "
        "(default: through the last closed hour)",
    )
    p.add_argument("--symbols", nargs="+", metavar="S", help="only these symbols (default: the universe)")
    p.add_argument(
        "--source",
        choices=["auto", "archive", "rest"],
        default=None,
        help="auto: Binance's public kline archive, the REST API for what it lacks; archive: the archive "
        "only; rest: the API only (default: backfill.source, auto)",
    )
    p.add_argument(
        "--shared",
        action="store_true",
        help="run beside backfills of other --symbols (each a batch, as Airflow's workers run them): they "
        "share the exchange's request weight and take the raw load one at a time; a run of overlapping "
        "symbols waits (default: the source to itself)",
    )

    p = sub.add_parser(
        "verify",
        parents=[common, sandboxed],
        help="re-fetch a window and report every candle that differs from raw ([since, until))",
    )
    p.add_argument("--since", type=_date, required=True, help="from this UTC date (YYYY-MM-DD), included")
    p.add_argument(
        "--until", type=_date, help="up to this UTC time, excluded (default: the last closed hour)"
    )
    p.add_argument("--symbols", nargs="+", metavar="S", help="only these symbols (default: the universe)")
    p.add_argument(
        "--apply",
        action="store_true",
        help="restate what differs in raw and bronze (recorded in ops.revisions) and the affected gold",
    )

    sub.add_parser("run", parents=[common, sandboxed], help="ingest all sources, transform, check")

    p = sub.add_parser("check", parents=[common], help="Soda data-quality scans; exits 1 on a failed check")
    p.add_argument(
        "--layer", choices=["raw", "silver", "gold"], action="append", help="only this layer (repeatable)"
    )

    p = sub.add_parser("transform", parents=[common], help="SQLMesh plan (auto-applied) and run")
    p.add_argument("--env", default="prod", help="SQLMesh environment (default: prod; e.g. dev)")

    sub.add_parser(
        "up", parents=[common], help="start the stack: embedded Postgres, Airflow, metrics (and sandbox)"
    )
    sub.add_parser("down", parents=[common], help="stop what `cryptoflow up` started")
    p = sub.add_parser("dashboard", parents=[common], help="the Streamlit dashboard (read-only role)")
    p.add_argument("--port", type=int, default=None, help="default: services.dashboard_port")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (0.0.0.0 in a container)")
    p = sub.add_parser(
        "airflow",
        parents=[common],
        help="the airflow CLI with the stack's environment, e.g. `cryptoflow airflow dags list`",
    )
    p.add_argument("args", nargs=argparse.REMAINDER, help="arguments for `airflow`")

    p = sub.add_parser("metrics", parents=[common], help="serve Prometheus metrics (ops tables, freshness)")
    p.add_argument("--port", type=int, default=None, help="default: services.metrics_port")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (0.0.0.0 in a container)")

    p = sub.add_parser("dlq", parents=[common], help="the dead letter queue")
    p.add_argument("action", choices=["list", "replay"])
    p.add_argument("--id", type=int, nargs="+", dest="ids", help="replay only these ids")
    p.add_argument("--limit", type=int, default=50)

    p = sub.add_parser(
        "demo", parents=[common], help="start the db and backfill the horizon from the sandbox"
    )
    p.add_argument("--days", type=int, default=None, help="override backfill.days")

    p = sub.add_parser("bench", parents=[common], help="measure backfill, raw load vs COPY, incremental run")
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    p.add_argument("--symbols", type=int, default=50)
    p.add_argument("--days", type=int, default=1095)
    p.add_argument(
        "--stack",
        action="store_true",
        help="also the backfill through Airflow on the native compose stack, 1 and 2 Celery workers "
        "(`make tools` installs its servers)",
    )

    sub.add_parser("digest", parents=[common], help="email the last 24 h summary to alerts.email_to")
    p = sub.add_parser(
        "soak",
        parents=[common],
        help="time-lapse: the hourly cycle once per simulated hour on the sandbox clock, with faults and maintenance",
    )
    p.add_argument("--days", type=int, default=2, help="simulated days (24 cycles each; default 2)")
    p.add_argument("--pairs", type=int, default=3, help="tracked pairs (1-5; default 3)")
    p.add_argument("--seed", type=int, default=7, help="the market's and the fault schedule's seed")
    p.add_argument("--json", metavar="FILE", help="also write the report to FILE")
    sub.add_parser(
        "maintain",
        parents=[common],
        help="expire what grows forever (ops ledgers, dlt packages, SQLMesh's and Airflow's old state) by retention.*",
    )

    p = sub.add_parser("docs", parents=[common], help="write the model documentation site (offline HTML)")
    p.add_argument("--out", metavar="DIR", help="output folder (default: docs/site)")
    return top


def log_options(args: argparse.Namespace) -> dict[str, Any]:
    """--log-format (or CRYPTOFLOW_LOG_FORMAT) and --log-file, as configure_logging takes them."""
    log_format = getattr(args, "log_format", None) or os.environ.get("CRYPTOFLOW_LOG_FORMAT") or "auto"
    if log_format not in LOG_FORMATS:
        raise ConfigError(f"CRYPTOFLOW_LOG_FORMAT={log_format!r}: use one of {', '.join(LOG_FORMATS)}")
    log_file = getattr(args, "log_file", None)
    return {"log_format": log_format, "log_file": Path(log_file) if log_file else None}
