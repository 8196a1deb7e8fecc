"""Macros about a model's physical table."""

from sqlglot import exp
from sqlmesh import macro


@macro()
def index_on(evaluator, *columns):
    """A post-statement: a b-tree index on the model's physical table over `columns`, made once, after the
    first evaluation filled the table (one bulk build instead of upkeep row by row during a backfill).
    The hourly runs' time filters, their deletes of the lookback window and their audits use it."""
    if evaluator.runtime_stage != "evaluating":
        return None
    table = exp.to_table(evaluator.locals["this_model"], dialect="postgres")
    names = [column.name for column in columns]
    index = f"{table.name}__{'_'.join(names)}"[:63]  # the physical name is unique per model version
    return (
        f'CREATE INDEX IF NOT EXISTS "{index}" ON {table.sql(dialect="postgres", identify=True)} '
        f"({', '.join(names)})"
    )
