"""Macros shared by the indicator models."""

from sqlmesh import macro


@macro()
def annualised_std(evaluator, s1, s2, n):
    """Sample standard deviation from a window's sum, sum of squares and count, x sqrt(24 x 365).
    NULL with fewer than two values; a tiny negative variance from rounding is clamped to 0."""
    return (
        f"CASE WHEN {n.sql('postgres')} >= 2 THEN SQRT(GREATEST(({s2.sql('postgres')} - {s1.sql('postgres')} * "
        f"{s1.sql('postgres')} / {n.sql('postgres')}) / ({n.sql('postgres')} - 1), 0) * 24 * 365) END"
    )


@macro()
def trailing(evaluator, running, window):
    """A running total's value over a trailing time window: the total now minus the total at the last row
    before the window (`window` names a frame ending `INTERVAL ... PRECEDING`)."""
    total = running.sql("postgres")
    return f"{total} - COALESCE(LAST_VALUE({total}) OVER {window.sql('postgres')}, 0)"
