"""What a run ships beyond metrics: MODEL_CARD.md's Hugging Face YAML header, the run folder's
model.safetensors, and a report drawn without touching matplotlib's global backend."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

import headstart
from headstart.errors import RunError
from headstart.export.card import base_model, front_matter, read_front_matter
from tests.conftest import TINY, write_class_folders


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("card")
    data = root / "shapes"
    for split, seed in (("train", 1), ("val", 2), ("test", 3)):
        write_class_folders(data / split, 6 if split == "train" else 3, seed=seed)
    r = headstart.train(
        data=str(data), out=str(root / "run"), **{**TINY, "epochs": 1, "augment": "none"}
    )
    return r.run_dir


def test_model_card_has_a_hugging_face_header_with_the_measured_metrics(trained: Path) -> None:
    res = headstart.export_model(trained, "onnx")
    text = res.model_card.read_text(encoding="utf-8")
    header = read_front_matter(text)
    assert text.split("\n---\n", 1)[1].lstrip().startswith("# Model card: run")
    assert header["license"] == "bsd-3-clause"  # torchvision
    assert header["pipeline_tag"] == "image-classification"
    assert {"headstart", "image-classification", "torchvision", "onnx"} <= set(header["tags"])
    assert "base_model" not in header  # random init: nothing to point at
    metrics = json.loads((trained / "metrics.json").read_text())
    (entry,) = header["model-index"]
    assert entry["name"] == "run"
    got = {
        (r["dataset"]["split"], m["type"]): m["value"]
        for r in entry["results"]
        for m in r["metrics"]
    }
    assert got[("validation", "accuracy")] == pytest.approx(metrics["val"]["accuracy"], abs=1e-4)
    assert got[("test", "accuracy")] == pytest.approx(metrics["test"]["accuracy"], abs=1e-4)
    assert got[("validation", "f1")] == pytest.approx(metrics["val"]["macro_f1"], abs=1e-4)
    assert entry["results"][0]["dataset"] == {
        "name": "shapes",
        "type": "imagefolder",
        "split": "validation",
    }


def test_text_header_and_base_models() -> None:
    meta = {"model": "text:minilm", "weights": "sentence-transformers", "modality": "text"}
    header = read_front_matter(front_matter(meta, {}, name="r", data="d.csv", fmt="onnx"))
    assert header["pipeline_tag"] == "text-classification"
    assert header["base_model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert header["license"] == "apache-2.0"
    assert "model-index" not in header  # no metrics.json: nothing measured to claim
    assert base_model("timm:resnet50", "timm pretrained (default tag)") == "timm/resnet50"
    assert base_model("timm:resnet50", "none") is None
    assert base_model("timm:resnet50", "/w/resnet50.safetensors") is None
    assert base_model("hf:openai/clip-vit-base-patch32", "hf") == "openai/clip-vit-base-patch32"
    assert base_model("hf:./clip", "hf") is None
    assert read_front_matter("# no header\n") == {}


def test_best_weights_as_safetensors_load_without_checkpoints(
    trained: Path, tmp_path: Path
) -> None:
    weights = trained / "model.safetensors"
    best = torch.load(trained / "checkpoints/best.ckpt", weights_only=True)
    with safe_open(str(weights), framework="pt") as fh:
        assert sorted(fh.keys()) == sorted(best["state_dict"])
        for k in fh.keys():  # noqa: SIM118 (not a dict)
            torch.testing.assert_close(fh.get_tensor(k), best["state_dict"][k], atol=0, rtol=0)
        assert json.loads(fh.metadata()["headstart"]) == best["headstart"]

    # a run folder shipped without checkpoints/: load_run falls back to model.safetensors
    shipped = tmp_path / "shipped"
    shutil.copytree(trained, shipped, ignore=shutil.ignore_patterns("checkpoints"))
    x = torch.rand(2, 3, 32, 32)
    with torch.inference_mode():
        want = headstart.load_run(trained).model(x)
        got = headstart.load_run(shipped).model(x)
    torch.testing.assert_close(got, want, atol=0, rtol=0)

    (shipped / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(RunError, match=r"model.safetensors is not a readable safetensors"):
        headstart.load_run(shipped)


def test_report_leaves_the_matplotlib_backend_and_pyplot_alone(trained: Path) -> None:
    """A notebook user's backend (here svg) survives importing headstart and drawing a
    report, and the report's figures never enter pyplot's figure list."""
    code = f"""
import matplotlib
matplotlib.use("svg")
import matplotlib.pyplot as plt
import headstart
from headstart.evaluation.report import write_report
from headstart.run import RunFolder
assert matplotlib.get_backend() == "svg", matplotlib.get_backend()
from pathlib import Path
page = write_report(RunFolder(Path({str(trained)!r})))
assert page.is_file() and plt.get_fignums() == [], plt.get_fignums()
assert matplotlib.get_backend() == "svg", matplotlib.get_backend()
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert any((trained / "report").glob("*.png"))
