"""Macros about a model's physical table, run after it is filled (post-statements).

A model may be built in batches that run at the same time (batch_concurrency): only the batch that reaches
the newest hour does this work, so two batches never race for the same index or statistics."""

from sqlglot import exp
from sqlmesh import macro

WEEK_S = 7 * 86400


def _newest_batch(evaluator) -> bool:
    """Evaluating the interval that ends within two hours of the run's clock (a batch of the past: no)."""
    if evaluator.runtime_stage != "evaluating":
        return False
    locals_ = evaluator.locals
    return locals_["execution_epoch"] - locals_["end_epoch"] < 2 * 3600


def _table(evaluator) -> exp.Table:
    return exp.to_table(evaluator.locals["this_model"], dialect="postgres")


@macro()
def unique_grain(evaluator, *columns):
    """The model's grain as a unique b-tree index on its physical table, built once, after the first build
    filled the table (one bulk build instead of upkeep row by row during a backfill). From then on the
    database refuses a duplicate of the grain (the build fails naming the key), and the hourly runs' time
    filters, lookback deletes and audits, and the joins between the hourly models, use it. Lead with the time
    column: the runs filter on it. A batch running beside it finishes its insert first (the index waits)."""
    if not _newest_batch(evaluator):
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
    if not _newest_batch(evaluator):
        return None
    locals_ = evaluator.locals
    if locals_["end_epoch"] - locals_["start_epoch"] <= WEEK_S:
        return None
    return f"ANALYZE {_table(evaluator).sql(dialect='postgres', identify=True)}"
