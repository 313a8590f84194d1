"""The run folder: everything later commands (evaluate, predict, export, resume) need.

::

    runs/<name>/
      config.yaml      the TrainConfig (``headstart train --config`` reproduces the run)
      classes.json     class names in index order
      metrics.json     final evaluation (val, and test when given) + strategy decisions
      log.csv          one row per epoch: losses, accuracies, learning rate, seconds
      checkpoints/     best.ckpt (lowest val loss) and last.ckpt, written atomically
      model.safetensors  best.ckpt's weights as safetensors (+ the checkpoint's headstart block)
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import torch

from headstart.config import TrainConfig
from headstart.errors import RunError


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temp file in the same folder, fsync, rename: a crash or
    a full disk never leaves a half-written ``path`` (the previous version stays intact).

    An ``OSError`` (disk full, permissions) becomes a :class:`RunError` naming the file."""
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError):
            raise RunError(
                f"cannot write {path}: {err.strerror or err}. Free space on that disk or fix its "
                "permissions; files written before are intact (an interrupted training run "
                "continues with --resume <run folder>)."
            ) from None
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


#: the run folder's best weights as safetensors (beside checkpoints/, which hold more)
WEIGHTS_FILE = "model.safetensors"


def save_weights(path: Path, ckpt: dict[str, Any]) -> None:
    """Write a checkpoint's ``state_dict`` (the module's tensors, keys as in the checkpoint) to
    ``path`` as safetensors, atomically; its metadata holds the checkpoint's ``headstart`` block
    (JSON) and epoch, which is what :func:`load_checkpoint_file` needs to rebuild the model."""
    from safetensors.torch import save

    tensors = {
        k: v.detach().cpu().contiguous().clone()  # safetensors refuses shared storage
        for k, v in ckpt["state_dict"].items()
        if isinstance(v, torch.Tensor)
    }
    meta = {"format": "pt", "headstart": json.dumps(ckpt.get("headstart", {}))}
    if "epoch" in ckpt:
        meta["epoch"] = str(ckpt["epoch"])
    atomic_write_bytes(path, save(tensors, metadata=meta))


