"""A minimal Chrome DevTools Protocol client for the browser test of ``headstart serve``'s page:
headless Chromium, driven over its websocket with aiohttp (no selenium/playwright)."""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
LISTENING = re.compile(r"DevTools listening on (ws://\S+)")


def find_chromium() -> str | None:
    """The first Chromium-like browser on PATH, or None."""
    for name in CHROMIUM_NAMES:
        if found := shutil.which(name):
            return found
    return None


@contextmanager
def headless_chromium(
    binary: str, profile: Path, size: tuple[int, int] = (1000, 760), timeout_s: float = 20.0
) -> Iterator[str]:
    """Start headless Chromium with a fresh profile and yield its browser websocket URL (read
    from the ``DevTools listening on ws://...`` line it writes to stderr); stop it after."""
    log = profile.parent / f"{profile.name}-stderr.log"
    args = [
        binary,
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--no-default-browser-check",
        "--remote-debugging-port=0",
        f"--user-data-dir={profile}",
        f"--window-size={size[0]},{size[1]}",
        "about:blank",
    ]
    with log.open("wb") as err:
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=err)
    try:
        deadline = time.monotonic() + timeout_s
        while not (m := LISTENING.search(log.read_text(errors="replace"))):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"chromium did not start (exit code {proc.poll()}):\n{log.read_text()[-2000:]}"
                )
            time.sleep(0.05)
        yield m.group(1)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def page_websocket(browser_ws: str, session: aiohttp.ClientSession) -> str:
    """The websocket URL of the browser's (first) page target, from ``GET /json/list``."""
    http = browser_ws.replace("ws://", "http://").split("/devtools/")[0]
    async with session.get(f"{http}/json/list") as resp:
        targets = await resp.json()
    return next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page")


class CDP:
    """One websocket to a page target: :meth:`send` a command and get its result; events are
    kept in :attr:`events` (method, params)."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.ids = itertools.count(1)
        self.pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.reader = asyncio.create_task(self.read())

    async def read(self) -> None:
        async for msg in self.ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            data = json.loads(msg.data)
            if "id" in data:
                fut = self.pending.pop(data["id"], None)
                if fut is not None and not fut.done():
                    fut.set_result(data)
            else:
                self.events.append((data.get("method", ""), data.get("params", {})))
        for fut in self.pending.values():  # the browser went away
            fut.set_exception(ConnectionError("the DevTools websocket closed"))

    async def send(self, method: str, timeout_s: float = 15.0, **params: Any) -> dict[str, Any]:
        msg_id = next(self.ids)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.pending[msg_id] = fut
        await self.ws.send_str(json.dumps({"id": msg_id, "method": method, "params": params}))
        reply = await asyncio.wait_for(fut, timeout_s)
        if "error" in reply:
            raise RuntimeError(f"{method} failed: {reply['error']}")
        result: dict[str, Any] = reply.get("result", {})
        return result

    async def navigate(self, url: str, timeout_s: float = 15.0) -> None:
        """Open ``url`` and wait for its ``load`` event (needs ``Page.enable``), so that what
        is evaluated next runs in the new document, not in the one before."""
        seen = len(self.events)
        reply = await self.send("Page.navigate", url=url)
        if reply.get("errorText"):
            raise RuntimeError(f"cannot open {url}: {reply['errorText']}")
        await self.wait_event("Page.loadEventFired", seen, timeout_s)

    async def wait_event(self, method: str, after: int = 0, timeout_s: float = 15.0) -> None:
        """Wait until an event ``method`` arrived (among the events from index ``after`` on)."""
        deadline = time.monotonic() + timeout_s
        while not any(m == method for m, _ in self.events[after:]):
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {method} within {timeout_s} s")
            await asyncio.sleep(0.02)

    async def evaluate(self, expression: str) -> Any:
        """The JSON value of a JavaScript expression in the page."""
        r = await self.send("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in r:
            raise RuntimeError(f"{expression!r} threw: {r['exceptionDetails']}")
        return r["result"].get("value")

    async def wait_for(self, expression: str, timeout_s: float = 15.0) -> Any:
        """Poll ``expression`` until it is truthy; its value."""
        deadline = time.monotonic() + timeout_s
        while not (value := await self.evaluate(expression)):
            if time.monotonic() > deadline:
                raise TimeoutError(f"still falsy after {timeout_s} s: {expression}")
            await asyncio.sleep(0.05)
        return value

    async def set_files(self, selector: str, files: list[Path]) -> None:
        """Set the files of a file input, as a user picking them would (fires ``change``)."""
        root = (await self.send("DOM.getDocument"))["root"]["nodeId"]
        node = (await self.send("DOM.querySelector", nodeId=root, selector=selector))["nodeId"]
        if not node:
            raise LookupError(f"no element matches {selector!r}")
        await self.send("DOM.setFileInputFiles", nodeId=node, files=[str(f) for f in files])

    async def close(self) -> None:
        await self.ws.close()
        self.reader.cancel()
