"""Semantic segmentation (docs/segmentation.md): images/ + masks/ + classes.txt, a dense
LR-ASPP head on the backbone's stages, per-pixel cross-entropy with 255 ignored, mIoU,
report overlays, index-mask PNGs from a run and from its ONNX export."""

from __future__ import annotations

import json
from pathlib import Path

import lightning
import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

import headstart
from headstart.config import TrainConfig
from headstart.data.catalog import SEGMENTATION_ANIMALS, materialise_segmentation_animals
from headstart.data.segmentation import load_segmentation_splits
from headstart.errors import DataError, HeadstartError
from headstart.evaluation.loading import load_run
from headstart.export.segmentation import predict_masks, predict_masks_onnx
from headstart.modalities import modality_for
from headstart.models import create_backbone
from headstart.models.dense_heads import (
    DeepLabV3Head,
    DenseBackbone,
    LRASPPHead,
    SemanticFPNHead,
)
from headstart.models.heads import head_kind
from tests.conftest import crash_and_resume
from tests.inprocess_cli import run_main

SEG = {
    "model": "timm:test_efficientnet",
    "weights": "none",
    "image_size": 32,
    "batch_size": 8,
    "num_workers": 0,
    "epochs": 2,
    "early_stopping_patience": None,
    "augment": "none",
}


