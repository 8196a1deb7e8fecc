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
    queued: int = 0  # rejected records stored as dead letters so far (they leave `rejected` when stored)
    fetch_s: float = 0.0  # summed over worker threads
    parse_s: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)
    fields: dict[str, str] = field(default_factory=dict)  # field -> JSON type(s) seen in this extract
    time_range: tuple[Any, Any] | None = (
        None  # min and max of the delivered rows' time column  # wall seconds per delivery stage
    )

    def keep(self, table: pa.Table) -> pa.Table:
        self.tables.append(table)
        return table


def json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def observed_fields(records: list[Any]) -> dict[str, str]:
    """Every top-level field of the records with the JSON types it arrived as ("null" if only ever null)."""
    seen: dict[str, set[str]] = {}
    for record in records:
        if isinstance(record, dict):
            for name, value in record.items():
                seen.setdefault(str(name), set()).add(json_type(value))
    return {name: "/".join(sorted(types - {"null"})) or "null" for name, types in sorted(seen.items())}
