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


def test_unreadable_files_among_good_ones_are_skipped_and_named(
    models: tuple[Path, Path], cli: Callable[..., Any], tmp_path: Path
) -> None:
    """A batch with two unreadable files: the rest are predicted as they are alone, each bad
    file has an error line in its place (--json) and a message; --strict stops instead."""
    import json

    folder = tmp_path / "mixed"
    write_class_folders(tmp_path / "good", 3)
    folder.mkdir()
    good = sorted((tmp_path / "good").glob("*/*.png"))
    for i, f in enumerate(good):
        shutil.copy(f, folder / f"{i:02d}-{f.parent.name}.png")
    (folder / "03-empty.png").write_bytes(b"")
    (folder / "07-text.jpg").write_text("not an image")
    files = sorted(folder.iterdir())
    for model in models:
        alone = cli("predict", model, *[f for f in files if f.stat().st_size > 12], "--json")
        expected = [json.loads(line)["label"] for line in alone.stdout.splitlines()]
        r = cli("predict", model, folder, "--json")
        assert r.code == 0, r.text
        rows = [json.loads(line) for line in r.stdout.splitlines()]
        assert [Path(row["path"]).name for row in rows] == [f.name for f in files]
        errors = [row for row in rows if "error" in row]
        assert [Path(e["path"]).name for e in errors] == ["03-empty.png", "07-text.jpg"]
        assert [row["label"] for row in rows if "error" not in row] == expected
        assert "2 of 11 inputs could not be read" in " ".join(r.text.split())
        strict = cli("predict", model, folder, "--strict")
        assert strict.code == 2 and "03-empty.png" in strict.text
