"""``headstart serve``: an HTTP API over an exported model or a run folder (FastAPI + uvicorn).

Endpoints: ``GET /health``, ``GET /metadata`` (labels, preprocessing, model, metrics) and
``POST /predict`` (multipart field ``files``, one or more images; ``?top_k=3``). Requests are
bounded (``max_files`` per request, ``max_bytes`` per file, checked while reading); non-image or
oversized uploads get a 4xx with a message, and no input crashes the server.
"""

from __future__ import annotations

import io
import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, File, HTTPException, Request, UploadFile
from fastapi.responses import JSONResponse

from headstart.export.predictor import ExportedPredictor, decode_image, open_export

log = logging.getLogger(__name__)


class RunPredictor(ExportedPredictor):
    """A run folder served through the same uint8 -> probabilities computation as the export."""

    def __init__(self, run: str | Path) -> None:
        import torch

        from headstart.export.exporter import _metadata
        from headstart.export.wrapper import ImagesToProbabilities
        from headstart.inference import load_run

        loaded = load_run(run)
        self.path = Path(run)
        self.wrapper = ImagesToProbabilities(loaded.model).eval()
        self.metadata = _metadata(loaded)
        self.labels = loaded.classes
        self._torch = torch

    def probabilities(self, images: Sequence[np.ndarray]) -> np.ndarray:
        out = np.zeros((len(images), len(self.labels)), dtype=np.float32)
        with self._torch.inference_mode():
            for i, im in enumerate(images):
                out[i] = self.wrapper(self._torch.from_numpy(np.ascontiguousarray(im[None])))[
                    0
                ].numpy()[0]
        return out


def load_predictor(model: str | Path) -> ExportedPredictor:
    p = Path(model)
    if p.is_file():
        return open_export(p)
    from headstart.data.text import is_text_task
    from headstart.run import RunFolder

    if is_text_task(RunFolder.open(p).load_config()):
        from headstart.export.text import RunTextPredictor

        return RunTextPredictor(p)  # type: ignore[return-value]
    return RunPredictor(p)


def add_info_routes(app: FastAPI, metadata: dict[str, Any]) -> None:
    """``GET /health`` and ``GET /metadata``, the same for image and text servers."""

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/metadata")
    def get_metadata() -> dict[str, Any]:
        return metadata


def create_app(
    model: str | Path | ExportedPredictor, *, max_bytes: int = 10 * 2**20, max_files: int = 32
) -> Any:
    """The FastAPI application (``uvicorn.run(create_app("model.onnx"))``)."""
    predictor = load_predictor(model) if isinstance(model, (str, Path)) else model
    if getattr(predictor, "takes_text", False):  # text model: JSON {"texts": [...]}
        from headstart.export.text import create_text_app

        return create_text_app(predictor)  # type: ignore[arg-type]
    app = FastAPI(
        title="headstart model server", version=str(predictor.metadata.get("headstart_version", ""))
    )
    lock = threading.Lock()  # one inference at a time; the session/model is not shared concurrently

    @app.middleware("http")
    async def bound_request_size(request: Request, call_next: Any) -> Any:
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > max_files * max_bytes + 2**20:
            return JSONResponse(
                {"detail": f"request too large (limit {max_files} files x {max_bytes} bytes)"},
                status_code=413,
            )
        return await call_next(request)

    add_info_routes(app, predictor.metadata)

    @app.post("/predict")
    async def predict(files: list[UploadFile] = File(...), top_k: int = 1) -> dict[str, Any]:
        if not files:
            raise HTTPException(400, "send one or more images in the multipart field 'files'")
        if len(files) > max_files:
            raise HTTPException(413, f"at most {max_files} images per request")
        arrays = []
        for f in files:
            data = await f.read(max_bytes + 1)
            if len(data) > max_bytes:
                raise HTTPException(413, f"{f.filename}: larger than {max_bytes} bytes")
            if not data:
                raise HTTPException(400, f"{f.filename}: empty upload")
            try:
                arrays.append(decode_image(io.BytesIO(data)))
            except Exception:
                raise HTTPException(
                    415, f"{f.filename}: not a readable image (JPEG, PNG, ...)"
                ) from None
        try:
            with lock:
                probs = predictor.probabilities(arrays)
        except Exception as err:  # never let a bad input take the server down
            log.exception("prediction failed")
            raise HTTPException(422, f"prediction failed: {type(err).__name__}") from None
        k = max(1, min(top_k, len(predictor.labels)))
        out = []
        for f, p in zip(files, probs, strict=True):
            order = np.argsort(-p)[:k]
            top = [{"label": predictor.labels[j], "probability": float(p[j])} for j in order]
            out.append(
                {
                    "filename": f.filename,
                    "label": top[0]["label"],
                    "probability": top[0]["probability"],
                    "top": top,
                }
            )
        return {"predictions": out}

    return app


def serve(
    model: str | Path,
    host: str = "127.0.0.1",
    port: int = 8000,
    max_bytes: int = 10 * 2**20,
    max_files: int = 32,
) -> None:
    import uvicorn

    uvicorn.run(
        create_app(model, max_bytes=max_bytes, max_files=max_files),
        host=host,
        port=port,
        log_level="info",
    )
