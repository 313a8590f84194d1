"""``--strategy auto`` as a measured selection: the protocol, the invariant (never below the
frozen-backbone candidates on the selection split), flips measured, resume, the budget."""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

import headstart
from headstart.training.search import (
    AUTO_BACKBONES,
    MIN_CANDIDATE_EPOCHS,
    MIN_VIEW_EPOCHS,
    PARTIAL_VIEWS,
    REPORT_SECONDS,
    Candidate,
    Search,
    Selection,
    augment_presets,
    default_budget,
    final_seconds,
    process_seconds,
    selection_splits,
)
from tests.conftest import write_class_folders

REAL = {  # real ImageNet MobileNetV2 weights (offline), tiny inputs
    "model": "torchvision:mobilenet_v2",
    "image_size": 32,
    "batch_size": 8,
    "num_workers": 0,
    "epochs": 2,
    "early_stopping_patience": None,
}


@pytest.fixture
def split_folder(tmp_path: Path) -> Path:
    """data/{train,val,test}/<class>/*.png with more than the few-shot 10 images a class."""
    root = tmp_path / "split"
    write_class_folders(root / "train", 14, seed=1)
    write_class_folders(root / "val", 5, seed=2)
    write_class_folders(root / "test", 4, seed=3)
    return root


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    """data/<class>/*.png, 3 classes x 18 images (no explicit splits)."""
    return write_class_folders(tmp_path / "data", 18)


def auto(data: Path, out: Path, **kw: object) -> headstart.TrainResult:
    return headstart.train(data=str(data), out=str(out), strategy="auto", **{**REAL, **kw})


@pytest.mark.parametrize("augment", ["light", "none"])
def test_with_a_test_split_candidates_are_selected_on_val_and_the_winner_is_the_run(
    split_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, augment: str
) -> None:
    from headstart.training import activations

    extracted: list[int] = []  # passes of a frozen prefix outside auto's first pass
    real = activations.extract_activations
    monkeypatch.setattr(
        activations, "extract_activations",
        lambda *a, **k: extracted.append(a[1]) or real(*a, **k),
    )  # fmt: skip
    hits: list[bool] = []  # stores read back by a candidate's run
    load = activations.load_activations
    monkeypatch.setattr(
        activations, "load_activations",
        lambda *a: hits.append((got := load(*a)) is not None) or got,
    )  # fmt: skip
    r = auto(split_folder, tmp_path / "run", trials=1, augment=augment)
    info = r.metrics["run"]["auto"]
    partial = info["candidates"][2]  # the one trained candidate: the last 4 of 8 stages
    if augment == "none":  # on activations stored by auto's first pass
        assert partial["name"] == "partial-4" and "feature_views" not in partial["settings"]
        assert partial["epochs_run"] == 2 and extracted == [] and hits == [True, True]
    else:  # on its own store of 4 views per training image: the clean one + 3 augmented
        assert partial["name"] == "partial-4-views4" and PARTIAL_VIEWS == 4
        assert partial["settings"]["feature_views"] == 4 and partial["epochs_run"] == 2
        # train (4 views) and val each stored once at the cut before the last 4 stages
        assert extracted == [4, 4] and hits == [False, True, False, True]
    assert info["select_on"] == "val" and info["report_on"] == "test"
    names = [c["name"] for c in info["candidates"]]
    assert names[:2] == ["probe", "feature-extract"]  # the frozen candidates come first
    assert len([c for c in info["candidates"] if c["status"] != "skipped"]) <= 3
    chosen = [c for c in info["candidates"] if c["chosen"]]
    assert len(chosen) == 1
    frozen = [c["score"] for c in info["candidates"][:2]]
    assert chosen[0]["score"] >= max(frozen)  # the invariant, on the selection split
    # the winner trained on exactly train/val: its checkpoint is the run's, so the run's val
    # accuracy is the winner's selection score
    assert info["reusable"]
    assert r.metrics["val"]["accuracy"] == pytest.approx(chosen[0]["score"], abs=1e-6)
    assert "test" in r.metrics
    assert r.metrics["run"]["strategy"] == chosen[0]["strategy"]
    assert r.metrics["run"]["auto_decision"]["reasons"][0].startswith("candidates trained on train")
    assert (r.run_dir / "auto.json").is_file()
    report = (r.run_dir / "report.html").read_text(encoding="utf-8")
    assert "what auto tried" in report and "ties go to the cheaper candidate" in report
    # the run folder is ordinary: evaluate/predict work on it
    m = headstart.evaluate(r.run_dir, split_folder / "test")
    assert m["accuracy"] == pytest.approx(r.metrics["test"]["accuracy"], abs=1e-6)
    assert info["hflip"] is True  # colour squares mean the same mirrored
    # --resume reuses the saved selection instead of searching again
    saved = json.loads((r.run_dir / "auto.json").read_text(encoding="utf-8"))
    again = headstart.train(resume=r.run_dir)
    assert again.metrics["run"]["auto"]["candidates"] == saved["candidates"]


