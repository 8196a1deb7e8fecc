"""The real dashboard server (`pipelines.runtime.dashboard_server.command`) in a real headless Chromium: every page renders
its key element, with no Streamlit exception and no console error. Screenshots land in pytest's tmp_path."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time

import pytest

from pipelines.http import answers
from pipelines.runtime import dashboard_server

# a real server and a real browser on pipeline-built databases (20-30 s each), or a server killed by a signal
pytestmark = pytest.mark.slow

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# url path -> (title shown, the selector of the page's key element, how many of them)
PAGES = {
    "": ("Market overview", '[data-testid="stDataFrame"]', 1),
    "price_analysis": ("Price analysis", '[data-testid="stPlotlyChart"]', 1),
    "market_sentiment": ("Market sentiment", '[data-testid="stPlotlyChart"]', 3),
    "data_quality": ("Data quality", '[data-testid="stMetric"]', 3),
}
START_TIMEOUT_S = 60


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(settings, config, tmp_path_factory):
    """The real dashboard server on a free port, stopped (the one process we started) at the end."""
    port = free_port()
    log = (tmp_path_factory.mktemp("server") / "streamlit.log").open("w")
    process = subprocess.Popen(
        dashboard_server.command(settings, port),
        cwd=dashboard_server.APP_DIR,
        env={**os.environ, **dashboard_server.env(settings, config)},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not answers(f"http://127.0.0.1:{port}/_stcore/health"):
            assert process.poll() is None, f"the dashboard exited: see {log.name}"
            assert time.monotonic() < deadline, (
                f"the dashboard did not answer in {START_TIMEOUT_S} s: {log.name}"
            )
            time.sleep(0.3)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()  # the one process we started, by its handle
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


@pytest.fixture(scope="module")
def server(gold_db, tmp_path_factory):
    yield from _serve(*gold_db, tmp_path_factory)


@pytest.fixture(scope="module")
def historical_server(historical_db, tmp_path_factory):
    yield from _serve(*historical_db, tmp_path_factory)


@pytest.fixture(scope="module")
def tiny_server(tiny_db, tmp_path_factory):
    yield from _serve(*tiny_db, tmp_path_factory)


@pytest.fixture(params=["historical_server", "tiny_server"])
def odd_server(request):
    """The databases a new user really has: a historical window only, or one pair and one day."""
    return request.getfixturevalue(request.param)


@pytest.fixture(scope="module")
def browser():
    executable = shutil.which("chromium")
    if executable is None:
        pytest.fail(
            "Debian's chromium is not installed: `make test` installs it (apt-get install -y chromium)"
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.mark.parametrize("path", list(PAGES))
@pytest.mark.parametrize("viewport", [{"width": 1400, "height": 1000}, {"width": 390, "height": 844}])
def test_every_page_renders_in_a_real_browser(server, browser, path, viewport, tmp_path):
    title, selector, count = PAGES[path]
    page, errors = _open(browser, server, path, viewport)
    try:
        page.get_by_role("heading", name=title).wait_for(state="visible", timeout=30_000)
        page.locator(selector).nth(count - 1).wait_for(state="visible", timeout=30_000)
        page.wait_for_load_state("networkidle")
        page.screenshot(path=str(tmp_path / f"{path or 'overview'}-{viewport['width']}.png"), full_page=True)
        assert page.locator(selector).count() == count
        assert page.locator('[data-testid="stException"]').count() == 0
        assert page.locator('[data-testid="stAlertContentInfo"]').count() == 0  # data, not an empty state
    finally:
        page.close()
    assert errors == []


@pytest.mark.parametrize("path", list(PAGES))
def test_every_page_renders_on_a_historical_window_in_a_real_browser(
    historical_server, browser, path, tmp_path
):
    """A backfill of the past only: a delisted pair, no market snapshot inside the window."""
    title, _, _ = PAGES[path]
    page, errors = _open(browser, historical_server, path, {"width": 1400, "height": 1000})
    try:
        page.get_by_role("heading", name=title).wait_for(state="visible", timeout=30_000)
        page.wait_for_load_state("networkidle")
        page.locator('[data-testid="stMain"]').get_by_text("Running...").wait_for(
            state="hidden", timeout=30_000
        )
        page.screenshot(path=str(tmp_path / f"historical-{path or 'overview'}.png"), full_page=True)
        assert page.locator('[data-testid="stException"]').count() == 0
    finally:
        page.close()
    assert errors == []


def _open(browser, server: str, path: str, viewport: dict):
    """A page at server/path that records every console error, failed request, HTTP error and page error."""
    page = browser.new_page(viewport=viewport)
    errors: list[str] = []
    # Opened at /<page>, Streamlit's frontend first probes /<page>/_stcore/{health,host-config} in case the
    # app is served under a base path, gets 404, then uses /. Those probes (and their console lines) are the
    # only failures ignored.
    probe = f"{server}/{path}/_stcore/" if path else None

    def record(kind: str, text: str, url: str = "", status: int = 0) -> None:
        if not (probe and url.startswith(probe) and status in (0, 404)):
            errors.append(f"{kind}: {text} ({url})")

    page.on(
        "console",
        lambda m: record("console", m.text, m.location.get("url", "")) if m.type == "error" else None,
    )
    page.on("requestfailed", lambda r: record("request failed", r.failure or "", r.url))
    page.on(
        "response", lambda r: record(f"HTTP {r.status}", "", r.url, r.status) if r.status >= 400 else None
    )
    page.on("pageerror", lambda error: record("page error", str(error)))
    page.goto(f"{server}/{path}", wait_until="domcontentloaded")
    return page, errors


def test_sigterm_to_cryptoflow_dashboard_leaves_no_orphan(empty_db):
    """`cryptoflow dashboard` execs Streamlit: the pid a supervisor holds is the server itself."""
    import signal
    import sys

    import psutil

    _settings, config = empty_db
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipelines.cli", "--config", str(config), "dashboard", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    health = f"http://127.0.0.1:{port}/_stcore/health"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not answers(health):
            assert proc.poll() is None and time.monotonic() < deadline, "the dashboard did not start"
            time.sleep(0.3)
        assert psutil.Process(proc.pid).children(recursive=True) == []  # no child to orphan
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not answers(health)
    with socket.socket() as s:  # nothing listens there any more: a new server can take the port
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers do (the probes' TIME_WAIT)
        s.bind(("127.0.0.1", port))
        s.listen()
