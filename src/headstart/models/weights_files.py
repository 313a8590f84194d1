"""Read a local weights file safely and fit it onto a model, reporting what did not fit."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from headstart.errors import ModelError

log = logging.getLogger(__name__)

_WRAPPER_KEYS = ("state_dict", "model", "model_state_dict", "module")
_PREFIXES = ("module.", "model.", "_orig_mod.")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors from a ``.safetensors`` or a torch file (loaded with ``weights_only=True``)."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"weights file {path} does not exist")
    try:
        if path.suffix.lower() == ".safetensors":
            from safetensors.torch import load_file

            sd: object = load_file(str(path))
        else:
            sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ModelError(
            f"cannot read weights file {path}: {type(err).__name__}: {err}. It must be a "
            "state_dict saved with torch.save or safetensors (pickled objects are refused)."
        ) from None
    for key in _WRAPPER_KEYS:
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ModelError(f"weights file {path} does not hold a state_dict of tensors")
    out: dict[str, torch.Tensor] = {}
    for k, v in sd.items():
        for prefix in _PREFIXES:
            if k.startswith(prefix):
                k = k[len(prefix) :]
        out[k] = v
    return out


def fit_state_dict(
    model: nn.Module, state: dict[str, torch.Tensor], source: str, head_prefix: str | None = None
) -> None:
    """Load the keys of ``state`` that fit ``model``; refuse if most do not.

    Keys under ``head_prefix`` whose shapes differ (a classifier for another class count) are
    dropped with a note. Any other mismatch is reported; fewer than half the model's tensors
    matching is an error that lists examples of missing and unexpected keys.
    """
    own = model.state_dict()
    fit = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    mismatched = [k for k in state if k in own and own[k].shape != state[k].shape]
    unexpected = [k for k in state if k not in own]
    missing = [k for k in own if k not in fit]
    head_skips = [k for k in mismatched if head_prefix and k.startswith(head_prefix)]
    other_mismatch = [k for k in mismatched if k not in head_skips]
    if len(fit) < 0.5 * len(own):
        raise ModelError(
            f"weights file {source} does not fit this model: {len(fit)} of {len(own)} tensors "
            f"match. Missing e.g. {missing[:3]}; unexpected e.g. {unexpected[:3]}; shape "
            f"mismatch e.g. {other_mismatch[:3]}. Check --model matches the file's architecture."
        )
    model.load_state_dict(fit, strict=False)
    if head_skips:
        log.info("weights %s: classifier %s ignored (different class count)", source, head_skips)
    real_missing = [k for k in missing if not (head_prefix and k.startswith(head_prefix))]
    if real_missing or unexpected or other_mismatch:
        log.warning(
            "weights %s: %d tensors loaded, %d missing (e.g. %s), %d unexpected (e.g. %s), "
            "%d shape mismatches (e.g. %s)",
            source,
            len(fit),
            len(real_missing),
            real_missing[:3],
            len(unexpected),
            unexpected[:3],
            len(other_mismatch),
            other_mismatch[:3],
        )
    else:
        log.info("weights %s: all %d backbone tensors loaded", source, len(fit))
