"""timm models behind the :class:`~headstart.models.Backbone` surface.

Stages come from timm's own ``group_matcher(coarse=True)`` (stem, then each stage/block group);
preprocessing from timm's data config of the model's pretrained config.
"""

from __future__ import annotations

import contextlib
import difflib
import json
import math
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import timm
import torch
from timm.models import group_parameters

from headstart.errors import ModelError
from headstart.models.backbone import Stage
from headstart.models.preprocessing import Preprocessing
from headstart.models.stages import discover_stages
from headstart.models.torchvision_adapter import Body
from headstart.models.weights_spec import WeightsSpec


def _check_name(name: str) -> None:
    if timm.is_model(name):
        return
    names = timm.list_models()
    close = difflib.get_close_matches(name, names, n=4, cutoff=0.6)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise ModelError(f"unknown timm model {name!r}.{hint} `headstart models --filter` searches.")


def _preprocessing(model: torch.nn.Module, note: str) -> Preprocessing:
    cfg = timm.data.resolve_data_config({}, model=model)
    crop = int(cfg["input_size"][-1])
    crop_pct = float(cfg.get("crop_pct") or 1.0)
    return Preprocessing(
        crop=crop,
        resize=math.floor(crop / crop_pct),
        mean=tuple(float(v) for v in cfg["mean"]),  # type: ignore[arg-type]
        std=tuple(float(v) for v in cfg["std"]),  # type: ignore[arg-type]
        interpolation=str(cfg.get("interpolation", "bilinear")),
        source=f"timm data config of {note}",
    )


def _stage_name(names: list[str], index: int) -> str:
    parts = [n.split(".")[:-1] for n in names]
    common: list[str] = []
    for level in zip(*parts, strict=False):
        if len(set(level)) != 1:
            break
        common.append(level[0])
    if common:
        return ".".join(common)
    roots = sorted({n.split(".", 1)[0] for n in names})
    return "+".join(roots) if len(roots) <= 3 else f"group{index}"


def _timm_stages(model: torch.nn.Module, example: torch.Tensor) -> list[Stage]:
    matcher = getattr(model, "group_matcher", None)
    if matcher is None:
        return discover_stages(model, example)
    try:
        groups: dict[int, list[str]] = group_parameters(model, matcher(coarse=True))
    except Exception:
        return discover_stages(model, example)
    ordered = [groups[k] for k in sorted(groups)]
    return [Stage(_stage_name(g, i), tuple(g)) for i, g in enumerate(ordered) if g]


def build(name: str, weights: str, image_size: int | None = None) -> Body:
    """Create ``timm:<name>`` without classifier (``num_classes=0``) from ``weights``.

    ``weights``: ``DEFAULT``/``pretrained`` (timm's pretrained tag, from the local HF cache),
    ``none``, or a local file (loaded through timm's ``pretrained_cfg_overlay=dict(file=...)``).
    """
    _check_name(name)
    kwargs: dict[str, Any] = {"num_classes": 0}
    spec = WeightsSpec.parse(weights)
    if spec.kind == "none":
        pretrained, label = False, "none"
    elif spec.kind == "file":
        if not os.path.isfile(spec.path):
            raise ModelError(f"weights file {spec.path} does not exist")
        pretrained, label = True, spec.path
        kwargs["pretrained_cfg_overlay"] = {"file": spec.path}
    elif spec.kind == "default":
        pretrained, label = True, "timm pretrained (default tag)"
        check_cached(name)
    else:
        raise ModelError(
            f"weights {weights!r} for timm:{name}: use DEFAULT, none, or a path to a weights file"
        )
    try:
        with hub_offline():
            model = timm.create_model(name, pretrained=pretrained, **kwargs)
    except Exception as err:
        raise ModelError(
            f"cannot create timm:{name} with weights {label!r}: {type(err).__name__}: {err}. "
            "Pretrained weights must be in the local Hugging Face cache or given as a file "
            "(--weights path); --weights none trains from scratch."
        ) from None
    preprocessing = _preprocessing(model, f"timm:{name}")
    if image_size is not None and image_size != preprocessing.crop:
        preprocessing = preprocessing.with_crop(image_size)
    example = torch.zeros(1, 3, preprocessing.crop, preprocessing.crop)
    model.eval()
    try:
        with torch.no_grad():
            num_features = int(model(example).shape[-1])
    except Exception as err:
        raise ModelError(
            f"timm:{name} does not run at {preprocessing.crop} px ({err}); try another --image-size"
        ) from None
    stages = _timm_stages(model, example)
    return Body(model, num_features, preprocessing, stages, label)


