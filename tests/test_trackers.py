"""--logger: Lightning's TensorBoard / MLflow / CSV / W&B loggers under the run folder, read back."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import headstart
from headstart.config import TrainConfig
from headstart.errors import HeadstartError
from headstart.training import trackers
from headstart.training.module import HeadstartModule
from tests.conftest import train_tiny


class _Crash(Exception):
    pass


def _tensorboard_scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder))
    acc.Reload()
    return {t: [(e.step, e.value) for e in acc.Scalars(t)] for t in acc.Tags()["scalars"]}


def test_tensorboard_mlflow_csv_resume_into_the_same_runs(
    image_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("tensorboard")
    pytest.importorskip("mlflow")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    kw = {"epochs": 3, "loggers": ["tensorboard", "mlflow", "csv"]}

    def crash(self: HeadstartModule) -> None:
        if self.current_epoch == 1:
            raise _Crash

    monkeypatch.setattr(HeadstartModule, "on_train_epoch_end", crash, raising=False)
    with pytest.raises(_Crash):
        train_tiny(image_folder, tmp_path / "run", **kw)
    monkeypatch.undo()
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    res = headstart.train(resume=tmp_path / "run")
    run = res.run_dir
    assert (run / "log.csv").is_file()  # the run folder's own log stays
    val_acc = res.metrics["val"]["accuracy"]

    # TensorBoard: one folder, epoch metrics of all three epochs (two processes' files; the
    # epoch that crashed before its checkpoint is logged again, at the same step)
    scalars = _tensorboard_scalars(run / "tb")
    assert len({step for step, _ in scalars["val_loss"]}) == 3
    assert scalars["final/val/accuracy"][-1][1] == pytest.approx(val_acc)
    assert (run / "tb" / "hparams.yaml").is_file()

    # MLflow: the resumed run logged into the first run (same id), params + metrics
    from mlflow.tracking import MlflowClient

    state = json.loads((run / "trackers.json").read_text())
    assert state["mlflow"]["tracking_uri"] is None  # the run folder's own store
    client = MlflowClient((run / "mlruns").resolve().as_uri())
    (experiment,) = [e for e in client.search_experiments() if e.name == "headstart"]
    (only,) = client.search_runs([experiment.experiment_id])
    assert only.info.run_id == state["mlflow"]["run_id"]
    assert only.data.params["lr"] == str(res.config.lr)
    assert only.data.params["loggers"] == "tensorboard, mlflow, csv"
    assert only.data.metrics["final/val/accuracy"] == pytest.approx(val_acc)
    history = client.get_metric_history(only.info.run_id, "val_loss")
    assert len({m.step for m in history}) == 3
    assert only.info.status == "FINISHED"

    # Lightning's CSV logger, appended to on resume
    rows = (run / "csv" / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    assert "val_loss" in header
    steps = {
        r.split(",")[header.index("step")]
        for r in rows[1:]
        if r.split(",")[header.index("val_loss")]
    }
    assert len(steps) == 3


def test_wandb_offline_logs_config_and_final_metrics(
    image_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_MODE", raising=False)
    res = train_tiny(image_folder, tmp_path / "run", loggers=["wandb"], epochs=1)
    state = json.loads((res.run_dir / "trackers.json").read_text())
    (folder,) = (res.run_dir / "wandb").glob(f"offline-run-*-{state['wandb']['id']}")
    # wandb 0.31 has no Python reader of its offline log: the records are protobuf, whose
    # strings (keys, JSON-encoded values) appear as bytes
    data = (folder / f"run-{state['wandb']['id']}.wandb").read_bytes()
    for key in (b"final/val/accuracy", b"val_loss", b"unfreeze_last", b"feature-extract"):
        assert key in data, key


def test_no_logger_writes_no_tracker_files(image_folder: Path, tmp_path: Path) -> None:
    res = train_tiny(image_folder, tmp_path / "run", epochs=1)
    assert (res.run_dir / "log.csv").is_file()
    for name in ("tb", "mlruns", "csv", "wandb", "trackers.json"):
        assert not (res.run_dir / name).exists()


def test_unknown_logger_and_missing_package_are_named(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(HeadstartError, match=r"loggers.*unknown tracker 'neptune'.*tensorboard"):
        TrainConfig.create(data="d", loggers=["neptune"])
    assert TrainConfig.create(data="d", loggers=["csv", "csv"]).loggers == ["csv"]
    monkeypatch.setattr(trackers.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(HeadstartError, match=r"headstart\[track\].*pip install mlflow"):
        trackers.check_installed(["csv", "mlflow"])


def test_final_metrics_are_the_numbers_of_each_block() -> None:
    results = {
        "val": {"accuracy": 0.5, "samples": 8, "per_class": [{"a": 1}], "ok": True},
        "run": {"seconds": 2.5, "epochs_run": 3, "model": "x", "total_params": 10},
    }
    assert trackers.final_metrics(results) == {
        "final/val/accuracy": 0.5,
        "final/val/samples": 8.0,
        "final/run/seconds": 2.5,
        "final/run/epochs_run": 3.0,
    }
