"""Macros about a model's physical table, run after each evaluation fills it (post-statements).

Both are idempotent and cheap when there is nothing to do. A model built in batches that run at the same time
(batch_concurrency) would race for them: none of ours is.
"""

from sqlglot import exp
from sqlmesh import macro

WEEK_S = 7 * 86400


def _table(evaluator) -> exp.Table:
    return exp.to_table(evaluator.locals["this_model"], dialect="postgres")


@macro()
def unique_grain(evaluator, *columns):
    """The model's grain as a unique b-tree index on its physical table, built once, after the first build
    filled the table (one bulk build instead of upkeep row by row during a backfill). From then on the
    database refuses a duplicate of the grain (the build fails naming the key), and the hourly runs' time
    filters, lookback deletes and audits, and the joins between the hourly models, use it. Lead with the time
    column: the runs filter on it."""
    if evaluator.runtime_stage != "evaluating":
        return None
    table = _table(evaluator)
    names = [column.name for column in columns]
    index = f"{table.name}__grain"  # the physical name is unique per model version
    return (
        f'CREATE UNIQUE INDEX IF NOT EXISTS "{index}" ON {table.sql(dialect="postgres", identify=True)} '
        f"({', '.join(names)})"
    )


@macro()
def analyze_after_backfill(evaluator):
    """ANALYZE the table after a build of more than a week of hours: without statistics the next model's plan
    guesses its size (a nested loop over 1.3M candles ran for tens of minutes). An hourly run leaves it to
    autovacuum."""
    if evaluator.runtime_stage != "evaluating":
        return None
    locals_ = evaluator.locals
    if locals_["end_epoch"] - locals_["start_epoch"] <= WEEK_S:
        return None
    return f"ANALYZE {_table(evaluator).sql(dialect='postgres', identify=True)}"
