"""Multi-label classification (issue 19): CSV ``path,labels`` data, the task's metrics and
thresholds, training on the cached-feature and the image path, predict, bad input."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import headstart
from headstart.data.folders import load_splits
from headstart.errors import DataError, HeadstartError
from headstart.tasks.multilabel import MultiLabelClassification, tune_thresholds
from tests.conftest import train_tiny

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (40, 40, 230), "yellow": (230, 220, 30)}  # fmt: skip


def colour_blobs(root: Path, n: int, seed: int = 0) -> Path:
    """``n`` 48 px noise images with a 16 px square of each of their colours (each colour
    present with probability 1/2, at least one), and ``labels.csv`` naming the colours."""
    rng = np.random.default_rng(seed)
    (root / "img").mkdir(parents=True, exist_ok=True)
    rows = ["path,labels"]
    names = list(COLOURS)
    for i in range(n):
        present = [c for c in names if rng.random() < 0.5] or [names[i % 4]]
        a = rng.integers(90, 160, (48, 48, 3)).astype(np.uint8)
        for c, cell in zip(present, rng.permutation(4), strict=False):
            y0, x0 = 24 * (cell // 2) + rng.integers(0, 8), 24 * (cell % 2) + rng.integers(0, 8)
            a[y0 : y0 + 16, x0 : x0 + 16] = COLOURS[c]
        Image.fromarray(a).save(root / "img" / f"{i}.png")
        rows.append(f"img/{i}.png,{'|'.join(present)}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root / "labels.csv"


def truth(csv: Path) -> dict[str, set[str]]:
    lines = csv.read_text().splitlines()[1:]
    return {str(csv.parent / p): set(ls.split("|")) for p, ls in (x.split(",") for x in lines)}


def test_csv_is_read_as_label_sets(tmp_path: Path) -> None:
    csv = colour_blobs(tmp_path, 20)
    splits = load_splits(csv, val_fraction=0.25, seed=0)
    assert splits.multi_label and splits.classes == sorted(COLOURS)
    rows = splits.label_matrix("train")
    expected = truth(csv)
    for s, row in zip(splits.train, rows, strict=True):
        assert {c for c, v in zip(splits.classes, row, strict=True) if v} == expected[str(s.path)]
    assert len(splits.train) + len(splits.val) == 20
    # the separator is recognised in a 'label' column too, and --label-sep changes it
    (tmp_path / "semi.csv").write_text("path,label\nimg/0.png,red;blue\nimg/1.png,green\n")
    semi = load_splits(tmp_path / "semi.csv", val=tmp_path / "semi.csv", label_sep=";")
    assert semi.multi_label and semi.classes == ["blue", "green", "red"]
    # single-label CSVs are unchanged
    (tmp_path / "single.csv").write_text("path,label\nimg/0.png,a\nimg/1.png,b\n")
    single = load_splits(tmp_path / "single.csv", val=tmp_path / "single.csv")
    assert not single.multi_label and single.targets("val") == [0, 1]


def test_bad_rows_are_named(tmp_path: Path) -> None:
    colour_blobs(tmp_path, 6)
    bad = tmp_path / "bad.csv"
    bad.write_text(
        "path,labels\nimg/0.png,red|blue\nimg/1.png, | \nimg/9.png,red\nimg/2.png,green\n"
    )
    with pytest.raises(DataError, match=r"CSV path not found: .*bad.csv:4"):
        load_splits(bad, val=bad, strict=True)
    empty = tmp_path / "empty.csv"
    empty.write_text("path,labels\nimg/0.png,red|blue\nimg/1.png, | \n")
    with pytest.raises(DataError, match=r"CSV row with no label: .*empty.csv:3"):
        load_splits(empty, val=empty, strict=True, task="multi-label")
    skipped: Counter[str] = Counter()
    from headstart.data.folders import read_csv

    kept = read_csv(bad, skipped)
    assert len(kept) == 2 and skipped == {"CSV row with no label": 1, "CSV path not found": 1}
    val = tmp_path / "val.csv"
    val.write_text("path,labels\nimg/3.png,red|purple\n")
    train = tmp_path / "train.csv"
    train.write_text("path,labels\nimg/0.png,red|blue\nimg/1.png,green\n")
    with pytest.raises(DataError, match=r"not present in training data: purple \(e\.g\. .*3\.png"):
        load_splits(train, val=val)
    with pytest.raises(DataError, match="comes as a CSV"):
        load_splits(tmp_path / "img", task="multi-label")


def test_thresholds_maximise_each_labels_f1() -> None:
    probs = torch.tensor([[0.9, 0.36], [0.7, 0.4], [0.2, 0.33], [0.1, 0.1]])
    targets = torch.tensor([[1, 1], [1, 1], [0, 0], [0, 0]])
    # label 0 is separated anywhere in 0.2..0.7 (closest to 0.5 wins), label 1 only by 0.35
    assert tune_thresholds(probs, targets) == [0.5, 0.35]
    task = MultiLabelClassification([0.5, 0.35])
    logits = torch.logit(probs)
    m = task.metrics(logits, targets, ["a", "b"])
    assert m["micro_f1"] == pytest.approx(1.0) and m["macro_ap"] == pytest.approx(1.0)
    [p] = task.decode(["x"], logits[1:2], ["a", "b"])
    assert [label for label, _ in p.labels or []] == ["a", "b"]
    assert p.to_json()["labels"][0]["label"] == "a"


@pytest.fixture(scope="module")
def blobs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return colour_blobs(tmp_path_factory.mktemp("blobs"), 80)


def test_feature_extract_learns_and_predicts_label_sets(blobs: Path, tmp_path: Path) -> None:
    r = train_tiny(blobs, tmp_path / "run", strategy="feature-extract", epochs=10, lr=0.03,
                   class_weights="auto")  # fmt: skip
    assert r.metrics["run"]["cached_features"]
    val = json.loads((tmp_path / "run" / "metrics.json").read_text())["val"]
    # chance (scores unrelated to the labels) gives AP ~ label frequency, ~0.5 here
    assert val["macro_ap"] > 0.85, val
    assert set(val["per_label"]) == set(COLOURS) == set(val["thresholds"])
    assert {"micro_ap", "micro_f1", "macro_f1", "accuracy"} <= set(val)
    assert (tmp_path / "run" / "report" / "per_label.png").is_file()
    expected = truth(blobs)
    names = list(expected)[:40]
    preds = headstart.predict(tmp_path / "run", names)
    thresholds = val["thresholds"]
    agree = 0
    for p in preds:
        said = {label for label, _ in p.labels or []}
        assert all(prob >= thresholds[label] for label, prob in p.labels or [])
        agree += sum((c in said) == (c in expected[p.path]) for c in COLOURS)
    assert agree / (4 * len(preds)) > 0.75  # per-label decisions; chance is ~0.5
    again = headstart.evaluate(tmp_path / "run", blobs)  # the run's thresholds, all 80 images
    assert again["thresholds"] == thresholds and again["macro_ap"] > 0.85
    # the ONNX export applies sigmoid + the run's thresholds without torch
    pytest.importorskip("onnxruntime")
    from headstart.export.predictor import open_export

    res = headstart.export_model(tmp_path / "run", "onnx")
    assert res.metadata["task"] == "multi-label"
    assert res.metadata["thresholds"] == [thresholds[c] for c in sorted(COLOURS)]
    exported = open_export(res.path).predict(names)
    for eager, onnx in zip(preds, exported, strict=True):
        assert [c for c, _ in onnx.labels or []] == [c for c, _ in eager.labels or []]
        assert onnx.probability == pytest.approx(eager.probability, abs=1e-4)
    # serve answers with the same label sets (the export and the run folder behind it)
    from fastapi.testclient import TestClient

    from headstart.export.serve import create_app

    for model in (res.path, tmp_path / "run"):
        client = TestClient(create_app(model))
        files = [("files", (Path(n).name, Path(n).read_bytes())) for n in names[:6]]
        served = client.post("/predict", files=files).json()["predictions"]
        for eager, row in zip(preds[:6], served, strict=True):
            assert [x["label"] for x in row["labels"]] == [c for c, _ in eager.labels or []]


def test_fine_tune_trains_on_images_and_refuses_mixup(blobs: Path, tmp_path: Path) -> None:
    r = train_tiny(blobs, tmp_path / "ft", strategy="fine-tune", epochs=1)
    assert not r.metrics["run"]["cached_features"]
    assert 0.0 <= r.metrics["val"]["macro_ap"] <= 1.0 and r.metrics["val"]["thresholds"]
    assert "task: multi-label" in (tmp_path / "ft" / "config.yaml").read_text()
    with pytest.raises(HeadstartError, match="does not support --mixup"):
        train_tiny(blobs, tmp_path / "mix", mixup=0.2)


class _Crash(Exception):
    pass


def test_partial_on_cached_activations_resumes_exactly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Multi-hot targets through the stored-activation rows, and a crash after epoch 0
    resumes to the uninterrupted run's weights bit for bit."""
    from headstart.training.module import HeadstartModule

    csv = colour_blobs(tmp_path / "data", 24, seed=1)
    kw = {"strategy": "partial", "unfreeze_last": 1, "epochs": 2, "class_weights": "auto"}
    straight = train_tiny(csv, tmp_path / "a", **kw)
    assert straight.metrics["run"]["cached_activations"] is not None

    def crash(self: HeadstartModule) -> None:
        if self.current_epoch == 0:
            raise _Crash

    monkeypatch.setattr(HeadstartModule, "on_train_epoch_end", crash, raising=False)
    with pytest.raises(_Crash):
        train_tiny(csv, tmp_path / "b", **kw)
    monkeypatch.undo()
    resumed = headstart.train(resume=tmp_path / "b")
    sa = torch.load(straight.run_dir / "checkpoints/last.ckpt", weights_only=True)["state_dict"]
    sb = torch.load(resumed.run_dir / "checkpoints/last.ckpt", weights_only=True)["state_dict"]
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k], atol=0, rtol=0, msg=k)
    assert resumed.metrics["val"]["thresholds"] == straight.metrics["val"]["thresholds"]


