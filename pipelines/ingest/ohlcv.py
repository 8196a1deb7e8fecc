"""The two runs over Binance candles: `ingest_ohlcv` (incremental or a backfill window) and `verify_klines`
(re-fetch a window and report, or restate, what differs from raw)."""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from pipelines.errors import UniverseError
from pipelines.http import ApiBanned, ApiClient
from pipelines.ingest import archive, gaps, lifecycle, revisions
from pipelines.ingest.binance import (
    HOUR_MS,
    after_listing,
    binance_client,
    klines_cursors,
    last_open_before,
    plan_windows,
    resolve_pairs,
    stored_spans,
    utc_of_ms,
)
from pipelines.ingest.engine import RunSummary, source_run
from pipelines.ingest.klines import Progress, deliver_klines, fetch_klines, rest_fetch, store_klines
from pipelines.settings import Settings, validate_symbol
from pipelines.sources.binance import SymbolWindow
from pipelines.sources.binance.helpers import (
    ExchangeInfo,
    fetch_exchange_info,
    last_closed_open_ms,
    plan_pages,
)
from pipelines.sources.binance.settings import KLINES_SCHEMA

log = logging.getLogger(__name__)


def ingest_ohlcv(
    settings: Settings,
    *,
    symbols: list[str] | None = None,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    days: int | None = None,
    command: str = "ingest",
    progress: Progress | None = None,
    source: str = "rest",
    shared: bool = False,
) -> RunSummary:
    """Incremental by default (each symbol from its own cursor, re-fetching the trailing
    `restate_hours` to pick up revised candles); a backfill of [since, until) or the last `days` days.
    A backfill's `source`: `rest`, `archive` (the public kline archive only) or `auto` (the archive, REST
    for what it lacks); `progress` then counts (files, candles) instead of (pages, total pages).
    `shared`: this backfill of the given `symbols` runs beside other backfills of other pairs (a batch of
    backfill_historical on one of several workers) instead of having the source to itself."""
    if days is not None and days < 1:
        raise ValueError(f"days must be at least 1, got {days}")
    if source not in archive.SOURCES:
        raise ValueError(f"source must be one of {archive.SOURCES}, got {source!r}")
    incremental = since is None and days is None
    if shared and (incremental or not symbols):
        raise ValueError("only a backfill of given symbols can share the source with other runs")
    with source_run(settings, "binance", command, pairs=list(symbols or ()) if shared else None) as run:
        client = binance_client(settings)
        info = _exchange_info(settings, client, symbols, source == "archive" and not incremental)
        blocked = not info.from_api
        if info.weight_limit:
            client.limiter.weight_limit = min(
                info.weight_limit, settings.sources.binance.weight_limit_per_minute
            )
            if client.shared_budget is not None:  # the exchange's own limit, for every process
                client.shared_budget.exchange_reports(info.weight_limit)
        pairs = resolve_pairs(settings, info, symbols)
        if not blocked:  # statuses are the exchange's word: none without exchangeInfo
            lifecycle.record_statuses(settings, info, [*pairs.trading, *pairs.skipped], run.run_id)
        lifecycle.warn_skipped(settings, pairs)
        universe = pairs.trading
        end_ms = last_closed_open_ms(info.server_time_ms, settings.interval)
        if until is not None:
            end_ms = min(end_ms, last_open_before(until))
        spans = stored_spans(settings)
        cursors = {symbol: newest for symbol, (_, newest) in spans.items()}
        windows = plan_windows(settings, universe, end_ms, since, days, spans)
        windows, listed = (windows, {}) if blocked else after_listing(settings, client, windows, cursors)
        run.window_start = utc_of_ms(min((w.start_ms for w in windows), default=end_ms))
        run.window_end = utc_of_ms(end_ms)
        total_pages = sum(len(plan_pages(w.start_ms, w.end_ms, settings.interval)) for w in windows)
        gaps.note_gap_checks(settings, run.run_id, windows)
        if source == "auto" and not incremental and (problem := archive.unreachable(settings)):
            log.warning(  # the archive is the fast path, not a dependency: the API serves the whole window
                "the kline archive cannot be reached: this backfill uses the REST API for every candle",
                extra={"archive": settings.sources.binance_archive.base_url, "problem": problem},
            )
            source = "rest"
            run.details["archive_unreachable"] = True
        from_archive = source != "rest" and not incremental
        # pairs that no longer trade: the archive keeps their history (REST answers -1121 once removed)
        retired = (
            plan_windows(settings, list(pairs.skipped), end_ms, since, days, spans) if from_archive else []
        )
        if from_archive:
            rest = None if source == "archive" else client
            fetch, files = archive.archive_fetch(
                settings, rest, windows, info, run.run_id, progress, archive_only=retired
            )
        else:
            fetch = rest_fetch(settings, client, windows, info, run.run_id, progress, total_pages)
        summary = deliver_klines(
            settings, run, fetch, run.run_id, cursors, "restate" if incremental else "backfill"
        )
        if from_archive:
            archive.record_files(settings, files, run.run_id)
            summary |= archive.summary(files)
        if retired:
            retired, summary["not_trading_from_archive"] = _stored_part(settings, retired)
        if blocked:  # no listing dates known: only hours between a pair's first and last candle can be gaps
            windows, _ = _stored_part(settings, windows)
            summary["rest_region_blocked"] = True
        clock = time.perf_counter()
        batch = list(symbols or ()) if shared else None  # a batch takes over only its own pairs' windows
        inherited, taken_over = gaps.inherited_gap_checks(settings, run.run_id, batch)  # killed runs'

        gap_windows = gaps.detect_gaps(settings, run.run_id, gaps.merged([*windows, *retired, *inherited]))
        summary["timings"]["gap_check_s"] = round(time.perf_counter() - clock, 3)
        if source == "archive" and not incremental:
            # no REST: what the archive lacks stays 'missing' (not a known gap) for a later run to fetch
            summary["known_gaps"] = 0
            if gap_windows:
                log.warning(
                    "hours the archive does not have stay missing: run the backfill with --source auto to "
                    "fetch them from the REST API",
                    extra={"run_id": run.run_id, "windows": len(gap_windows)},
                )
        else:
            # pairs that no longer trade are not on the API (-1121): the archive was their only source
            trading = set(universe)
            if refetch_windows := [w for w in gap_windows if w.symbol in trading]:
                refetch = rest_fetch(settings, client, refetch_windows, info, f"{run.run_id}-refetch")
                refill = deliver_klines(
                    settings, run, refetch, f"{run.run_id}-refetch", klines_cursors(settings), "refetch"
                )
                summary["refetched_rows"] = refill["rows_raw"]
            # also settles hours an earlier (killed) run left 'missing' that raw now holds
            summary["known_gaps"] = gaps.settle_gaps(settings, run.run_id, gap_windows)
        summary["gap_classes"] = gaps.classify_gaps(settings)
        gaps.done_gap_checks(settings, run.run_id, taken_over, batch)
        if inherited:
            summary["inherited_gap_checks"] = len(inherited)
        run.details.update(
            summary,
            symbols=len(universe),
            pages=total_pages,
            skipped_pairs=pairs.skipped,
            listed_inside_window={s: utc_of_ms(ms).isoformat() for s, ms in listed.items()},
        )
        return RunSummary.of(run)


