"""Missing hours: find them in the windows a run covered, re-fetch them once, then settle and classify them
(exchange outage, pair halt, ingest failure). The SQL lives beside this file, in gaps.sql."""

from __future__ import annotations

import functools
import logging
from pathlib import Path

from pipelines.catalog import KLINES
from pipelines.ingest.binance import HOUR_MS
from pipelines.ingest.engine import count_rows
from pipelines.runtime import db
from pipelines.settings import Settings
from pipelines.sources.binance import SymbolWindow
from pipelines.sources.binance.helpers import plan_pages

log = logging.getLogger(__name__)


@functools.cache
def _statements() -> dict[str, str]:
    """gaps.sql's statements by name (each section starts `-- name: <name>`)."""
    text = Path(__file__).with_suffix(".sql").read_text()
    return {
        section.split("\n", 1)[0].strip(): section.split("\n", 1)[1].strip().rstrip(";")
        for section in text.split("-- name: ")[1:]
    }


def _sql(name: str) -> str:
    return _statements()[name]


def detect_gaps(settings: Settings, run_id: str, windows: list[SymbolWindow]) -> list[SymbolWindow]:
    """Missing hours inside each symbol's window (not already known gaps): recorded, returned as ranges."""
    # A cheap count per page of 1000 hours first: only the pages that hold fewer candles than hours are
    # searched (an exchange-wide outage makes every pair's window short, but only a few of its pages).
    pages = [
        SymbolWindow(w.symbol, lo, hi)
        for w in windows
        for lo, hi in plan_pages(w.start_ms, w.end_ms, settings.interval)
    ]
    windows = _short_windows(settings, pages)
    if not windows:
        return []
    with db.cursor(settings) as cur:
        cur.execute(
            _sql("detect_gaps"),
            (
                [w.symbol for w in windows],
                [w.start_ms for w in windows],
                [w.end_ms for w in windows],
                settings.interval,
                run_id,
            ),
        )
        missing = sorted(cur.fetchall())
    if missing:
        log.warning("missing hours detected", extra={"run_id": run_id, "hours": len(missing)})
    return _ranges(missing)


def note_gap_checks(settings: Settings, run_id: str, windows: list[SymbolWindow]) -> None:
    """Record the windows this run will search for gaps, before anything reaches raw."""
    with db.cursor(settings) as cur:
        cur.execute(
            "INSERT INTO ops.pending_gap_checks (run_id, symbol, start_time, end_time) "
            "SELECT %s, symbol, to_timestamp(lo / 1000.0), to_timestamp(hi / 1000.0) "
            "FROM unnest(%s::text[], %s::bigint[], %s::bigint[]) AS t(symbol, lo, hi) ON CONFLICT DO NOTHING",
            (run_id, [w.symbol for w in windows], [w.start_ms for w in windows], [w.end_ms for w in windows]),
        )


def inherited_gap_checks(
    settings: Settings, run_id: str, pairs: list[str] | None = None
) -> tuple[list[SymbolWindow], list[str]]:
    """The windows killed runs left unsearched, and the runs taken over. Only those of a run whose raw load
    committed: there the cursor moved past them, so nothing else would ever search them. A run killed before
    its commit stored nothing; its windows are dropped (the cursor did not move: this or a later run fetches
    them again). A run sharing the source (`pairs`: a backfill batch) takes over only its own pairs' windows:
    another pair's may belong to a batch loading it right now, whose hours are not in raw yet."""
    mine = "" if pairs is None else " AND symbol = ANY(%(pairs)s::text[])"
    params = {"run": run_id, "pairs": pairs}
    with db.cursor(settings) as cur:
        # not those of a run still going (a backfill of other pairs sharing the source): it searches its own
        cur.execute(
            "SELECT DISTINCT g.run_id FROM ops.pending_gap_checks g WHERE g.run_id <> %(run)s AND NOT EXISTS "
            f"(SELECT 1 FROM ops.pipeline_runs r WHERE r.run_id = g.run_id AND r.status = 'running'){mine}",
            params,
        )
        others = [r for (r,) in cur.fetchall()]
        committed = [r for r in others if count_rows(settings, KLINES.name, r)]
        cur.execute(
            "DELETE FROM ops.pending_gap_checks WHERE run_id = ANY(%(others)s::text[]) "
            f"AND NOT run_id = ANY(%(committed)s::text[]){mine}",
            {**params, "others": others, "committed": committed},
        )
        cur.execute(
            "SELECT symbol, (extract(epoch FROM start_time) * 1000)::bigint, (extract(epoch FROM end_time) * 1000)::bigint "
            f"FROM ops.pending_gap_checks WHERE run_id = ANY(%(committed)s::text[]){mine} ORDER BY symbol, start_time",
            {**params, "committed": committed},
        )
        found = [SymbolWindow(*row) for row in cur.fetchall()]
    if found:
        log.warning(
            "searching the windows a killed run left unsearched for missing hours",
            extra={"runs": committed, "windows": len(found)},
        )
    return found, committed


