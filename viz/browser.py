"""Headless Chromium driven over the Chrome DevTools Protocol: look at pages as a person does.

Used by the browser tests and to take the README screenshots. It needs Debian's ``chromium``
(``apt-get install chromium``) and the ``websocket-client`` package; :func:`find_chromium`
returns None when the browser is missing so callers can skip with a reason. WebGL (plotly's 3D
scenes) runs on the CPU through SwiftShader.

Example (its browser lines are skipped by the doctest runs: they need the optional ``chromium``
system package; ``tests/test_viz_browser.py`` runs the browser wherever it is installed):
    >>> import pathlib, tempfile
    >>> from viz.browser import Chromium
    >>> tmp = tempfile.TemporaryDirectory()
    >>> page = pathlib.Path(tmp.name) / "page.html"
    >>> _ = page.write_text("<p>hello</p>")
    >>> with Chromium(width=320, height=240) as browser:  # doctest: +SKIP
    ...     browser.goto(page)
    ...     text = browser.evaluate("document.body.textContent")
    ...     png = browser.screenshot()
    >>> text, png[:4]  # doctest: +SKIP
    ('hello', b'\\x89PNG')
    >>> tmp.cleanup()
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
import weakref
from pathlib import Path
from typing import Any

from pcad.errors import PcadError

BROWSER_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
CHROMIUM_FLAGS = (
    "--headless=new", "--no-sandbox", "--disable-gpu", "--use-angle=swiftshader",
    "--enable-unsafe-swiftshader", "--disable-background-networking",
    "--disable-component-update", "--no-first-run", "--disable-sync",
    "--disable-default-apps", "--disable-extensions", "--hide-scrollbars",
    "--mute-audio", "--no-default-browser-check", "--remote-allow-origins=*",
    "--disable-dev-shm-usage", "--disable-crash-reporter", "--disable-breakpad",
)


class BrowserError(PcadError):
    """The browser could not be started or did not answer."""


def find_chromium() -> str | None:
    """Path of a Chromium/Chrome executable (``$PCAD_CHROMIUM`` first), or None."""
    env = os.environ.get("PCAD_CHROMIUM")
    if env and Path(env).is_file():
        return env
    for name in BROWSER_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


def _stop_group(proc: subprocess.Popen, profile: str | None) -> None:
    """End the browser's process group (the browser and the helpers it started), then
    remove its profile folder."""
    if proc.poll() is None:
        for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(wait)
                break
            except subprocess.TimeoutExpired:
                continue
    try:  # helpers left in the group after the browser itself exited
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    if profile:
        shutil.rmtree(profile, ignore_errors=True)


class Chromium:
    """A headless Chromium with one page, controlled over CDP.

    Args:
        width, height: the page's viewport in CSS pixels (device scale factor 1).
        executable: the browser (default :func:`find_chromium`).
        timeout: seconds to wait for the browser, a page load or a command.
    """

    def __init__(self, width: int = 1200, height: int = 800, executable: str | None = None,
                 timeout: float = 60.0) -> None:
        self.width, self.height, self.timeout = width, height, timeout
        self.executable = executable or find_chromium()
        if self.executable is None:
            raise BrowserError("no chromium executable found (apt-get install chromium)")
        self._proc: subprocess.Popen | None = None
        self._ws: Any = None
        self._next_id = 0
        self._events: list[dict] = []
        self._profile: str | None = None
        self._finalizer: weakref.finalize | None = None

    # -- life cycle -------------------------------------------------------------------------
    def __enter__(self) -> Chromium:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        """Start the browser and attach to its page (nothing happens when it runs already)."""
        if self._proc is not None:
            return
        try:
            import websocket  # websocket-client
        except ImportError as exc:  # pragma: no cover - dependency missing
            raise BrowserError("the websocket-client package is needed to drive chromium") \
                from exc
        self._profile = tempfile.mkdtemp(prefix="pcad-chromium-")
        args = [self.executable, *CHROMIUM_FLAGS, f"--user-data-dir={self._profile}",
                "--remote-debugging-port=0", f"--window-size={self.width},{self.height}",
                "about:blank"]
        # its own process group: close() ends the browser and every helper it started
        # (TMPDIR inside the profile: its singleton socket folder goes away with it)
        env = {**os.environ, "TMPDIR": self._profile}
        self._proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, env=env,
                                      stderr=subprocess.DEVNULL, start_new_session=True)
        self._finalizer = weakref.finalize(self, _stop_group, self._proc, self._profile)
        port_file = Path(self._profile) / "DevToolsActivePort"
        deadline = time.monotonic() + self.timeout
        while not (port_file.exists() and port_file.read_text().strip()):
            if self._proc.poll() is not None:
                raise BrowserError(f"chromium exited with status {self._proc.returncode}")
            if time.monotonic() > deadline:
                self.close()
                raise BrowserError("chromium did not open its DevTools port in time")
            time.sleep(0.05)
        port = int(port_file.read_text().split()[0])
        page_url = None
        while page_url is None:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as r:
                targets = json.loads(r.read())
            pages = [t for t in targets if t.get("type") == "page"]
            if pages:
                page_url = pages[0]["webSocketDebuggerUrl"]
            elif time.monotonic() > deadline:
                self.close()
                raise BrowserError("chromium opened no page")
            else:
                time.sleep(0.05)
        self._ws = websocket.create_connection(page_url, timeout=self.timeout,
                                               suppress_origin=True)
        self.send("Page.enable")
        self.send("Runtime.enable")
        self.send("Emulation.setDeviceMetricsOverride", width=self.width, height=self.height,
                  deviceScaleFactor=1, mobile=False)

    def close(self) -> None:
        """Stop the browser (its own process group only) and remove its profile."""
        if self._ws is not None:
            try:
                self._ws.close()
            except Exception:  # noqa: BLE001 - best effort
                pass
            self._ws = None
        if self._finalizer is not None:
            self._finalizer()  # runs _stop_group once
            self._finalizer = None
        elif self._profile:
            shutil.rmtree(self._profile, ignore_errors=True)
        self._proc = None
        self._profile = None

    # -- protocol -----------------------------------------------------------------------------
    def send(self, method: str, **params: Any) -> dict:
        """Send one CDP command and return its result (events that arrive meanwhile are
        kept for :meth:`wait_event`)."""
        if self._ws is None:
            raise BrowserError("the browser is not started")
        self._next_id += 1
        msg_id = self._next_id
        self._ws.send(json.dumps({"id": msg_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self._ws.recv())
            if msg.get("id") == msg_id:
                if "error" in msg:
                    raise BrowserError(f"{method}: {msg['error'].get('message', msg['error'])}")
                return msg.get("result", {})
            if "method" in msg:
                self._events.append(msg)

    def page_errors(self) -> list[str]:
        """JavaScript exceptions the page threw so far (``Runtime.exceptionThrown``)."""
        return [str(e["params"]["exceptionDetails"].get("exception", {}).get("description")
                    or e["params"]["exceptionDetails"].get("text"))
                for e in self._events if e["method"] == "Runtime.exceptionThrown"]

    def wait_event(self, method: str, timeout: float | None = None) -> dict:
        """Wait for the next CDP event ``method`` (e.g. ``Page.loadEventFired``)."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            for k, ev in enumerate(self._events):
                if ev["method"] == method:
                    return self._events.pop(k)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BrowserError(f"no {method} event within {timeout or self.timeout} s")
            self._ws.settimeout(remaining)
            try:
                msg = json.loads(self._ws.recv())
            finally:
                self._ws.settimeout(self.timeout)
            if "method" in msg:
                self._events.append(msg)

    # -- what a person does -------------------------------------------------------------------
    def goto(self, url: str | os.PathLike[str]) -> None:
        """Open ``url`` (a path is turned into a ``file://`` URL) and wait for its load."""
        if not str(url).startswith(("file:", "http:", "https:", "about:", "data:")):
            url = Path(url).resolve().as_uri()
        self._events.clear()
        self.send("Page.navigate", url=str(url))
        self.wait_event("Page.loadEventFired")

    def evaluate(self, expression: str, await_promise: bool = True) -> Any:
        """The value of a JavaScript expression in the page (promises are awaited)."""
        res = self.send("Runtime.evaluate", expression=expression, awaitPromise=await_promise,
                        returnByValue=True)
        if "exceptionDetails" in res:
            det = res["exceptionDetails"]
            text = det.get("exception", {}).get("description") or det.get("text")
            raise BrowserError(f"javascript error: {text}")
        return res.get("result", {}).get("value")

    def wait_for(self, expression: str, timeout: float | None = None) -> Any:
        """Poll a JavaScript expression until it is truthy; returns its value."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise BrowserError(f"timed out waiting for: {expression}")
            time.sleep(0.1)

    def click(self, x: float, y: float) -> None:
        """A left mouse click at page coordinates ``(x, y)`` (press, then release)."""
        self.send("Input.dispatchMouseEvent", type="mouseMoved", x=x, y=y)
        for kind in ("mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left",
                      clickCount=1)

    def screenshot(self, path: str | os.PathLike[str] | None = None,
                   full_page: bool = False) -> bytes:
        """PNG bytes of the viewport (or the whole page); written to ``path`` when given."""
        params: dict[str, Any] = {"format": "png"}
        if full_page:
            size = self.send("Page.getLayoutMetrics")["cssContentSize"]
            params.update(captureBeyondViewport=True, clip=dict(
                x=0, y=0, width=size["width"], height=size["height"], scale=1))
        data = base64.b64decode(self.send("Page.captureScreenshot", **params)["data"])
        if path is not None:
            Path(path).write_bytes(data)
        return data
