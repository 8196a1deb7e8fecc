"""The demo's closing summary (printed by the CLI): rows per table, where the data is, what the exchange did."""

from __future__ import annotations

import contextlib

from pipelines import db
from pipelines.bronze import open_lake
from pipelines.catalog import FEAR_GREED, KLINES, MARKETS
from pipelines.ingest.engine import RunSummary, count_rows
from pipelines.settings import Settings


def describe_data(settings: Settings, elapsed_s: float) -> str:
    """The demo's closing summary: rows per table, time taken, where the data is."""
    lines = [f"done in {elapsed_s:.1f} s (sandbox data: synthetic, not real prices)", "", "raw tables:"]
    with contextlib.closing(db.connect(settings)) as conn, conn.cursor() as cur:
        for table in (KLINES.name, MARKETS.name, FEAR_GREED.name, "dead_letter"):
            lines.append(f"  raw.{table:<20} {count_rows(settings, table):>12,} rows")
        cur.execute("SELECT count(*) FILTER (WHERE status = 'known_gap'), count(*) FROM ops.gaps")
        known, total = cur.fetchone()
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
    with contextlib.closing(db.connect(settings)) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT count(DISTINCT open_time) FILTER (WHERE gap_class = 'exchange_outage'), "
            "count(*) FILTER (WHERE gap_class = 'pair_halt') FROM ops.gaps"
        )
        outage_hours, halt_hours = cur.fetchone()
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
