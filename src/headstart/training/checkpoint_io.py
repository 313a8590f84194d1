"""Lightning CheckpointIO that writes atomically and loads with ``weights_only=True``."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from headstart.errors import RunError
from headstart.run import atomic_write_bytes, load_checkpoint_file


class AtomicCheckpointIO(TorchCheckpointIO):
    """Save: serialise to memory, write a temp file beside the target, fsync, rename — a crash
    never leaves a half-written ``last.ckpt``. Load: ``torch.load(weights_only=True)``."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None
    ) -> None:
        buf = io.BytesIO()
        torch.save(checkpoint, buf)
        atomic_write_bytes(Path(path), buf.getvalue())

    def load_checkpoint(
        self, path: Any, map_location: Any = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        return load_checkpoint_file(Path(path))

    def remove_checkpoint(self, path: Any) -> None:
        Path(path).unlink(missing_ok=True)


def check_checkpoint_fits(path: Path, module: torch.nn.Module, model: str) -> None:
    """Raise :class:`RunError` when the checkpoint at ``path`` holds weights of another model
    than ``module`` (missing/unexpected keys or other shapes), before Lightning tries to load it."""
    saved = load_checkpoint_file(path)["state_dict"]
    own = module.state_dict()
    missing = sorted(set(own) - set(saved))
    unexpected = sorted(set(saved) - set(own))
    shapes = sorted(
        k for k in set(own) & set(saved) if tuple(own[k].shape) != tuple(saved[k].shape)
    )
    if missing or unexpected or shapes:
        example = (missing or unexpected or shapes)[0]
        raise RunError(
            f"checkpoint {path} does not fit {model} ({len(missing)} missing, {len(unexpected)} "
            f"unexpected, {len(shapes)} differently shaped weights, e.g. {example}): it was "
            "written by another model or class list. Resume the run folder the checkpoint "
            "belongs to, or start a new run."
        )
