"""The bad-input matrix through the whole user path (issue 18, part 5): every unreadable file
the data loader skips is, at prediction time, a clear error naming the file from ``predict RUN``,
``predict model.onnx`` (exit 2, no traceback) and ``serve`` (a 4xx JSON answer, never a 5xx);
every unusual but valid image (CMYK, transparency, 16-bit, EXIF rotation, odd names) gets the
same label from all three."""

from __future__ import annotations

import functools
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

import headstart
from tests.conftest import train_tiny, write_class_folders
from tests.inprocess_cli import run_main
from tests.test_bad_inputs import DECODE_CASES, SKIP_CASES

#: the skip cases that are single unreadable image files (not folders, links or clutter)
UNREADABLE = [c for c in SKIP_CASES if c[2] == "unreadable image"]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    """A tiny trained run and its ONNX export (shared by the module: both are read-only)."""
    root = tmp_path_factory.mktemp("predict-matrix")
    data = write_class_folders(root / "data", 8)
    run = train_tiny(data, root / "run").run_dir
    onnx = headstart.export_model(run, "onnx").path
    yield run, Path(onnx)
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Callable[..., Any]:
    def call(*args: str | Path) -> Any:
        r = run_main([str(a) for a in args], capsys, monkeypatch)
        assert "Traceback" not in r.text, r.text
        return r

    return call


def _one_file(tmp_path: Path, build: Callable[[Path], Any]) -> Path:
    """Run a test_bad_inputs builder in a scratch class tree; the one file it made."""
    root = tmp_path / "tree"
    for cls in ("red", "green"):
        (root / cls).mkdir(parents=True)
    out = build(root)
    if isinstance(out, tuple):  # DECODE_CASES builders return (path, check)
        return Path(out[0])
    made = [p for p in (root / "red").iterdir()]
    assert len(made) == 1, made
    return made[0]


@functools.cache
def _client(model: Path) -> Any:
    from fastapi.testclient import TestClient

    from headstart.export.serve import create_app

    return TestClient(create_app(model))


def _served(model: Path, f: Path) -> Any:
    return _client(model).post("/predict", files=[("files", (f.name, f.read_bytes()))])


@pytest.mark.parametrize(
    ("build", "named"),
    [pytest.param(c[1], c[4].split(" ")[0], id=c[0]) for c in UNREADABLE],
)
def test_unreadable_file_is_a_named_error_everywhere(
    models: tuple[Path, Path],
    cli: Callable[..., Any],
    tmp_path: Path,
    build: Callable[[Path], None],
    named: str,
) -> None:
    f = _one_file(tmp_path, build)
    for model in models:
        r = cli("predict", model, f, "--json")
        assert r.code == 2, (model.name, r.text)
        assert f.name in r.text and "error" in r.text.lower(), r.text
    for model in models:  # the run folder and the exported file behind the same server
        resp = _served(model, f)
        assert 400 <= resp.status_code < 500, (model.name, resp.status_code, resp.text)
        assert f.name in resp.json()["detail"]


@pytest.mark.parametrize("build", DECODE_CASES.values(), ids=DECODE_CASES.keys())
def test_unusual_valid_image_gets_the_same_label_everywhere(
    models: tuple[Path, Path],
    cli: Callable[..., Any],
    tmp_path: Path,
    build: Callable[[Path], tuple[Path, Callable[[Image.Image], None]]],
) -> None:
    import json

    f = _one_file(tmp_path, build)
    labels = []
    for model in models:
        r = cli("predict", model, f, "--json")
        assert r.code == 0, r.text
        row = json.loads(next(line for line in r.stdout.splitlines() if line.startswith("{")))
        labels.append(row["label"])
        resp = _served(model, f)
        assert resp.status_code == 200, resp.text
        labels.append(resp.json()["predictions"][0]["label"])
    assert len(set(labels)) == 1, labels
