"""The preprocessing a set of weights was trained with, taken from the weights' own metadata."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any


@dataclass(frozen=True)
class Preprocessing:
    """Resize the shorter side to ``resize``, centre-crop ``crop``, scale to [0, 1], normalise.

    Built from torchvision's ``weights.transforms()`` or timm's data config, never hard-coded;
    ``source`` says where it came from. Exported models embed these numbers.
    """

    crop: int
    resize: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bilinear"
    source: str = ""

    def with_crop(self, crop: int) -> Preprocessing:
        """Same recipe at another input size, keeping the resize/crop ratio."""
        ratio = self.resize / self.crop
        return replace(self, crop=crop, resize=max(crop, round(crop * ratio)))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Preprocessing:
        return cls(
            crop=int(d["crop"]),
            resize=int(d["resize"]),
            mean=tuple(float(v) for v in d["mean"]),  # type: ignore[arg-type]
            std=tuple(float(v) for v in d["std"]),  # type: ignore[arg-type]
            interpolation=str(d.get("interpolation", "bilinear")),
            source=str(d.get("source", "")),
        )
