"""Installable extras (issue 21): ``pip install 'headstart[predict]'`` is a predictor without
torch. A real subprocess hides torch, torchvision, lightning, transformers and fastapi behind an
import hook (as if they were not installed) and runs the CLI: ``predict model.onnx`` gives the
predictions the torch run gives, and ``train`` exits 2 naming the extra to install."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import headstart
from tests.conftest import train_tiny, write_class_folders

BLOCKED = ("torch", "torchvision", "lightning", "transformers", "fastapi")

#: run as ``python -c``: make the packages of the training and serving extras unimportable,
#: run ``headstart <argv>``, then fail if any of them got into sys.modules anyway
WITHOUT_EXTRAS = """
import importlib.abc, os, sys

BLOCKED = tuple(os.environ["HEADSTART_TEST_BLOCKED"].split(","))

class NotInstalled(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, NotInstalled())

# ... and their distribution metadata, which libraries consult before importing (torchmetrics
# imports transformers when its metadata says it is installed)
import importlib.metadata as md

def hidden(real):
    def lookup(name, *args, **kwargs):
        if name.lower().replace("_", "-") in BLOCKED:
            raise md.PackageNotFoundError(name)
        return real(name, *args, **kwargs)
    return lookup

md.distribution, md.version = hidden(md.distribution), hidden(md.version)
sys.argv = ["headstart", *sys.argv[1:]]
from headstart.cli import main
try:
    main()
finally:
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
    assert not loaded, loaded
"""


def run_without_extras(
    *args: str | Path, blocked: tuple[str, ...] = BLOCKED
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", WITHOUT_EXTRAS, *map(str, args)],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "400", "HEADSTART_TEST_BLOCKED": ",".join(blocked)},
        timeout=300,
    )


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path, Path]]:
    """A tiny trained run, its ONNX export and a folder of images to predict."""
    root = tmp_path_factory.mktemp("extras")
    data = write_class_folders(root / "data", 6)
    run = train_tiny(data, root / "run").run_dir
    onnx = Path(headstart.export_model(run, "onnx").path)
    yield run, onnx, data
    shutil.rmtree(root, ignore_errors=True)


def test_onnx_predict_runs_without_torch_and_matches_the_torch_run(
    exported: tuple[Path, Path, Path],
) -> None:
    run, onnx, data = exported
    r = run_without_extras("predict", onnx, data, "--json", "--top-k", "2")
    assert r.returncode == 0, r.stdout + r.stderr
    got = [json.loads(line) for line in r.stdout.splitlines() if line.strip()]
    images = sorted(str(p) for p in data.rglob("*.png"))
    assert sorted(g["path"] for g in got) == images
    want = {p.path: p for p in headstart.predict(run, images, top_k=2)}
    for g in got:
        ref = want[g["path"]]
        assert g["label"] == ref.label
        assert g["probability"] == pytest.approx(ref.probability, abs=1e-4)
        assert [t["label"] for t in g["top"]] == [c for c, _ in ref.top]


def test_training_commands_without_torch_name_the_extra(tmp_path: Path) -> None:
    data = write_class_folders(tmp_path / "data", 2)
    r = run_without_extras("train", data, "--out", tmp_path / "run")
    assert r.returncode == 2, r.stdout + r.stderr
    text = " ".join((r.stdout + r.stderr).split())
    assert "`headstart train` needs the training extra" in text, text
    assert "pip install 'headstart[train]'" in text, text
    assert "Traceback" not in text, text
    assert not (tmp_path / "run").exists()


def test_image_training_needs_no_text_extra_and_lora_names_it(tmp_path: Path) -> None:
    """``headstart[train]`` alone trains torchvision/timm models; what needs transformers or peft
    (LoRA, text, hf:, CLIP) names the text extra."""
    data = write_class_folders(tmp_path / "data", 4)
    tiny = ["--model", "torchvision:resnet18", "--weights", "none", "--image-size", "32",
            "--epochs", "1", "--num-workers", "0"]  # fmt: skip
    hf = ("transformers", "peft")
    r = run_without_extras("train", data, "--out", tmp_path / "run", *tiny, blocked=hf)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert (tmp_path / "run" / "metrics.json").is_file()
    r = run_without_extras(
        "train", data, "--out", tmp_path / "lora", *tiny, "--strategy", "lora", blocked=hf
    )
    text = " ".join((r.stdout + r.stderr).split())
    assert r.returncode == 2 and "pip install 'headstart[text]'" in text, text
    assert "Traceback" not in text, text
