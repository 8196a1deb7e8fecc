"""The dead letter queue: list what was rejected, and replay records that now pass validation."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import pyarrow as pa

from pipelines.catalog import FEAR_GREED, KLINES, MARKETS, Table
from pipelines.ingest.engine import deliver, source_run
from pipelines.runtime import db
from pipelines.settings import Settings
from pipelines.sources.binance.helpers import parse_klines
from pipelines.sources.coingecko.helpers import markets_to_arrow
from pipelines.sources.common import ExtractSink, Rejected
from pipelines.sources.fear_greed.helpers import fng_to_arrow


@dataclass(frozen=True)
class DeadLetter:
    id: int
    source: str
    table_name: str
    natural_key: str
    payload: object
    reason: str
    load_id: str


@dataclass(frozen=True)
class ReplayResult:
    replayed: int
    still_invalid: int


def list_dead_letters(settings: Settings, limit: int = 50, pending_only: bool = True) -> list[DeadLetter]:
    db.ensure_database(settings)
    with db.cursor(settings) as cur:
        cur.execute(
            "SELECT id, source, table_name, coalesce(natural_key, ''), payload, reason, load_id "
            f"FROM raw.dead_letter {'WHERE replayed_at IS NULL' if pending_only else ''} "
            "ORDER BY id DESC LIMIT %s",
            (limit,),
        )
        return [DeadLetter(*row) for row in cur.fetchall()]


def _revalidate(letter: DeadLetter, load_id: str) -> tuple[pa.Table, list[Rejected]]:
    """Run the record through its source's own parser again."""
    if letter.table_name == KLINES.name:
        symbol = letter.natural_key.split("@", 1)[0]
        now_ms = int(dt.datetime.now(dt.UTC).timestamp() * 1000)
        page = parse_klines([letter.payload], symbol, "1h", now_ms, load_id)
        return page.table, page.rejected
    if letter.table_name == MARKETS.name:
        snapshot = dt.datetime.fromisoformat(letter.natural_key.split("@", 1)[1])
        return markets_to_arrow([letter.payload], snapshot, load_id)
    return fng_to_arrow([letter.payload], load_id)


def replay(settings: Settings, ids: list[int] | None = None) -> ReplayResult:
    """Re-validate pending dead letters (all, or the given ids); deliver the valid ones to bronze and raw."""
    letters = [
        letter for letter in list_dead_letters(settings, limit=1_000_000) if ids is None or letter.id in ids
    ]
    specs: dict[str, Table] = {s.name: s for s in (KLINES, MARKETS, FEAR_GREED)}
    replayed = invalid = 0
    for table_name in sorted({letter.table_name for letter in letters}):
        group = [letter for letter in letters if letter.table_name == table_name]
        source = group[0].source
        with source_run(settings, source, "dlq replay") as run:
            sink, good_ids = ExtractSink(), []
            for letter in group:
                table, rejected = _revalidate(letter, run.run_id)
                if rejected or table.num_rows == 0:
                    invalid += 1
                    continue
                sink.keep(table)
                good_ids.append(letter.id)
            if good_ids:
                sink.tables[:] = [pa.concat_tables(sink.tables)]  # handed over to _deliver
                run.rows_bronze, run.rows_raw = deliver(
                    settings, source, None, sink, specs[table_name], run.run_id, "merge"
                )
                _mark_replayed(settings, good_ids, run.run_id)
            replayed += len(good_ids)
            run.details["replayed_ids"] = good_ids
    return ReplayResult(replayed, invalid)


def _mark_replayed(settings: Settings, ids: list[int], load_id: str) -> None:
    with db.cursor(settings) as cur:
        cur.execute(
            "UPDATE raw.dead_letter SET replayed_at = now(), replay_load_id = %s WHERE id = ANY(%s)",
            (load_id, ids),
        )
