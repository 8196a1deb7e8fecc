"""Macros shared by the indicator models."""

from sqlmesh import macro


def _pair_history(hours: int) -> str:
    """One pair's candles in time order, from its first up to the last one opened at least `hours` hours
    before the current one; 0 = up to and including the current one (running totals)."""
    if hours == 0:
        frame = "ROWS UNBOUNDED PRECEDING"
    else:
        frame = f"RANGE BETWEEN UNBOUNDED PRECEDING AND INTERVAL '{hours} hours' PRECEDING"
    return f"(PARTITION BY symbol ORDER BY open_time {frame})"


@macro()
def over_pair(evaluator, fn, hours):
    """`fn` as a window function over the pair's history up to `hours` before this candle:
    `@over_pair(SUM(close), 0)` is the running sum, `@over_pair(LAST_VALUE(close), 24)` the close of the
    last candle at or before t - 24 h. Every window of the hourly models is one of these."""
    return f"{fn.sql('postgres')} OVER {_pair_history(int(hours.name))}"


@macro()
def ratio_1h(evaluator, price):
    """`price` / the pair's previous `price` when that candle opened exactly one hour earlier, else NULL (a
    missing hour gives no return instead of one over two hours): the hourly return's one definition, shared by
    fct_prices and fct_daily_summary. Needs the pair's previous candle in the query's rows."""
    value = price.sql("postgres")
    return (
        f"CASE WHEN LAG(open_time) OVER {_pair_history(0)} = open_time - INTERVAL '1 hour' "
        f"THEN {value} / LAG({value}) OVER {_pair_history(0)} END"
    )


@macro()
def annualised_std(evaluator, s1, s2, n):
    """Sample standard deviation from a window's sum, sum of squares and count, x sqrt(24 x 365).
    NULL with fewer than two values; a tiny negative variance from rounding is clamped to 0."""
    return (
        f"CASE WHEN {n.sql('postgres')} >= 2 THEN SQRT(GREATEST(({s2.sql('postgres')} - {s1.sql('postgres')} * "
        f"{s1.sql('postgres')} / {n.sql('postgres')}) / ({n.sql('postgres')} - 1), 0) * 24 * 365) END"
    )


@macro()
def trailing(evaluator, running, hours):
    """A running total's value over the `hours` hours ending at this candle: the total now minus the total
    at the last candle at or before t - `hours`."""
    total = running.sql("postgres")
    return f"{total} - COALESCE(LAST_VALUE({total}) OVER {_pair_history(int(hours.name))}, 0)"
