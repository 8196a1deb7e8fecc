"""Macros about a model's physical table."""

from sqlglot import exp
from sqlmesh import macro


@macro()
def unique_grain(evaluator, *columns):
    """A post-statement: the model's grain as a unique b-tree index on its physical table, built once, after
    the first evaluation filled the table (one bulk build instead of upkeep row by row during a backfill).
    From then on the database refuses a duplicate of the grain (the build fails naming the key), and the
    hourly runs' time filters, lookback deletes and audits, and the joins between the hourly models, use it.
    Lead with the time column: the runs filter on it."""
    if evaluator.runtime_stage != "evaluating":
        return None
    table = exp.to_table(evaluator.locals["this_model"], dialect="postgres")
    names = [column.name for column in columns]
    index = f"{table.name}__grain"  # the physical name is unique per model version
    return (
        f'CREATE UNIQUE INDEX IF NOT EXISTS "{index}" ON {table.sql(dialect="postgres", identify=True)} '
        f"({', '.join(names)})"
    )
