"""Object detection (docs/detection.md): COCO JSON with its checks, a Faster R-CNN FPN head on
the backbone's stages, mAP (torchmetrics), the report's box grid, boxes JSON from predict."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image, ImageDraw

import headstart
from headstart.config import TrainConfig
from headstart.data.catalog import DETECTION_ANIMALS, materialise_detection_animals
from headstart.data.detection import DetectionDataset, load_detection_splits, read_coco
from headstart.errors import DataError
from headstart.export.detection import predict_boxes, predict_boxes_onnx
from headstart.models import create_backbone
from headstart.models.preprocessing import Preprocessing
from headstart.tasks import task_for
from headstart.tasks.detection import ObjectDetection
from tests.conftest import crash_and_resume
from tests.inprocess_cli import run_main

DET = {
    "model": "timm:test_efficientnet",
    "weights": "none",
    "image_size": 64,
    "batch_size": 4,
    "num_workers": 0,
    "epochs": 2,
    "early_stopping_patience": None,
    "augment": "none",
}


def _coco(root: Path, **changes: Any) -> Path:
    """A small COCO file: 3 images (40x30, the third without boxes), 2 categories with ids 7
    and 3 (so id order differs from listing order), one box each on the first two."""
    (root / "img").mkdir(parents=True, exist_ok=True)
    for i in range(3):
        Image.new("RGB", (40, 30), (10 * i, 90, 160)).save(root / "img" / f"{i}.png")
    doc: dict[str, Any] = {
        "images": [
            {"id": i, "file_name": f"img/{i}.png", "width": 40, "height": 30} for i in range(3)
        ],
        "annotations": [
            {"id": 10, "image_id": 0, "category_id": 7, "bbox": [4, 3, 20, 12]},
            {"id": 11, "image_id": 1, "category_id": 3, "bbox": [10, 10, 10, 10]},
        ],
        "categories": [{"id": 7, "name": "cat"}, {"id": 3, "name": "dog"}],
    }
    for fn in changes.values():
        fn(doc)
    path = root / "train.json"
    path.write_text(json.dumps(doc))
    return path


def test_reads_coco_boxes_normalised_with_negatives(tmp_path: Path) -> None:
    """Classes follow category id order; boxes are [x, y, w, h] pixels -> normalised x1y1x2y2;
    an image without boxes is a negative; ``--images`` relocates the files."""
    samples, classes = read_coco(_coco(tmp_path))
    assert classes == ["dog", "cat"]  # ids 3, 7
    first, second, empty = samples
    assert first.boxes[0] == pytest.approx((0.1, 0.1, 0.6, 0.5)) and first.box_classes == (1,)
    assert second.box_classes == (0,) and first.label == "cat"
    assert empty.boxes == () and empty.labels == ()
    moved = tmp_path / "elsewhere"
    (tmp_path / "img").rename(tmp_path / "moved")
    moved.mkdir()
    (tmp_path / "moved").rename(moved / "img")
    with pytest.raises(DataError, match="pass --images DIR"):
        read_coco(tmp_path / "train.json")
    assert len(read_coco(tmp_path / "train.json", images=moved)[0]) == 3


def _ann(i: int, **kw: Any) -> Callable[[dict[str, Any]], None]:
    def change(doc: dict[str, Any]) -> None:
        doc["annotations"][i].update(kw)

    return change


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d["images"][1].update(file_name="img/gone.png"), "image id 1: .*does not exist"),
        (_ann(0, bbox=[50, 40, 5, 5]), "annotation id 10 .*wholly outside its 40x30 image"),
        (_ann(1, bbox=[3, 3, 0, 8]), "annotation id 11 .*zero area"),
        (_ann(1, category_id=99), "annotation id 11 .*category_id 99"),
        (_ann(0, image_id=42), "annotation id 10 refers to image id 42"),
        (lambda d: d.update(annotations=[]), "empty 'annotations' list"),
        (
            lambda d: d["images"][0].update(width=64),
            "image id 0 .*is 40x30 but the JSON says 64x30",
        ),
        (lambda d: d.pop("categories"), "no 'categories' list"),
        (_ann(0, bbox=[1, 2, 3]), r"'bbox' must be \[x, y, width, height\]"),
    ],
)
def test_bad_input_names_the_id(tmp_path: Path, change: Any, message: str) -> None:
    with pytest.raises(DataError, match=message):
        read_coco(_coco(tmp_path, change=change))


def test_box_partly_outside_is_clipped_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        samples, _ = read_coco(_coco(tmp_path, change=_ann(0, bbox=[30, 20, 20, 20])))
    assert samples[0].boxes[0] == pytest.approx((0.75, 20 / 30, 1.0, 1.0))
    assert "1 box(es) partly outside" in caplog.text and "annotation id 10" in caplog.text


def test_bad_input_cli_exits_2_without_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _coco(tmp_path, change=_ann(1, bbox=[3, 3, 0, 8]))
    res = run_main(["train", str(path), "--model", DET["model"], "--weights", "none",
                    "--out", str(tmp_path / "run")], capsys, monkeypatch)  # fmt: skip
    assert res.code == 2 and "zero area" in res.text and "Traceback" not in res.text


def test_task_recognised_from_a_coco_file_and_folder(tmp_path: Path) -> None:
    path = _coco(tmp_path)
    for data in (path, tmp_path):
        config = TrainConfig(data=str(data), model=DET["model"])
        assert task_for(config).name == "detection"
        assert config.replace(task="detection").head_for("fine-tune") == "detection"
    splits = load_detection_splits(tmp_path, val_fraction=0.34, seed=0)
    assert len(splits.train) == 2 and len(splits.val) == 1 and splits.classes == ["dog", "cat"]


def test_dataset_flip_moves_the_boxes(tmp_path: Path) -> None:
    samples, _ = read_coco(_coco(tmp_path))
    pre = Preprocessing(crop=32, resize=32, mean=(0.5,) * 3, std=(0.5,) * 3)
    plain = DetectionDataset(samples, pre)
    x, y = plain[0]
    assert x.shape == (3, 32, 32) and y.shape == (1, 5)
    assert y[0].tolist() == pytest.approx([1, 0.1, 0.1, 0.6, 0.5])
    flipped = DetectionDataset(samples, pre, augment="light", seed=0)
    boxes = {tuple(round(v, 4) for v in flipped[(0, e)][1][0].tolist()) for e in range(8)}
    assert boxes == {(1, 0.1, 0.1, 0.6, 0.5), (1, 0.4, 0.1, 0.9, 0.5)}  # both, seeded


def test_tiny_model_forward_and_loss() -> None:
    """The head sits on stride 8/16/32 stages; training mode returns the 4 loss terms + NaN
    (their gradient reaches body and head), eval mode padded normalised detections."""
    torch.manual_seed(0)
    b = create_backbone(DET["model"], 2, weights="none", head="detection", image_size=64)
    x = torch.randn(2, 3, 64, 64)
    y = torch.tensor([[[0, 0.1, 0.1, 0.5, 0.5]], [[1, 0.2, 0.3, 0.9, 0.8]]])
    b.train()
    losses = b(x, y)
    assert losses.shape == (5,) and torch.isfinite(losses[:4]).all() and losses[4].isnan()
    task = ObjectDetection()
    task.loss(losses, y).backward()
    assert b.head.roi_heads.box_predictor.cls_score.weight.grad is not None
    assert next(b.body.parameters()).grad is not None
    b.eval()
    with torch.no_grad():
        det = b(x)
        val = b(x, y)
    assert det.shape == (2, 100, 6) and val.shape == (5,) and 0 <= float(val[4]) <= 1
    real = det[det[:, :, 5] >= 0]
    assert ((real[:, :4] >= 0) & (real[:, :4] <= 1)).all()


def test_metrics_perfect_and_missing() -> None:
    """Exact detections give mAP 1 and F1 1; a class detected nowhere has AP 0."""
    task = ObjectDetection()
    targets = torch.tensor([[[0, 0.1, 0.1, 0.4, 0.4], [1, 0.5, 0.5, 0.9, 0.9]]])
    det = torch.full((1, 100, 6), 0.0)
    det[:, :, 5] = -1
    det[0, 0] = torch.tensor([0.1, 0.1, 0.4, 0.4, 0.9, 0])
    det[0, 1] = torch.tensor([0.5, 0.5, 0.9, 0.9, 0.8, 1])
    m = task.metrics(det, targets, ["a", "b"])
    assert m["map"] == pytest.approx(1.0) and m["map_50"] == pytest.approx(1.0)
    assert m["f1_50"] == 1.0 and m["boxes"] == 2
    det[0, 1, 5] = -1  # b not found
    m = task.metrics(det, targets, ["a", "b"])
    assert m["per_class"]["a"]["ap_50"] == pytest.approx(1.0)
    assert m["per_class"]["b"]["ap_50"] == 0.0 and m["map_50"] == pytest.approx(0.5)


@pytest.mark.slow
def test_trains_reports_and_predicts_boxes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A composite set trains end to end (fine-tune, 2 epochs): metrics.json has val.map,
    val.map_50 and per-class AP; the report has the box grid; predicted boxes are in the
    image's pixels; the ONNX export gives the eager boxes; evaluate on the val COCO file gives
    the training summary's mAP."""
    data = materialise_detection_animals(tmp_path / "animals", train=16, val=6, size=64)
    r = headstart.train(data=str(data), out=str(tmp_path / "run"), strategy="fine-tune", **DET)
    assert r.config.task == "detection"
    val = json.loads((r.run_dir / "metrics.json").read_text())["val"]
    assert 0 <= val["map"] <= 1 and 0 <= val["map_50"] <= 1
    assert set(val["per_class"]) == set(DETECTION_ANIMALS)
    assert (r.run_dir / "report" / "boxes.png").is_file()
    images = sorted((data / "images").glob("val_*.png"))[:3]
    eager = predict_boxes(r.run_dir, images, threshold=0.0)
    assert [e["path"] for e in eager] == [str(p) for p in images]
    for e in eager:
        assert e["width"] == e["height"] == 64
        for b in e["boxes"]:
            assert b["label"] in DETECTION_ANIMALS and 0 <= b["score"] <= 1
            assert -0.01 <= b["x"] <= b["x"] + b["w"] <= 64.01 and b["w"] > 0 and b["h"] > 0
    exported = headstart.export_model(r.run_dir, "onnx")
    assert exported.max_abs_diff < 1e-3 and "AP@0.5" in exported.model_card.read_text()
    onnx = predict_boxes_onnx(exported.path, images, threshold=0.0)
    for a, b in zip(eager, onnx, strict=True):
        assert len(a["boxes"]) == len(b["boxes"])
        for x, y in zip(a["boxes"], b["boxes"], strict=True):
            assert x["label"] == y["label"] and x["score"] == pytest.approx(y["score"], abs=1e-3)
            assert x["x"] == pytest.approx(y["x"], abs=0.05)
    for model in (r.run_dir, exported.path):  # the CLI writes predict_boxes' JSON
        out = tmp_path / f"{model.name}.json"
        args = ["predict", str(model), *map(str, images), "--boxes", str(out), "--min-score", "0"]
        assert run_main(args, capsys, monkeypatch).code == 0
        written = json.loads(out.read_text())
        assert [len(w["boxes"]) for w in written] == [len(e["boxes"]) for e in eager]
    res = run_main(["predict", str(r.run_dir), str(images[0])], capsys, monkeypatch)
    assert res.code == 2 and "pass --boxes" in res.text
    again = headstart.evaluate(r.run_dir, data / "val.json")
    assert again["map_50"] == pytest.approx(val["map_50"], abs=1e-6)


