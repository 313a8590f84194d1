"""Multi-task classification (issue 19): CSV label columns, one head per task on one backbone,
per-task metrics, training on the cached-feature and the image path, resume, predict, ONNX
export and serve with every task's output, bad input."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import headstart
from headstart.data.folders import load_splits, read_csv
from headstart.errors import DataError, HeadstartError
from headstart.tasks.multitask import MultiTaskClassification
from tests.conftest import crash_and_resume, train_tiny

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (40, 40, 230)}
SIZES = {"small": 10, "large": 30}


def squares(root: Path, n: int, seed: int = 0) -> Path:
    """``n`` 48 px grey-noise images with one square of a colour and a size, and
    ``labels.csv`` (``path,colour,size``) naming both exactly."""
    rng = np.random.default_rng(seed)
    (root / "img").mkdir(parents=True, exist_ok=True)
    rows = ["path,colour,size"]
    for i in range(n):
        colour, size = list(COLOURS)[i % 3], list(SIZES)[(i // 3) % 2]
        a = rng.integers(90, 160, (48, 48, 3)).astype(np.uint8)
        side = SIZES[size]
        y0, x0 = rng.integers(0, 48 - side + 1, 2)
        a[y0 : y0 + side, x0 : x0 + side] = COLOURS[colour]
        Image.fromarray(a).save(root / "img" / f"{i}.png")
        rows.append(f"img/{i}.png,{colour},{size}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root / "labels.csv"


def truth(csv: Path) -> dict[str, tuple[str, str]]:
    rows = [line.split(",") for line in csv.read_text().splitlines()[1:]]
    return {str(csv.parent / p): (c, s) for p, c, s in rows}


def test_csv_columns_become_tasks_in_the_given_order(tmp_path: Path) -> None:
    csv = squares(tmp_path, 24)
    splits = load_splits(csv, val_fraction=0.25, seed=0, label_columns=["size", "colour"])
    assert splits.tasks == ["size", "colour"] and not splits.multi_label
    assert splits.classes == ["size:large", "size:small", "colour:blue", "colour:green", "colour:red"]  # fmt: skip
    expected = truth(csv)
    for s, row in zip(splits.train, splits.task_rows("train"), strict=True):
        colour, size = expected[str(s.path)]
        assert [splits.classes[i] for i in row] == [f"size:{size}", f"colour:{colour}"]
    assert len(splits.train) + len(splits.val) == 24
    with pytest.raises(DataError, match="several labels per example"):
        splits.targets("train")


def test_bad_input_is_named(tmp_path: Path) -> None:
    squares(tmp_path, 6)
    cols = ["colour", "size"]
    bad = tmp_path / "bad.csv"
    bad.write_text("path,colour,size\nimg/0.png,red,small\nimg/1.png,,large\nimg/9.png,red,small\n")
    with pytest.raises(DataError, match=r"empty cell: .*bad.csv:3 \(column colour\)"):
        load_splits(bad, val=bad, strict=True, label_columns=cols)
    missing = tmp_path / "missing.csv"
    missing.write_text("path,colour,size\nimg/0.png,red,small\nimg/9.png,red,small\n")
    with pytest.raises(DataError, match=r"CSV path not found: .*missing.csv:3"):
        load_splits(missing, val=missing, strict=True, label_columns=cols)
    skipped: Counter[str] = Counter()
    kept = read_csv(bad, skipped, label_columns=cols)
    assert len(kept) == 1 and skipped == {"CSV row with an empty cell": 1, "CSV path not found": 1}
    with pytest.raises(DataError, match=r"no 'shape' column \(found: path, colour, size\)"):
        load_splits(bad, label_columns=["colour", "shape"])
    train = tmp_path / "train.csv"
    train.write_text("path,colour,size\nimg/0.png,red,small\nimg/1.png,green,large\n")
    val = tmp_path / "val.csv"
    val.write_text("path,colour,size\nimg/2.png,red,small\nimg/3.png,blue,large\n")
    with pytest.raises(DataError, match=r"not present in training data: colour:blue \(e\.g\. .*3\.png: 'colour=blue, size=large \(line 3\)'"):  # fmt: skip
        load_splits(train, val=val, label_columns=cols)
    one = tmp_path / "one.csv"
    one.write_text("path,colour,size\nimg/0.png,red,small\nimg/1.png,green,small\n")
    with pytest.raises(DataError, match=r"label column 'size' .* only one class .*'small'"):
        load_splits(one, val=one, label_columns=cols)
    with pytest.raises(DataError, match="not a folder"):
        load_splits(tmp_path / "img", label_columns=cols)
    with pytest.raises(HeadstartError, match="names one column"):
        headstart.TrainConfig.create(data="x.csv", label_columns="colour")
    with pytest.raises(HeadstartError, match=r"1 weight.* for 2 label column"):
        headstart.TrainConfig.create(data="x.csv", label_columns="colour,size", task_weights="1")
    with pytest.raises(HeadstartError, match="may not be named accuracy"):
        headstart.TrainConfig.create(data="x.csv", label_columns="colour,accuracy")


def test_loss_metrics_and_decoding_split_the_outputs_per_task() -> None:
    classes = ["colour:blue", "colour:red", "size:large", "size:small", "size:tiny"]
    task = MultiTaskClassification(classes, [1.0, 0.5])
    logits = torch.tensor([[2.0, 0.0, 0.1, 3.0, 0.0], [0.0, 1.0, 2.0, 0.0, 0.5]])
    targets = torch.tensor([[0, 3], [0, 2]])  # indices into classes
    expected = F.cross_entropy(logits[:, :2], torch.tensor([0, 0])) + 0.5 * F.cross_entropy(
        logits[:, 2:], torch.tensor([1, 0])
    )
    torch.testing.assert_close(task.loss(logits, targets), expected)
    assert float(task.batch_score(logits, targets)) == pytest.approx((0.5 + 1.0) / 2)
    m = task.metrics(logits, targets, classes)
    assert m["tasks"] == ["colour", "size"] and m["accuracy"] == pytest.approx(0.75)
    assert m["colour"]["accuracy"] == pytest.approx(0.5) and m["size"]["accuracy"] == 1.0
    assert m["size"]["confusion_matrix"] == [[1, 0, 0], [0, 1, 0], [0, 0, 0]]
    probs = task.probabilities(logits)
    torch.testing.assert_close(probs.sum(1), torch.tensor([2.0, 2.0]))
    [p] = task.decode(["x"], logits[:1], classes, top_k=2)
    assert p.tasks is not None and [c for c, _ in p.tasks["size"]] == ["small", "large"]
    assert (p.label, p.tasks["colour"][0][0]) == ("blue", "blue")
    j = p.to_json("path")
    assert j["tasks"]["size"]["label"] == "small" and len(j["tasks"]["colour"]["top"]) == 2


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return squares(tmp_path_factory.mktemp("squares"), 72)


def test_feature_extract_predict_export_and_serve_every_task(data: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    r = train_tiny(data, run, strategy="feature-extract", epochs=12, lr=0.05,
                   label_columns="colour,size")  # fmt: skip
    assert r.metrics["run"]["cached_features"]
    config = (run / "config.yaml").read_text()
    assert "task: multi-task" in config and "- colour" in config
    val = json.loads((run / "metrics.json").read_text())["val"]
    assert val["tasks"] == ["colour", "size"]
    for t in ("colour", "size"):
        assert {"accuracy", "macro_f1", "confusion_matrix", "per_class"} <= set(val[t])
    # chance: 1/3 for colour, 1/2 for size
    assert val["colour"]["accuracy"] > 0.8 and val["size"]["accuracy"] > 0.7, val
    assert val["accuracy"] == pytest.approx(
        (val["colour"]["accuracy"] + val["size"]["accuracy"]) / 2
    )
    report = (run / "report.html").read_text()
    assert "task colour" in report and "task size" in report
    assert (run / "report" / "confusion_1.png").is_file()
    expected = truth(data)
    names = list(expected)[:30]
    preds = headstart.predict(run, names)
    hits = [p.tasks is not None and (p.tasks["colour"][0][0], p.tasks["size"][0][0]) == expected[p.path]
            for p in preds]  # fmt: skip
    assert sum(hits) / len(hits) > 0.6
    again = headstart.evaluate(run, data)
    assert again["tasks"] == ["colour", "size"] and again["colour"]["samples"] == 72
    pytest.importorskip("onnxruntime")
    from fastapi.testclient import TestClient

    from headstart.export.predictor import open_export
    from headstart.export.serve import create_app

    res = headstart.export_model(run, "onnx")
    assert res.metadata["task"] == "multi-task"
    assert res.metadata["tasks"] == {"colour": sorted(COLOURS), "size": sorted(SIZES)}
    exported = open_export(res.path).predict(names, top_k=2)
    for eager, onnx in zip(preds, exported, strict=True):
        assert eager.tasks is not None and onnx.tasks is not None
        for t in ("colour", "size"):
            assert onnx.tasks[t][0][0] == eager.tasks[t][0][0]
            assert onnx.tasks[t][0][1] == pytest.approx(eager.tasks[t][0][1], abs=1e-4)
    for model in (res.path, run):
        client = TestClient(create_app(model))
        files = [("files", (Path(n).name, Path(n).read_bytes())) for n in names[:4]]
        served = client.post("/predict", files=files).json()["predictions"]
        for eager, row in zip(preds[:4], served, strict=True):
            assert eager.tasks is not None
            assert {t: row["tasks"][t]["label"] for t in ("colour", "size")} == {
                t: eager.tasks[t][0][0] for t in ("colour", "size")
            }


@pytest.mark.slow  # three short image-path runs (~30 s on 2 loaded cores)
def test_fine_tune_resumes_exactly_and_refuses_unsupported_settings(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kw = {"strategy": "fine-tune", "epochs": 2, "label_columns": "colour,size",
          "task_weights": "1,0.5"}  # fmt: skip
    straight = train_tiny(data, tmp_path / "a", **kw)
    assert not straight.metrics["run"]["cached_features"]
    assert straight.metrics["val"]["task_weights"] == [1.0, 0.5]
    resumed = crash_and_resume(data, tmp_path / "b", monkeypatch, 0, **kw)
    sa = torch.load(straight.run_dir / "checkpoints/last.ckpt", weights_only=True)["state_dict"]
    sb = torch.load(resumed.run_dir / "checkpoints/last.ckpt", weights_only=True)["state_dict"]
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k], atol=0, rtol=0, msg=k)
    with pytest.raises(HeadstartError, match="does not support --mixup"):
        train_tiny(data, tmp_path / "mix", mixup=0.2, label_columns="colour,size")


def test_animal_demo_set_has_exact_labels_per_task(tmp_path: Path) -> None:
    pytest.importorskip("animal_mnist")
    from headstart.data.catalog import MULTITASK_TASKS, materialise_multitask_animals

    out = materialise_multitask_animals(tmp_path / "mt", train=16, val=8)
    rows = [line.split(",") for line in (out / "train.csv").read_text().splitlines()]
    assert rows[0] == ["path", *MULTITASK_TASKS]
    ink = {"blue": 2, "green": 1, "red": 0}
    for path, animal, colour, size in rows[1:]:
        assert animal in MULTITASK_TASKS["animal"]
        a = np.asarray(Image.open(out / path)).astype(int)
        bright = a.max(2) > 150  # the background is dark (< 90 + noise)
        if colour in ink:  # the drawn ink's strongest channel is its colour's
            assert np.bincount(a[bright].argmax(1), minlength=3).argmax() == ink[colour]
        else:  # yellow: red and green high, blue low
            assert a[bright][:, 2].mean() < a[bright][:, :2].mean() - 80
        # a large silhouette is drawn 48 px tall and wide, a small one 24 px
        ys, xs = np.nonzero(bright)
        extent = max(ys.max() - ys.min(), xs.max() - xs.min()) + 1
        assert (extent > 24) == (size == "large"), (path, extent)
    splits = load_splits(
        out / "train.csv", val=out / "val.csv", label_columns=list(MULTITASK_TASKS)
    )
    assert splits.tasks == list(MULTITASK_TASKS)
    out = materialise_multitask_animals(tmp_path / "mtt", train=8, val=4, test=4)
    splits = load_splits(out / "train.csv", val=out / "val.csv", test=out / "test.csv",
                         label_columns=list(MULTITASK_TASKS))  # fmt: skip
    assert (len(splits.train), len(splits.val), len(splits.test)) == (8, 4, 4)


#: a hand-written multi-task CSV in the documented format: an extra column that is ignored,
#: JPEG photos of different sizes in a subfolder
HAND_CSV = """path,colour,size,notes
photos/a.jpg,red,small,first
photos/b.jpg,green,large,
photos/c.jpg,blue,small,
photos/d.jpg,red,large,blurry
photos/e.jpg,green,small,
photos/f.jpg,blue,large,
photos/g.jpg,red,small,
photos/h.jpg,blue,large,
"""
HAND_VAL = """path,colour,size,notes
photos/v1.jpg,green,large,
photos/v2.jpg,red,small,
photos/v3.jpg,blue,small,
"""


def _hand_photos(root: Path) -> None:
    rng = np.random.default_rng(7)
    (root / "photos").mkdir(parents=True)
    for text in (HAND_CSV, HAND_VAL):
        for line in text.splitlines()[1:]:
            path, colour, size, _ = line.split(",")
            w, h = (int(v) for v in rng.integers(40, 90, 2))
            a = rng.integers(90, 160, (h, w, 3)).astype(np.uint8)
            side = SIZES[size]
            a[4 : 4 + side, 4 : 4 + side] = COLOURS[colour]
            Image.fromarray(a).save(root / path, quality=92)
    (root / "train.csv").write_text(HAND_CSV)
    (root / "val.csv").write_text(HAND_VAL)


@pytest.mark.slow  # a CLI train, export, two predicts and serve (~20 s on 2 loaded cores)
def test_hand_written_csv_round_trip_through_the_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``headstart train --label-columns`` on a hand-written CSV, ``export``, ``predict`` on
    the run and on model.onnx, and ``serve``: every answer has every task (in training order)
    with a softmax over that task's classes, and all of them agree."""
    pytest.importorskip("onnxruntime")
    from fastapi.testclient import TestClient

    from headstart.export.serve import create_app
    from tests.inprocess_cli import run_main

    _hand_photos(tmp_path / "data")
    run = tmp_path / "run"
    args = ["train", str(tmp_path / "data/train.csv"), "--val", str(tmp_path / "data/val.csv"),
            "--label-columns", "colour,size", "-m", "torchvision:resnet18", "--weights", "none",
            "--image-size", "32", "--strategy", "feature-extract", "--epochs", "2",
            "--num-workers", "0", "-o", str(run)]  # fmt: skip
    res = run_main(args, capsys, monkeypatch)
    assert res.code == 0, res.text
    assert run_main(["export", str(run)], capsys, monkeypatch).code == 0
    photos = sorted(str(p) for p in (tmp_path / "data/photos").iterdir())

    def predicted(model: Path) -> list[dict]:
        out = run_main(["predict", str(model), *photos, "--json", "--top-k", "3"], capsys,
                       monkeypatch)  # fmt: skip
        assert out.code == 0, out.text
        return [json.loads(line) for line in out.stdout.splitlines()]

    eager, onnx = predicted(run), predicted(run / "model.onnx")
    client = TestClient(create_app(run / "model.onnx"))
    files = [("files", (Path(p).name, Path(p).read_bytes())) for p in photos]
    served = client.post("/predict?top_k=3", files=files).json()["predictions"]
    classes = {"colour": sorted(COLOURS), "size": sorted(SIZES)}
    for rows in (eager, onnx, served):
        assert len(rows) == len(photos)
        for row in rows:
            assert list(row["tasks"]) == ["colour", "size"]
            for t, answer in row["tasks"].items():
                assert sorted(x["label"] for x in answer["top"]) == classes[t]  # all classes
                assert sum(x["probability"] for x in answer["top"]) == pytest.approx(1, abs=1e-4)
                assert answer["label"] == answer["top"][0]["label"]
            assert row["label"] == row["tasks"]["colour"]["label"]
    for a, b, c in zip(eager, onnx, served, strict=True):
        for t in ("colour", "size"):
            assert a["tasks"][t]["label"] == b["tasks"][t]["label"] == c["tasks"][t]["label"]
            assert b["tasks"][t]["probability"] == pytest.approx(
                a["tasks"][t]["probability"], abs=1e-4
            )