def test_without_a_test_split_selection_uses_a_split_carved_from_train(
    image_folder: Path, tmp_path: Path
) -> None:
    r = auto(image_folder, tmp_path / "run", trials=0)
    info = r.metrics["run"]["auto"]
    assert info["report_on"] == "val" and "of train" in info["select_on"]
    assert not info["reusable"]  # retrained on all of train
    assert [c["name"] for c in info["candidates"]] == ["probe", "feature-extract"]
    assert info["model"] is None  # --model given: no backbones compared
    assert r.metrics["run"]["train_images"] == 42  # the final model saw all training images


@pytest.mark.slow
def test_without_model_auto_compares_the_offline_backbones_and_keeps_the_best(
    split_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import yaml

    from headstart.evaluation import transferability

    scored: list[int] = []  # LogME of the first backbone 0, of the second 1: the second wins

    def logme(features: np.ndarray, labels: np.ndarray) -> float:
        scored.append(features.shape[0])
        return float(len(scored) - 1)

    monkeypatch.setattr(transferability, "logme", logme)
    kw = {k: v for k, v in REAL.items() if k != "model"}  # --model not given
    r = headstart.train(
        data=str(split_folder), out=str(tmp_path / "run"), strategy="auto", trials=0, **kw
    )
    info = r.metrics["run"]["auto"]
    assert scored == [42, 42]  # both scored on the 3 x 14 training images
    assert info["model"] == AUTO_BACKBONES[1]
    assert any("highest LogME" in reason for reason in info["reasons"])
    assert "highest LogME" in (r.run_dir / "report.html").read_text(encoding="utf-8")
    saved = yaml.safe_load((r.run_dir / "config.yaml").read_text(encoding="utf-8"))
    assert saved["model"] == AUTO_BACKBONES[1]  # predict and --resume rebuild the kept one
    m = headstart.evaluate(r.run_dir, split_folder / "test")
    assert m["accuracy"] == pytest.approx(r.metrics["test"]["accuracy"], abs=1e-6)


def test_selection_splits_are_disjoint_stratified_and_seeded(image_folder: Path) -> None:
    from headstart.data import load_splits

    splits = load_splits(image_folder)
    carved, _, _, report = selection_splits(splits, seed=3)
    assert report == "val"
    fit_ids = {s.path for s in carved.train}
    sel_ids = {s.path for s in carved.val}
    assert not fit_ids & sel_ids
    assert fit_ids | sel_ids == {s.path for s in splits.train}
    assert {s.label for s in carved.val} == set(splits.classes)
    again, *_ = selection_splits(splits, seed=3)
    assert [s.path for s in again.val] == [s.path for s in carved.val]


def _bar_image(left: bool, rng: np.random.Generator, size: int = 32) -> Image.Image:
    arr = rng.integers(0, 40, size=(size, size, 3)).astype(np.uint8)
    cols = slice(2, 10) if left else slice(size - 10, size - 2)
    arr[4 : size - 4, cols] = 230
    return Image.fromarray(arr)


def test_flips_are_turned_off_when_mirror_images_change_the_class(tmp_path: Path) -> None:
    """Class = which side the bar is on: a mirrored image belongs to the other class."""
    rng = np.random.default_rng(0)
    for split, n in (("train", 14), ("val", 6), ("test", 4)):
        for cls, left in (("left", True), ("right", False)):
            d = tmp_path / "bars" / split / cls
            d.mkdir(parents=True)
            for i in range(n):
                _bar_image(left, rng).save(d / f"{i}.png")
    r = auto(tmp_path / "bars", tmp_path / "run", trials=0)
    info = r.metrics["run"]["auto"]
    assert info["hflip"] is False
    assert "flips are turned off" in info["augment_reasons"][0]


def test_default_budget_covers_the_whole_command() -> None:
    assert process_seconds() > 0
    # 10 s before the search, 8 s per extraction pass, 4 epochs, 20 s of final evaluation:
    # probe + head (8 + 5) and partial/fine-tune/gradual at (1.6 + 3.2 + 2.2) x 8 x 4 + 3 x 5
    budget, why = default_budget(10.0, 8.0, 4, 20.0, retrain=False)
    assert budget == pytest.approx(10 + 13 + 239 + 20)
    assert "whole command" in why and "4 epochs" in why
    # without a test split the winner is retrained on all of train: 1 + 1/0.8 per candidate
    assert default_budget(10.0, 8.0, 4, 20.0, retrain=True)[0] == pytest.approx(
        10 + 13 + 239 * 2.25 + 20
    )
    assert default_budget(1.0, 0.1, 1, 1.0, retrain=False)[0] == 60.0  # floor
    assert default_budget(10.0, 1000.0, 10, 1.0, retrain=False)[0] == 3600.0  # ceiling
    assert final_seconds(8.0, 500, 1300) == pytest.approx(0.6 * 8.0 / 500 * 1300 + REPORT_SECONDS)


def test_a_trained_candidate_starts_only_when_it_and_the_final_evaluation_fit() -> None:
    def search(retrain: bool) -> Search:
        return Search(
            SimpleNamespace(epochs=4), None, Path("."), (), None,  # type: ignore[arg-type]
            deadline=process_seconds() + 100.0, extraction_seconds=8.0, reserve=20.0,
            retrain=retrain,
        )  # fmt: skip

    s = search(retrain=False)
    assert s.estimate("partial") == pytest.approx(1.6 * 8 * 4 + 5)  # 56 s + 20 s reserve < 100
    assert s.fits("partial")
    assert not s.fits("fine-tune")  # 107 s
    assert not search(retrain=True).fits("partial")  # 56 x 2.25 + 20 > 100
    # a measured candidate replaces the estimate
    s.candidates.append(Candidate("fine-tune", "fine-tune", {}, 0.9, seconds=40.0, epochs_run=4))
    assert s.estimate("fine-tune") == pytest.approx(45.0) and s.fits("fine-tune")


def test_a_backbone_too_slow_for_the_budget_is_not_compared(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import time

    from headstart.training import features
    from headstart.training.search import too_slow_for_budget

    # a warm-up pass (not timed), then 16 and 32 images: 0.05 s of set-up and 5 ms an image
    passes: list[str] = []

    def extract(
        backbone: object, ds: list[int], *a: object, description: str = "", **k: object
    ) -> None:
        passes.append(description)
        time.sleep(0.05 + 0.005 * len(ds) if description == "speed" else 0.2)

    monkeypatch.setattr(features, "extract_features", extract)
    splits = SimpleNamespace(
        train=list(range(100)), val=list(range(50)), test=list(range(200)), class_to_idx={}
    )
    inputs = SimpleNamespace(splits=splits, modality=SimpleNamespace(dataset=lambda b, s, i: s))

    def late(budget: float | None) -> str | None:
        config = headstart.TrainConfig(data="x", time_budget=budget)
        return too_slow_for_budget(config, inputs, splits, None)  # type: ignore[arg-type]

    # kept, it passes over 100 train + 2 x 50 selection + 50 val + 200 test images (~2.3 s),
    # then the frozen candidates (5 s) and the report (8 s): ~16 s from now
    assert late(None) is None
    assert late(process_seconds() + 30.0) is None
    reason = late(process_seconds() + 10.0)
    assert reason is not None and "past --time-budget" in reason
    assert re.search(r"at [45]\.\d ms an image", reason)  # the set-up cancels out
    assert passes == ["warm-up", "speed", "speed"] * 2  # none without a budget


def test_candidates_that_do_not_fit_are_named_with_their_estimate() -> None:
    from headstart.training.search import trained_candidates

    config = SimpleNamespace(epochs=4, lr=1e-3, augment="light", seed=0)
    inputs = SimpleNamespace(
        modality=SimpleNamespace(augmentable=True), backbone=SimpleNamespace(stages=[0] * 8)
    )
    s = Search(
        config, inputs, Path("."), (), None,  # type: ignore[arg-type]
        deadline=process_seconds() + 1.0, extraction_seconds=8.0,
    )  # fmt: skip
    trained_candidates(s, None)
    assert not s.candidates  # nothing fitted into one second
    assert {"partial-4", "fine-tune", "gradual"} <= set(s.unfit)
    assert s.unfit["fine-tune"] == f"fine-tune (~{3.2 * 8 * 3 + 5:.0f} s at 3 epochs)"


def test_a_short_budget_shortens_a_trained_candidate_instead_of_skipping_it() -> None:
    s = Search(
        SimpleNamespace(epochs=10), None, Path("."), (), None,  # type: ignore[arg-type]
        deadline=process_seconds() + 55.0, extraction_seconds=4.0, reserve=10.0,
    )  # fmt: skip
    # partial: 1.6 x 4 = 6.4 s an epoch + 5 s: of the 45 s before the reserve, 10 epochs (69 s)
    # and 7 (49.8 s) do not fit, 6 do (43.4 s)
    assert not s.fits("partial") and s.epochs_that_fit("partial") == 6
    # fine-tune: 12.8 s an epoch; even 3 epochs (43.4 s) fit, 4 (56.2 s) do not
    assert s.epochs_that_fit("fine-tune") == 3
    s.deadline = process_seconds() + 40.0  # 30 s left: not even MIN_CANDIDATE_EPOCHS
    assert s.epochs_that_fit("fine-tune") is None
    assert MIN_CANDIDATE_EPOCHS == 3
    # --epochs below the minimum: the candidate runs them or nothing
    s.config = SimpleNamespace(epochs=2)  # type: ignore[assignment]
    assert s.epochs_that_fit("partial") == 2


def test_partial_on_cached_activations_is_estimated_as_such() -> None:
    splits = SimpleNamespace(train=[0] * 500, val=[0] * 300)
    inputs = SimpleNamespace(splits=splits, backbone=SimpleNamespace(stages=[0] * 8))
    s = Search(
        SimpleNamespace(epochs=10), inputs, Path("."), (), None,  # type: ignore[arg-type]
        deadline=process_seconds() + 100.0, extraction_seconds=5.0, cached_partial=True,
    )  # fmt: skip
    # the first partial candidate's store comes from the first pass: epochs only
    assert s.estimate("partial", 4, 4) == pytest.approx(0.6 * 5 * 4 + 5)  # 4: half of 8 stages
    # another depth stores its own: one folded pass over train + val first (0.6 x 800/500 x 5 s)
    assert s.estimate("partial", 4, 1) == pytest.approx(0.6 * 5 * 4 + 4.8 + 5)
    # 4 views: each epoch passes over 4 rows an image; the store holds 4 x 500 + 300 rows
    assert s.estimate("partial", 3, 4, views=4) == pytest.approx(0.6 * 5 * 4 * 3 + 13.8 + 5)
    # 5 epochs (78.8 s) would fit in the 100 s left; views run PARTIAL_VIEW_EPOCHS at most
    assert s.epochs_that_fit("partial", 4, views=4) == 3
    s.deadline = process_seconds() + 50.0  # 3 epochs (54.8 s) do not fit, 2 (42.8 s) do
    assert s.epochs_that_fit("partial", 4, views=4) == 2 and MIN_VIEW_EPOCHS == 2
    s.deadline = process_seconds() + 40.0
    assert s.epochs_that_fit("partial", 4, views=4) is None
    s.deadline = process_seconds() + 100.0
    s.first_stored = False  # backbones were compared on plain passes: it stores its own too
    assert s.estimate("partial", 4, 4) == pytest.approx(0.6 * 5 * 4 + 4.8 + 5)
    s.cached_partial = False  # on images
    assert s.estimate("partial", 4, 4) == pytest.approx(1.6 * 5 * 4 + 5)
    # a trained candidate that took twice its prior: untried strategies are estimated twice
    # as long (text ran ~2x the image-calibrated priors); a tried one from its own seconds
    prior = s.prior("fine-tune", 4)
    s.candidates.append(Candidate("fine-tune", "fine-tune", {}, 0.9, 2 * prior, 4))
    assert s.estimate("gradual", 4) == pytest.approx(2 * (2.2 * 5 * 4 + 5))
    assert s.estimate("fine-tune", 2) == pytest.approx(2 * prior / 4 * 2 + 5)
    # a measured partial candidate on 4 views: the next one is estimated per epoch and view
    s.candidates.append(Candidate("partial-4-views4", "partial", {"feature_views": 4}, 0.9, 40, 2))
    assert s.estimate("partial", 3) == pytest.approx(40 / (2 * 4) * 3 + 5)
    assert s.estimate("partial", 3, views=4) == pytest.approx(40 / 2 * 3 + 5)


def test_selection_round_trips_and_names_its_winner() -> None:
    cands = [
        Candidate("probe", "few-shot", {}, 0.8),
        Candidate("partial-2", "partial", {"lr": 1e-3, "unfreeze_last": 2}, 0.9, chosen=True),
    ]
    s = Selection("p", "val", "test", 60.0, "b", True, [], cands, ["r"], reusable=True)
    back = Selection.from_dict(json.loads(json.dumps(s.to_dict())))
    assert back == s
    assert back.overrides() == {
        "strategy": "partial",
        "hflip": True,
        "lr": 1e-3,
        "unfreeze_last": 2,
    }
    kept = Selection("p", "val", "test", 60.0, "b", True, [], cands, ["r"], model="m:x")
    assert Selection.from_dict(json.loads(json.dumps(kept.to_dict()))).overrides()["model"] == "m:x"


def test_a_class_with_few_images_still_goes_to_few_shot(tmp_path: Path) -> None:
    data = write_class_folders(tmp_path / "d", 6)
    r = auto(data, tmp_path / "run")
    assert r.metrics["run"]["strategy"] == "few-shot"
    assert "auto" not in r.metrics["run"]


def test_flips_that_change_the_class_are_turned_off_on_fixed_features() -> None:
    """The decision logic of augmentation_check on fixed features: mirrored views that keep
    the probe's accuracy leave flips on; mirrored views that lose it turn them off."""
    from headstart.data import DataSplits
    from headstart.data.scan import Sample
    from headstart.models import create_backbone
    from headstart.training.search import augmentation_check

    gen = torch.Generator().manual_seed(0)
    y = torch.arange(40) % 2
    plain = torch.stack([1.0 - 2.0 * y, torch.zeros(40)], 1) + 0.1 * torch.randn(
        40, 2, generator=gen
    )
    val = [Sample(Path(f"{i}.png"), "ab"[i % 2]) for i in range(40)]
    sel = DataSplits(val, val, [], ["a", "b"])
    modality = SimpleNamespace(augmentable=True, dataset=lambda *a, **k: None)
    backbone = create_backbone("torchvision:resnet18", 2, weights="none", image_size=32)
    for mirrored, expected in ((plain + 0.01, True), (-plain, False)):
        views = {"auto-select": plain, "auto-select-flipped": mirrored}

        def features(
            name: str, dataset: object, samples: object, plain: bool = True, views: dict = views
        ) -> tuple:
            return views[name], y

        check = augmentation_check(features, modality, backbone, sel, 0, (plain, y))  # type: ignore[arg-type]
        assert check.hflip is expected
        assert ("flips are turned off" in check.reasons[0]) is not expected


@pytest.mark.parametrize("prunable", [True, False])
def test_the_first_candidate_of_a_strategy_is_not_pruned(prunable: bool) -> None:
    from headstart.training.search import ScoreRecorder

    class Trial:
        def __init__(self) -> None:
            self.reported: list[tuple[float, int]] = []

        def report(self, value: float, step: int) -> None:
            self.reported.append((value, step))

        def should_prune(self) -> bool:  # the median pruner says: below the median
            return True

    trial = Trial()
    rec = ScoreRecorder(trial, prunable=prunable)
    trainer = SimpleNamespace(
        sanity_checking=False,
        callback_metrics={"val_acc": torch.tensor(0.8), "val_loss": torch.tensor(0.5)},
        should_stop=False,
    )
    rec.on_validation_end(trainer, None)  # type: ignore[arg-type]
    assert trial.reported == [(pytest.approx(0.8), 0)]  # reported either way
    assert rec.pruned is prunable and trainer.should_stop is prunable


def test_augmentation_presets_are_searched_only_where_they_change_something() -> None:
    assert augment_presets("light", True) == ["none", "light"]
    assert augment_presets("strong", True) == ["none", "light", "strong"]
    assert augment_presets("none", True) == ["none"]  # --augment none given
    assert augment_presets("light", False) == ["light"]  # text: no preset changes anything
