"""What a ``--weights`` string means, decided in one place for every model source.

=========================================  ===========  ==========================================
text (case-insensitive words)              kind         meaning
=========================================  ===========  ==========================================
``none``, ``scratch``, ``random``          ``none``     no pretrained weights (random init)
``DEFAULT``, ``pretrained``, ``imagenet``  ``default``  the source's default pretrained weights
a path with a weights suffix (``.pth``,    ``file``     a local state_dict
``.pt``, ``.bin``, ``.safetensors``,
``.ckpt``), or an existing file not named
like ``DEFAULT...``/``IMAGENET...``
anything else (``IMAGENET1K_V1``,          ``named``    a named weights set (torchvision enum
``ResNet18_Weights.IMAGENET1K_V1``)                     member); sources without names refuse it
=========================================  ===========  ==========================================

Which kinds a source accepts is the adapter's business (``hf:`` models take ``default`` and
``none`` only). Candidates of ``rank`` and ``fewshot-eval`` may carry their weights after an
``@`` (``torchvision:mobilenet_v2@none``): :func:`split_model_weights`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

WeightsKind = Literal["default", "named", "none", "file"]

NONE_WORDS = frozenset({"none", "scratch", "random"})
DEFAULT_WORDS = frozenset({"default", "pretrained", "imagenet"})
FILE_SUFFIXES = frozenset({".pth", ".pt", ".bin", ".safetensors", ".ckpt"})
DEFAULT = "DEFAULT"


@dataclass(frozen=True)
class WeightsSpec:
    """A parsed ``--weights`` string. ``text`` is the string as given; ``name`` is set for
    ``named`` (the enum member name as given), ``path`` for ``file``."""

    kind: WeightsKind
    text: str
    name: str = ""
    path: str = ""

    @classmethod
    def parse(cls, text: str) -> WeightsSpec:
        lowered = text.lower()
        if lowered in NONE_WORDS:
            return cls("none", text)
        if lowered in DEFAULT_WORDS:
            return cls("default", text)
        p = Path(text)
        if p.suffix.lower() in FILE_SUFFIXES or (
            p.is_file() and not text.upper().startswith(("DEFAULT", "IMAGENET"))
        ):
            return cls("file", text, path=text)
        return cls("named", text, name=text)

    @property
    def pretrained(self) -> bool:
        """Whether these weights start from something other than a random init."""
        return self.kind != "none"


def split_model_weights(candidate: str) -> tuple[str, str]:
    """``"torchvision:mobilenet_v2@none"`` -> ``(spec, weights)``; no ``@`` means DEFAULT."""
    spec, _, weights = candidate.partition("@")
    return spec, weights or DEFAULT


def is_random_init(weights_label: str) -> bool:
    """Whether a backbone's ``weights_label`` says it was built without pretrained weights."""
    return WeightsSpec.parse(weights_label).kind == "none"