def test_animal_silhouette_demo_set_has_exact_label_sets(tmp_path: Path) -> None:
    pytest.importorskip("animal_mnist")
    from headstart.data.catalog import MULTILABEL_ANIMALS, materialise_multilabel_animals

    out = materialise_multilabel_animals(tmp_path / "ml", train=24, val=8, seed=3)
    splits = load_splits(out / "train.csv", val=out / "val.csv")
    assert splits.multi_label and set(splits.classes) <= set(MULTILABEL_ANIMALS)
    sizes = [len(s.labels) for s in splits.train + splits.val]  # type: ignore[attr-defined]
    assert len(sizes) == 32 and set(sizes) <= {1, 2, 3} and len(set(sizes)) > 1
    with Image.open(splits.train[0].path) as im:
        assert im.size == (64, 64) and im.mode == "RGB"
    assert materialise_multilabel_animals(out, train=24, val=8, seed=3) == out  # reused
    # with a test split: a third CSV; its silhouettes are disjoint from train's and val's
    out = materialise_multilabel_animals(tmp_path / "mlt", train=8, val=4, test=6, seed=3)
    splits = load_splits(out / "train.csv", val=out / "val.csv", test=out / "test.csv")
    assert (len(splits.train), len(splits.val), len(splits.test)) == (8, 4, 6)