def _exchange_info(
    settings: Settings, client: ApiClient, symbols: list[str] | None, archive_only: bool
) -> ExchangeInfo:
    """exchangeInfo from the REST API. An archive-only backfill where the API answers 451 (a region it
    blocks, e.g. US-hosted CI runners) goes on without it: the requested pairs, the local clock, no
    listing probe; any other error, and every other run, stops as before."""
    try:
        return fetch_exchange_info(client)
    except ApiBanned as exc:
        if not (archive_only and exc.status == 451):
            raise
    requested = symbols or (settings.universe.symbols if settings.universe.mode == "pinned" else [])
    if not requested:
        raise UniverseError(
            "the REST API answers 451 here (region blocked), so exchangeInfo and the top_n universe are "
            "unavailable: pin the pairs (universe.symbols or --symbols) for an archive-only backfill"
        )
    log.warning(
        "the REST API answers 451 here (region blocked): the archive alone serves this backfill, for the "
        "requested pairs as given, without their listing dates or statuses",
        extra={"symbols": len(requested)},
    )
    pairs = frozenset(validate_symbol(s) for s in requested)
    return ExchangeInfo(int(time.time() * 1000), pairs, None, dict.fromkeys(pairs, "TRADING"), from_api=False)


def _stored_part(
    settings: Settings, windows: list[SymbolWindow]
) -> tuple[list[SymbolWindow], dict[str, str]]:
    """The part of each window between the pair's first and last stored candle (a pair that no longer
    trades: no hour after its last candle, or before its first, is a gap), and each pair's last candle."""
    spans = stored_spans(settings)
    inside = [
        SymbolWindow(w.symbol, max(w.start_ms, spans[w.symbol][0]), min(w.end_ms, spans[w.symbol][1]))
        for w in windows
        if w.symbol in spans
    ]
    return (
        [w for w in inside if w.start_ms <= w.end_ms],
        {w.symbol: utc_of_ms(spans[w.symbol][1]).isoformat() for w in windows if w.symbol in spans},
    )


