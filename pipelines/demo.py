"""`cryptoflow demo`: the main job on the sandbox, offline, and its closing summary (rows per table, where the
data is, what the exchange did)."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable

from pipelines.bronze import open_lake
from pipelines.catalog import FEAR_GREED, KLINES, MARKETS
from pipelines.ingest.engine import RunSummary, count_rows
from pipelines.runtime import db
from pipelines.settings import Settings


def describe_data(settings: Settings, elapsed_s: float) -> str:
    """The demo's closing summary: rows per table, time taken, where the data is."""
    lines = [f"done in {elapsed_s:.1f} s (sandbox data: synthetic, not real prices)", "", "raw tables:"]
    with db.cursor(settings) as cur:
        for table in (KLINES.name, MARKETS.name, FEAR_GREED.name, "dead_letter"):
            lines.append(f"  raw.{table:<20} {count_rows(settings, table):>12,} rows")
        cur.execute("SELECT count(*) FILTER (WHERE status = 'known_gap'), count(*) FROM ops.gaps")
        known, total = db.one(cur)
        lines.append(
            f"  ops.gaps                 {total:>12,} missing hours seen ({known} the exchange does not have)"
        )
    lake = open_lake(settings)
    lines += [
        "",
        f"bronze Parquet lake: {lake.url}/crypto/<table>/year=YYYY/month=MM/day=DD/",
        f"Postgres: {db.redact(db.writer_url(settings))}  (cryptoflow db url prints it with the password)",
    ]
    return "\n".join(lines)


def describe_exchange(settings: Settings, runs: list[RunSummary]) -> str:
    """What the runs met on the exchange: listings inside the window, delisted pairs and their successors,
    classified missing hours, revisions applied."""
    listed: dict[str, str] = {}
    skipped: dict[str, str] = {}
    revised = 0
    for run in runs:
        listed |= run.details.get("listed_inside_window", {})
        skipped |= run.details.get("skipped_pairs", {})
        revised += run.details.get("revised", 0)
    with db.cursor(settings) as cur:
        cur.execute(
            "SELECT count(DISTINCT open_time) FILTER (WHERE gap_class = 'exchange_outage'), "
            "count(*) FILTER (WHERE gap_class = 'pair_halt') FROM ops.gaps"
        )
        outage_hours, halt_hours = db.one(cur)
    successors = settings.universe.successors
    lines = ["", "what the exchange did (ops.pairs, ops.gaps, ops.revisions):"]
    lines.append(
        f"  {len(listed)} listing(s) inside the horizon: "
        + (", ".join(f"{s} from {t[:10]}" for s, t in sorted(listed.items())) or "none")
    )
    lines.append(
        f"  {len(skipped)} pair(s) not trading, skipped with their history kept: "
        + (
            ", ".join(
                f"{s} ({state}{', successor ' + successors[s] if s in successors else ''})"
                for s, state in sorted(skipped.items())
            )
            or "none"
        )
    )
    lines.append(
        f"  {outage_hours} exchange-wide outage hour(s), {halt_hours} pair-halt hour(s): known, not failures"
    )
    lines.append(f"  {revised} revised candle(s) restated")
    return "\n".join([*lines, ""])


def run(
    settings: Settings,
    days: int | None,
    progress: Callable[[int, int], None],
    progress_done: Callable[[], None],
    print_summary: Callable[[RunSummary], None],
) -> None:
    """The main job on the sandbox, as a time-lapse of the real exchange: backfill the horizon as of a day
    ago (from the kline archive, as `cryptoflow backfill` does), then one incremental run as of now (the
    day's new hours, and the candles revised since), then transform and checks. The universe is the
    configured list plus the pairs it replaced (a stale list), so the run meets listings, delistings with
    their successors, outages and revisions."""
    from pipelines import ingest, quality
    from pipelines.sandbox import SandboxServer
    from pipelines.sqlmesh_console import sqlmesh_console_to_log
    from pipelines.transform import transform
    from pipelines.transform_report import describe_gold

    started = time.perf_counter()
    db.ensure_database(settings)
    days = days or settings.backfill.days
    symbols = list(dict.fromkeys([*settings.universe.symbols, *settings.universe.successors]))
    now_ms = int(time.time() * 1000)
    with SandboxServer(port=0, seed=settings.sandbox.seed, calm=settings.sandbox.calm) as server:
        print(f"sandbox: synthetic market data served at {server.url} (not real prices)", file=sys.stderr)
        active = settings.with_sandbox(server.url)
        server.set_now(now_ms - 24 * 3_600_000)
        try:
            klines = ingest.ingest_ohlcv(
                active,
                days=days,
                symbols=symbols,
                command="demo",
                progress=progress,
                source=settings.backfill.source,
            )
        finally:
            progress_done()
        server.set_now(now_ms)
        hourly = ingest.ingest_ohlcv(active, symbols=symbols, command="demo")
        markets = ingest.ingest_markets(active, command="demo")
        fng = ingest.ingest_fear_greed(active, command="demo")
        server.set_now(None)
    for summary in (klines, hourly, markets, fng):
        print_summary(summary)
    with sqlmesh_console_to_log():  # SQLMesh's plan and per-model lines: the log; here its progress bars
        built = transform(settings)
    print(f"transform: silver and gold built in {built.plan_s + built.run_s:.1f} s")
    logging.getLogger("soda").setLevel(logging.WARNING)  # one summary line below instead of every check
    checks = quality.run_checks(settings)
    failed = [r.name for r in checks.results if r.outcome in ("fail", "error")]
    print(
        f"checks: {len(checks.results)} run, {len(failed)} failed"
        + (f" ({', '.join(failed)})" if failed else "")
        + " - the Data Quality page shows them"
    )
    print(describe_data(settings, time.perf_counter() - started))
    print(describe_exchange(settings, [klines, hourly]))
    print(describe_gold(settings))
    port = settings.services.dashboard_port
    print(
        f"\ndashboard: http://127.0.0.1:{port}  (start it with `.venv/bin/cryptoflow dashboard`; "
        "`.venv/bin/cryptoflow up` starts it with Airflow and the metrics)"
    )
