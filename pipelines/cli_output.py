"""What the `cryptoflow` command prints besides its results: progress bars and one line per run."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pipelines.ingest.engine import RunSummary


def progress_bar(label: str = "klines pages") -> tuple[Callable[[int, int], None], Callable[[], None]]:
    """A terminal progress bar: pages of a total (REST), or files done and candles read (the archive)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    by_files = label != "klines pages"
    bar = Progress(
        TextColumn(label),
        *(
            (TextColumn("{task.completed} files | {task.fields[candles]:,} candles"),)
            if by_files
            else (BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
        ),
        transient=True,
    )
    task = bar.add_task("pages", total=None, candles=0)
    bar.start()

    def update(done: int, total: int) -> None:
        if by_files:
            bar.update(task, completed=done, candles=total)
        else:
            bar.update(task, completed=done, total=total)

    return update, bar.stop


# A run's details worth a word on the terminal, when not zero; all of them are in ops.pipeline_runs.details
# and the log's "run success" line.
HIGHLIGHTS = {
    "pages": "{:,} pages",
    "archive_files": "{:,} archive files",
    "rest_windows": "{:,} REST windows",
    "revised": "{:,} revised",
    "duplicates_dropped": "{:,} duplicates dropped",
    "open_candles_skipped": "{:,} open candles skipped",
    "outside_window_dropped": "{:,} outside the window dropped",
    "schema_changes": "schema changes: {}",
}


def print_summary(summary: RunSummary) -> None:
    """One short line per run: rows, dead letters and what stood out; the details are in the run ledger."""
    notes = [fmt.format(summary.details[k]) for k, fmt in HIGHLIGHTS.items() if summary.details.get(k)]
    print(
        f"{summary.source}: run {summary.run_id}: {summary.rows_raw:,} rows to raw, {summary.rows_bronze:,} to "
        f"bronze, {summary.dead_letters} dead letters" + (f" ({', '.join(notes)})" if notes else "")
    )
