"""The Streamlit dashboard as a process: its command line, its environment, and serving it.

`cryptoflow dashboard` and `cryptoflow up` start `command(...)` with `env(...)`; dashboard_bench.py times the
queries its pages run.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from pipelines.settings import Settings

PROJECT_ROOT = Path(__file__).resolve().parents[2]
APP_DIR = PROJECT_ROOT / "app"
ENTRY_POINT = APP_DIR / "streamlit_app.py"


def command(
    settings: Settings, port: int | None = None, headless: bool = True, host: str = "127.0.0.1"
) -> list[str]:
    """argv of `streamlit run` for the dashboard on host:port (default 127.0.0.1:services.dashboard_port;
    0.0.0.0 in a container)."""
    port = settings.services.dashboard_port if port is None else port
    return [
        str(Path(sys.executable).parent / "streamlit"),
        "run",
        str(ENTRY_POINT),
        "--server.port",
        str(port),
        "--server.headless",
        "true" if headless else "false",
        "--browser.gatherUsageStats",
        "false",
        "--server.address",
        host,
    ]


def env(settings: Settings, config_file: str | Path) -> dict[str, str]:
    """What the app process needs on top of the caller's environment: the config it reads, no usage stats."""
    return {
        "CRYPTOFLOW_CONFIG": str(Path(config_file).resolve()),
        "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false",
        "STREAMLIT_SERVER_HEADLESS": "true",
        "STREAMLIT_SERVER_FILE_WATCHER_TYPE": "none",  # served, not developed: no polling of the source tree
        # the app imports `pipelines` (installed in the venv; the project root also works from a checkout)
        "PYTHONPATH": os.pathsep.join(p for p in (str(PROJECT_ROOT), os.environ.get("PYTHONPATH", "")) if p),
    }


def serve(
    settings: Settings, config_file: str | Path, port: int | None = None, host: str = "127.0.0.1"
) -> int:
    """Become the dashboard server (exec): signals reach Streamlit itself, so a SIGTERM to this pid (from
    `cryptoflow down`, a container runtime or a terminal) can never leave an orphan holding the port."""
    argv = command(settings, port, host=host)
    print(f"dashboard: http://{host}:{argv[argv.index('--server.port') + 1]}", file=sys.stderr, flush=True)
    os.chdir(APP_DIR)
    os.execve(argv[0], argv, {**os.environ, **env(settings, config_file)})
    return 0  # not reached
