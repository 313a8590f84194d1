"""Lightning CheckpointIO that writes atomically and loads with ``weights_only=True``."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

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
