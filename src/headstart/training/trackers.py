"""Experiment trackers (``--logger csv|tensorboard|mlflow|wandb``): Lightning loggers that log
a training run's epoch metrics, its hyperparameters (the TrainConfig) and its final metrics
(metrics.json), writing under the run folder by default.

::

    RUN/csv/metrics.csv          csv: Lightning's CSVLogger (+ hparams.yaml)
    RUN/tb/events.out.tfevents.* tensorboard (``tensorboard --logdir runs/`` shows every run)
    RUN/mlruns/                  mlflow file store, unless MLFLOW_TRACKING_URI is set
    RUN/wandb/                   wandb, offline unless WANDB_MODE=online
    RUN/trackers.json            the MLflow run id (+ its store unless RUN/mlruns) / W&B run id,
                                 so --resume logs into the same run

The tracker packages are optional (``pip install 'headstart[track]'``) and imported only when
asked for.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import warnings
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.loggers import Logger
from lightning.pytorch.utilities import rank_zero_only

from headstart.config import TrainConfig
from headstart.errors import HeadstartError

#: the file in the run folder that remembers each tracker's run (for --resume)
STATE_FILE = "trackers.json"
#: the module each tracker needs, and the package that provides it
_PACKAGES = {
    "tensorboard": ("tensorboard", "tensorboard"),
    "mlflow": ("mlflow", "mlflow-skinny (or mlflow)"),
    "wandb": ("wandb", "wandb"),
}
#: the MLflow experiment (all runs of a tracking store), unless MLFLOW_EXPERIMENT_NAME is set
EXPERIMENT = "headstart"


def check_installed(names: list[str]) -> None:
    """Raise a :class:`HeadstartError` naming the package (and extra) a tracker needs."""
    for name in names:
        if name in _PACKAGES and importlib.util.find_spec(_PACKAGES[name][0]) is None:
            raise HeadstartError(
                f"--logger {name} needs the {_PACKAGES[name][1]} package, which is not "
                f"installed: pip install 'headstart[track]' (or pip install {_PACKAGES[name][0]})"
            )


def load_state(run_dir: Path) -> dict[str, Any]:
    """What ``trackers.json`` remembers (empty for a new run)."""
    path = run_dir / STATE_FILE
    if not path.is_file():
        return {}
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise HeadstartError(
            f"{path} is not valid JSON ({err}); delete it to start new tracker runs"
        ) from None
    return state if isinstance(state, dict) else {}


@rank_zero_only
def save_state(run_dir: Path, loggers: list[Logger]) -> None:
    """Remember the MLflow / W&B run ids in ``trackers.json`` (rank 0)."""
    state = load_state(run_dir)
    for lg in loggers:
        name = tracker_name(lg)
        if name == "mlflow":
            uri = getattr(lg, "_tracking_uri", None)
            state["mlflow"] = {
                "run_id": getattr(lg, "run_id", None),
                "tracking_uri": None if uri == own_store(run_dir) else uri,
            }
        elif name == "wandb":
            state["wandb"] = {"id": lg.version}
    (run_dir / STATE_FILE).write_text(json.dumps(state, indent=2) + "\n", encoding="utf-8")


def tracker_name(logger: Logger) -> str:
    """``csv``, ``tensorboard``, ``mlflow`` or ``wandb`` for one of :func:`make_loggers`'s."""
    return type(logger).__name__.removesuffix("Logger").lower()


def make_loggers(config: TrainConfig, run_dir: Path) -> list[Logger]:
    """The Lightning loggers ``config.loggers`` names, writing under ``run_dir``; a resumed run
    (``trackers.json`` present) continues the same MLflow / W&B run."""
    check_installed(config.loggers)
    state = load_state(run_dir)
    loggers: list[Logger] = []
    for name in config.loggers:
        if name == "csv":
            loggers.append(_csv_logger(run_dir))
        elif name == "tensorboard":
            from lightning.pytorch.loggers import TensorBoardLogger

            loggers.append(
                TensorBoardLogger(run_dir, name="tb", version="", default_hp_metric=False)
            )
        elif name == "mlflow":
            loggers.append(_mlflow_logger(run_dir, state.get("mlflow", {})))
        elif name == "wandb":
            loggers.append(_wandb_logger(run_dir, state.get("wandb", {})))
    return loggers


def _csv_logger(run_dir: Path) -> Logger:
    """Lightning's CSVLogger in ``RUN/csv``; on --resume it keeps the rows already written
    (Lightning's writer deletes an existing metrics.csv)."""
    from lightning.pytorch.loggers import CSVLogger

    logger = CSVLogger(run_dir, name="csv", version="")
    path = run_dir / "csv" / "metrics.csv"
    if getattr(rank_zero_only, "rank", 0) != 0 or not path.is_file():
        return logger
    before = path.read_text(encoding="utf-8")
    with warnings.catch_warnings():  # "exists and is not empty ... will be deleted"
        warnings.simplefilter("ignore")
        writer = logger.experiment
    path.write_text(before, encoding="utf-8")
    writer.metrics_keys = sorted(before.splitlines()[0].split(",")) if before else []
    return logger