def test_silhouette_pools_split_off_a_disjoint_test_pool() -> None:
    from headstart.data.catalog import silhouette_pools

    labels = np.repeat(np.arange(10), 50)  # 50 silhouettes per Animal-MNIST class
    plain = silhouette_pools(["cat", "dog"], labels, np.random.default_rng(0))
    three = silhouette_pools(["cat", "dog"], labels, np.random.default_rng(0), test=True)
    for name in ("cat", "dog"):
        assert np.array_equal(plain[name]["train"], three[name]["train"])  # train unchanged
        parts = [set(three[name][k].tolist()) for k in ("train", "val", "test")]
        assert [len(x) for x in parts] == [40, 5, 5] and len(set().union(*parts)) == 50
        assert set(plain[name]["val"].tolist()) == parts[1] | parts[2]


#: a hand-written multi-label CSV in the documented format: spaces around labels, a row with
#: one label, JPEG photos of different sizes in a subfolder
HAND_CSV = """path,labels
photos/a.jpg,red | blue
photos/b.jpg,green
photos/c.jpg,blue|green|yellow
photos/d.jpg,red|yellow
photos/e.jpg,yellow | green
photos/f.jpg,red|blue|green
photos/g.jpg,blue
photos/h.jpg,red
"""
HAND_VAL = """path,labels
photos/v1.jpg,red|green
photos/v2.jpg,blue|yellow
photos/v3.jpg,green|yellow|red
photos/v4.jpg,blue
"""


