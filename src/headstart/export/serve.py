"""``headstart serve``: an HTTP API over an exported model or a run folder (FastAPI + uvicorn).

Endpoints: ``GET /`` (a self-contained web page: pick or drop photos, or type texts, and see
the top labels), ``GET /health``, ``GET /metadata`` (labels, preprocessing, model, metrics) and
``POST /predict?top_k=3``, whose body is the model's modality's: multipart field ``files`` (one
or more images) for an image model, JSON ``{"texts": [...]}`` for a text model (read by the
modality's :class:`~headstart.export.inputs.ModelInputs`). Requests are bounded (images:
``max_files`` per request, ``max_bytes`` per file, checked while reading; texts: ``max_texts``
of ``max_chars``); unreadable or oversized inputs get a 4xx with a message, and no input
crashes the server.

Nothing slow runs on the event loop: images are decoded in worker threads, and the model runs on
the :class:`~headstart.export.batching.MicroBatcher`'s thread, which combines concurrent
requests into one model call (up to ``max_batch`` items, waiting at most ``max_wait_ms`` for
more), so ``/health`` and ``/metadata`` answer while ``/predict`` is busy.
"""

from __future__ import annotations

import functools
import logging
from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse

from headstart import version
from headstart.export.batching import MicroBatcher
from headstart.export.inputs import RequestError, RequestLimits
from headstart.export.predictor import ExportedPredictor, open_export

log = logging.getLogger(__name__)


def load_predictor(model: str | Path) -> ExportedPredictor:
    """An exported file (:func:`~headstart.export.predictor.open_export`) or a run folder
    (:class:`~headstart.export.run_predictor.RunPredictor`, needs torch)."""
    p = Path(model)
    if p.is_file():
        return open_export(p)
    from headstart.export.run_predictor import RunPredictor

    return RunPredictor(p)


@functools.cache
def page_html() -> str:
    """The web page served at ``GET /`` (package data ``headstart/export/page.html``)."""
    return resources.files("headstart.export").joinpath("page.html").read_text(encoding="utf-8")


def add_info_routes(app: FastAPI, metadata: dict[str, Any]) -> None:
    """``GET /`` (the page), ``GET /health`` and ``GET /metadata``."""

    # coroutines: answered on the event loop itself, without waiting for a pool thread (and
    # the GIL hand-offs to it) while decoding threads are busy
    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse(page_html())

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/metadata")
    async def get_metadata() -> dict[str, Any]:
        return metadata


def create_app(
    model: str | Path | ExportedPredictor,
    *,
    max_bytes: int = 10 * 2**20,
    max_files: int = 32,
    max_texts: int = 64,
    max_chars: int = 100_000,
    max_batch: int = 32,
    max_wait_ms: float = 5.0,
) -> Any:
    """The FastAPI application (``uvicorn.run(create_app("model.onnx"))``). Concurrent
    ``/predict`` requests share model calls of at most ``max_batch`` items, collected for at
    most ``max_wait_ms`` after the first (``max_batch=1``: one request's items per call)."""
    predictor = load_predictor(model) if isinstance(model, (str, Path)) else model
    inputs = predictor.inputs
    limits = RequestLimits(max_bytes, max_files, max_texts, max_chars)
    max_request = inputs.max_request_bytes(limits)
    app = FastAPI(
        title="headstart model server",
        version=str(predictor.metadata.get("headstart_version", version.__version__)),
    )
    # the model runs on the batcher's one thread: one call at a time, never on the event loop
    batcher = MicroBatcher(predictor.probabilities, max_batch, max_wait_ms / 1000)

    @app.middleware("http")
    async def bound_request_size(request: Request, call_next: Any) -> Any:
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > max_request:
            return JSONResponse({"detail": f"request too large (limit {max_request} bytes)"}, 413)
        return await call_next(request)

    add_info_routes(app, predictor.metadata)

    @app.post("/predict")
    async def predict(request: Request, top_k: int = 1) -> dict[str, Any]:
        try:
            names, items = await inputs.read_request(request, limits)
        except RequestError as err:
            raise HTTPException(err.status, err.detail) from None
        try:
            probs = await batcher(items)
        except Exception as err:  # never let a bad input take the server down
            log.exception("prediction failed")
            raise HTTPException(422, f"prediction failed: {type(err).__name__}") from None
        # top-k, and for a multi-label model every label at or above its threshold
        preds = [p.to_json(inputs.name_key) for p in predictor.decode(names, probs, top_k)]
        return {"predictions": preds}

    return app


def serve(
    model: str | Path,
    host: str = "127.0.0.1",
    port: int = 8000,
    max_bytes: int = 10 * 2**20,
    max_files: int = 32,
    max_batch: int = 32,
    max_wait_ms: float = 5.0,
) -> None:
    """Serve ``model`` (see :func:`create_app`) with uvicorn until interrupted."""
    import uvicorn

    app = create_app(
        model,
        max_bytes=max_bytes,
        max_files=max_files,
        max_batch=max_batch,
        max_wait_ms=max_wait_ms,
    )
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level="info",
    )