@pytest.fixture(scope="module")
def animals(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return materialise_segmentation_animals(
        tmp_path_factory.mktemp("seg") / "animals", train=10, val=4, size=48, test=2
    )


def train_seg(data: Path, out: Path, **kw: object) -> headstart.TrainResult:
    return headstart.train(data=str(data), out=str(out), **{**SEG, **kw})


def test_composite_masks_are_exact(animals: Path) -> None:
    """classes.txt is background + the animals; each mask holds only known indices, painted
    pixels differ from the background gradient, and every image has an animal."""
    names = (animals / "classes.txt").read_text().split()
    assert names == ["background", *SEGMENTATION_ANIMALS]
    for mask_path in sorted((animals / "train" / "masks").iterdir())[:6]:
        mask = np.asarray(Image.open(mask_path))
        image = np.asarray(Image.open(animals / "train" / "images" / mask_path.name))
        assert mask.shape == image.shape[:2]
        assert set(np.unique(mask)) <= set(range(len(names)))
        assert (mask > 0).any()


def test_feature_extract_trains_only_the_head(animals: Path, tmp_path: Path) -> None:
    """feature-extract: the body's weights stay as they were, the plan turns the cached path
    off with a reason, metrics.json has val.miou / per-class IoU / pixel accuracy and the
    report shows overlays; the task is recognised from the layout; Python ``predict`` gives
    the masks (see below)."""
    r = train_seg(
        animals, tmp_path / "fe", strategy="feature-extract", cache_features=True, epochs=1
    )
    assert r.config.task == "segmentation"
    m = json.loads((r.run_dir / "metrics.json").read_text())
    val = m["val"]
    assert 0.0 <= val["miou"] <= 1.0 and 0.0 <= val["pixel_accuracy"] <= 1.0
    assert set(val["per_class"]) == {"background", *SEGMENTATION_ANIMALS}
    assert val["pixels"] == 4 * 32 * 32
    test = m["test"]  # data/test/images + test/masks: scored like val
    assert test["samples"] == 2 and test["pixels"] == 2 * 32 * 32 and 0.0 <= test["miou"] <= 1.0
    assert set(test["per_class"]) == set(val["per_class"])
    assert m["run"]["cached_features"] is False and m["run"]["head"] == "dense"
    ckpt = torch.load(r.run_dir / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    lightning.seed_everything(r.config.seed, verbose=False)  # as training built it
    start = create_backbone(SEG["model"], 5, weights="none", head="dense", image_size=32)
    body = {k: v for k, v in ckpt.items() if k.startswith("backbone.body.") and "running" not in k}
    assert body and all(
        torch.equal(v, start.state_dict()[k.removeprefix("backbone.")])
        for k, v in body.items()
        if v.dtype.is_floating_point
    )  # seeded: the same random init, untouched by training
    head = [k for k in ckpt if k.startswith("backbone.head.")]
    assert any(
        not torch.equal(ckpt[k], start.state_dict()[k.removeprefix("backbone.")]) for k in head
    )
    html = (r.run_dir / "report.html").read_text()
    assert "true vs predicted masks" in html and (r.run_dir / "report" / "overlays.png").is_file()
    _python_predict_gives_the_cli_masks(r.run_dir, animals, tmp_path)


def _python_predict_gives_the_cli_masks(run: Path, animals: Path, tmp_path: Path) -> None:
    """``headstart.predict`` on a segmentation run returns each image's mask at the image's
    own size (the PNG ``predict --masks`` writes), in memory too; ``export_model`` refuses
    TorchScript with a message instead of exporting a classifier graph."""
    classes = (animals / "classes.txt").read_text().split()
    images = sorted((animals / "val" / "images").iterdir())[:3]
    preds = headstart.predict(run, images)
    written = predict_masks(run, images, tmp_path / "masks")
    for p, png, image in zip(preds, written, images, strict=True):
        assert p.mask is not None and p.mask.shape == np.asarray(Image.open(image)).shape[:2]
        assert np.array_equal(p.mask, np.asarray(Image.open(png)))
        share = {c: float((p.mask == i).mean()) for i, c in enumerate(classes)}
        assert dict(p.top) == pytest.approx({c: v for c, v in share.items() if c in dict(p.top)})
        assert p.top[0][1] == max(share.values()) and p.labels is None
    [again] = headstart.predict(run, [np.asarray(Image.open(images[0]))])
    assert again.mask is not None and np.array_equal(again.mask, preds[0].mask)
    with pytest.raises(HeadstartError, match="ONNX only"):
        headstart.export_model(run, "torchscript")


@pytest.mark.slow
@pytest.mark.parametrize("seg_head", ["lraspp", "deeplabv3", "fpn"])
def test_fine_tune_learns_and_resume_matches(
    animals: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seg_head: str
) -> None:
    """fine-tune moves every stage; a run interrupted after epoch 0 and resumed ends with the
    uninterrupted run's weights, for each --seg-head."""
    straight = train_seg(animals, tmp_path / "a", strategy="fine-tune", seg_head=seg_head)
    resumed = crash_and_resume(animals, tmp_path / "b", monkeypatch, 0, strategy="fine-tune",
                               seg_head=seg_head, **{
        k: v for k, v in SEG.items() if k not in ("epochs",)
    })  # fmt: skip
    sa = torch.load(straight.run_dir / "checkpoints/last.ckpt", weights_only=True)["state_dict"]
    sb = torch.load(resumed.run_dir / "checkpoints/last.ckpt", weights_only=True)["state_dict"]
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.allclose(sa[k].float(), sb[k].float(), atol=1e-6), k
    assert resumed.metrics["val"]["miou"] == pytest.approx(straight.metrics["val"]["miou"])


#: each --seg-head, the stages it reads on timm:test_efficientnet (output strides 2, 2, 4, 8,
#: 16, 32) and its module
HEADS = {
    "lraspp": ([3, 5], LRASPPHead),
    "deeplabv3": ([5], DeepLabV3Head),
    "fpn": ([2, 3, 4, 5], SemanticFPNHead),
}


def test_each_seg_head_reads_its_stages_and_trains(tmp_path: Path) -> None:
    """lraspp, deeplabv3 and fpn on one body: the stages each reads, logits at the input size,
    gradients into the head and the body; the choice is a config field that config.yaml keeps
    and the modality rebuilds from (as load_run does for predict, evaluate, export, resume)."""
    body = create_backbone(SEG["model"], 5, weights="none", image_size=32)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    for name, (stages, kind) in HEADS.items():
        dense = DenseBackbone(body.body, body.stages, body.num_features, body.preprocessing,
                              body.spec, body.weights_label, 5, name)  # fmt: skip
        assert dense.head_stages == stages and isinstance(dense.head, kind)
        assert head_kind(dense.head) == "dense"
        body.body.zero_grad()
        out = dense.train()(x)
        assert out.shape == (2, 5, 32, 32)
        out.logsumexp(1).mean().backward()
        assert all(p.grad is not None for p in dense.head.parameters())
        assert body.body.conv_stem.weight.grad is not None  # timm test_efficientnet's first conv
    config = TrainConfig(data=str(tmp_path), task="segmentation", seg_head="fpn", **{
        k: SEG[k] for k in ("model", "weights", "image_size")
    })  # fmt: skip
    config.save_yaml(tmp_path / "config.yaml")
    again = TrainConfig.from_yaml(tmp_path / "config.yaml")
    assert again.seg_head == "fpn" and TrainConfig(data="d").seg_head == "lraspp"
    assert isinstance(modality_for(again).build_backbone(again, 3).head, SemanticFPNHead)
    with pytest.raises(HeadstartError, match="seg_head=fpn is for task=segmentation"):
        TrainConfig.create(data="d", task="detection", seg_head="fpn")
    with pytest.raises(HeadstartError, match="seg_head") as err:
        TrainConfig.create(data="d", seg_head="unet")
    assert all(name in str(err.value) for name in HEADS)


@pytest.mark.slow
@pytest.mark.parametrize("seg_head", ["deeplabv3", "fpn"])
def test_seg_head_exports_to_onnx_with_parity(animals: Path, tmp_path: Path, seg_head: str) -> None:
    """A run with each added head: load_run rebuilds it from config.yaml, the ONNX export
    matches eager PyTorch (logits within 1e-3) and names the head, and the masks of the run
    and of model.onnx agree on >= 99.9 % of pixels."""
    r = train_seg(animals, tmp_path / "run", strategy="fine-tune", epochs=1, seg_head=seg_head)
    assert isinstance(load_run(r.run_dir).model.head, HEADS[seg_head][1])
    exported = headstart.export_model(r.run_dir)
    assert exported.max_abs_diff < 1e-3 and exported.metadata["seg_head"] == seg_head
    assert f"`{seg_head}` head" in exported.model_card.read_text()
    images = [animals / "val" / "images"]
    eager = predict_masks(r.run_dir, images, tmp_path / "eager")
    onnx = predict_masks_onnx(exported.path, images, tmp_path / "onnx")
    a = np.concatenate([np.asarray(Image.open(p)).ravel() for p in eager])
    b = np.concatenate([np.asarray(Image.open(p)).ravel() for p in onnx])
    assert (a == b).mean() >= 0.999


def _write(root: Path, stem: str, size: tuple[int, int], mask: np.ndarray | None) -> None:
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (120, 30, 200)).save(root / "images" / f"{stem}.png")
    if mask is not None:
        Image.fromarray(mask, mode="L").save(root / "masks" / f"{stem}.png")


def _good(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    for split in ("train", "val"):
        for i in range(2):
            _write(root / split, f"{split}{i}", (20, 16), np.zeros((16, 20), np.uint8))
    (root / "classes.txt").write_text("background\nthing\n")
    return root


@pytest.mark.parametrize(
    ("break_it", "message"),
    [
        (lambda r: (r / "train/masks/train1.png").unlink(), "train1.png has no mask"),
        (
            lambda r: Image.new("L", (8, 8)).save(r / "train/masks/train1.png"),
            "is 8x8 but its image",
        ),
        (
            lambda r: Image.fromarray(np.full((16, 20), 7, np.uint8), mode="L").save(
                r / "val/masks/val0.png"
            ),
            "holds class index 7",
        ),
        (lambda r: [p.unlink() for p in (r / "val/images").iterdir()], "an empty split"),
        (lambda r: (r / "classes.txt").unlink(), "classes.txt is missing"),
        (
            lambda r: Image.new("RGB", (20, 16)).save(r / "train/masks/train0.png"),
            "masks must be single-channel",
        ),
    ],
)
def test_bad_input_names_the_file(tmp_path: Path, break_it: object, message: str) -> None:
    root = _good(tmp_path)
    load_segmentation_splits(root)  # the good folder loads
    break_it(root)  # type: ignore[operator]
    with pytest.raises(DataError, match=message):
        load_segmentation_splits(root)


def test_bad_input_cli_exits_2_without_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    root = _good(tmp_path)
    (root / "train/masks/train1.png").unlink()
    res = run_main(["train", str(root), "--task", "segmentation", "--model", SEG["model"],
                    "--weights", "none", "--out", str(tmp_path / "run")], capsys, monkeypatch)  # fmt: skip
    assert res.code == 2 and "train1.png has no mask" in res.text and "Traceback" not in res.text


def test_ignore_index_is_left_out_of_the_loss_and_metrics() -> None:
    from headstart.tasks.segmentation import SemanticSegmentation

    task = SemanticSegmentation()
    logits = torch.zeros(1, 2, 2, 2)
    logits[0, 1] = 5.0  # predicts class 1 everywhere
    target = torch.tensor([[[1, 1], [255, 255]]])
    assert task.loss(logits, target) < 0.01  # the wrong-looking ignored pixels cost nothing
    m = task.metrics(logits, target, ["bg", "fg"])
    assert m["pixel_accuracy"] == 1.0 and m["pixels"] == 2 and m["miou"] == 1.0
    assert m["per_class"]["bg"]["iou"] is None  # neither true nor predicted anywhere


@pytest.mark.slow
def test_round_trip_predict_and_onnx_parity(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hand-made mask folder (palette PNGs, images of different sizes, a 255 border):
    trains, ``predict --masks`` writes one index PNG per image at the image's size, and the
    exported model.onnx gives the same masks (>= 99.9 % of pixels; logits within 1e-3)."""
    root = tmp_path / "hand"
    rng = np.random.default_rng(0)
    for split, n in (("train", 6), ("val", 3)):
        for i in range(n):
            w, h = int(rng.integers(30, 60)), int(rng.integers(30, 60))
            img = Image.new("RGB", (w, h), tuple(int(v) for v in rng.integers(0, 80, 3)))
            mask = Image.new("P", (w, h), 0)
            mask.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [255, 255, 255] * 253)
            box = (w // 4, h // 4, w // 4 + w // 3, h // 4 + h // 3)
            colour, cls = ((250, 250, 40), 1) if i % 2 else ((40, 250, 250), 2)
            ImageDraw.Draw(img).ellipse(box, fill=colour)
            ImageDraw.Draw(mask).ellipse(box, fill=cls)
            ImageDraw.Draw(mask).rectangle((0, 0, w - 1, h - 1), outline=255)
            (root / split / "images").mkdir(parents=True, exist_ok=True)
            (root / split / "masks").mkdir(parents=True, exist_ok=True)
            img.save(root / split / "images" / f"{split}_{i}.jpg")
            mask.save(root / split / "masks" / f"{split}_{i}.png")
    (root / "classes.txt").write_text("background\nyellow blob\ncyan blob\n")
    r = train_seg(root, tmp_path / "run", task="segmentation", epochs=1)
    again = headstart.evaluate(r.run_dir, root / "val")  # the val folder: the same numbers
    assert again["miou"] == pytest.approx(r.metrics["val"]["miou"], abs=1e-6)
    out = tmp_path / "masks"
    res = run_main(["predict", str(r.run_dir), str(root / "val/images"), "--masks", str(out)],
                   capsys, monkeypatch)  # fmt: skip
    assert res.code == 0, res.text
    for image in sorted((root / "val/images").iterdir()):
        written = Image.open(out / f"{image.stem}.png")
        assert written.mode == "L" and written.size == Image.open(image).size
        assert set(np.unique(np.asarray(written))) <= {0, 1, 2}
    exported = headstart.export_model(r.run_dir)  # the Python API exports as the CLI does
    assert exported.max_abs_diff < 1e-3 and exported.metadata["task"] == "segmentation"
    assert "mIoU" in exported.model_card.read_text()
    eager = predict_masks(r.run_dir, [root / "val/images"], tmp_path / "eager")
    onnx = predict_masks_onnx(exported.path, [root / "val/images"], tmp_path / "onnx")
    a = np.concatenate([np.asarray(Image.open(p)).ravel() for p in eager])
    b = np.concatenate([np.asarray(Image.open(p)).ravel() for p in onnx])
    assert (a == b).mean() >= 0.999
    res = run_main(["predict", str(exported.path), str(root / "val/images")], capsys, monkeypatch)
    assert res.code == 2 and "--masks" in res.text
    res = run_main(["serve", str(exported.path)], capsys, monkeypatch)
    assert res.code == 2 and "segmentation model" in res.text


@pytest.mark.slow
def test_trains_under_ddp(tmp_path: Path) -> None:
    """2-process DDP (gloo, CPU) with gradual unfreezing, as detection's: the ranks' weights
    stay identical after every epoch and the summary's mIoU covers every validation image
    once."""
    from tests.ddp_tasks_script import run_and_check

    data = materialise_segmentation_animals(tmp_path / "animals", train=16, val=6, size=64)
    val = run_and_check(data, tmp_path)
    assert val["samples"] == 6 and 0.0 <= val["miou"] <= 1.0