def _hand_photos(root: Path) -> None:
    rng = np.random.default_rng(7)
    (root / "photos").mkdir(parents=True)
    for text in (HAND_CSV, HAND_VAL):
        for line in text.splitlines()[1:]:
            path, labels = line.split(",")
            w, h = (int(v) for v in rng.integers(40, 90, 2))
            a = rng.integers(90, 160, (h, w, 3)).astype(np.uint8)
            for k, c in enumerate(x.strip() for x in labels.split("|")):
                a[4 + 9 * k : 12 + 9 * k, 4:20] = COLOURS[c]
            Image.fromarray(a).save(root / path, quality=92)
    (root / "train.csv").write_text(HAND_CSV)
    (root / "val.csv").write_text(HAND_VAL)


@pytest.mark.slow  # a CLI train, export, two predicts and serve (~20 s on 2 loaded cores)
def test_hand_written_csv_round_trip_through_the_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``headstart train`` on a hand-written CSV, ``export``, ``predict`` on the run and on
    model.onnx, and ``serve``: each answer lists exactly the labels at or above their
    thresholds (the run's val.thresholds), most probable first, and all of them agree."""
    pytest.importorskip("onnxruntime")
    from fastapi.testclient import TestClient

    from headstart.export.serve import create_app
    from tests.inprocess_cli import run_main

    _hand_photos(tmp_path / "data")
    run = tmp_path / "run"
    args = ["train", str(tmp_path / "data/train.csv"), "--val", str(tmp_path / "data/val.csv"),
            "-m", "torchvision:resnet18", "--weights", "none", "--image-size", "32",
            "--strategy", "feature-extract", "--epochs", "2", "--num-workers", "0", "-o", str(run)]  # fmt: skip
    res = run_main(args, capsys, monkeypatch)
    assert res.code == 0, res.text
    thresholds = json.loads((run / "metrics.json").read_text())["val"]["thresholds"]
    assert sorted(thresholds) == sorted(COLOURS)
    assert run_main(["export", str(run)], capsys, monkeypatch).code == 0
    photos = sorted(str(p) for p in (tmp_path / "data/photos").iterdir())

    def predicted(model: Path) -> list[dict]:
        out = run_main(["predict", str(model), *photos, "--json", "--top-k", "4"], capsys,
                       monkeypatch)  # fmt: skip
        assert out.code == 0, out.text
        return [json.loads(line) for line in out.stdout.splitlines()]

    eager, onnx = predicted(run), predicted(run / "model.onnx")
    client = TestClient(create_app(run / "model.onnx"))
    files = [("files", (Path(p).name, Path(p).read_bytes())) for p in photos]
    served = client.post("/predict?top_k=4", files=files).json()["predictions"]
    for rows in (eager, onnx, served):
        assert len(rows) == len(photos)
        for row in rows:
            probs = {x["label"]: x["probability"] for x in row["top"]}  # all 4 labels
            above = sorted(
                (c for c, v in probs.items() if v >= thresholds[c]), key=lambda c: -probs[c]
            )
            assert [x["label"] for x in row["labels"]] == above, row
    for a, b, c in zip(eager, onnx, served, strict=True):
        assert [x["label"] for x in a["labels"]] == [x["label"] for x in b["labels"]]
        assert [x["label"] for x in b["labels"]] == [x["label"] for x in c["labels"]]
        assert b["probability"] == pytest.approx(a["probability"], abs=1e-4)
