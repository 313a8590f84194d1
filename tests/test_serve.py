"""``headstart serve`` (issue 21): the web page at ``GET /``, inference off the event loop and
micro-batching of concurrent ``/predict`` requests. Cheap: a hand-built 8 × 8 ONNX model (no
training, no torch) and fake predictors."""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from headstart.export.batching import MicroBatcher
from headstart.export.inputs import ImageInputs
from headstart.export.predictor import ExportedPredictor, open_export
from headstart.export.serve import create_app

LABELS = ["red", "green", "blue"]


def tiny_onnx(path: Path) -> Path:
    """An export-shaped ONNX model: uint8 images (N, 8, 8, 3) -> softmax of the mean colour, with
    headstart metadata (8-px preprocessing), so that every colour has its own probabilities."""
    import onnx
    from onnx import TensorProto, helper

    nodes = [
        helper.make_node("Cast", ["images"], ["x"], to=TensorProto.FLOAT),
        helper.make_node("ReduceMean", ["x"], ["mean"], axes=[1, 2], keepdims=0),
        helper.make_node("Mul", ["mean", "scale"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("images", TensorProto.UINT8, ["N", 8, 8, 3])],
        [
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 3]),
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3]),
        ],
        [helper.make_tensor("scale", TensorProto.FLOAT, [], [0.02])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    meta = {
        "format": "headstart-export/2",
        "labels": LABELS,
        "model": "tiny-mean-colour",
        "preprocessing": {"resize": 8, "crop": 8, "interpolation": "bilinear"},
    }
    for k, v in {"headstart": json.dumps(meta), "labels": json.dumps(LABELS)}.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = k, v
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_onnx(tmp_path_factory.mktemp("serve") / "model.onnx")


def png(rgb: tuple[int, int, int], size: tuple[int, int] = (20, 12)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, rgb).save(buf, "PNG")
    return buf.getvalue()


COLOURS = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (120, 120, 20), (10, 90, 160), (250, 250, 250), (0, 0, 0), (90, 10, 90)]  # fmt: skip


class Spy:
    """Wraps ``predictor.probabilities``: counts model calls and their sizes, optionally slow."""

    def __init__(self, predictor: ExportedPredictor, delay_s: float = 0.0) -> None:
        self.real, self.delay_s = predictor.probabilities, delay_s
        self.sizes: list[int] = []
        self.lock = threading.Lock()
        predictor.probabilities = self  # type: ignore[method-assign]

    def __call__(self, items: Sequence[Any]) -> np.ndarray:
        with self.lock:
            self.sizes.append(len(items))
        time.sleep(self.delay_s)
        return self.real(items)


def concurrently(fns: list[Callable[[], Any]]) -> list[Any]:
    """Call every fn at once from its own thread (a barrier lines them up)."""
    barrier = threading.Barrier(len(fns))

    def go(fn: Callable[[], Any]) -> Any:
        barrier.wait()
        return fn()

    with ThreadPoolExecutor(len(fns)) as pool:
        return list(pool.map(go, fns))


def post_png(client: TestClient, data: bytes, name: str = "a.png") -> Any:
    return client.post("/predict?top_k=3", files=[("files", (name, data, "image/png"))])


# --- the page --------------------------------------------------------------------------------


def test_page_is_served_self_contained_with_relative_urls(model: Path) -> None:
    resp = TestClient(create_app(model)).get("/")
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/html")
    page = resp.text
    assert '<input id="files" name="files" type="file"' in page and "multiple" in page
    assert "<textarea" in page  # for text models
    assert 'fetch(base + "predict' in page and 'fetch(base + "metadata")' in page
    # offline: no external assets, and no absolute URL that would escape a path prefix
    assert "http://" not in page and "https://" not in page and "src=" not in page
    assert 'fetch("/' not in page


# --- off the event loop ----------------------------------------------------------------------


class SlowDecode(ImageInputs):
    def decode(self, source: Any) -> np.ndarray:
        time.sleep(0.3)
        return super().decode(source)


def test_health_answers_while_predict_decodes_and_infers(model: Path) -> None:
    predictor = open_export(model)
    predictor.inputs = SlowDecode(8, 8)  # decoding takes 0.3 s per image ...
    Spy(predictor, delay_s=0.3)  # ... and each model call 0.3 s
    with TestClient(create_app(predictor)) as client:  # one event loop for every request
        client.get("/health")
        busy = threading.Thread(
            target=lambda: concurrently([lambda c=c: post_png(client, png(c)) for c in COLOURS[:4]])
        )
        busy.start()
        time.sleep(0.1)
        latencies = []
        while busy.is_alive():
            t = time.perf_counter()
            assert client.get("/health").status_code == 200
            assert client.get("/metadata").status_code == 200
            latencies.append(time.perf_counter() - t)
            time.sleep(0.02)
        busy.join()
    assert len(latencies) >= 5, latencies
    # blocked by a 0.3 s decode or model call it would take >= 0.3 s; 0.25 leaves room for a
    # loaded machine
    assert max(latencies) < 0.25, f"/health + /metadata took {max(latencies):.3f} s while busy"


# --- micro-batching --------------------------------------------------------------------------


