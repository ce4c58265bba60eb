"""The web inspector in a real browser: Debian's headless chromium, driven through its
chromedriver by Selenium, against a real `trellis serve examples/tour --inspector`
process. The page draws the graph, starts a session, walks the tour to its end through
the conversation panel (text answers and choices by keyboard, a confirmation, a signal)
and follows a step made by another caller through the session's watch. At each
milestone the DOM's text is checked and a screenshot saved and checked. Other servers
require a token, which the page asks for, and ask a question with a timeout that the
server's timer fires (or, with its timers off, the page). axe-core checks the page's
accessibility along the way."""

from __future__ import annotations

import os
import signal
import struct
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.support.cli import GUARD, ROOT, cli_env, copy_example, write_flow
from tests.support.node import node_modules
from tests.support.requirements import missing
from tests.support.waiting import eventually_sync

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
WINDOW = (1400, 1000)
READY = "trellis: inspector on "
AXE = Path(__file__).with_name("axe")
# any free ports; the page's address is read back from what the server prints
SERVE_FLAGS = ("--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--inspector")


@dataclass
class Served:
    process: subprocess.Popen[bytes]
    page: str  # the inspector's address, as the server printed it
    base: str  # the HTTP listener, http://127.0.0.1:PORT


def _started(log: Path, process: subprocess.Popen[bytes]) -> str:
    """The inspector address from the server's stderr, once it is serving."""
    found: list[str] = []

    def ready() -> bool:
        assert process.poll() is None, f"the server exited:\n{log.read_text(errors='replace')}"
        found[:] = [line for line in log.read_text(errors="replace").splitlines() if line.startswith(READY)]
        return bool(found)

    eventually_sync(ready, "the server printed the inspector's address", within=GUARD)
    return found[0].removeprefix(READY).strip()


@contextmanager
def serve(flow: Path, log: Path, *flags: str, env: dict[str, str] | None = None) -> Iterator[Served]:
    """A real `trellis serve FLOW --inspector` process, stopped (by its PID) at the end."""
    with log.open("wb") as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "trellis.cli.main", "serve", str(flow), *SERVE_FLAGS, *flags],
            cwd=ROOT,
            env=cli_env(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
            start_new_session=True,
        )
    try:
        page = _started(log, process)
        yield Served(process, page, page.removesuffix("/inspector/"))
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=GUARD)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    with serve(copy_example("tour", tmp_path), tmp_path / "server.log") as server:
        yield server


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    if not CHROMIUM.exists() or not CHROMEDRIVER.exists():
        missing("chromium and chromedriver are not installed (Debian: chromium chromium-driver)")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        missing("selenium is not installed (the dev extra has it)")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless=new",
        "--no-sandbox",  # root in CI containers
        "--disable-gpu",
        "--disable-dev-shm-usage",
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        # Loopback only: every other host name fails to resolve, so a page that loaded
        # anything from elsewhere (a CDN) would log an error, and the browser's own
        # background traffic (updates, metrics) stays off.
        "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    driver.set_page_load_timeout(GUARD)
    driver.set_script_timeout(GUARD)
    try:
        yield driver
    finally:
        driver.quit()


class Page:
    """The inspector page as a person sees it: texts, controls, keys, screenshots."""

    def __init__(self, driver: Any, shots: Path) -> None:
        from selenium.webdriver.common.by import By
        from selenium.webdriver.common.keys import Keys

        self.driver = driver
        self.by = By
        self.keys = Keys
        self.shots = shots
        shots.mkdir()

    def text(self, element_id: str) -> str:
        return str(self.driver.find_element(self.by.ID, element_id).text)

    def wait_text(self, element_id: str, expected: str) -> None:
        eventually_sync(
            lambda: expected in self.text(element_id),
            f"#{element_id} shows {expected!r}",
            within=GUARD,
            interval=0.1,
        )

    def wait_node(self, node_id: str) -> None:
        eventually_sync(
            lambda: self.text("state-node") == node_id,
            f"the session panel's current node is {node_id!r}",
            within=GUARD,
            interval=0.1,
        )

    def focused(self) -> Any:
        return self.driver.switch_to.active_element

    def press(self, *keys: str) -> None:
        self.focused().send_keys(*keys)

    def choice(self, text: str) -> Any:
        """The answer button labelled ``text``, once the conversation offers it."""
        found: list[Any] = []

        def offered() -> bool:
            found[:] = [
                b
                for b in self.driver.find_elements(self.by.CSS_SELECTOR, "#choices button, #signals button")
                if b.text == text and b.is_enabled()
            ]
            return bool(found)

        eventually_sync(offered, f"a button {text!r}", within=GUARD, interval=0.1)
        return found[0]

    def screenshot(self, name: str, *expected: str) -> Path:
        """A screenshot, taken when the DOM shows every ``expected`` text (checked too)."""
        body = str(self.driver.find_element(self.by.TAG_NAME, "body").text)
        for text in expected:
            assert text in body, f"{name}: {text!r} is not on the page:\n{body}"
        path = self.shots / f"{name}.png"
        assert self.driver.save_screenshot(str(path)), f"{name}: no screenshot"
        viewport = self.driver.execute_script(
            "return [window.innerWidth * devicePixelRatio, window.innerHeight * devicePixelRatio]"
        )
        check_png(path, (int(viewport[0]), int(viewport[1])))
        return path


