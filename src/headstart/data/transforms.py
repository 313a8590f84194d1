"""Train/eval transforms built from a model's :class:`~headstart.models.Preprocessing`.

Mean, std, resize and crop always come from the weights' own metadata; the augmentation presets
add torchvision transforms v2 on top:

=========  ====================================================================
none       the eval transform (resize, centre crop, normalise)
light      RandomResizedCrop(scale 0.6-1) + horizontal flip
standard   RandomResizedCrop(scale 0.35-1) + flip + ColorJitter(0.3, 0.3, 0.3)
strong     standard + TrivialAugmentWide
=========  ====================================================================
"""

from __future__ import annotations

import torch
from torchvision.transforms import v2

from headstart.models.preprocessing import Preprocessing


def _interp(name: str) -> v2.InterpolationMode:
    return v2.InterpolationMode(name)


def _tensor_tail(p: Preprocessing) -> list[v2.Transform]:
    return [
        v2.ToImage(),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(mean=list(p.mean), std=list(p.std)),
    ]


def build_eval_transform(p: Preprocessing) -> v2.Compose:
    """Resize shorter side to ``p.resize``, centre-crop ``p.crop``, scale to [0,1], normalise."""
    return v2.Compose(
        [
            v2.Resize(p.resize, interpolation=_interp(p.interpolation), antialias=True),
            v2.CenterCrop(p.crop),
            *_tensor_tail(p),
        ]
    )


def build_train_transform(p: Preprocessing, preset: str, flip: bool = True) -> v2.Compose:
    """The augmentation ``preset`` (none|light|standard|strong) followed by normalisation;
    ``flip=False`` leaves out the random horizontal flip (data whose meaning flips)."""
    if preset == "none":
        return build_eval_transform(p)
    interp = _interp(p.interpolation)
    scale = (0.6, 1.0) if preset == "light" else (0.35, 1.0)
    ops: list[v2.Transform] = [
        v2.RandomResizedCrop(p.crop, scale=scale, interpolation=interp, antialias=True),
        *([v2.RandomHorizontalFlip()] if flip else []),
    ]
    if preset in ("standard", "strong"):
        ops.append(v2.ColorJitter(0.3, 0.3, 0.3))
    if preset == "strong":
        ops.append(v2.TrivialAugmentWide(interpolation=interp))
    if preset not in ("light", "standard", "strong"):
        raise ValueError(f"unknown augmentation preset {preset!r}")
    return v2.Compose([*ops, *_tensor_tail(p)])