def done_gap_checks(
    settings: Settings, run_id: str, taken_over: list[str], pairs: list[str] | None = None
) -> None:
    """This run's windows, and those it took over (inherited_gap_checks: of these runs, of these pairs), are
    searched and settled; nothing else is touched (a run that died meanwhile keeps its windows for the next)."""
    mine = "" if pairs is None else " AND symbol = ANY(%(pairs)s::text[])"
    with db.cursor(settings) as cur:
        cur.execute(
            "DELETE FROM ops.pending_gap_checks WHERE run_id = %(run)s "
            f"OR (run_id = ANY(%(taken)s::text[]){mine})",
            {"run": run_id, "taken": taken_over, "pairs": pairs},
        )


def merged(windows: list[SymbolWindow]) -> list[SymbolWindow]:
    """Per symbol, overlapping or adjacent windows joined: each hour is searched once."""
    out: list[SymbolWindow] = []
    for w in sorted(windows, key=lambda w: (w.symbol, w.start_ms)):
        last = out[-1] if out else None
        if last and last.symbol == w.symbol and w.start_ms <= last.end_ms + HOUR_MS:
            out[-1] = SymbolWindow(w.symbol, last.start_ms, max(last.end_ms, w.end_ms))
        else:
            out.append(w)
    return out


def _short_windows(settings: Settings, windows: list[SymbolWindow]) -> list[SymbolWindow]:
    """The windows holding fewer candles than their hours (an index-only count per window)."""
    if not windows:
        return []
    with db.cursor(settings) as cur:
        cur.execute(
            _sql("short_windows"),
            (
                [w.symbol for w in windows],
                [w.start_ms for w in windows],
                [w.end_ms for w in windows],
                HOUR_MS,
            ),
        )
        short = {i for (i,) in cur.fetchall()}
    return [w for i, w in enumerate(windows, start=1) if i in short]


def _ranges(points: list[tuple[str, int]]) -> list[SymbolWindow]:
    ranges: list[SymbolWindow] = []
    for symbol, ms in points:
        last = ranges[-1] if ranges else None
        if last and last.symbol == symbol and last.end_ms + HOUR_MS == ms:
            ranges[-1] = SymbolWindow(symbol, last.start_ms, ms)
        else:
            ranges.append(SymbolWindow(symbol, ms, ms))
    return ranges


def settle_gaps(settings: Settings, run_id: str, windows: list[SymbolWindow]) -> int:
    """After the one re-fetch: hours now present are 'refilled', this run's others are known exchange gaps.
    Hours an earlier (killed) run left 'missing' are settled too once raw has them."""
    with db.cursor(settings) as cur:
        cur.execute(
            _sql("settle_gaps"),
            {"run": run_id},
        )
        return sum(1 for (status,) in cur.fetchall() if status == "known_gap")


def classify_gaps(settings: Settings) -> dict[str, int]:
    """Give every settled missing hour its class: ingest_failure when the re-fetch found it; else
    exchange_outage when at least two pairs miss that hour and no tracked pair has a candle in it;
    else pair_halt. Re-evaluated each run: a pair loaded later can turn an outage into a halt."""
    with db.cursor(settings) as cur:
        cur.execute("UPDATE ops.gaps SET gap_class = 'ingest_failure' WHERE status = 'refilled'")
        cur.execute("SELECT symbol FROM ops.pairs")
        tracked = [symbol for (symbol,) in cur.fetchall()]
        cur.execute(
            _sql("classify_gaps"),
            {"tracked": tracked},
        )
        cur.execute("SELECT gap_class, count(*) FROM ops.gaps WHERE gap_class IS NOT NULL GROUP BY 1")
        return dict(cur.fetchall())


# --- CoinGecko and Fear & Greed ---------------------------------------------------------------------------
