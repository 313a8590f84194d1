"""Split a body at a stage boundary: the frozen prefix and the rest, as two torch.fx graphs.

Cached activations (:mod:`headstart.training.activations`) run the stages that stay frozen once
per image and train the remaining stages on the stored result. That needs the body cut in two:
``prefix(x) -> a`` (everything up to the last call of a frozen stage) and ``suffix(a) -> body
output`` (the rest). Both are computed, generically for torchvision, timm and other traceable
bodies, from the body's own ``forward``:

1. :mod:`torch.fx` traces ``forward`` with every stage module (``Backbone._stage_modules``) as a
   leaf, so each stage module appears as one ``call_module`` node, in execution order.
2. The cut goes after the last node calling a frozen stage, and is pushed further over the
   parameter-free, non-random operations that follow (a ReLU, a max-pool, adding a frozen
   position embedding), keeping the position where exactly one tensor crosses from the prefix
   to the suffix. Nothing else (the input, another intermediate) may cross, except the input's
   batch size (``x.size(0)``), which the suffix reads from the stored activations; no
   trainable parameter may be used before the cut, and no trainable stage may run before it.
3. Both graphs call the body's own modules, so they share its parameters, buffers and
   train/eval state: training the suffix trains the body.

The body is traced twice, in train and in eval mode, because code that reads ``self.training``
outside the stage modules is fixed at trace time. Anything that does not fit raises
:class:`SplitError` with the reason; :meth:`Backbone.split_at` also checks the result
numerically against the body's own forward before it is used.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import fx, nn

#: operations never moved into the prefix: their result changes from call to call in training
_RANDOM_MODULES = (nn.modules.dropout._DropoutNd,)
_RANDOM_FUNCTIONS = {torch.nn.functional.dropout, torch.dropout, torch.nn.functional.dropout2d}


class SplitError(Exception):
    """The body cannot be split at the requested stage boundary (the message says why)."""


@dataclass
class BodySplit:
    """``prefix``/``suffix`` graph modules by training mode (``True``: train, ``False``: eval)."""

    cut: int
    prefix: dict[bool, fx.GraphModule]
    suffix: dict[bool, fx.GraphModule]
    #: where the cut landed (the node whose output is stored), for messages
    boundary: str


class _StageTracer(fx.Tracer):
    def __init__(self, leaves: set[int]) -> None:
        super().__init__()
        self.leaves = leaves

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return id(m) in self.leaves or super().is_leaf_module(m, module_qualified_name)


def split_body(
    body: nn.Module, stage_modules: list[list[nn.Module]], param_stage: dict[str, int], cut: int
) -> BodySplit:
    """Split ``body`` so that stages ``< cut`` run in the prefix (see module doc).

    ``stage_modules``: the maximal modules of each stage; ``param_stage``: each body parameter's
    stage index. Raises :class:`SplitError`.
    """
    if not 0 < cut < len(stage_modules):
        raise SplitError(f"cut {cut} is not between two stages")
    names = {id(m): n for n, m in body.named_modules()}
    module_stage = {names[id(m)]: i for i, mods in enumerate(stage_modules) for m in mods}
    leaves = {id(m) for mods in stage_modules for m in mods}
    prefix: dict[bool, fx.GraphModule] = {}
    suffix: dict[bool, fx.GraphModule] = {}
    boundary = ""
    modes = {m: m.training for m in body.modules()}
    try:
        for mode in (True, False):
            body.train(mode)
            try:
                graph = _StageTracer(leaves).trace(body)
            except Exception as err:
                raise SplitError(
                    f"torch.fx cannot trace the body ({type(err).__name__}: {err})"
                ) from None
            pre, suf, boundary = _split_graph(graph, body, module_stage, param_stage, cut)
            prefix[mode] = _graph_module(body, pre, "Prefix")
            suffix[mode] = _graph_module(body, suf, "Suffix")
    finally:
        for m, training in modes.items():
            m.training = training
    return BodySplit(cut, prefix, suffix, boundary)


def _graph_module(body: nn.Module, graph: fx.Graph, name: str) -> fx.GraphModule:
    gm = fx.GraphModule(body, graph, class_name=name)
    gm.graph.eliminate_dead_code()
    gm.graph.lint()
    gm.recompile()
    return gm


def _split_graph(
    graph: fx.Graph,
    body: nn.Module,
    module_stage: dict[str, int],
    param_stage: dict[str, int],
    cut: int,
) -> tuple[fx.Graph, fx.Graph, str]:
    nodes = list(graph.nodes)
    pos = {n: i for i, n in enumerate(nodes)}
    if sum(n.op == "placeholder" for n in nodes) != 1:
        raise SplitError("the body's forward does not take exactly one input")
    calls = [
        (i, module_stage[str(n.target)])
        for i, n in enumerate(nodes)
        if n.op == "call_module" and str(n.target) in module_stage
    ]
    frozen_calls = [i for i, s in calls if s < cut]
    if not frozen_calls:
        raise SplitError("the body's forward calls no module of the frozen stages")
    last = max(frozen_calls)
    if any(s >= cut and i < last for i, s in calls):
        raise SplitError("a trainable stage runs before the last frozen one")
    for n in nodes[: last + 1]:
        if _uses_trainable(n, body, param_stage, cut):
            raise SplitError(f"{n.name} before the cut uses a trainable parameter")
    end = _best_cut(nodes, pos, last, body, module_stage, param_stage, cut)
    crossing = _crossing(nodes, pos, end)
    if len(crossing) != 1 or crossing[0].op == "placeholder":
        what = ", ".join(n.name for n in crossing)
        raise SplitError(f"more than one value crosses the stage boundary ({what})")
    batch = [
        n for n in nodes[: end + 1] if _is_batch_size(n) and any(pos[u] > end for u in n.users)
    ]
    pre = _prefix_graph(nodes[: end + 1], crossing[0])
    return pre, _suffix_graph(nodes, end, crossing[0], batch), crossing[0].name


def _is_batch_size(n: fx.Node) -> bool:
    """``x.size(0)`` of the body's input (``bs = inputs.size(0)`` ... ``x.view(bs, -1)``): the
    suffix reads it from the stored activations, whose first dimension is the same batch."""
    if n.op != "call_method" or n.target != "size" or not n.args:
        return False
    src, dim = n.args[0], (n.args[1] if len(n.args) > 1 else n.kwargs.get("dim"))
    return (
        isinstance(src, fx.Node) and src.op == "placeholder" and isinstance(dim, int) and dim == 0
    )


def _uses_trainable(n: fx.Node, body: nn.Module, param_stage: dict[str, int], cut: int) -> bool:
    if n.op == "get_attr":
        return param_stage.get(str(n.target), -1) >= cut
    if n.op == "call_module":
        prefix = str(n.target) + "."
        return any(s >= cut for p, s in param_stage.items() if p.startswith(prefix))
    return False


def _movable(
    n: fx.Node,
    pos: dict[fx.Node, int],
    end: int,
    body: nn.Module,
    module_stage: dict[str, int],
    param_stage: dict[str, int],
    cut: int,
) -> bool:
    """Whether node ``n`` may join a prefix ending at ``end``: parameter-free, not random, and
    computed from prefix values only."""
    if n.op in ("output", "placeholder"):
        return False
    if n.op == "call_module":
        target = str(n.target)
        module = body.get_submodule(target)
        if target in module_stage or isinstance(module, _RANDOM_MODULES):
            return False
        if any(True for _ in module.parameters()):
            return False
    if n.op == "call_function" and n.target in _RANDOM_FUNCTIONS:
        return False
    if _uses_trainable(n, body, param_stage, cut):
        return False
    return all(pos[a] <= end or a.op == "get_attr" for a in n.all_input_nodes)


def _best_cut(
    nodes: list[fx.Node],
    pos: dict[fx.Node, int],
    last: int,
    body: nn.Module,
    module_stage: dict[str, int],
    param_stage: dict[str, int],
    cut: int,
) -> int:
    """The furthest position from ``last`` on, over movable nodes, where one value crosses."""
    end = last
    while end + 1 < len(nodes) and _movable(
        nodes[end + 1], pos, end, body, module_stage, param_stage, cut
    ):
        end += 1
    for e in range(end, last - 1, -1):
        if len(_crossing(nodes, pos, e)) == 1:
            return e
    return last


def _crossing(nodes: list[fx.Node], pos: dict[fx.Node, int], end: int) -> list[fx.Node]:
    """Values computed at or before ``end`` that nodes after it use (parameters and the input's
    batch size excluded)."""
    return [
        n
        for n in nodes[: end + 1]
        if n.op != "get_attr" and not _is_batch_size(n) and any(pos[u] > end for u in n.users)
    ]


def _prefix_graph(nodes: list[fx.Node], out: fx.Node) -> fx.Graph:
    g = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    for n in nodes:
        env[n] = g.node_copy(n, lambda a: env[a])
    g.output(env[out])
    return g


def _suffix_graph(nodes: list[fx.Node], end: int, cross: fx.Node, batch: list[fx.Node]) -> fx.Graph:
    g = fx.Graph()
    env: dict[fx.Node, fx.Node] = {cross: g.placeholder("activations")}
    for n in batch:  # the input's batch size, read from the activations
        env[n] = g.call_method("size", (env[cross], 0))

    def arg(a: fx.Node) -> fx.Node:
        if a not in env:  # a parameter read before the cut (a frozen position embedding...)
            assert a.op == "get_attr", a
            env[a] = g.node_copy(a, arg)
        return env[a]

    for n in nodes[end + 1 :]:
        env[n] = g.node_copy(n, arg)
    return g
