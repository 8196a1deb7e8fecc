"""What the `cryptoflow` command prints besides its results: progress bars and one line per run."""

from __future__ import annotations

import json
from collections.abc import Callable


def progress_bar(label: str = "klines pages") -> tuple[Callable[[int, int], None], Callable[[], None]]:
    """A terminal progress bar: pages of a total (REST), or files done and candles read (the archive)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    by_files = label != "klines pages"
    bar = Progress(
        TextColumn(label),
        *((TextColumn("{task.completed} files | {task.fields[candles]:,} candles"),) if by_files else
          (BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())),
        transient=True,
    )  # fmt: skip
    task = bar.add_task("pages", total=None, candles=0)
    bar.start()

    def update(done: int, total: int) -> None:
        if by_files:
            bar.update(task, completed=done, candles=total)
        else:
            bar.update(task, completed=done, total=total)

    return update, bar.stop


def print_summary(summary) -> None:
    print(
        f"{summary.source}: run {summary.run_id}: {summary.rows_raw} rows to raw, {summary.rows_bronze} to bronze, "
        f"{summary.dead_letters} dead letters {json.dumps(summary.details, default=str)}"
    )
