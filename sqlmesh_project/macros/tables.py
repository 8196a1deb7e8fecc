"""Macros about a model's physical table, run after each evaluation fills it (post-statements).

Both are idempotent and cheap when there is nothing to do. A model built in batches that run at the same time
(batch_concurrency) would race for them: none of ours is (tried for fct_prices: two half-year batches at a
time cost a third more CPU - each batch re-reads 720 hours of history and runs its own audits - and saved no
wall time on two cores).
"""

from sqlglot import exp
from sqlmesh import macro

WEEK_S = 7 * 86400


def _table(evaluator) -> exp.Table:
    return exp.to_table(evaluator.locals["this_model"], dialect="postgres")


def _columns(columns) -> str:
    return ", ".join(column.name for column in columns)


@macro()
def unique_grain(evaluator, *columns):
    """The model's grain as a unique b-tree index on its physical table, built once, after the first build
    filled the table (one bulk build instead of upkeep row by row during a backfill: 1.5 s instead of 3 s for
    1.3M candles). From then on the database refuses a duplicate of the grain (the build fails naming the
    key), and the hourly runs' time filters, lookback deletes and audits, and the dashboard's reads use it.
    Lead with the time column: the runs filter on it."""
    if evaluator.runtime_stage != "evaluating":
        return None
    table = _table(evaluator)
    index = f"{table.name}__grain"  # the physical name is unique per model version
    return (
        f'CREATE UNIQUE INDEX IF NOT EXISTS "{index}" '
        f"ON {table.sql(dialect='postgres', identify=True, comments=False)} ({_columns(columns)})"
    )


@macro()
def analyze_after_backfill(evaluator, *columns):
    """ANALYZE the given columns (the grain) after a build of more than a week of hours: without statistics
    the next model's plan guesses its size (a nested loop over 1.3M candles ran for tens of minutes). Row
    counts and the key columns are what the joins and time filters downstream need, at a third of a full
    ANALYZE's time; autovacuum fills in the other columns. An hourly run leaves it all to autovacuum."""
    if evaluator.runtime_stage != "evaluating":
        return None
    locals_ = evaluator.locals
    if locals_["end_epoch"] - locals_["start_epoch"] <= WEEK_S:
        return None
    target = _table(evaluator).sql(dialect="postgres", identify=True, comments=False)
    names = f" ({_columns(columns)})" if columns else ""
    # a DO block: SQLMesh re-parses what a macro renders, and sqlglot reads "ANALYZE table (columns)" as a
    # function call (and upper-cases the table's name)
    return exp.Command(this="DO", expression=f"$$ BEGIN ANALYZE {target}{names}; END $$")
