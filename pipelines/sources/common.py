"""What every source shares: rejected records and the extract sink."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa


@dataclass
class Rejected:
    """A record that failed validation: goes to raw.dead_letter exactly as the API sent it."""

    natural_key: str
    payload: Any
    reason: str


@dataclass
class ExtractSink:
    """What a resource saw besides the rows it yielded: rejects and counters, plus the yielded tables
    themselves so the same records can be delivered to bronze (extract once, deliver twice)."""

    tables: list[pa.Table] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    pages: int = 0
    fetched_rows: int = 0
    open_skipped: int = 0
    duplicates_dropped: int = 0
    outside_window: int = 0  # candles the API returned outside the requested window (dropped)
    fetch_s: float = 0.0  # summed over worker threads
    parse_s: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)
    time_range: tuple[Any, Any] | None = (
        None  # min and max of the delivered rows' time column  # wall seconds per delivery stage
    )

    def keep(self, table: pa.Table) -> pa.Table:
        self.tables.append(table)
        return table
