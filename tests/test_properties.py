"""Property tests (hypothesis): the stratified split, the class map, and the TrainConfig YAML
round trip hold for every input, not just the examples in the other tests."""

from __future__ import annotations

import csv
import random
import tempfile
import types
import typing
from collections import Counter
from pathlib import Path
from typing import Any

import annotated_types as at
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from PIL import Image

from headstart.config import TrainConfig
from headstart.data import load_splits
from headstart.data.splits import stratified_split
from headstart.errors import HeadstartError
from headstart.run import RunFolder

# ----------------------------------------------------------------------- stratified split

label_counts = st.dictionaries(
    st.text("abcdefgh", min_size=1, max_size=4), st.integers(2, 30), min_size=2, max_size=6
)


def _labels(counts: dict[str, int], order_seed: int) -> list[str]:
    labels = [c for c, n in counts.items() for _ in range(n)]
    random.Random(order_seed).shuffle(labels)  # classes interleaved in any order
    return labels


@settings(max_examples=150, deadline=None)
@given(
    counts=label_counts,
    frac=st.floats(0.01, 0.99),
    seed=st.integers(0, 2**32 - 1),
    order=st.integers(0, 99),
)
def test_split_is_an_exact_stratified_partition(
    counts: dict[str, int], frac: float, seed: int, order: int
) -> None:
    labels = _labels(counts, order)
    tr, va = stratified_split(labels, frac, seed)
    assert sorted(tr + va) == list(range(len(labels))) and not set(tr) & set(va)
    vc = Counter(labels[i] for i in va)
    for c, n in counts.items():
        assert vc[c] == min(max(1, round(n * frac)), n - 1)  # the documented per-class count
    assert stratified_split(labels, frac, seed) == (tr, va)  # a function of its inputs


@settings(max_examples=100, deadline=None)
@given(
    counts=label_counts,
    lo=st.floats(0.01, 0.98),
    step=st.floats(0.0, 0.5),
    seed=st.integers(0, 999),
)
def test_larger_fraction_never_shrinks_a_class_in_validation(
    counts: dict[str, int], lo: float, step: float, seed: int
) -> None:
    labels = _labels(counts, seed)
    hi = min(0.99, lo + step)
    small = Counter(labels[i] for i in stratified_split(labels, lo, seed)[1])
    large = Counter(labels[i] for i in stratified_split(labels, hi, seed)[1])
    assert all(large[c] >= small[c] for c in counts)


@settings(max_examples=100, deadline=None)
@given(counts=label_counts, frac=st.floats(0.05, 0.95), seed=st.integers(0, 999))
def test_split_does_not_depend_on_class_names_only_their_order(
    counts: dict[str, int], frac: float, seed: int
) -> None:
    labels = _labels(counts, seed)
    names = sorted(counts)
    renamed = {c: f"class-{names.index(c):03d}" for c in counts}  # same sort order
    assert stratified_split(labels, frac, seed) == stratified_split(
        [renamed[x] for x in labels], frac, seed
    )


# ------------------------------------------------------------------------------ class map