class _NewExperimentNote(logging.Filter):
    """Drops Lightning's warning "Experiment with name headstart not found. Creating it.":
    the first run in a tracking store creates the experiment, as expected."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "not found. Creating it" not in record.getMessage()


def own_store(run_dir: Path) -> str:
    """The URI of the MLflow file store in the run folder (``RUN/mlruns``)."""
    return (run_dir / "mlruns").resolve().as_uri()


def _mlflow_logger(run_dir: Path, saved: dict[str, Any]) -> Logger:
    from lightning.pytorch.loggers import MLFlowLogger

    note = logging.getLogger("lightning.pytorch.loggers.mlflow")
    if not any(isinstance(f, _NewExperimentNote) for f in note.filters):
        note.addFilter(_NewExperimentNote())

    # the run folder's own store is saved as None: a moved run folder still finds its run
    uri = os.environ.get("MLFLOW_TRACKING_URI") or saved.get("tracking_uri") or own_store(run_dir)
    if uri.startswith("file:"):
        # MLflow >= 3.7 refuses its file store unless asked for; it is the one that needs no
        # server or database (set MLFLOW_TRACKING_URI=sqlite:///... for a database)
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    run_id = (
        saved.get("run_id") if (saved.get("tracking_uri") or own_store(run_dir)) == uri else None
    )
    return MLFlowLogger(
        experiment_name=os.environ.get("MLFLOW_EXPERIMENT_NAME", EXPERIMENT),
        run_name=run_dir.name,
        tracking_uri=uri,
        run_id=run_id,
    )


def _wandb_logger(run_dir: Path, saved: dict[str, Any]) -> Logger:
    from lightning.pytorch.loggers import WandbLogger

    logger = WandbLogger(
        name=run_dir.name,
        save_dir=str(run_dir),
        project=os.environ.get("WANDB_PROJECT", EXPERIMENT),
        offline=os.environ.get("WANDB_MODE", "offline") != "online",
        id=saved.get("id"),
        resume="allow" if saved.get("id") else None,
    )
    # Lightning always passes anonymous=None, which wandb >= 0.19 answers with "The anonymous
    # setting has no effect" on every run: a warning nobody can act on
    init = getattr(logger, "_wandb_init", None)
    if isinstance(init, dict) and init.get("anonymous") is None:
        init.pop("anonymous", None)
    return logger


def hyperparameters(config: TrainConfig) -> dict[str, Any]:
    """The TrainConfig as tracker hyperparameters (lists as text, None as "none")."""
    out: dict[str, Any] = {}
    for key, value in config.model_dump(mode="json").items():
        if isinstance(value, list):
            value = ", ".join(map(str, value))
        out[key] = "none" if value is None else value
    return out


def final_metrics(results: dict[str, Any]) -> dict[str, float]:
    """The numbers of metrics.json worth a tracker's summary: every number of each split block
    (``val/accuracy``, ``test/macro_f1``, ...) and the run's seconds and epochs."""
    out: dict[str, float] = {}
    for block, values in results.items():
        if not isinstance(values, dict):
            continue
        for key, value in values.items():
            wanted = block != "run" or key in ("seconds", "epochs_run")
            if wanted and isinstance(value, int | float) and not isinstance(value, bool):
                out[f"final/{block}/{key}"] = float(value)
    return out


class TrackerStart(L.Callback):
    """Logs the hyperparameters when fitting starts and saves the tracker run ids."""

    def __init__(self, config: TrainConfig, run_dir: Path) -> None:
        self.params = hyperparameters(config)
        self.run_dir = run_dir

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        for lg in trainer.loggers:
            lg.log_hyperparams(self.params)
        save_state(self.run_dir, list(trainer.loggers))


@rank_zero_only
def log_final(config: TrainConfig, run_dir: Path, results: dict[str, Any]) -> None:
    """Log ``results``' final metrics (and the hyperparameters, for runs whose training was
    adopted from an ``auto`` candidate) into the run's trackers, then close them."""
    if not config.loggers:
        return
    metrics = final_metrics(results)
    step = int(results.get("run", {}).get("epochs_run", 0))
    params = hyperparameters(config)
    with warnings.catch_warnings():  # W&B: "a wandb run already in progress ... reuse"
        warnings.simplefilter("ignore")
        loggers = make_loggers(config, run_dir)
        for lg in loggers:
            if tracker_name(lg) == "tensorboard":
                lg.log_hyperparams(params, metrics)  # type: ignore[call-arg]  # the HParams tab
            else:
                lg.log_hyperparams(params)
            lg.log_metrics(metrics, step=step)
            lg.finalize("success")
    save_state(run_dir, loggers)
    if "wandb" in config.loggers:
        import wandb

        wandb.finish()