@pytest.fixture(scope="module")
def axe_source() -> str:
    """axe-core, the accessibility rules engine, to run inside the page."""
    return (node_modules(AXE, "axe-core") / "axe-core" / "axe.min.js").read_text(encoding="utf-8")


def accessibility_problems(driver: Any, axe_source: str) -> list[str]:
    """What axe-core finds wrong with the page as it is now (WCAG A/AA rules and best
    practices): one line per rule broken, with the elements that break it."""
    driver.execute_script(axe_source)
    found = driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "axe.run(document, {resultTypes: ['violations']})"
        ".then((r) => done(r.violations.map((v) => `${v.impact} ${v.id}: ${v.help} at `"
        " + v.nodes.map((n) => n.target.join(' ')).join(', '))))"
        ".catch((e) => done([`axe failed: ${e}`]));"
    )
    return [str(line) for line in found]


def check_png(path: Path, size: tuple[int, int]) -> None:
    """A PNG of the page's viewport, and not a blank one (those compress to a few hundred
    bytes; a page of text and a graph is tens of kilobytes)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path.name} is not a PNG"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == size, f"{path.name} is {width}x{height}, the viewport {size}"
    assert len(data) > 20_000, f"{path.name} is only {len(data)} bytes: a blank page?"


def navigate_elsewhere(base: str, session_id: str, text: str) -> dict[str, Any]:
    """A step by another caller: a plain Connect call, not through the page."""
    request = urllib.request.Request(
        f"{base}/trellis.v1.Sessions/Navigate",
        data=orjson.dumps({"sessionId": session_id, "input": {"text": text}}),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=GUARD) as reply:
        result: dict[str, Any] = orjson.loads(reply.read())
        return result


def test_the_page_walks_the_tour_to_its_end(
    served: Served, browser: Any, axe_source: str, tmp_path: Path
) -> None:
    page = Page(browser, tmp_path / "screenshots")
    # The listener's root leads to the page.
    browser.get(served.base + "/")
    assert browser.current_url == served.page
    page.wait_text("notice", "Connected: 23 nodes in the flow")
    eventually_sync(
        lambda: "ask_name" in page.text("graph-view") and "menu" in page.text("graph-view"),
        "Mermaid drew the graph",
        within=GUARD,
    )
    assert browser.find_element(page.by.CSS_SELECTOR, "#graph-view svg")
    # a CEL condition as an edge label, with its quotes and comparison intact
    assert "size(name) > 0" in " ".join(page.text("graph-view").split())
    page.screenshot("graph", "Graph", "Sessions", "ask_name", "shop/receipt")

    # Start a session with the keyboard: type its ID, Enter submits the form.
    browser.find_element(page.by.ID, "new-id").send_keys("walk", page.keys.ENTER)
    page.wait_text("chat-log", 'What is your name? (press Enter to be called "traveller")')
    page.wait_node("ask_name")
    listed = browser.find_element(page.by.CSS_SELECTOR, "#session-list button[aria-current='true']")
    assert listed.text == "walk"
    # The answer box has the focus: type the name and press Enter.
    assert page.focused().get_attribute("id") == "answer"
    page.press("Ada", page.keys.ENTER)
    page.wait_text("chat-log", "Ada, pick a part of the tour")
    page.wait_node("menu")
    page.wait_text("state-context", '"name": "Ada"')
    page.screenshot("named", "you\nAda", "Current node\nmenu", '"name": "Ada"')

    # A choice by keyboard: the first answer has the focus, the arrows move along.
    assert page.focused().text == "drinks"
    page.press(page.keys.ENTER)
    page.wait_text("chat-log", "What would you like to drink, Ada?")
    assert page.focused().text == "tea"
    page.press(page.keys.ARROW_RIGHT)
    assert page.focused().text == "coffee"
    page.press(page.keys.ARROW_LEFT)
    assert page.focused().text == "tea"
    page.press(page.keys.ENTER)
    page.wait_text("chat-log", "Tea it is: a calm choice.")
    page.wait_node("menu")

    # A signal, then a confirmation that refuses.
    page.choice("Signal: interrupt").click()
    page.wait_text("chat-log", "Leave the tour?")
    page.wait_node("interrupted")
    page.screenshot("signal", "⚡ interrupt", "Leave the tour?", "Current node\ninterrupted")
    # Every panel is filled in now: the page passes axe-core's accessibility rules.
    assert accessibility_problems(browser, axe_source) == []
    page.choice("no").click()
    page.wait_node("menu")

    # A confirmation that accepts, and a tool the server runs.
    page.choice("confirm").click()
    page.wait_text("chat-log", "Do you like the tour so far?")
    page.choice("yes").click()
    page.wait_text("chat-log", 'Glad to hear it (you answered "yes")')
    page.wait_node("menu")
    page.choice("tool").click()
    page.wait_text("chat-log", 'The tool `word_stats` says "Ada" has 3 letter(s).')
    page.wait_text("state-context", '"letters": 3')

    # Another caller moves the session: the watch shows it, and the prompt follows.
    moved = navigate_elsewhere(served.base, "walk", "drinks")
    assert moved["step"]["state"]["currentNodeId"] == "drink"
    page.wait_node("drink")
    page.wait_text("chat-log", "The session moved on without this page")
    page.choice("water").click()
    page.wait_text("chat-log", "Water keeps you going.")
    page.screenshot("elsewhere", "moved on without this page", "Water keeps you going.")

    # The end: finish waits once, and Enter (the empty answer) ends the session.
    page.choice("finish").click()
    page.wait_text("chat-log", "# Goodbye, Ada")
    page.wait_node("finish")
    browser.find_element(page.by.ID, "answer").send_keys(page.keys.ENTER)
    page.wait_text("chat-log", "The session has ended.")
    page.wait_text("state-status", "ended")
    history = page.text("state-history").split("\n")
    assert history[:4] == ["start", "ask_name", "menu", "drink"] and history[-1] == "finish"
    assert "agreed" in history and "word_stats" in history and "cold_drink" in history
    current = browser.find_elements(page.by.CSS_SELECTOR, "#graph-view svg g.current")
    assert [node.text for node in current] == ["finish"]
    assert not browser.find_element(page.by.ID, "answer").is_enabled()
    page.screenshot("ended", "The session has ended.", "Status\nended", "Drink: water. Liked the tour: yes.")
    assert accessibility_problems(browser, axe_source) == []

    # Nothing went wrong in the page: no script error, no refused load (CSP included).
    problems = [entry["message"] for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert problems == []
    shots = sorted(p.name for p in page.shots.iterdir())
    assert shots == ["elsewhere.png", "ended.png", "graph.png", "named.png", "signal.png"]
    request = urllib.request.Request(
        f"{served.base}/trellis.v1.Sessions/Get",
        data=b'{"sessionId": "walk"}',
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=GUARD) as reply:
        assert orjson.loads(reply.read())["step"]["state"]["status"] == "STATUS_TERMINATED"


TIMED_FLOW = {
    "start.md": "---\ntype: question\ntimeout: 1s\non_timeout: late\nto: in_time\n---\n"
    "Answer within a second.\n",
    "late.md": "---\nwait: true\n---\nToo late: the timeout signal came.\n",
    "in_time.md": "---\nwait: true\n---\nIn time.\n",
}


@pytest.mark.parametrize("server_timers", [True, False], ids=["server-timers", "no-server-timers"])
def test_behind_a_token_with_a_timeout(
    browser: Any, axe_source: str, tmp_path: Path, server_timers: bool
) -> None:
    """The page asks for the token, then shows a question's deadline: the server's timer
    fires it and the watch shows the result; with the server's timers off, the page sends
    the timeout signal itself."""
    flow = write_flow(tmp_path / "timed", TIMED_FLOW)
    token = tmp_path / "token"
    token.write_text("page-token-1\n", encoding="utf-8")
    env = {"TRELLIS_TIMERS": "true" if server_timers else "false"}
    with serve(flow, tmp_path / "server.log", "--token-file", str(token), env=env) as served:
        page = Page(browser, tmp_path / "screenshots")
        browser.get(served.page)
        page.wait_text("notice", "Enter the server's bearer token above.")
        assert "UNAUTHENTICATED" in page.text("notice")
        page.screenshot("token", "Bearer token", "UNAUTHENTICATED")
        assert accessibility_problems(browser, axe_source) == []
        browser.find_element(page.by.ID, "token").send_keys("page-token-1", page.keys.ENTER)
        page.wait_text("notice", "Connected: 3 nodes in the flow")
        browser.find_element(page.by.ID, "new-id").send_keys("timed", page.keys.ENTER)
        page.wait_text("chat-log", "Answer within a second.")
        page.wait_text("timer", 'Answer within 1 s, or the "timeout" signal is sent.')
        # Nobody answers. The watch (behind the token too) shows where the session went.
        page.wait_text("chat-log", "Too late: the timeout signal came.")
        page.wait_node("late")
        log = page.text("chat-log")
        if server_timers:
            assert "moved on without this page" in log and "no answer in time" not in log
        else:
            assert "(no answer in time: timeout)" in log and "moved on" not in log
        assert "Refused" not in log
        page.screenshot("late", "Too late", "Current node\nlate")
        problems = [
            entry["message"]
            for entry in browser.get_log("browser")
            if entry["level"] == "SEVERE" and "401 (Unauthorized)" not in entry["message"]
        ]
        assert problems == []
