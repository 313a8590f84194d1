"""The three detectors of ``--detector`` (docs/detection.md): Faster R-CNN, RetinaNet and
SSDlite on the same backbone stages, one output format, the choice kept in the run config."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import headstart
from headstart.cli_options import config_from
from headstart.config import TrainConfig
from headstart.data.catalog import DETECTION_ANIMALS, materialise_detection_animals
from headstart.errors import HeadstartError, ModelError
from headstart.evaluation.loading import load_run
from headstart.export.detection import predict_boxes, predict_boxes_onnx
from headstart.modalities import modality_for
from headstart.models import create_backbone
from headstart.models.detection_heads import (
    DETECTORS,
    RetinaNetDetector,
    SSDliteDetector,
    target_dicts,
)
from headstart.tasks.detection import ObjectDetection
from tests.conftest import crash_and_resume
from tests.inprocess_cli import run_main
from tests.test_detection import DET

X = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
#: image 0: one box of class 0; image 1: a negative (padding only)
Y = torch.tensor([[[0, 0.1, 0.1, 0.5, 0.5]], [[-1, 0, 0, 0, 0]]])


@pytest.mark.parametrize(
    ("detector", "head", "levels"),
    [("retinanet", RetinaNetDetector, 3), ("ssdlite", SSDliteDetector, 2)],
)
def test_detector_learns_a_batch_and_pads_its_detections(
    detector: str, head: type, levels: int
) -> None:
    """The head sits on the picked stages (RetinaNet: stride 8/16/32, SSDlite: 16/32 + four
    extra maps); training mode returns the loss terms + NaN, their gradient reaches the body,
    a few steps lower the loss; eval mode gives padded normalised ``(N, 100, 6)`` rows; with
    every stage frozen only the head gets gradients and the body stays in eval mode."""
    torch.manual_seed(0)
    b = create_backbone(DET["model"], 2, weights="none", head="detection", image_size=64,
                        detector=detector)  # fmt: skip
    assert isinstance(b.head, head) and len(b.level_stages) == levels
    task = ObjectDetection()
    opt = torch.optim.Adam(b.parameters(), lr=1e-3)
    b.train()
    losses = []
    for _ in range(3):
        out = b(X, Y)
        assert out.shape == (len(head.loss_terms) + 1,) and torch.isnan(out[-1])
        loss = task.loss(out, Y)
        assert torch.isfinite(loss)
        opt.zero_grad()
        loss.backward()
        assert next(b.body.parameters()).grad is not None
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0]
    b.eval()
    with torch.no_grad():
        det, val = b(X), b(X, Y)
    assert det.shape == (2, 100, 6) and val.shape == out.shape and 0 <= float(val[-1]) <= 1
    real = det[det[:, :, 5] >= 0]
    assert len(real) and ((real[:, :4] >= 0) & (real[:, :4] <= 1)).all()
    assert set(real[:, 5].tolist()) <= {0.0, 1.0} and (real[:, 4] >= 0.05).all()
    padding = det[det[:, :, 5] < 0]
    assert (padding[:, 5] == -1).all() and (padding[:, 4] == 0).all()
    b.set_trainable_stages(set())  # feature-extract: only the head learns, the body stays eval
    b.train()
    opt.zero_grad()
    task.loss(b(X, Y), Y).backward()
    assert all(p.grad is None for p in b.body.parameters())
    assert not any(m.training for m in b.body.modules())
    assert all(p.grad is not None for p in b.head.parameters())


def test_class_labels_follow_each_detectors_background_convention() -> None:
    """RetinaNet scores K sigmoid classes (labels 0..K-1), Faster R-CNN and SSD put the
    background at 0 (labels 1..K); both give class indices back."""
    assert [d.label_offset for d in DETECTORS.values()] == [1, 0, 1]
    rows = torch.tensor([[[1, 0.0, 0.0, 0.5, 0.5], [-1, 0, 0, 0, 0]]])
    assert target_dicts(rows, 10, 20, 0)[0]["labels"].tolist() == [1]
    assert target_dicts(rows, 10, 20)[0]["labels"].tolist() == [2]
    assert target_dicts(rows, 10, 20)[0]["boxes"].tolist() == [[0.0, 0.0, 10.0, 5.0]]


def test_the_run_config_rebuilds_the_chosen_detector(tmp_path: Path) -> None:
    """The detector is a config field: saved in config.yaml, read back, and the modality
    builds that detector from it (as load_run does for predict, evaluate and export)."""
    (tmp_path / "train.json").write_text("{}")
    config = TrainConfig(data=str(tmp_path), task="detection", detector="ssdlite",
                         model=DET["model"], weights="none", image_size=64)  # fmt: skip
    config.save_yaml(tmp_path / "config.yaml")
    again = TrainConfig.from_yaml(tmp_path / "config.yaml")
    assert again.detector == "ssdlite" and TrainConfig(data="d").detector == "faster-rcnn"
    built = modality_for(again).build_backbone(again, 3)
    assert isinstance(built.head, SSDliteDetector) and built.head.num_classes == 3


def test_each_detector_starts_from_its_own_optimiser_settings(tmp_path: Path) -> None:
    """Unless given, retinanet trains with SGD 1e-2 and a warm-up epoch, ssdlite with AdamW
    1e-2, faster-rcnn with the general defaults; a given setting wins; config.yaml (and so
    --resume) reloads the values; switching --detector on a saved config moves the settings
    that were the old detector's defaults to the new one's, and keeps the given ones."""
    given = {"data": str(tmp_path)}
    opt = ("optimizer", "lr", "warmup_epochs")

    def settings(c: TrainConfig) -> tuple[str, float, float]:
        return c.optimizer, c.lr, c.warmup_epochs

    retina = config_from(None, {**given, "detector": "retinanet"}, missing_data="")
    assert settings(retina) == ("sgd", 1e-2, 1.0)
    assert "retinanet default" in retina.optimisation_reason()
    assert settings(TrainConfig(**given, detector="ssdlite")) == ("adamw", 1e-2, 0.0)
    assert settings(TrainConfig(**given)) == ("adamw", 3e-3, 0.0)
    mine = TrainConfig(**given, detector="retinanet", optimizer="adamw", lr=5e-3)
    assert settings(mine) == ("adamw", 5e-3, 1.0) and "as given" in mine.optimisation_reason()
    retina.save_yaml(tmp_path / "config.yaml")
    assert TrainConfig.from_yaml(tmp_path / "config.yaml") == retina
    switched = TrainConfig.from_yaml(tmp_path / "config.yaml", detector="faster-rcnn")
    assert settings(switched) == ("adamw", 3e-3, 0.0)
    assert settings(retina.replace(detector="ssdlite")) == ("adamw", 1e-2, 0.0)
    assert settings(mine.replace(detector="ssdlite")) == ("adamw", 5e-3, 0.0)  # warm-up not given
    assert {k: getattr(switched.replace(detector="retinanet"), k) for k in opt} == {
        k: getattr(retina, k) for k in opt
    }
    with pytest.raises(HeadstartError, match="detector=ssdlite is for task=detection"):
        TrainConfig.create(**given, task="segmentation", detector="ssdlite")


def test_an_unknown_detector_names_the_option_and_the_choices(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    with pytest.raises(HeadstartError, match="detector") as err:
        TrainConfig.create(data="d", detector="yolo")
    assert all(name in str(err.value) for name in DETECTORS)
    with pytest.raises(
        ModelError, match=r"unknown detector 'yolo'.*faster-rcnn, retinanet, ssdlite"
    ):
        create_backbone(DET["model"], 2, weights="none", head="detection", detector="yolo")
    res = run_main(["train", str(tmp_path), "--detector", "yolo"], capsys, monkeypatch)
    assert res.code == 2 and "Traceback" not in res.text
    assert "detector" in res.text and all(name in res.text for name in DETECTORS)


@pytest.mark.slow
@pytest.mark.parametrize("detector", ["retinanet", "ssdlite"])
def test_detector_trains_predicts_and_exports(
    tmp_path: Path, detector: str, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """End to end per detector (2 epochs, tiny): mAP in metrics.json, the box grid,
    load_run rebuilds the detector from config.yaml, predict gives boxes in the image's pixels,
    the ONNX export matches eager (boxes, scores, classes), predict --boxes on the run and on
    model.onnx agree, evaluate reproduces the summary's mAP."""
    data = materialise_detection_animals(tmp_path / "animals", train=16, val=6, size=64)
    r = headstart.train(data=str(data), out=str(tmp_path / "run"), strategy="fine-tune",
                        detector=detector, **DET)  # fmt: skip
    val = json.loads((r.run_dir / "metrics.json").read_text())["val"]
    assert 0 <= val["map_50"] <= 1 and set(val["per_class"]) == set(DETECTION_ANIMALS)
    assert (r.run_dir / "report" / "boxes.png").is_file()
    assert f"detector: {detector}" in (r.run_dir / "config.yaml").read_text()
    loaded = load_run(r.run_dir)
    assert isinstance(loaded.model.head, DETECTORS[detector])
    images = sorted((data / "images").glob("val_*.png"))[:3]
    eager = predict_boxes(loaded, images, threshold=0.0)
    assert any(e["boxes"] for e in eager)
    for e in eager:
        for b in e["boxes"]:
            assert b["label"] in DETECTION_ANIMALS and 0 <= b["score"] <= 1
            assert -0.01 <= b["x"] <= b["x"] + b["w"] <= 64.01 and b["w"] > 0 and b["h"] > 0
    exported = headstart.export_model(r.run_dir, "onnx")
    assert exported.max_abs_diff < 1e-3 and exported.metadata["detector"] == detector
    assert detector.split("-")[0].lower()[:4] in exported.model_card.read_text().lower()
    onnx = predict_boxes_onnx(exported.path, images, threshold=0.0)
    for a, b in zip(eager, onnx, strict=True):
        assert [x["label"] for x in a["boxes"]] == [y["label"] for y in b["boxes"]]
        for x, y in zip(a["boxes"], b["boxes"], strict=True):
            assert x["score"] == pytest.approx(y["score"], abs=1e-3)
            assert x["x"] == pytest.approx(y["x"], abs=0.05)
            assert x["h"] == pytest.approx(y["h"], abs=0.05)
    out = tmp_path / "boxes.json"
    args = [
        "predict",
        str(exported.path),
        *map(str, images),
        "--boxes",
        str(out),
        "--min-score",
        "0",
    ]
    assert run_main(args, capsys, monkeypatch).code == 0
    assert [len(w["boxes"]) for w in json.loads(out.read_text())] == [
        len(e["boxes"]) for e in eager
    ]
    again = headstart.evaluate(r.run_dir, data / "val.json")
    assert again["map_50"] == pytest.approx(val["map_50"], abs=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("detector", ["retinanet", "ssdlite"])
def test_detector_resumes_exactly(
    tmp_path: Path, detector: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Gradual unfreezing interrupted after epoch 0 and resumed ends with the uninterrupted
    run's weights and mAP, and the resumed run keeps its detector."""
    data = materialise_detection_animals(tmp_path / "animals", train=12, val=4, size=64)
    kw = {**DET, "strategy": "gradual", "epochs": 2, "detector": detector}
    straight = headstart.train(data=str(data), out=str(tmp_path / "a"), **kw)
    resumed = crash_and_resume(data, tmp_path / "b", monkeypatch, 0, **kw)
    assert resumed.config.detector == detector
    sa = torch.load(straight.run_dir / "checkpoints/last.ckpt", weights_only=True)["state_dict"]
    sb = torch.load(resumed.run_dir / "checkpoints/last.ckpt", weights_only=True)["state_dict"]
    assert sa.keys() == sb.keys() and any(".head.model." in k for k in sa)
    for k in sa:
        assert torch.allclose(sa[k].float(), sb[k].float(), atol=1e-6), k
    assert resumed.metrics["val"]["map"] == pytest.approx(straight.metrics["val"]["map"])
