"""Real-browser test helpers: Debian's ``chromium`` driven by Playwright from pytest.

Use it from a test module with ``pytest_plugins = ["browser"]``; that registers the
fixtures below (and a report hook that adds the browser log to a failed test's report).

Fixtures
--------
``browser``  A Playwright ``Browser``: the system ``chromium`` (``shutil.which``), headless,
             no sandbox. Function-scoped: with pytest-asyncio 1.x every test runs in its
             own event loop (``asyncio_default_fixture_loop_scope = "function"``) and a
             Playwright object is bound to the loop that made it, so it cannot outlive the
             test; launching takes ~0.5 s. Playwright never downloads a browser here
             (``PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1``, ``executable_path``); without
             ``chromium`` or the ``playwright`` package the test is skipped with the reason
             (and in CI a skip fails the run: ``make test`` installs both).
``page``     A ``BrowserPage`` in a fresh context: a Playwright ``Page`` (every Page method
             works on it) that also records the console, uncaught page errors, failed
             requests and the events the page reports (below). An uncaught page error or a
             ``console.error`` fails the test at teardown (and ends any wait at once),
             unless it matches a pattern given to ``page.allow(regex)``.
``pages``    A static "page server": an aiohttp app on its own ephemeral port, so the
             pages' origin (``pages.origin``) differs from the pushgate server's and
             cross-origin behaviour (CORS, ``allowed_origins``) is real. It serves
             ``pages.add(path, html)`` and the scripts ``/centrifuge.js`` (and
             ``/centrifuge.protobuf.js``) from ``tests/node_modules/centrifuge/dist/``,
             ``/strophe.js`` (strophe.js's browser build: the ``Strophe`` global) from
             ``tests/node_modules/strophe.js/dist/``,
             and ``/pushgate.js`` and ``/pushgate.mjs`` from ``pushgate/static/`` when those
             exist (404 otherwise). ``pages.url(path)`` is the address to ``goto``.

Page events, without sleeping
-----------------------------
Every page gets, before its own scripts run, a global ``report(type, data)``. It appends
``{seq, type, ...data}`` to ``window.__events`` (``data`` an object is spread, anything
else lands under ``value``) and forwards the same JSON through ``page.expose_function``
to Python, where it is appended to ``page.reports`` and wakes any waiter, in order:

    page.reports_of("publication")                      # what has arrived so far
    await page.wait_for_report("subscribed", where=lambda e: e["recovered"])
    await page.wait_for_reports("publication", 40)      # the first 40 matching events
    mark = page.mark()                                  # then start=mark: only newer ones

A wait that times out fails with the whole browser log (reports, console, errors), so a
failure says what the page saw. ``window.__events`` also serves
``page.wait_for_function("window.__events.filter(e => ...).length >= N")`` if a JS
predicate is handier. ``html_page(script)`` builds a page that loads scripts and runs
``script``; ``js(value)`` renders a Python value as a JS literal safe inside ``<script>``.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from aiohttp import web

if TYPE_CHECKING:
    from playwright.async_api import Browser, ConsoleMessage, Page, Request

os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")

TESTS = Path(__file__).parent
ROOT = TESTS.parent
CENTRIFUGE_DIST = TESTS / "node_modules" / "centrifuge" / "dist"
STROPHE_DIST = TESTS / "node_modules" / "strophe.js" / "dist"
PUSHGATE_STATIC = ROOT / "pushgate" / "static"

CHROMIUM = shutil.which("chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-quic",
    "--no-first-run",
    "--disable-component-update",
    "--disable-sync",
]

WAIT = 10.0
"""Default timeout, seconds, of a wait for page reports."""

Event = dict[str, Any]

# Installed before any script of the page runs (and again on every navigation).
REPORT_SCRIPT = """
(() => {
  const events = [];
  let seq = 0;
  window.__events = events;
  window.report = (type, data) => {
    let event;
    if (data !== null && typeof data === "object" && !Array.isArray(data)) {
      event = Object.assign({}, data, {seq: seq++, type: String(type)});
    } else {
      event = {seq: seq++, type: String(type), value: data === undefined ? null : data};
    }
    let text;
    try {
      text = JSON.stringify(event);
    } catch (e) {
      text = JSON.stringify({seq: event.seq, type: event.type, unserializable: String(e)});
    }
    events.push(JSON.parse(text));
    window.__pushgate_report(text);
  };
})();
"""


def js(value: object) -> str:
    """``value`` as a JavaScript literal that is safe to inline in a ``<script>``."""
    text = json.dumps(value)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def html_page(
    script: str,
    *,
    scripts: Iterable[str] = ("/centrifuge.js",),
    module: bool = False,
    title: str = "pushgate browser test",
) -> str:
    """A page that loads ``scripts`` (URLs, in order) then runs ``script``
    (as an ES module when ``module``)."""
    tags = "\n".join(f'<script src="{src}"></script>' for src in scripts)
    kind = ' type="module"' if module else ""
    return (
        f"<!doctype html>\n<html><head><meta charset=utf-8><title>{title}</title>\n{tags}\n"
        f"</head><body>\n<script{kind}>\n{script}\n</script>\n</body></html>\n"
    )


# --- the page server -------------------------------------------------------------------
class PageServer:
    """Static pages and scripts on their own origin (another port on 127.0.0.1)."""

    def __init__(self) -> None:
        self.origin = ""
        self.pages: dict[str, tuple[bytes, str]] = {}
        self.files: dict[str, Path] = {
            "/centrifuge.js": CENTRIFUGE_DIST / "centrifuge.js",
            "/centrifuge.protobuf.js": CENTRIFUGE_DIST / "centrifuge.protobuf.js",
            "/strophe.js": STROPHE_DIST / "strophe.umd.min.js",
            "/pushgate.js": PUSHGATE_STATIC / "pushgate.js",
            "/pushgate.mjs": PUSHGATE_STATIC / "pushgate.mjs",
        }
        self.requests: list[str] = []
        self._runner: web.AppRunner | None = None

    def add(self, path: str, body: str | bytes, content_type: str = "text/html") -> str:
        """Serve ``body`` at ``path``; returns its URL."""
        assert path.startswith("/"), path
        data = body.encode() if isinstance(body, str) else body
        self.pages[path] = (data, content_type)
        return self.url(path)

    def add_file(self, path: str, file: Path) -> str:
        self.files[path] = file
        return self.url(path)

    def url(self, path: str) -> str:
        assert path.startswith("/"), path
        return self.origin + path

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(request.path)
        headers = {"Cache-Control": "no-store"}
        if request.path == "/favicon.ico" and request.path not in self.pages:
            return web.Response(status=204, headers=headers)
        if request.path in self.pages:
            data, content_type = self.pages[request.path]
            return web.Response(body=data, content_type=content_type, headers=headers)
        file = self.files.get(request.path)
        if file is not None and file.is_file():
            content_type = "text/javascript" if file.suffix in (".js", ".mjs") else None
            response = web.FileResponse(file, headers=headers)
            if content_type:
                response.content_type = content_type
            return response
        return web.Response(status=404, text=f"no page {request.path}", headers=headers)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("GET", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.origin = f"http://127.0.0.1:{port}"

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


# --- the page ---------------------------------------------------------------------------
class PageFailed(AssertionError):
    pass


class BrowserPage:
    """A Playwright ``Page`` (attributes are forwarded) plus what the page said."""

    def __init__(self, page: Page) -> None:
        self.pw = page
        self.reports: list[Event] = []
        self.console: list[str] = []
        self.errors: list[str] = []
        self.failed_requests: list[str] = []
        self._allowed: list[re.Pattern[str]] = []
        self._raised = 0
        self._changed = asyncio.Event()
        self._t0 = time.monotonic()
        page.on("console", self._on_console)
        page.on("pageerror", self._on_pageerror)
        page.on("requestfailed", self._on_requestfailed)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.pw, name)

    async def install(self) -> None:
        await self.pw.expose_function("__pushgate_report", self._on_report)
        await self.pw.add_init_script(REPORT_SCRIPT)

    # recording
    def _stamp(self) -> str:
        return f"{time.monotonic() - self._t0:7.3f}s"

    def _on_report(self, text: str) -> None:
        self.reports.append(json.loads(text))
        self._changed.set()

    def _on_console(self, message: ConsoleMessage) -> None:
        where = message.location.get("url") if message.type == "error" else None
        at = f" [{where}]" if where else ""
        line = f"{self._stamp()} console.{message.type}: {message.text}{at}"
        self.console.append(line)
        if message.type == "error" and not self._is_allowed(message.text):
            self.errors.append(line)
            self._changed.set()

    def _on_pageerror(self, error: Exception) -> None:
        text = str(error)
        stack = getattr(error, "stack", None)
        line = f"{self._stamp()} uncaught: {stack or text}"
        self.console.append(line)
        if not self._is_allowed(text):
            self.errors.append(line)
            self._changed.set()

    def _on_requestfailed(self, request: Request) -> None:
        self.failed_requests.append(
            f"{self._stamp()} {request.method} {request.url}: {request.failure}"
        )

    def allow(self, pattern: str) -> None:
        """Do not fail on console errors / page errors matching ``pattern`` (re.search)."""
        self._allowed.append(re.compile(pattern))

    def _is_allowed(self, text: str) -> bool:
        return any(p.search(text) for p in self._allowed)

    def log(self) -> str:
        lines = ["reports:"]
        lines += [f"  {json.dumps(e)}" for e in self.reports] or ["  (none)"]
        lines.append("console:")
        lines += [f"  {line}" for line in self.console] or ["  (none)"]
        if self.failed_requests:
            lines.append("failed requests:")
            lines += [f"  {line}" for line in self.failed_requests]
        return "\n".join(lines)

    def check(self) -> None:
        """Fail if the page had an uncaught error or a console error not allowed
        (each only once: a wait that failed on it does not fail teardown too)."""
        if len(self.errors) > self._raised:
            self._raised = len(self.errors)
            raise PageFailed("the page failed:\n  " + "\n  ".join(self.errors) + "\n" + self.log())

    # reports
    def mark(self) -> int:
        """An index into ``reports``: pass it as ``start`` to see only later reports."""
        return len(self.reports)

    def reports_of(
        self, type: str | None = None, where: Callable[[Event], bool] | None = None, start: int = 0
    ) -> list[Event]:
        return [
            e
            for e in self.reports[start:]
            if (type is None or e["type"] == type) and (where is None or where(e))
        ]

    async def wait_for_reports(
        self,
        type: str | None,
        count: int,
        *,
        where: Callable[[Event], bool] | None = None,
        start: int = 0,
        timeout: float = WAIT,
    ) -> list[Event]:
        """Wait until ``count`` reports match; return the first ``count`` of them."""
        try:
            async with asyncio.timeout(timeout):
                while True:
                    self.check()
                    found = self.reports_of(type, where, start)
                    if len(found) >= count:
                        return found[:count]
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            got = len(self.reports_of(type, where, start))
            raise PageFailed(
                f"timed out after {timeout}s waiting for {count} report(s) of type {type!r}"
                f" (got {got})\n{self.log()}"
            ) from None

    async def wait_for_report(
        self,
        type: str | None,
        *,
        where: Callable[[Event], bool] | None = None,
        start: int = 0,
        timeout: float = WAIT,
    ) -> Event:
        """Wait for the first report that matches; return it."""
        return (await self.wait_for_reports(type, 1, where=where, start=start, timeout=timeout))[0]


# --- fixtures ---------------------------------------------------------------------------
@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    if CHROMIUM is None:
        pytest.skip("needs Debian's chromium on PATH (`make test` installs it; CI is root)")
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        pytest.skip("needs the playwright package (`make test` installs the .[test] extras)")
    with tempfile.TemporaryDirectory(prefix="pushgate-chromium-") as tmp:
        # Chromium writes crash dumps and caches under HOME/XDG dirs: keep them per run.
        env = {**os.environ, "XDG_CONFIG_HOME": tmp, "XDG_CACHE_HOME": tmp}
        async with async_playwright() as playwright:
            launched = await playwright.chromium.launch(
                executable_path=CHROMIUM, args=CHROMIUM_ARGS, env=env
            )
            try:
                yield launched
            finally:
                await launched.close()


@pytest.fixture
async def page(browser: Browser, request: pytest.FixtureRequest) -> AsyncIterator[BrowserPage]:
    context = await browser.new_context()
    wrapped = BrowserPage(await context.new_page())
    await wrapped.install()
    request.node.stash.setdefault(_PAGES, []).append(wrapped)
    try:
        yield wrapped
    finally:
        await context.close()
    wrapped.check()


@pytest.fixture
async def pages() -> AsyncIterator[PageServer]:
    served = PageServer()
    await served.start()
    try:
        yield served
    finally:
        await served.close()


# --- a failed test's report shows what the browser saw ---------------------------------
_PAGES = pytest.StashKey[list]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    report = yield
    if report.failed and report.when == "call":
        for n, seen in enumerate(item.stash.get(_PAGES, []), 1):
            report.sections.append((f"browser page {n}", seen.log()))
    return report
