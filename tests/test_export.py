"""Export round trips (ONNX, TorchScript), torch-free ONNX predict, and the HTTP server."""

from __future__ import annotations

import io
import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch

import headstart
from headstart.errors import HeadstartError, RunError
from tests.conftest import TINY


@pytest.fixture
def trained(split_folder: Path, tmp_path: Path) -> Path:
    r = headstart.train(
        data=str(split_folder),
        out=str(tmp_path / "run"),
        **{**TINY, "epochs": 2, "early_stopping_patience": None},
    )
    return r.run_dir


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_export_round_trip_equals_eager(trained: Path, split_folder: Path, fmt: str) -> None:
    res = headstart.export_model(trained, fmt)
    assert res.max_abs_diff <= 1e-4
    assert res.path.is_file() and res.model_card.read_text().count("|") > 10
    assert res.metadata["labels"] == ["blue", "green", "red"]
    from headstart.export.predictor import open_export

    exported = open_export(res.path)
    assert exported.labels == ["blue", "green", "red"]
    assert exported.metadata["preprocessing"]["crop"] == 32
    files = sorted((split_folder / "test").rglob("*.png"))
    got = exported.predict(files, top_k=3)
    # same images through the run's own eager model + uint8 wrapper: same probabilities
    from headstart.export.wrapper import ImagesToProbabilities
    from headstart.files import load_model_image

    wrapper = ImagesToProbabilities(headstart.load_run(trained).model).eval()
    with torch.inference_mode():
        eager = [
            wrapper(torch.from_numpy(load_model_image(f, 37, 32)[None]))[0][0].numpy()
            for f in files
        ]
    assert exported.metadata["preprocessing"]["resize"] == 37
    for g, e in zip(got, eager, strict=True):
        assert g.probability == pytest.approx(float(e.max()), abs=1e-4)
        assert len(g.top) == 3


def test_dynamic_batch_fixed_size(trained: Path) -> None:
    """Any batch of crop-sized images (the decoder resizes; the graph does not)."""
    import onnxruntime as ort

    path = headstart.export_model(trained, "onnx").path
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for shape in [(1, 32, 32, 3), (5, 32, 32, 3)]:
        probs, logits = sess.run(
            None, {"images": np.random.default_rng(0).integers(0, 255, shape, dtype=np.uint8)}
        )
        assert probs.shape == logits.shape == (shape[0], 3)
        np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-5)
    with pytest.raises(Exception, match=r"(?i)dimension"):
        sess.run(None, {"images": np.zeros((1, 50, 70, 3), dtype=np.uint8)})


def test_onnx_predict_needs_no_torch(trained: Path, split_folder: Path) -> None:
    path = headstart.export_model(trained, "onnx").path
    code = (
        "import sys, json\n"
        "from headstart.export.predictor import open_export\n"
        "from headstart.files import collect_images\n"
        f"p = open_export({str(path)!r}).predict(collect_images([{str(split_folder / 'test')!r}]))\n"
        "print(json.dumps({'n': len(p), 'torch': 'torch' in sys.modules}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {"n": 12, "torch": False}


def test_tampered_and_foreign_files_are_refused(trained: Path, tmp_path: Path) -> None:
    from headstart.export.predictor import open_export

    bad = tmp_path / "x.onnx"
    bad.write_bytes(b"not onnx")
    with pytest.raises(HeadstartError, match="not a loadable ONNX"):
        open_export(bad)
    ckpt = trained / "checkpoints" / "best.ckpt"
    payload = ckpt.read_bytes()
    ckpt.write_bytes(payload.replace(b"state_dict", b"state_dicX", 1))
    with pytest.raises(RunError):
        headstart.load_run(trained)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _multipart(files: list[tuple[str, bytes]]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = io.BytesIO()
    for name, data in files:
        body.write(
            f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="{name}"\r\nContent-Type: application/octet-stream\r\n\r\n'.encode()
        )
        body.write(data + b"\r\n")
    body.write(f"--{boundary}--\r\n".encode())
    return body.getvalue(), f"multipart/form-data; boundary={boundary}"


def _post(url: str, files: list[tuple[str, bytes]]) -> tuple[int, dict]:
    data, ctype = _multipart(files)
    req = urllib.request.Request(url, data=data, headers={"Content-Type": ctype}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_server_predicts_and_survives_garbage(trained: Path, split_folder: Path) -> None:
    model = headstart.export_model(trained, "onnx").path
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "headstart.cli", "serve", str(model), "--port", str(port), "--max-mb", "0.05", "--max-files", "4"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                with urllib.request.urlopen(base + "/health", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.25)
        else:
            pytest.fail("server did not start")
        meta = json.loads(urllib.request.urlopen(base + "/metadata", timeout=5).read())
        assert meta["labels"] == ["blue", "green", "red"]
        red = [
            (p.name, p.read_bytes())
            for p in sorted((split_folder / "test" / "red").glob("*.png"))[:2]
        ]
        status, body = _post(base + "/predict?top_k=2", red)
        assert (
            status == 200
            and len(body["predictions"]) == 2
            and len(body["predictions"][0]["top"]) == 2
        )
        assert {p["label"] for p in body["predictions"]} <= {"blue", "green", "red"}
        assert _post(base + "/predict", [("junk.jpg", b"\x00garbage" * 10)])[0] == 415
        assert _post(base + "/predict", [("empty.png", b"")])[0] == 400
        assert _post(base + "/predict", [("big.png", b"\x89PNG" + b"0" * 60_000)])[0] == 413
        assert _post(base + "/predict", red * 3)[0] == 413  # 6 files > --max-files 4
        status, _ = _post(base + "/predict", red[:1])  # still serving after all of that
        assert status == 200
        assert proc.poll() is None
    finally:
        proc.terminate()
        proc.wait(timeout=10)
