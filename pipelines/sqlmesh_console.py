"""SQLMesh's console as the pipeline runs it: its terminal output at the terminal's width (unwrapped when not
a terminal), the failures it shows kept for the transform's error message, and - for a command that prints its
own summary (the demo) - its messages sent to the log instead. The intended ANALYZE warning is dropped; every
other warning still shows."""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import os
import re
import threading
from collections.abc import Iterator
from typing import Any

# What SQLMesh's console said that the terminal did not show (INFO when its messages go to the log, e.g. the
# demo's; DEBUG for the few it drops on a terminal). Not under "sqlmesh": configure_logging keeps that at WARNING.
SQLMESH_LOG = logging.getLogger("pipelines.transform.sqlmesh")
# SQLMesh warns of every statement it cannot parse, at each evaluation (on its logger and on the terminal). The
# post-statement of @analyze_after_backfill (sqlmesh_project/macros/tables.py) is one on purpose: a DO block
# around ANALYZE. Only that warning is dropped; every other one still shows.
INTENDED_WARNING = re.compile(r"'DO \$\$ BEGIN ANALYZE [^']*' could not be semantically understood")
# What SQLMesh's run says when nothing is due: after the plan that built everything, it reads like a failure
NOTHING_DUE = "No models are ready to run"
# SQLMesh's prebuilt audits (accepted_range ...) evaluate `@IF(@min_v IS NOT NULL, ...)` as Python, where a
# literal bound reads `1 is not None`: Python warns of it, on stderr, at each evaluation. Harmless, and not ours.
LITERAL_IS_NOT = '"is not" with a literal'  # a SyntaxWarning of module "<string>"


@functools.cache
def _console_class() -> type:
    """SQLMesh's terminal console (the Python API is silent by default), keeping the failures it shows. Its
    messages go to the terminal; with to_log, to the log instead, and the terminal keeps SQLMesh's progress
    bars and the details of a failure only."""
    from rich.console import Console as RichConsole
    from rich.control import Control
    from sqlmesh.core.console import TerminalConsole
    from sqlmesh.utils.rich import theme

    class RichOutput(RichConsole):
        """Where SQLMesh prints: a terminal, at its width (rich measures it at each print); anything else (a
        pipe, a file, CI, Airflow's task log) without wrapping, one message a line (rich's default there is 80
        columns). While `local.mode` (per thread) is "log", a print goes to `sink` as plain text instead; "both":
        to both. `bars`: False drops SQLMesh's progress displays when not on a terminal (they print their final
        state there, padded to the width, with no line end)."""

        def __init__(self, sink: Any, *, bars: bool) -> None:
            super().__init__(theme=theme)
            self.sink = sink
            self.bars = bars
            self.local = threading.local()

        def print(self, *objects: Any, **kwargs: Any) -> None:
            # a progress display (rich's Live) prints controls only, drawing itself through a render hook, and
            # a bare line end when it stops
            progress = all(isinstance(o, Control) for o in objects)
            mode = None if progress else getattr(self.local, "mode", None)
            if mode:
                self.sink(self.plain(objects, kwargs))
                if mode == "log":
                    return
            if not self.is_terminal:
                if progress and not self.bars:
                    return
                if kwargs.get("soft_wrap") is None:
                    kwargs["soft_wrap"] = True
            super().print(*objects, **kwargs)

        @staticmethod
        def plain(objects: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
            buffer = io.StringIO()
            out = RichConsole(file=buffer, theme=theme, color_system=None, width=120)
            out.print(*objects, **kwargs | {"soft_wrap": True})
            return "\n".join(line.rstrip() for line in buffer.getvalue().splitlines()).strip("\n")

    class PipelineConsole(TerminalConsole):
        def __init__(self, to_log: bool = False) -> None:
            super().__init__(console=RichOutput(self._log, bars=not to_log))
            self.to_log = to_log
            self.after_plan = False  # the run right after a plan: nothing due is what it should find
            self.failures: list[Any] = []

        def _log(self, text: str) -> None:
            if text:
                SQLMESH_LOG.log(logging.INFO if self.to_log else logging.DEBUG, text)

        @contextlib.contextmanager
        def _routed(self, mode: str) -> Any:
            """SQLMesh's prints in here: to the log ("log") or to the terminal and the log ("both"), when its
            messages go to the log; an outer routing (a failure's details) wins."""
            console: Any = self.console  # our RichOutput
            local = console.local
            if not self.to_log or getattr(local, "mode", None):
                yield
                return
            local.mode = mode
            try:
                yield
            finally:
                local.mode = None

        def _print(self, value: Any, **kwargs: Any) -> None:
            with self._routed("log"):
                super()._print(value, **kwargs)

        def update_snapshot_evaluation_progress(self, *args: Any, **kwargs: Any) -> None:
            with self._routed("log"):  # a line per model batch above the bar
                super().update_snapshot_evaluation_progress(*args, **kwargs)

        def update_creation_progress(self, *args: Any, **kwargs: Any) -> None:
            with self._routed("log"):
                super().update_creation_progress(*args, **kwargs)

        def update_promotion_progress(self, *args: Any, **kwargs: Any) -> None:
            with self._routed("log"):
                super().update_promotion_progress(*args, **kwargs)

        def log_failed_models(self, errors: list[Any]) -> None:
            self.failures[:] = errors
            with self._routed("both"):  # the details stay in front of the user
                super().log_failed_models(errors)

        def log_skipped_models(self, snapshot_names: set[str]) -> None:
            with self._routed("both"):
                super().log_skipped_models(snapshot_names)

        def log_error(self, message: str) -> None:
            with self._routed("both"):
                super().log_error(message)

        def log_warning(self, short_message: str, long_message: str | None = None) -> None:
            if INTENDED_WARNING.match(short_message):
                self._log(long_message or short_message)
            elif self.to_log:  # once, a record of SQLMesh's logger: the log's console shows warnings
                logging.getLogger("sqlmesh.core.console").warning(long_message or short_message)
            else:
                super().log_warning(short_message, long_message)

        def log_status_update(self, message: str) -> None:
            if self.after_plan and message.startswith(NOTHING_DUE):
                self._log(message)
            else:
                super().log_status_update(message)

    return PipelineConsole


def recording_console(*, to_log: bool = False) -> Any:
    """SQLMesh's terminal console, also keeping the failures it shows (see _console_class)."""
    return _console_class()(to_log=to_log)


@contextlib.contextmanager
def sqlmesh_console_to_log() -> Iterator[None]:
    """SQLMesh's messages (its plan, a line per model batch, its status and warnings) go to the log, at INFO,
    instead of the terminal: for a command whose console shows its own summary lines (the demo). The terminal
    keeps SQLMesh's progress bars, and the details of a failure (also logged)."""
    os.environ.setdefault("SQLMESH__DISABLE_ANONYMIZED_ANALYTICS", "true")  # before SQLMesh's first import
    from sqlmesh.core.console import get_console, set_console

    previous = get_console()
    set_console(recording_console(to_log=True))
    try:
        yield
    finally:
        set_console(previous)