@pytest.mark.slow
def test_gradual_resume_matches_on_a_hand_made_coco_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A COCO file made by hand (JPEG images of different sizes, not square, ids not 0-based,
    a negative image): gradual unfreezing trains, and a run interrupted after epoch 0 and
    resumed ends with the uninterrupted run's weights and mAP."""
    root = tmp_path / "hand"
    (root / "pics").mkdir(parents=True)
    doc: dict[str, Any] = {"images": [], "annotations": [],
                           "categories": [{"id": 5, "name": "square"}, {"id": 9, "name": "disc"}]}  # fmt: skip
    for i in range(10):
        w, h = 60 + 7 * i, 48 + 3 * i
        img = Image.new("RGB", (w, h), (30 + 10 * i, 60, 90))
        draw = ImageDraw.Draw(img)
        if i != 4:  # image 104: a negative
            box = [5 + i, 6, 20 + i % 5, 18]
            shape = draw.rectangle if i % 2 else draw.ellipse
            shape([box[0], box[1], box[0] + box[2], box[1] + box[3]], fill=(250, 240, 40))
            doc["annotations"].append({"id": 500 + i, "image_id": 100 + i,
                                       "category_id": 5 if i % 2 else 9, "bbox": box})  # fmt: skip
        img.save(root / "pics" / f"p{i}.jpg")
        doc["images"].append(
            {"id": 100 + i, "file_name": f"pics/p{i}.jpg", "width": w, "height": h}
        )
    (root / "all.json").write_text(json.dumps(doc))
    kw = {**DET, "strategy": "gradual", "epochs": 2}
    straight = headstart.train(data=str(root / "all.json"), out=str(tmp_path / "a"), **kw)
    # crash_and_resume trains through train_tiny, whose settings kw overrides entirely
    resumed = crash_and_resume(root / "all.json", tmp_path / "b", monkeypatch, 0, **kw)
    sa = torch.load(straight.run_dir / "checkpoints/last.ckpt", weights_only=True)["state_dict"]
    sb = torch.load(resumed.run_dir / "checkpoints/last.ckpt", weights_only=True)["state_dict"]
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.allclose(sa[k].float(), sb[k].float(), atol=1e-6), k
    assert resumed.metrics["val"]["map"] == pytest.approx(straight.metrics["val"]["map"])
    assert straight.metrics["run"]["unfreeze_events"]  # gradual unfroze a stage at epoch 1


@pytest.mark.slow
def test_trains_under_ddp(tmp_path: Path) -> None:
    """2-process DDP (gloo, CPU) with gradual unfreezing: the ranks' weights stay identical
    after every epoch and the summary's mAP covers every validation image once."""
    from tests.ddp_tasks_script import run_and_check

    data = materialise_detection_animals(tmp_path / "animals", train=16, val=6, size=64)
    val = run_and_check(data, tmp_path)
    assert val["samples"] == 6 and 0.0 <= val["map_50"] <= 1.0


@pytest.mark.parametrize("task", ["detection", "segmentation"])
def test_dense_tasks_refuse_per_image_options_by_name(task: str) -> None:
    from headstart.errors import HeadstartError
    from headstart.tasks import detection, segmentation

    check = {"detection": detection, "segmentation": segmentation}[task].check_config
    check(TrainConfig(data="d"))  # the defaults are accepted
    with pytest.raises(HeadstartError) as err:
        check(TrainConfig(data="d", mixup=0.2, head="cosine", feature_views=2))
    message = str(err.value)
    for option in ("--mixup/--cutmix", "--head cosine/semantic/mlp", "--feature-views"):
        assert option in message
    assert f"docs/{task}.md" in message and "--label-smoothing" not in message
