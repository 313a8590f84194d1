"""On-disk cache of extracted features, so a second run on the same data skips extraction.

Entries are safetensors files under ``$HEADSTART_CACHE`` (default ``~/.cache/headstart/features``)
named by a SHA-256 key over everything that determines the features: model spec, weights (and a
weights file's size/mtime), preprocessing, augmentation views, seed where it matters, and every
image's path, size, mtime and label. Changing any image, or any of those settings, gives a new
key; writes are atomic, and an unreadable entry is ignored and rewritten.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from headstart.data.folders import Sample
from headstart.data.scan import MultiLabelSample, MultiTaskSample
from headstart.models.backbone import Backbone

log = logging.getLogger(__name__)

FORMAT_VERSION = 1


def cache_dir() -> Path:
    return (
        Path(os.environ.get("HEADSTART_CACHE", Path.home() / ".cache" / "headstart")) / "features"
    )


def feature_key(
    backbone: Backbone, samples: list[Sample], class_to_idx: dict[str, int], extra: dict[str, Any]
) -> str:
    h = hashlib.sha256()
    weights = getattr(backbone, "weights_label", "")
    wfile = Path(weights) if weights and Path(weights).is_file() else None
    header = {
        "format": FORMAT_VERSION,
        "model": backbone.spec,
        "weights": weights,
        "weights_file": [wfile.stat().st_size, wfile.stat().st_mtime_ns] if wfile else None,
        "preprocessing": backbone.preprocessing.to_dict(),
        "extra": extra,
    }
    h.update(json.dumps(header, sort_keys=True).encode())
    for s in samples:
        st = s.path.stat()
        target = (
            ",".join(str(class_to_idx[x]) for x in s.labels)
            if isinstance(s, MultiLabelSample | MultiTaskSample)
            else class_to_idx[s.label]
        )
        h.update(f"{s.path.resolve()}\0{st.st_size}\0{st.st_mtime_ns}\0{target}\n".encode())
        text = getattr(s, "text", None)  # text data: CSV rows share one file
        if text is not None:
            h.update(hashlib.sha256(text.encode()).digest())
    return h.hexdigest()[:32]


def load_cached(key: str) -> tuple[torch.Tensor, torch.Tensor] | None:
    path = cache_dir() / f"{key}.safetensors"
    if not path.is_file():
        return None
    try:
        d = load_file(str(path))
        return d["features"], d["targets"]
    except Exception as err:  # corrupt/partial entry: recompute
        log.warning("feature cache entry %s unreadable (%s); recomputing", path.name, err)
        return None


def store(key: str, features: torch.Tensor, targets: torch.Tensor) -> None:
    d = cache_dir()
    try:
        d.mkdir(parents=True, exist_ok=True)
        tmp = d / f".{key}.{os.getpid()}.tmp"
        save_file({"features": features.contiguous(), "targets": targets.contiguous()}, str(tmp))
        os.replace(tmp, d / f"{key}.safetensors")
    except OSError as err:  # a read-only or full disk must not fail the run
        log.warning("could not write the feature cache in %s: %s", d, err)