def test_concurrent_requests_share_model_calls_with_their_own_results(model: Path) -> None:
    single = TestClient(create_app(model, max_batch=1))
    alone = [post_png(single, png(c), f"{i}.png").json()["predictions"] for i, c in enumerate(COLOURS)]  # fmt: skip
    predictor = open_export(model)
    spy = Spy(predictor, delay_s=0.2)  # requests pile up behind the first call
    with TestClient(create_app(predictor, max_wait_ms=50)) as client:
        answers = concurrently(
            [lambda i=i, c=c: post_png(client, png(c), f"{i}.png") for i, c in enumerate(COLOURS)]
        )
    assert [a.status_code for a in answers] == [200] * len(COLOURS)
    assert sum(spy.sizes) == len(COLOURS) and len(spy.sizes) < len(COLOURS), spy.sizes
    for got, want in zip(answers, alone, strict=True):
        (g,), (w,) = got.json()["predictions"], want
        assert g["filename"] == w["filename"] and g["label"] == w["label"]
        assert [t["label"] for t in g["top"]] == [t["label"] for t in w["top"]]
        assert np.allclose([t["probability"] for t in g["top"]], [t["probability"] for t in w["top"]], atol=1e-6)  # fmt: skip


def test_max_batch_one_makes_one_call_per_request(model: Path) -> None:
    predictor = open_export(model)
    spy = Spy(predictor, delay_s=0.1)
    with TestClient(create_app(predictor, max_batch=1, max_wait_ms=50)) as client:
        answers = concurrently([lambda c=c: post_png(client, png(c)) for c in COLOURS[:4]])
    assert [a.status_code for a in answers] == [200] * 4
    assert spy.sizes == [1, 1, 1, 1]


def test_garbage_in_one_request_does_not_poison_a_concurrent_one(model: Path) -> None:
    predictor = open_export(model)
    spy = Spy(predictor, delay_s=0.2)
    with TestClient(create_app(predictor, max_wait_ms=50)) as client:
        fns = [lambda c=c: post_png(client, png(c)) for c in COLOURS[:3]]
        fns.append(lambda: post_png(client, b"\x00garbage" * 50, "junk.jpg"))
        answers = concurrently(fns)
    assert [a.status_code for a in answers] == [200, 200, 200, 415]
    assert "junk.jpg" in answers[3].json()["detail"]
    assert sum(spy.sizes) == 3


def test_a_request_the_model_fails_on_fails_alone(model: Path) -> None:
    predictor = open_export(model)
    real = predictor.probabilities

    def picky(items: Sequence[Any]) -> np.ndarray:
        time.sleep(0.1)
        if any(int(im[0, 0, 0]) == 0 for im in items):  # black images break this model
            raise ValueError("cannot take black")
        return real(items)

    predictor.probabilities = picky  # type: ignore[method-assign]
    with TestClient(create_app(predictor, max_wait_ms=50)) as client:
        answers = concurrently([lambda c=c: post_png(client, png(c)) for c in COLOURS[4:]])
    assert [a.status_code for a in answers] == [200, 200, 422, 200]  # COLOURS[6] is black


# --- the batcher on its own ------------------------------------------------------------------


@pytest.fixture
def echo() -> Iterator[tuple[MicroBatcher, list[int]]]:
    sizes: list[int] = []

    def run(items: list[Any]) -> np.ndarray:
        sizes.append(len(items))
        time.sleep(0.05)
        return np.array([[float(x), -float(x)] for x in items])

    yield MicroBatcher(run, max_batch=5, wait_s=0.05, idle_s=0.2), sizes


def test_batcher_never_exceeds_max_batch_nor_splits_a_request(
    echo: tuple[MicroBatcher, list[int]],
) -> None:
    batcher, sizes = echo
    requests = [[1, 2], [3, 4, 5], [6], [7, 8, 9, 10, 11, 12], [13, 14]]
    futures = [batcher.submit(r) for r in requests]
    for r, f in zip(requests, futures, strict=True):
        assert f.result(timeout=5)[:, 0].tolist() == [float(x) for x in r]
    assert sum(sizes) == 14 and sizes.count(6) == 1  # the 6-item request ran alone
    assert all(s <= 5 for s in sizes if s != 6) and len(sizes) < len(requests)


def test_batcher_worker_retires_when_idle_and_restarts(
    echo: tuple[MicroBatcher, list[int]],
) -> None:
    batcher, _ = echo
    assert batcher.submit([1]).result(timeout=5)[0, 0] == 1.0
    time.sleep(1.0)  # idle_s is 0.2
    assert batcher.worker is None
    assert batcher.submit([2]).result(timeout=5)[0, 0] == 2.0


def test_batcher_refuses_nonsense_settings() -> None:
    with pytest.raises(ValueError, match="max_batch"):
        MicroBatcher(lambda items: np.zeros((len(items), 1)), max_batch=0)
    with pytest.raises(ValueError, match="wait"):
        MicroBatcher(lambda items: np.zeros((len(items), 1)), wait_s=-1)


# --- the CLI ---------------------------------------------------------------------------------


def test_serve_command_passes_the_batching_options(
    model: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.inprocess_cli import run_main

    seen: dict[str, Any] = {}
    monkeypatch.setattr("headstart.export.serve.serve", lambda *a, **kw: seen.update(kw))
    r = run_main(["serve", str(model), "--max-batch", "4", "--max-wait-ms", "2.5"], capsys, monkeypatch)  # fmt: skip
    assert r.code == 0, r.text
    assert seen["max_batch"] == 4 and seen["max_wait_ms"] == 2.5
    r = run_main(["serve", str(model)], capsys, monkeypatch)
    assert seen["max_batch"] == 32 and seen["max_wait_ms"] == 5.0
    assert run_main(["serve", str(model), "--max-batch", "0"], capsys, monkeypatch).code == 2