# a `|` in a `label` cell makes the CSV multi-label (docs/multilabel.md): single-label names
# without it (hypothesis drew "1|" once, and the CSV was read as the label sets {0}, {1})
class_names = st.text(
    st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp"), blacklist_characters="|"),
    min_size=1,
    max_size=12,
).filter(lambda s: s.strip() == s and s)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    names=st.lists(class_names, min_size=2, max_size=6, unique=True),
    per_class=st.integers(2, 4),
    order=st.integers(0, 999),
)
def test_class_map_is_sorted_names_whatever_the_row_order(
    names: list[str], per_class: int, order: int
) -> None:
    """A CSV with any labels (unicode, commas, quotes, spaces) and rows in any order gives the
    class map ``sorted(labels)``; the run folder's classes.json gives it back unchanged."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        img = root / "x.png"
        Image.new("RGB", (8, 8), (10, 20, 30)).save(img)
        rows = [(f"img{i}.png", name) for name in names for i in range(per_class)]
        for p, _ in rows:
            (root / p).write_bytes(img.read_bytes())
        maps = []
        for shuffle_seed in (order, order + 1):
            random.Random(shuffle_seed).shuffle(rows)
            path = root / f"labels{shuffle_seed}.csv"
            with path.open("w", newline="", encoding="utf-8") as fh:
                w = csv.writer(fh)
                w.writerow(["path", "label"])
                w.writerows(rows)
            s = load_splits(path, seed=3)
            assert s.classes == sorted(names)
            assert s.class_to_idx == {c: i for i, c in enumerate(sorted(names))}
            assert set(s.targets("train")) == set(range(len(names)))  # every class trains
            maps.append(s.class_to_idx)
        assert maps[0] == maps[1]
        run = RunFolder(root / "run")
        run.save_classes(s.classes)
        assert run.load_classes() == s.classes


# -------------------------------------------------------------------- TrainConfig round trip

_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=20)
_SPECIAL: dict[str, st.SearchStrategy[Any]] = {
    "model": st.builds(lambda a, b: f"{a}:{b}", _text, _text),
    "precision": st.sampled_from(
        ["32-true", "32", "16-mixed", "bf16-mixed", "bf16-true", "64-true"]
    ),
}


def _bounds(metadata: list[Any]) -> dict[str, Any]:
    kw: dict[str, Any] = {}
    for m in metadata:
        if isinstance(m, at.Gt):
            kw.update(min_value=m.gt, exclude_min=True)
        elif isinstance(m, at.Ge):
            kw["min_value"] = m.ge
        elif isinstance(m, at.Lt):
            kw.update(max_value=m.lt, exclude_max=True)
        elif isinstance(m, at.Le):
            kw["max_value"] = m.le
    return kw


def _for_type(tp: Any, metadata: list[Any]) -> st.SearchStrategy[Any]:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Literal:
        return st.sampled_from(args)
    if origin in (typing.Union, types.UnionType):
        return st.one_of(*[_for_type(a, metadata) for a in args])
    if tp is type(None):
        return st.none()
    if tp is bool:
        return st.booleans()
    if tp is int:
        kw = _bounds(metadata)
        lo = kw.get("min_value")
        lo = None if lo is None else int(lo) + (1 if kw.get("exclude_min") else 0)
        return st.integers(min_value=lo, max_value=10**6)
    if tp is float:
        return st.floats(allow_nan=False, allow_infinity=False, **_bounds(metadata))
    if tp is str:
        return _text
    if origin is list and args == (str,):
        return st.lists(_text, max_size=3)
    if origin is list and args == (float,):
        return st.lists(st.floats(min_value=0.0, max_value=100.0), max_size=3)
    raise NotImplementedError(f"no strategy for {tp!r}: extend tests/test_properties.py")


@st.composite
def train_configs(draw: st.DrawFn) -> TrainConfig:
    values: dict[str, Any] = {}
    for name, field in TrainConfig.model_fields.items():
        special = _SPECIAL.get(name)  # (a strategy's truth value is not its presence)
        gen = special if special is not None else _for_type(field.annotation, field.metadata)
        if field.is_required() or draw(st.booleans()):
            values[name] = draw(gen)
    try:
        return TrainConfig.create(**values)
    except HeadstartError:  # a cross-field rule (e.g. head=semantic needs label_embeddings)
        assume(False)
        raise  # unreachable


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cfg=train_configs())
def test_config_yaml_round_trip(cfg: TrainConfig) -> None:
    text = cfg.to_yaml()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "config.yaml"
        path.write_text(text, encoding="utf-8")
        again = TrainConfig.from_yaml(path)
    assert again == cfg
    assert again.to_yaml() == text  # stable: saving a loaded config changes nothing
    assert cfg.replace() == cfg
