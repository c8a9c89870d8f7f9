"""The HTML report opened by a real browser: headless Chromium over the DevTools protocol.

It checks what no string test can: the page renders, every embedded plot decodes as an image, the
console stays free of errors; and it saves a screenshot next to the page (``screenshot.png``).
Skipped, with the reason, only where no Chromium is installed (.ci/run installs Debian's
``chromium``).
"""

from __future__ import annotations

import base64
import contextlib
import json
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run", "--no-default-browser-check", "--disable-extensions", "--hide-scrollbars",
    "--remote-debugging-port=0", "--window-size=1280,2000",
]  # fmt: skip


def _browser() -> str:
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("needs a Chromium browser, which pip does not install (the Quickstart's command neither): "
                "apt-get install chromium, or any of " + ", ".join(BROWSERS) + " on the PATH; .ci/run installs it "
                "where apt is available")  # fmt: skip


class DevTools:
    """The few DevTools protocol calls the test needs, over one page's websocket."""

    def __init__(self, url: str) -> None:
        import websocket

        self.ws = websocket.create_connection(url, timeout=60, suppress_origin=True)
        self.next_id = 0
        self.events: list[dict[str, Any]] = []

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self.next_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            self.events.append(msg)

    def wait_for(self, event: str, timeout_s: float = 60) -> None:
        end = time.monotonic() + timeout_s
        while not any(e.get("method") == event for e in self.events):
            if time.monotonic() > end:
                raise TimeoutError(f"no {event} within {timeout_s} s")
            self.events.append(json.loads(self.ws.recv()))

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        return result["result"].get("value")

    def close(self) -> None:
        self.ws.close()


def _page_socket(profile: Path, proc: subprocess.Popen[bytes]) -> str:
    """The websocket of the browser's first page, once Chromium has said which port it listens on."""
    port_file = profile / "DevToolsActivePort"
    end = time.monotonic() + 60
    while not port_file.is_file() or not port_file.read_text().strip():
        if proc.poll() is not None or time.monotonic() > end:
            raise RuntimeError(f"Chromium did not start (exit {proc.poll()})")
        time.sleep(0.1)
    port = int(port_file.read_text().split()[0])
    while True:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
            pages = [t for t in json.loads(r.read()) if t.get("type") == "page"]
        if pages:
            return pages[0]["webSocketDebuggerUrl"]
        if time.monotonic() > end:
            raise RuntimeError("Chromium opened no page")
        time.sleep(0.1)


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    from test_report import full_run  # the realistic 4 backbones x 3 variants run

    from bench.analysis.report import write_report

    tmp = tmp_path_factory.mktemp("browser")
    return write_report(full_run(tmp, frames=(81, 243)), accuracy=["reported"], out=tmp / "rep")


@contextlib.contextmanager
def opened_page(page: Path, profile: Path) -> Iterator[DevTools]:
    """DevTools of a headless Chromium that has loaded ``page`` (skips without Chromium or websocket-client)."""
    browser = _browser()
    pytest.importorskip("websocket", reason="websocket-client is in the dev extra")
    proc = subprocess.Popen([browser, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        tools = DevTools(_page_socket(profile, proc))
        for domain in ("Page", "Runtime", "Log"):
            tools.call(f"{domain}.enable")
        tools.events.clear()
        tools.call("Page.navigate", url=page.resolve().as_uri())
        tools.wait_for("Page.loadEventFired")
        yield tools
        tools.close()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_the_report_renders_in_chromium_with_every_image_and_no_console_error(report, tmp_path):
    with opened_page(report / "index.html", tmp_path / "profile") as tools:
        page = tools.evaluate("""(async () => {
            await Promise.all(Array.from(document.images).map(i => i.decode().catch(() => null)));
            return {
                title: document.title,
                h1: document.querySelector('h1') && document.querySelector('h1').textContent,
                tables: document.querySelectorAll('table').length,
                height: document.body.scrollHeight,
                images: Array.from(document.images).map(i => [i.alt, i.complete, i.naturalWidth, i.naturalHeight]),
            };
        })()""")
        shot = tools.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
    screenshot = report / "screenshot.png"
    screenshot.write_bytes(base64.b64decode(shot["data"]))
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and screenshot.stat().st_size > 10_000

    assert page["title"].startswith("vptbench report") and page["h1"].startswith("vptbench report")
    assert page["tables"] >= 5 and page["height"] > 2000  # 4 backbone tables + environment, laid out
    plots = sorted(p.stem for p in (report / "plots").glob("*.png"))
    assert sorted(alt for alt, *_ in page["images"]) == plots  # every plot is on the page...
    broken = [alt for alt, complete, width, height in page["images"] if not (complete and width > 200 and height > 200)]
    assert broken == []  # ...and decodes as an image
    errors = [
        e["params"] for e in tools.events
        if (e.get("method") == "Runtime.consoleAPICalled" and e["params"].get("type") in ("error", "assert"))
        or e.get("method") == "Runtime.exceptionThrown"
        or (e.get("method") == "Log.entryAdded" and e["params"]["entry"].get("level") == "error")
    ]  # fmt: skip
    assert errors == []