@dataclass
class Verification:
    """What `cryptoflow verify` found: per pair and hour, what differs between the exchange and raw."""

    run_id: str
    window: tuple[dt.datetime, dt.datetime]
    changed: list[tuple[str, dt.datetime, dict[str, dict[str, str]]]]
    missing_in_raw: list[tuple[str, dt.datetime]]
    missing_on_exchange: list[tuple[str, dt.datetime]]
    applied: bool
    details: dict[str, Any]


def verify_klines(
    settings: Settings,
    *,
    since: dt.datetime,
    until: dt.datetime | None = None,
    symbols: list[str] | None = None,
    apply: bool = False,
) -> Verification:
    """Re-fetch [since, until) and compare it with raw, per pair and hour. With apply: changed candles are
    restated (ops.revisions, found_by verify), candles raw lacks are added; gold is restated by the caller
    (restatement.restate) over the window."""
    with source_run(settings, "binance", "verify --apply" if apply else "verify") as run:
        client = binance_client(settings)
        info = fetch_exchange_info(client)
        pairs = resolve_pairs(settings, info, symbols)
        lifecycle.warn_skipped(settings, pairs)
        end_ms = last_closed_open_ms(info.server_time_ms, settings.interval)
        if until is not None:
            end_ms = min(end_ms, last_open_before(until))
        start_ms = -(-int(since.timestamp() * 1000) // HOUR_MS) * HOUR_MS
        windows = [SymbolWindow(s, start_ms, end_ms) for s in pairs.trading if start_ms <= end_ms]
        run.window_start, run.window_end = utc_of_ms(start_ms), utc_of_ms(end_ms)
        sink = fetch_klines(run, rest_fetch(settings, client, windows, info, run.run_id))
        fetched = pa.concat_tables(sink.tables) if sink.tables else KLINES_SCHEMA.empty_table()
        sink.tables.clear()
        symbols_ = [w.symbol for w in windows]
        stored = revisions.stored_candles(
            settings, symbols_, [start_ms] * len(symbols_), [end_ms] * len(symbols_)
        )
        parts = revisions.split(fetched, stored)
        fetched_keys = set(
            zip(fetched["symbol"].to_pylist(), revisions._ms(fetched["open_time"]).to_pylist(), strict=True)
        )
        stored_keys = set(zip(stored["symbol"].to_pylist(), stored["k_ms"].to_pylist(), strict=True))
        diffs = revisions.differences(parts.changed, parts.previous)
        result = Verification(
            run.run_id,
            (utc_of_ms(start_ms), utc_of_ms(end_ms)),
            changed=[
                (sym, utc_of_ms(ms), diff)
                for sym, ms, diff in zip(
                    parts.changed["symbol"].to_pylist(),
                    revisions._ms(parts.changed["open_time"]).to_pylist(),
                    diffs,
                    strict=True,
                )
            ],
            missing_in_raw=sorted((s, utc_of_ms(ms)) for s, ms in fetched_keys - stored_keys),
            missing_on_exchange=sorted((s, utc_of_ms(ms)) for s, ms in stored_keys - fetched_keys),
            applied=apply,
            details={},
        )
        summary = {
            "changed": len(result.changed),
            "missing_in_raw": len(result.missing_in_raw),
            "missing_on_exchange": len(result.missing_on_exchange),
            "unchanged": parts.unchanged,
        }
        if apply:
            # parts holds what is left to load; the rest must be freed before the raw load (as in ingest)
            del fetched, stored, fetched_keys, stored_keys
            summary |= store_klines(settings, run, sink, parts, run.run_id, "verify")
        run.details.update(summary, skipped_pairs=pairs.skipped)
        result.details = run.details
        return result
