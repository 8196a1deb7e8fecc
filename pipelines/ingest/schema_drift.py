"""Schema drift of the JSON sources: fields the API adds, drops or sends with another type.

Each ingest of a record-shaped source (CoinGecko markets, Fear & Greed) notes every top-level field it saw
and its JSON type. Against what the previous runs saw, a new field is `added` (kept: bronze has it, raw gains a
nullable column), a field that stopped coming is `dropped` (NULL from now on), one that comes back is
`restored`, and a changed type is `type_changed` (a lossless one, like a number sent as a numeric string, is
coerced by the source's parser). Each change goes to ops.schema_changes with a warning.
"""

from __future__ import annotations

import logging
from typing import Any

from pipelines.runtime import db
from pipelines.settings import Settings

log = logging.getLogger(__name__)


def record_fields(
    settings: Settings, source: str, table: str, fields: dict[str, str], run_id: str
) -> list[dict[str, Any]]:
    """Compare this extract's fields with the known ones, record the changes; returns them."""
    if not fields:
        return []
    with db.cursor(settings) as cur:
        cur.execute(
            "SELECT field, json_type, present FROM ops.source_fields WHERE source = %s AND table_name = %s",
            (source, table),
        )
        known = {name: (kind, present) for name, kind, present in cur.fetchall()}
        changes: list[dict[str, Any]] = []
        if known:  # the first extract is the baseline, not a change
            for name, kind in fields.items():
                if name not in known:
                    changes.append({"field": name, "change": "added", "old_type": None, "new_type": kind})
                elif not known[name][1]:
                    changes.append({"field": name, "change": "restored", "old_type": None, "new_type": kind})
                elif kind != "null" and known[name][0] not in ("null", kind):
                    changes.append(
                        {
                            "field": name,
                            "change": "type_changed",
                            "old_type": known[name][0],
                            "new_type": kind,
                        }
                    )
            for name, (kind, present) in known.items():
                if present and name not in fields:
                    changes.append({"field": name, "change": "dropped", "old_type": kind, "new_type": None})
        for name, kind in fields.items():
            cur.execute(
                """
                INSERT INTO ops.source_fields AS f (source, table_name, field, json_type, present, first_run_id,
                                                    last_run_id, last_seen_at)
                VALUES (%s, %s, %s, %s, true, %s, %s, now())
                ON CONFLICT (source, table_name, field) DO UPDATE SET
                    json_type = CASE WHEN EXCLUDED.json_type = 'null' THEN f.json_type ELSE EXCLUDED.json_type END,
                    present = true, last_run_id = EXCLUDED.last_run_id, last_seen_at = now()
                """,
                (source, table, name, kind, run_id, run_id),
            )
        dropped = [c["field"] for c in changes if c["change"] == "dropped"]
        if dropped:
            cur.execute(
                "UPDATE ops.source_fields SET present = false WHERE source = %s AND table_name = %s "
                "AND field = ANY(%s)",
                (source, table, dropped),
            )
        for change in changes:
            cur.execute(
                "INSERT INTO ops.schema_changes (source, table_name, field, change, old_type, new_type, run_id) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s)",
                (
                    source,
                    table,
                    change["field"],
                    change["change"],
                    change["old_type"],
                    change["new_type"],
                    run_id,
                ),
            )
            log.warning(
                f"{source}: field {change['field']!r} {change['change'].replace('_', ' ')}"
                + (
                    f" ({change['old_type']} -> {change['new_type']})"
                    if change["change"] == "type_changed"
                    else ""
                ),
                extra={"source": source, "table": table, **change},
            )
    return changes
