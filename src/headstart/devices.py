"""The one device decision: where every stage outside Lightning's training loop runs.

``--accelerator`` (``auto`` by default) and ``--precision`` decide where Lightning trains; the
same two settings, resolved once by :func:`resolve_compute`, decide where feature extraction,
activation caching, evaluation, ``predict``, ``rank``, ``fewshot-eval`` and ``zero-shot`` run:

* ``auto``: the first CUDA GPU (``cuda:$LOCAL_RANK`` in a multi-process run), else Apple's MPS,
  else the CPU. ``cuda``/``gpu``/``mps``/``cpu`` ask for one; an unavailable one is an error.
* On CUDA, loaders pin host memory and batches are copied with ``non_blocking=True``.
* ``16-mixed`` / ``bf16-mixed`` (and ``bf16-true``) run the forward passes under
  :func:`torch.autocast` (float16 / bfloat16); outputs are returned as float32 on the CPU, as
  before. float16 autocast is not used on the CPU (as in Lightning, which refuses ``16-mixed``
  there): CPU passes with ``16-mixed`` run in float32.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from headstart.errors import HeadstartError

#: accelerator names understood outside Lightning (Lightning's own ``gpu`` = ``cuda`` or ``mps``)
ACCELERATORS = ("auto", "cpu", "cuda", "gpu", "mps")


@dataclass(frozen=True)
class Compute:
    """A resolved device and precision; :func:`resolve_compute` makes one."""

    device: torch.device
    precision: str = "32-true"

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        """The autocast dtype for forward passes (``None``: full float32)."""
        if self.precision.startswith("bf16"):
            return torch.bfloat16
        if self.precision == "16-mixed" and self.device.type != "cpu":
            return torch.float16
        return None

    @property
    def pin_memory(self) -> bool:
        """Whether loaders should pin host memory (CUDA only)."""
        return self.device.type == "cuda"

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """``torch.autocast`` for this device and precision, or a no-op in float32."""
        dtype = self.autocast_dtype
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def to(self, batch: Any) -> Any:
        """``batch`` (a tensor, or a dict/list/tuple of them) on this device; non-blocking
        copies from pinned memory on CUDA."""
        if isinstance(batch, torch.Tensor):
            return batch.to(self.device, non_blocking=self.pin_memory)
        if isinstance(batch, dict):
            return {k: self.to(v) for k, v in batch.items()}
        if isinstance(batch, (list, tuple)):
            return type(batch)(self.to(v) for v in batch)
        return batch


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def _cuda_device() -> torch.device:
    local = int(os.environ.get("LOCAL_RANK", "0") or 0)
    return torch.device("cuda", local % max(1, torch.cuda.device_count()))


def resolve_compute(accelerator: str = "auto", precision: str = "32-true") -> Compute:
    """The device and precision for ``--accelerator`` / ``--precision``; an accelerator that is
    unknown or not present raises :class:`HeadstartError` naming the option."""
    name = accelerator.lower()
    if name not in ACCELERATORS:
        raise HeadstartError(
            f"--accelerator {accelerator!r} is not one of {', '.join(ACCELERATORS)}"
        )
    cuda, mps = torch.cuda.is_available(), _mps_available()
    if name == "auto":
        name = "cuda" if cuda else "mps" if mps else "cpu"
    elif name == "gpu":
        name = "cuda" if cuda else "mps" if mps else "gpu"
    present = {"cpu": True, "cuda": cuda, "mps": mps}
    if not present.get(name, False):
        raise HeadstartError(
            f"--accelerator {accelerator}: no such device is available on this machine "
            "(torch sees none); use --accelerator auto or cpu"
        )
    device = _cuda_device() if name == "cuda" else torch.device(name)
    return Compute(device, precision)


def compute_for(config: Any) -> Compute:
    """:func:`resolve_compute` for a config's ``accelerator`` and ``precision`` fields (a
    ``TrainConfig``; missing fields: ``auto``, ``32-true``)."""
    return resolve_compute(
        str(getattr(config, "accelerator", "auto")), str(getattr(config, "precision", "32-true"))
    )


@contextlib.contextmanager
def placed(module: torch.nn.Module, compute: Compute) -> Iterator[torch.nn.Module]:
    """``module`` moved to ``compute.device`` for the block, then back to where it was (the
    caller's later CPU work, e.g. a head on cached CPU features, keeps working).

    The moves run outside inference mode even when the caller is inside it: a tensor copied
    to another device under ``torch.inference_mode()`` becomes an inference tensor, which has
    no version counter and cannot take part in autograd, so a model evaluated on the GPU
    inside inference mode could not be trained, cached or evaluated again afterwards."""
    first = next(module.parameters(), None)
    home = first.device if first is not None else torch.device("cpu")
    with torch.inference_mode(False):
        module.to(compute.device)
    try:
        yield module
    finally:
        with torch.inference_mode(False):
            module.to(home)