def params_cache_file() -> Path:
    """Where measured parameter counts are kept, per timm version (they depend on nothing else)."""
    root = Path(os.environ.get("HEADSTART_CACHE", Path.home() / ".cache" / "headstart"))
    return root / f"timm-params-{timm.__version__}.json"


def param_counts(
    names: list[str], progress: Callable[[int, int], None] | None = None
) -> dict[str, int | None]:
    """Parameter count of each timm model in ``names``: read from :func:`params_cache_file`,
    the missing ones measured on the meta device (``progress(done, to_measure)`` after each) and
    stored for the next call. A cache that cannot be read or written only costs time."""
    path = params_cache_file()
    try:
        known: dict[str, int | None] = json.loads(path.read_text())
    except (OSError, ValueError):
        known = {}
    missing = [n for n in names if n not in known]
    for i, name in enumerate(missing, 1):
        known[name] = _params_on_meta(name)
        if progress is not None:
            progress(i, len(missing))
    if missing:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(known, sort_keys=True))
            os.replace(tmp, path)
        except OSError:
            pass
    return {n: known[n] for n in names}


def _params_on_meta(name: str) -> int | None:
    """Parameter count without allocating weights (model built on the meta device)."""
    try:
        with torch.device("meta"):
            model = timm.create_model(name, pretrained=False)
        return sum(p.numel() for p in model.parameters())
    except Exception:
        return None


def offline() -> bool:
    """``HEADSTART_OFFLINE`` (default ``1``): weights come only from local caches and files."""
    return os.environ.get("HEADSTART_OFFLINE", "1") == "1"


@contextlib.contextmanager
def hub_offline() -> Iterator[None]:
    """Under :func:`offline`, the Hugging Face hub client makes no request (timm resolves its
    pretrained weights through it); the previous setting is restored afterwards."""
    if not offline():
        yield
        return
    from huggingface_hub import constants

    previous = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = previous


def check_cached(name: str) -> None:
    """Under :func:`offline`, a :class:`ModelError` when ``timm:<name>``'s default weights are
    not in the local caches: timm would otherwise download them at run time."""
    if not offline():
        return
    cfg = timm.get_pretrained_cfg(name)
    if _cached_offline(cfg):
        return
    where = getattr(cfg, "hf_hub_id", None) or getattr(cfg, "url", None) or "no download source"
    raise ModelError(
        f"pretrained weights of timm:{name} ({where}) are not in the local Hugging Face or torch "
        "hub cache and headstart does not download at run time (set HEADSTART_OFFLINE=0 to let "
        "timm download them). Put them in the cache, pass --weights <file>, or --weights none "
        "to train from scratch."
    )


def _cached_offline(cfg: Any) -> bool:
    """Whether the default pretrained weights are already in the local Hugging Face cache (or,
    for weights that timm fetches from a URL, in torch hub's checkpoint folder)."""
    hub_id = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
    url = getattr(cfg, "url", None) if cfg is not None else None
    if not hub_id:
        if not url:
            return False
        return (Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(str(url))).is_file()
    from huggingface_hub import try_to_load_from_cache

    return any(
        isinstance(try_to_load_from_cache(hub_id, f), str)
        for f in ("model.safetensors", "pytorch_model.bin")
    )


def info(name: str, params: int | None = None) -> dict[str, Any]:
    """The ``models`` row of a timm model (``params`` measured when not given)."""
    cfg = timm.get_pretrained_cfg(name)
    size = int(cfg.input_size[-1]) if cfg is not None and cfg.input_size else 224
    return {
        "spec": f"timm:{name}",
        "weights": ["DEFAULT", "none"],
        "input_size": size,
        "params": params if params is not None else param_counts([name])[name],
        "offline": ["DEFAULT"] if _cached_offline(cfg) else [],
    }
