"""``headstart serve``'s page (issue 21) in a real browser: headless Chromium driven over the
DevTools Protocol (tests/cdp.py) picks a photo, then a garbage "photo", on the page served by
uvicorn, and the page must show what ``POST /predict`` answers. Skipped when no Chromium is
installed (``apt-get install chromium``; .ci/run installs it). ``HEADSTART_SCREENSHOT=path``
also saves a screenshot of the page (docs/img/serve-page.png)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from headstart.export.serve import create_app
from tests.cdp import CDP, find_chromium, headless_chromium, page_websocket
from tests.test_serve import LABELS, png, tiny_onnx

pytestmark = pytest.mark.slow

# the page's result cards, newest first: name, bar labels and percentages, error messages
CARDS = """[...document.querySelectorAll('#results .card')].map((c) => ({
  name: c.querySelector('.name').textContent,
  image: ((img) => !img ? 'none' : !img.complete ? 'loading' : img.naturalWidth ? 'shown' : 'broken')(
    c.querySelector('img')),
  labels: [...c.querySelectorAll('.bar .label')].map((e) => e.textContent),
  pcts: [...c.querySelectorAll('.bar .pct')].map((e) => e.textContent),
  widths: [...c.querySelectorAll('.bar .fill')].map((e) => e.style.width),
  errors: [...c.querySelectorAll('.error')].map((e) => e.textContent),
  waiting: !!c.querySelector('.wait'),
}))"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.contextmanager
def running_server(model: Path) -> Iterator[str]:
    """``create_app(model)`` under uvicorn in a thread, on a free port; its base URL."""
    import uvicorn

    port = free_port()
    config = uvicorn.Config(create_app(model), host="127.0.0.1", port=port, log_level="warning")
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not srv.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        yield f"http://127.0.0.1:{port}/"
    finally:
        srv.should_exit = True
        thread.join(10)


@pytest.fixture
def chromium() -> str:
    found = find_chromium()
    if found is None:
        pytest.skip("no chromium binary on PATH (apt-get install chromium): the page is untested")
    return found


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    """The tiny ONNX model of tests/test_serve.py, served."""
    with running_server(tiny_onnx(tmp_path / "model.onnx")) as url:
        yield url


async def settled(cdp: CDP, n: int, timeout_s: float = 15.0) -> list[dict[str, Any]]:
    """The page's cards once there are ``n``, each answered and its thumbnail shown or gone
    (a broken image is given a moment to go; then the cards as they are)."""
    done = "!c.waiting && (c.image == 'none' || c.image == 'shown')"
    with contextlib.suppress(TimeoutError):  # the assertions on the cards say what is wrong
        await cdp.wait_for(
            f"(() => {{ const cs = {CARDS}; return cs.length == {n} && cs.every((c) => {done}); }})()",
            timeout_s,
        )
    cards: list[dict[str, Any]] = await cdp.evaluate(CARDS)
    return cards


async def drive_page(
    browser_ws: str, url: str, photo: Path, garbage: Path, screenshot: Path | None
) -> dict[str, Any]:
    """Open the page, pick ``photo``, then ``garbage``; what the page and the API showed."""
    out: dict[str, Any] = {}
    async with aiohttp.ClientSession() as session:
        with photo.open("rb") as f:
            form = aiohttp.FormData()
            form.add_field("files", f, filename=photo.name, content_type="image/png")
            async with session.post(url + "predict?top_k=3", data=form) as resp:
                assert resp.status == 200, await resp.text()
                out["api"] = (await resp.json())["predictions"][0]
        ws = await session.ws_connect(await page_websocket(browser_ws, session), max_msg_size=0)
        cdp = CDP(ws)
        try:
            await cdp.send("Runtime.enable")
            await cdp.send("Page.enable")
            await cdp.navigate(url)
            # the model's name and classes, from /metadata
            out["about"] = await cdp.wait_for(
                "document.querySelector('#about')?.textContent.includes('classes') &&"
                " document.querySelector('#about').textContent"
            )
            out["title"] = await cdp.evaluate("document.querySelector('#title').textContent")
            out["form_shown"] = await cdp.evaluate(
                "!document.querySelector('#image-form').classList.contains('hidden')"
            )

            await cdp.set_files("#files", [photo])
            out["after_photo"] = await settled(cdp, 1)
            await cdp.set_files("#files", [garbage])
            out["after_garbage"] = await settled(cdp, 2)

            if screenshot is not None:
                await cdp.evaluate("document.activeElement && document.activeElement.blur()")
                shot = await cdp.send("Page.captureScreenshot", format="png")
                screenshot.parent.mkdir(parents=True, exist_ok=True)
                screenshot.write_bytes(base64.b64decode(shot["data"]))
            out["exceptions"] = [p for m, p in cdp.events if m == "Runtime.exceptionThrown"]
        finally:
            await cdp.close()
    return out


def test_page_in_headless_chromium_shows_predictions_and_errors(
    chromium: str, server: str, tmp_path: Path
) -> None:
    photo = tmp_path / "red-square.png"
    photo.write_bytes(png((200, 30, 30), (64, 48)))
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(os.urandom(3000))
    env_shot = os.environ.get("HEADSTART_SCREENSHOT")
    with headless_chromium(chromium, tmp_path / "profile") as browser_ws:
        seen = asyncio.run(
            drive_page(browser_ws, server, photo, garbage, Path(env_shot) if env_shot else None)
        )
    print(json.dumps(seen, indent=1))

    assert seen["title"] == "tiny-mean-colour"
    assert seen["about"].startswith(f"3 classes: {', '.join(LABELS)}")
    assert seen["form_shown"]

    api = seen["api"]
    [card] = seen["after_photo"]
    assert card["name"] == photo.name and card["image"] == "shown"
    assert not card["waiting"] and not card["errors"]
    # the page shows what the API answers: the label first, then the rest of the top 3
    assert card["labels"][0] == api["label"] == "red"
    assert card["labels"] == [t["label"] for t in api["top"]]
    assert card["pcts"] == [f"{100 * t['probability']:.1f} %" for t in api["top"]]
    assert card["widths"][0] == f"{100 * api['probability']:.1f}%"

    bad, first = seen["after_garbage"]
    assert bad["name"] == garbage.name and not bad["labels"] and not bad["waiting"]
    assert bad["image"] == "none"  # no broken-image icon for a file the browser cannot show
    [message] = bad["errors"]
    assert message.startswith("Not a readable image (HTTP 415): "), message
    assert message.endswith("garbage.png: not a readable image (JPEG, PNG, ...)"), message
    assert first == card  # the first result stays as it was
    assert not seen["exceptions"], seen["exceptions"]