def load_weights_file(path: Path) -> dict[str, Any]:
    """A ``model.safetensors`` written by :func:`save_weights`, as a checkpoint dict
    (``state_dict``, ``headstart``, ``epoch``)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
            state = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118 (not a dict)
        info = json.loads(meta.get("headstart", "{}"))
    except (SafetensorError, OSError, json.JSONDecodeError) as err:
        raise RunError(
            f"{path} is not a readable safetensors file written by headstart ({err}); retrain "
            "or restore it from a backup"
        ) from None
    ckpt: dict[str, Any] = {"state_dict": state, "headstart": info}
    if "epoch" in meta:
        ckpt["epoch"] = int(meta["epoch"])
    return ckpt


def load_checkpoint_file(path: Path) -> dict[str, Any]:
    """``torch.load(weights_only=True)`` with a clear error for missing/corrupt/tampered files
    (a ``.safetensors`` file: :func:`load_weights_file`)."""
    if not path.is_file():
        raise RunError(f"checkpoint {path} does not exist")
    if path.suffix == ".safetensors":
        return load_weights_file(path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise RunError(
            f"checkpoint {path} cannot be loaded safely ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''}). It is truncated, corrupt, or holds "
            "pickled code; retrain or restore it from a backup."
        ) from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise RunError(f"checkpoint {path} is not a headstart/Lightning checkpoint")
    return ckpt


@dataclass(frozen=True)
class CheckpointInfo:
    """The ``headstart`` block of every checkpoint a run writes: what rebuilding the model
    needs beyond the config (the head actually trained, the preprocessing an ``auto`` setting
    resolved to) and, for training checkpoints, the strategy state that makes resume exact."""

    model: str
    head: str
    preprocessing: dict[str, Any]
    strategy: dict[str, Any] | None = None
    applied_epoch: int = 0
    unfreeze_events: list[list[Any]] = field(default_factory=list)
    config: dict[str, Any] | None = None
    zero_shot: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_checkpoint(cls, ckpt: dict[str, Any]) -> CheckpointInfo:
        """The block of a loaded checkpoint (missing fields get their defaults)."""
        block = dict(ckpt.get("headstart") or {})
        known = {k: block[k] for k in cls.__dataclass_fields__ if k in block}
        known.setdefault("model", "")
        known.setdefault("head", "")
        known.setdefault("preprocessing", {})
        return cls(**known)


def write_model_checkpoint(
    path: Path, state_dict: dict[str, torch.Tensor], info: CheckpointInfo
) -> None:
    """A checkpoint that ``load_run`` reads (``state_dict`` keys prefixed ``backbone.``),
    written atomically; for runs made without training (zero-shot)."""
    buf = io.BytesIO()
    torch.save({"state_dict": state_dict, "headstart": info.to_dict()}, buf)
    atomic_write_bytes(path, buf.getvalue())


@dataclass(frozen=True)
class RunSummary:
    """What later commands (export, the model card, serve's /metadata) read of a run's
    metrics.json, typed: falls back to the config where a run has no metrics yet."""

    model: str
    weights: str
    strategy: str
    scores: dict[str, float]
    train_images: int | None
    val: dict[str, Any]

    @classmethod
    def of(cls, run: RunFolder) -> RunSummary:
        metrics = run.load_metrics()
        config = run.load_config()
        block = metrics.get("run", {})
        return cls(
            model=str(block.get("model", config.model)),
            weights=str(block.get("weights", config.weights)),
            strategy=str(block.get("strategy", config.strategy)),
            scores={k: float(metrics[k]["accuracy"]) for k in ("val", "test") if k in metrics},
            train_images=block.get("train_images"),
            val=dict(metrics.get("val", {})),
        )


@dataclass(frozen=True)
class RunFolder:
    path: Path

    @property
    def config_path(self) -> Path:
        return self.path / "config.yaml"

    @property
    def classes_path(self) -> Path:
        return self.path / "classes.json"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.json"

    @property
    def log_path(self) -> Path:
        return self.path / "log.csv"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def best_checkpoint(self) -> Path:
        return self.checkpoints / "best.ckpt"

    @property
    def last_checkpoint(self) -> Path:
        return self.checkpoints / "last.ckpt"

    @property
    def weights_path(self) -> Path:
        """``model.safetensors``: the best checkpoint's weights (see :func:`save_weights`)."""
        return self.path / WEIGHTS_FILE

    @staticmethod
    def default_path(config: TrainConfig, root: str | Path = "runs") -> Path:
        name = config.model.replace(":", "-").replace("/", "_")
        return Path(root) / f"{name}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"

    @classmethod
    def create(cls, path: str | Path) -> RunFolder:
        """A new run folder; an existing non-empty folder is never overwritten."""
        p = Path(path)
        if p.exists() and (not p.is_dir() or any(p.iterdir())):
            raise RunError(
                f"output folder {p} already exists and is not empty; choose another --out, "
                f"delete it, or continue it with --resume {p}"
            )
        try:
            p.mkdir(parents=True, exist_ok=True)
            probe = p / ".write-test"
            probe.write_text("")
            probe.unlink()
        except OSError as err:
            raise RunError(
                f"cannot write to output folder {p}: {err.strerror or err}. Choose another --out "
                "or fix the folder's permissions."
            ) from None
        return cls(p)

    @classmethod
    def open(cls, path: str | Path) -> RunFolder:
        """An existing run folder, checked for the files later commands need."""
        p = Path(path)
        run = cls(p)
        if not p.is_dir():
            raise RunError(f"run folder {p} does not exist")
        for need in (run.config_path, run.classes_path):
            if not need.is_file():
                raise RunError(
                    f"{p} is not a complete headstart run folder: {need.name} is missing"
                )
        return run

    def remove_stale_temp_files(self) -> list[Path]:
        """Delete temp files that a process killed mid-write left beside its checkpoints/files
        (``.<name>.*.tmp``; never loaded by anything). Returns what was removed."""
        removed = []
        for folder in (self.path, self.checkpoints):
            if folder.is_dir():
                for tmp in folder.glob(".*.tmp"):
                    tmp.unlink(missing_ok=True)
                    removed.append(tmp)
        return removed

    # --- contents -----------------------------------------------------------------------------
    def save_config(self, config: TrainConfig) -> None:
        atomic_write_text(self.config_path, config.to_yaml())

    def load_config(self) -> TrainConfig:
        return TrainConfig.from_yaml(self.config_path)

    def save_classes(self, classes: list[str]) -> None:
        atomic_write_text(self.classes_path, json.dumps(classes, indent=2, ensure_ascii=False))

    def load_classes(self) -> list[str]:
        try:
            classes = json.loads(self.classes_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as err:
            raise RunError(f"{self.classes_path} is unreadable: {err}") from None
        if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
            raise RunError(f"{self.classes_path} must hold a JSON list of class names")
        return classes

    def save_metrics(self, metrics: dict[str, Any]) -> None:
        atomic_write_text(self.metrics_path, json.dumps(metrics, indent=2, ensure_ascii=False))

    def load_metrics(self) -> dict[str, Any]:
        if not self.metrics_path.is_file():
            return {}
        result: dict[str, Any] = json.loads(self.metrics_path.read_text(encoding="utf-8"))
        return result

    def summary(self) -> RunSummary:
        """The typed summary of this run's metrics.json (see :class:`RunSummary`)."""
        return RunSummary.of(self)

    def checkpoint_for_inference(self) -> Path:
        """best.ckpt, else last.ckpt, else model.safetensors (a run shipped without
        checkpoints/); :func:`load_checkpoint_file` reads each."""
        for p in (self.best_checkpoint, self.last_checkpoint, self.weights_path):
            if p.is_file():
                return p
        raise RunError(
            f"{self.path} has no checkpoint in checkpoints/ and no {WEIGHTS_FILE} (was training interrupted before the first epoch ended?)"
        )
