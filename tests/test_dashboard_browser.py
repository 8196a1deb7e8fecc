"""The real dashboard server (`pipelines.runtime.dashboard_server.command`) in a real headless Chromium: every page renders
its key element, with no Streamlit exception and no console error, on a desktop (1,400 px) and on a phone (390 px)
without scrolling sideways. Screenshots land in pytest's tmp_path."""

from __future__ import annotations

import contextlib
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
# each page is taken at both widths: loaded wide, then the same page narrowed (no second load)
WIDE = {"width": 1400, "height": 1000}
NARROW = {"width": 390, "height": 844}  # a phone
# What makes the page scroll sideways at this width: the document or one of Streamlit's page containers wider
# than its box, or an element sticking out of the viewport that no box of its own (a table's or a chart's
# scroller, inside the page) holds. A table wider than a phone scrolls inside its own box: that is no overflow.
SIDEWAYS_OVERFLOW_JS = """() => {
    const width = window.innerWidth;
    const found = [];
    const describe = (el) => {
        const id = el.getAttribute("data-testid") || el.className?.baseVal || el.className || "";
        return `${el.tagName.toLowerCase()}[${String(id).slice(0, 60)}]`;
    };
    const page = ["stApp", "stAppViewContainer", "stMain", "stMainBlockContainer"]
        .map((id) => document.querySelector(`[data-testid="${id}"]`)).filter(Boolean);
    if (document.documentElement.scrollWidth > width) {
        found.push(`the document is ${document.documentElement.scrollWidth} px wide`);
    }
    for (const el of page) {
        if (el.scrollWidth > el.clientWidth + 1) found.push(`${describe(el)} scrolls: ${el.scrollWidth} px`);
    }
    const main = document.querySelector('[data-testid="stMainBlockContainer"]');
    const heldInside = (el) => {
        for (let a = el.parentElement; a && a !== main; a = a.parentElement) {
            const r = a.getBoundingClientRect();
            if (getComputedStyle(a).overflowX !== "visible" && r.left >= -1 && r.right <= width + 1) return true;
        }
        return false;
    };
    for (const el of main ? main.querySelectorAll("*") : []) {
        const r = el.getBoundingClientRect();
        if (r.left >= -1 && r.right <= width + 1) continue;
        if (!el.checkVisibility()) continue;  // not drawn, e.g. inside a closed expander
        if (!heldInside(el)) found.push(`${describe(el)} spans ${Math.round(r.left)}..${Math.round(r.right)} px`);
    }
    return found.slice(0, 10);
}"""
# Streamlit folds the sidebar away on a phone and opens it again on a desktop, sliding: wait until it is there
SIDEBAR_SETTLED_JS = """(folded) => {
    const box = document.querySelector('[data-testid="stSidebar"]').getBoundingClientRect();
    return folded ? box.right <= 0 : box.left >= 0;
}"""


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
def test_every_page_renders_in_a_real_browser(server, browser, path, tmp_path):
    title, selector, count = PAGES[path]
    page, errors = _open(browser, server, path, WIDE)
    try:
        page.get_by_role("heading", name=title).wait_for(state="visible", timeout=30_000)
        page.locator(selector).nth(count - 1).wait_for(state="visible", timeout=30_000)
        page.wait_for_load_state("networkidle")
        for viewport in (WIDE, NARROW):
            resize_and_assert_it_fits(page, viewport)
            page.screenshot(
                path=str(tmp_path / f"{path or 'overview'}-{viewport['width']}.png"), full_page=True
            )
            assert page.locator(selector).count() == count
            assert page.locator('[data-testid="stException"]').count() == 0
            assert page.locator('[data-testid="stAlertContentInfo"]').count() == 0  # data, not an empty state
    finally:
        page.close()
    assert errors == []


@pytest.mark.parametrize("path", list(PAGES))
def test_every_page_renders_on_a_new_users_database_in_a_real_browser(odd_server, browser, path, tmp_path):
    """A backfill of the past only (a delisted pair, no market snapshot inside the window), or one pair and
    one day: what a new user has."""
    title, _, _ = PAGES[path]
    page, errors = _open(browser, odd_server, path, WIDE)
    try:
        page.get_by_role("heading", name=title).wait_for(state="visible", timeout=30_000)
        page.wait_for_load_state("networkidle")
        page.locator('[data-testid="stMain"]').get_by_text("Running...").wait_for(
            state="hidden", timeout=30_000
        )
        for viewport in (WIDE, NARROW):
            resize_and_assert_it_fits(page, viewport)
            page.screenshot(
                path=str(tmp_path / f"{path or 'overview'}-{viewport['width']}.png"), full_page=True
            )
            assert page.locator('[data-testid="stException"]').count() == 0
    finally:
        page.close()
    assert errors == []


def resize_and_assert_it_fits(page, viewport: dict) -> None:
    """The page at this width, with nothing that makes it scroll sideways. Charts and tables lay themselves
    out again after a resize: wait until the page fits (the check itself, polled each frame), then name what
    does not."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    page.set_viewport_size(viewport)
    page.wait_for_function(SIDEBAR_SETTLED_JS, arg=viewport == NARROW, timeout=10_000)
    with contextlib.suppress(PlaywrightTimeout):
        page.wait_for_function(f"({SIDEWAYS_OVERFLOW_JS})().length === 0", timeout=10_000)
    assert page.evaluate(SIDEWAYS_OVERFLOW_JS) == [], f"the page scrolls sideways at {viewport['width']} px"


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
