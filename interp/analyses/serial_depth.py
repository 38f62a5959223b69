"""Serial depth and *opaque* serial depth of real torch code, counted at the ATen level.

Rules (Brown-Cohen, Lindner & Shah, arXiv 2603.09786): inputs, constants and weights 0; data movement
(view, reshape, transpose, slice, gather/index, scatter, cat, pad, copy) +0; elementwise ops +1;
reductions over N elements +⌈log₂N⌉; matmul contracting n +⌈log₂n⌉+1; top-k over n +⌈log₂n⌉;
cumsum along n +⌈log₂n⌉; select/where among c choices +⌈log₂c⌉; loops are unrolled (we count the
ops that actually run, so a Python loop over steps is unrolled and a branch counts the path taken).

Fused ops count as the primitives a JAX trace of the same layer has, written out below:

- softmax over n (L = ⌈log₂n⌉): max (L), subtract and exp (2), sum (L), divide (1): **2L + 3**;
- logsumexp over n: max (L), subtract and exp (2), sum (L), log and add back the max (2): **2L + 4**;
- layer norm over N (L = ⌈log₂N⌉), two-pass: mean (L+1), centre (1), square-sum-divide (L+2),
  add-eps and rsqrt (2), scale (1): **2L + 7**, +1 each for weight and bias;
- GELU (exact, ``x * (erf(x/√2) + 1) / 2``): **5**; tanh form: 8; SiLU: 2;
- ``addmm`` (linear with bias): matmul, then +1 for the bias add;
- scaled-dot-product attention: QKᵀ, scale, (mask), softmax over keys, ·V.

*Opaque* depth counts only chains that do not pass through an interpretable intermediate. Where a
chain is cut is set by ``cut``:

- ``"sampled"`` (default, the strict rule): the chain restarts only at (a) the integer outputs of the
  ops that pick tokens, ``multinomial``, ``argmax`` / ``argmin`` and the index outputs of ``topk`` and
  ``max`` / ``min`` along a dimension, and (b) tensors passed to :func:`mark_interpretable` (our
  ``topk`` / ``topp`` bottleneck marks its carried probabilities). Every other integer or boolean
  tensor (a comparison, a cast, ``argsort`` / ``sort`` indices, a mask, integer arithmetic, a
  ``where`` that assembles a canvas from tokens under a mask) carries the opaque depth of its inputs
  like any float: a chain that passes through ``(h > 0).long()`` is not cut. A ``topk`` used for
  routing (mixture of experts) is cut too; its values still carry the chain. Consequences for our
  samplers: the canvas a masked sampler carries to the next step (its tokens and which positions are
  decided) is text a human reads, so the samplers mark it interpretable after every step; without
  that, samplers that choose *where* to commit from the model's confidence (``llada``, ``entropy``)
  would carry that choice, and with it the whole forward pass, into the next step.
- ``"discrete"``: any integer or boolean tensor has opaque depth 0 (the looser rule: every comparison
  and cast cuts).

A tensor marked interpretable keeps opaque depth 0 in views taken from it afterwards, and marking a
view works: a view has its own depth, and reads its base's only for in-place writes into the base
(through it or another view) made after the view was taken. An in-place write to part of a tensor
(a KV cache written by slice) merges depth and opaque depth separately into the tensor it writes.
``bernoulli`` / ``normal`` / ``poisson`` / ``binomial`` with tensor arguments depend on them (+1, an
elementwise op); with only sizes they are creations. An ATen op the rules do not cover is
decomposed with torch's own decomposition table when it has one, and is otherwise an error naming
it, never silently 0.

Runs on real tensors or on ``meta`` tensors (no weights, no memory: a billion-parameter config at
32k tokens is counted in seconds).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import plotly.graph_objects as go
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.weak import WeakTensorKeyDictionary

from interp.errors import InterpError
from interp.interpretable import _LISTENERS
from interp.interpretable import mark_interpretable as mark_interpretable  # re-exported


class SerialDepthError(InterpError):
    """An op the rules do not cover, or a bad request."""


def clog2(n: int) -> int:
    return 0 if n <= 1 else math.ceil(math.log2(n))


@dataclass(eq=False)
class Node:
    """One counted operation: its cost and the depth of the longest (opaque) chain ending here."""

    op: str
    cost: int
    depth: int
    opaque: int
    module: str
    step: int | None
    parent: Node | None = field(default=None, repr=False)
    opaque_parent: Node | None = field(default=None, repr=False)


_MOVE = {
    "view",
    "_unsafe_view",
    "reshape",
    "_reshape_alias",
    "as_strided",
    "transpose",
    "t",
    "permute",
    "expand",
    "squeeze",
    "unsqueeze",
    "slice",
    "select",
    "index",
    "_unsafe_index",
    "index_select",
    "gather",
    "embedding",
    "cat",
    "stack",
    "split",
    "split_with_sizes",
    "unbind",
    "chunk",
    "narrow",
    "clone",
    "contiguous",
    "alias",
    "detach",
    "constant_pad_nd",
    "flip",
    "roll",
    "repeat",
    "repeat_interleave",
    "unfold",
    "diagonal",
    "movedim",
    "unflatten",
    "flatten",
    "copy",
    "scatter",
    "index_put",
    "index_copy",
    "slice_scatter",
    "select_scatter",
    "pixel_shuffle",
    "pixel_unshuffle",
    "upsample_nearest1d",
    "upsample_nearest2d",
    "upsample_nearest3d",
    "view_as_real",
    "view_as_complex",
    "lift_fresh",
    "lift_fresh_copy",
    "masked_select",
    "nonzero",
    "expand_as",
    "view_as",
    "_unsafe_split",
    "im2col",
    "col2im",
}
_CREATE = {
    "empty",
    "empty_strided",
    "zeros",
    "ones",
    "full",
    "arange",
    "linspace",
    "scalar_tensor",
    "empty_like",
    "zeros_like",
    "ones_like",
    "full_like",
    "new_empty",
    "new_empty_strided",
    "new_zeros",
    "new_ones",
    "new_full",
    "eye",
    "rand",
    "randn",
    "randint",
    "rand_like",
    "randn_like",
    "randint_like",
    "randperm",
    "uniform",
    "random",
    "exponential",
    "fill",
    "zero",
    "tril_indices",
    "triu_indices",
}
_ELEMENTWISE = {
    "add",
    "sub",
    "rsub",
    "mul",
    "div",
    "neg",
    "exp",
    "exp2",
    "expm1",
    "log",
    "log2",
    "log10",
    "log1p",
    "tanh",
    "sigmoid",
    "relu",
    "pow",
    "sqrt",
    "rsqrt",
    "reciprocal",
    "erf",
    "erfc",
    "erfinv",
    "sin",
    "cos",
    "tan",
    "atan",
    "atan2",
    "abs",
    "sign",
    "sgn",
    "clamp",
    "clamp_min",
    "clamp_max",
    "maximum",
    "minimum",
    "fmax",
    "fmin",
    "eq",
    "ne",
    "lt",
    "le",
    "gt",
    "ge",
    "logical_and",
    "logical_or",
    "logical_not",
    "logical_xor",
    "bitwise_and",
    "bitwise_or",
    "bitwise_not",
    "bitwise_xor",
    "where",
    "masked_fill",
    "floor",
    "ceil",
    "round",
    "trunc",
    "frac",
    "remainder",
    "fmod",
    "square",
    "isnan",
    "isinf",
    "isfinite",
    "nan_to_num",
    "hardtanh",
    "leaky_relu",
    "elu",
    "softplus",
    "heaviside",
    "tril",
    "triu",
    "floor_divide",
    "true_divide",
    "mvlgamma",
    "lgamma",
    "digamma",
    "threshold",
    "xlogy",
    "logit",
    "hardsigmoid",
}
_REDUCE = {"sum", "amax", "amin", "max", "min", "argmax", "argmin", "prod", "any", "all", "nansum", "aminmax"}
_NOOP = {
    "_assert_async",
    "_assert_scalar",
    "sym_size",
    "sym_stride",
    "sym_numel",
    "sym_storage_offset",
    "is_same_size",
    "_local_scalar_dense",
    "_assert_tensor_metadata",
    "set_",
    "record_stream",
    "resize_",
    "_has_compatible_shallow_copy_type",
    "_functional_sym_constrain_range",
}


CUTS = ("sampled", "discrete")
# ops whose integer outputs are picked tokens (the cut points of cut="sampled")
_PICK = {"multinomial", "argmax", "argmin", "topk", "max", "min"}


def _numel(shape: Iterable[int]) -> int:
    out = 1
    for s in shape:
        out *= int(s)
    return out


class DepthCounter(TorchDispatchMode):
    """Counts the serial depth of everything run inside ``with counter:``.

    ``roots`` (``{prefix: module}``) name modules for the per-module breakdown; set ``counter.step``
    in a generation loop to attribute ops to steps. ``cut``: where the opaque chain restarts,
    ``"sampled"`` (picked tokens and marked tensors only) or ``"discrete"`` (any integer / boolean
    tensor); see the module docstring.
    """

    def __init__(self, roots: dict[str, nn.Module] | None = None, cut: str = "sampled"):
        super().__init__()
        if cut not in CUTS:
            raise SerialDepthError(f"cut must be one of {', '.join(CUTS)}, got {cut!r}")
        self.cut = cut
        self.nodes = WeakTensorKeyDictionary()
        # when each tensor's node was last set, and the latest in-place write into each base tensor
        # (through the base or any view of it): a view reads its base only for writes made after it
        self._stamp = WeakTensorKeyDictionary()
        self._writes = WeakTensorKeyDictionary()
        self._clock = 0
        self._func: Any = None
        self.step: int | None = None
        self.deepest: Node | None = None
        self.deepest_opaque: Node | None = None
        self.n_ops = 0
        self._names = {}
        for prefix, root in (roots or {}).items():
            for name, mod in root.named_modules():
                self._names[id(mod)] = ".".join(p for p in (prefix, name) if p) or type(root).__name__
        self._stack: list[str] = []
        self._handles: list[Any] = []

    # --- module attribution ------------------------------------------------------------------
    def __enter__(self):
        def pre(mod, args):
            self._stack.append(self._names.get(id(mod), type(mod).__name__))

        def post(mod, args, out):
            if self._stack:
                self._stack.pop()

        self._handles = [
            nn.modules.module.register_module_forward_pre_hook(pre),
            nn.modules.module.register_module_forward_hook(post),
        ]
        _LISTENERS.append(self.mark)
        return super().__enter__()

    def __exit__(self, *exc):
        for h in self._handles:
            h.remove()
        self._handles = []
        if self.mark in _LISTENERS:
            _LISTENERS.remove(self.mark)
        return super().__exit__(*exc)

    # --- bookkeeping ---------------------------------------------------------------------------
    def _tick(self) -> int:
        self._clock += 1
        return self._clock

    def node(self, t: Any) -> Node | None:
        """The node of tensor ``t``; a view also reads in-place writes into its base made after the view
        got its own node (not the base's whole history: a marked view stays marked)."""
        if not isinstance(t, torch.Tensor):
            return None
        n = self.nodes.get(t)
        base = t._base
        if base is None:
            return n
        if n is None:
            return self.nodes.get(base)
        written = self._writes.get(base)
        if written is not None and written[0] > self._stamp.get(t, 0):
            return self.merge(n, written[1])
        return n

    def merge(self, a: Node | None, b: Node | None) -> Node | None:
        """A tensor holding the values of both: the deeper chain and the deeper opaque chain, each kept
        separately (cost 0, not an op)."""
        if a is None or b is None or a is b:
            return a if b is None else b
        parent = a if a.depth >= b.depth else b
        oparent = a if a.opaque >= b.opaque else b
        if parent is oparent:
            return parent
        return Node(
            op="merge",
            cost=0,
            depth=parent.depth,
            opaque=oparent.opaque,
            module=self._stack[-1] if self._stack else "",
            step=self.step,
            parent=parent,
            opaque_parent=oparent,
        )

    def combine(self, op: str, inputs: Iterable[Node | None], cost: int) -> Node:
        inputs = [n for n in inputs if n is not None]
        parent = max(inputs, key=lambda n: n.depth, default=None)
        oparent = max(inputs, key=lambda n: n.opaque, default=None)
        node = Node(
            op=op,
            cost=cost,
            depth=(parent.depth if parent else 0) + cost,
            opaque=(oparent.opaque if oparent else 0) + cost,
            module=self._stack[-1] if self._stack else "",
            step=self.step,
            parent=parent,
            opaque_parent=oparent,
        )
        self.n_ops += 1
        return node

    def assign(self, t: Any, node: Node, picked: bool = False) -> None:
        """Give tensor ``t`` its node; ``picked``: ``t`` comes out of a token-picking op."""
        if not isinstance(t, torch.Tensor):
            return
        discrete = not (t.is_floating_point() or t.is_complex())
        if discrete and (picked or self.cut == "discrete") and node.opaque > 0:
            node = Node(
                op=node.op,
                cost=node.cost,
                depth=node.depth,
                opaque=0,
                module=node.module,
                step=node.step,
                parent=node.parent,
                opaque_parent=None,
            )
        self.nodes[t] = node
        self._stamp[t] = self._tick()
        if self.deepest is None or node.depth > self.deepest.depth:
            self.deepest = node
        if self.deepest_opaque is None or node.opaque > self.deepest_opaque.opaque:
            self.deepest_opaque = node

    def mark(self, t: torch.Tensor) -> None:
        n = self.node(t) or Node("input", 0, 0, 0, "", self.step)
        self.nodes[t] = Node(
            op="interpretable",
            cost=0,
            depth=n.depth,
            opaque=0,
            module=n.module,
            step=self.step,
            parent=n,
            opaque_parent=None,
        )
        self._stamp[t] = self._tick()

    # --- the rules -----------------------------------------------------------------------------
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func.overloadpacket.__name__.rstrip("_")
        if name in _NOOP:
            return func(*args, **kwargs)
        flat_in, _ = tree_flatten((args, kwargs))
        ins = [self.node(a) for a in flat_in if isinstance(a, torch.Tensor)]
        handler = _SPECIAL.get(name)
        if handler is None and name not in (_MOVE | _CREATE | _ELEMENTWISE | _REDUCE):
            decomposition = torch._decomp.decomposition_table.get(func)
            if decomposition is None:
                raise SerialDepthError(
                    f"aten op {func} is not covered by the serial-depth rules (no decomposition either)"
                )
            with self:
                return decomposition(*args, **kwargs)
        out = func(*args, **kwargs)
        flat_out = [o for o in tree_flatten(out)[0] if isinstance(o, torch.Tensor)]
        if handler is not None:
            self._func = func  # the overload, for handlers that depend on it
            nodes = handler(self, args, kwargs, ins, flat_out)
            for o, n in zip(flat_out, nodes, strict=False):
                self.assign(o, n, picked=name in _PICK)
            self._write_through(func, args, nodes[0] if nodes else None)
            return out
        if name in _CREATE:
            node = self.combine(name, [], 0)
        elif name in _MOVE:
            node = self.combine(name, ins, 0)
        elif name in _ELEMENTWISE:
            node = self.combine(name, ins, 1)
        else:  # reductions
            first = next(a for a in flat_in if isinstance(a, torch.Tensor))
            reduced = max(1, first.numel() // max(1, flat_out[0].numel())) if flat_out else first.numel()
            node = self.combine(name, ins, clog2(reduced))
        for o in flat_out:
            self.assign(o, node, picked=name in _PICK)
        self._write_through(func, args, node)
        return out

    def _write_through(self, func, args, node: Node | None) -> None:
        """An in-place op on a view also changes (part of) the tensor it views: merge its node into the
        base's (depth and opaque depth each the max of both). Views made before an in-place write
        (into the base or any view of it) read the write through :meth:`node`."""
        if node is None or not func._schema.is_mutable or not args or not isinstance(args[0], torch.Tensor):
            return
        target = args[0]
        base = target._base if target._base is not None else target
        if base is not target:
            self.assign(base, self.merge(self.nodes.get(base), self.nodes.get(target)))
        previous = self._writes.get(base)
        self._writes[base] = (self._tick(), self.merge(previous[1] if previous else None, self.nodes.get(target)))
        self._stamp[target] = self._tick()  # the target's own node already holds this write


def _h_matmul(c: DepthCounter, args, kwargs, ins, outs):
    a = args[0]
    return [c.combine("matmul", ins, clog2(a.shape[-1]) + 1)]


def _h_addmm(c: DepthCounter, args, kwargs, ins, outs):
    bias, m1, m2 = args[0], args[1], args[2]
    mm = c.combine("matmul", [c.node(m1), c.node(m2)], clog2(m1.shape[-1]) + 1)
    return [c.combine("add", [mm, c.node(bias)], 1)]


def _h_conv(c: DepthCounter, args, kwargs, ins, outs):
    x, w, bias = args[0], args[1], args[2] if len(args) > 2 else None
    transposed = bool(args[6]) if len(args) > 6 else False
    groups = int(args[8]) if len(args) > 8 else 1
    fan_in = (w.shape[0] // groups if transposed else w.shape[1]) * _numel(w.shape[2:])
    conv = c.combine("conv", [c.node(x), c.node(w)], clog2(fan_in) + 1)
    return [c.combine("add", [conv, c.node(bias)], 1) if isinstance(bias, torch.Tensor) else conv]


def softmax_nodes(c: DepthCounter, x: Node | None, n: int, log: bool = False) -> Node:
    L = clog2(n)
    m = c.combine("softmax.max", [x], L)
    e = c.combine("softmax.sub_exp", [x, m], 2)
    s = c.combine("softmax.sum", [e], L)
    if log:
        return c.combine("log_softmax.log_sub", [x, m, s], 2)
    return c.combine("softmax.div", [e, s], 1)


def _h_softmax(c: DepthCounter, args, kwargs, ins, outs, log=False):
    x, dim = args[0], int(args[1])
    return [softmax_nodes(c, c.node(x), x.shape[dim] if x.dim() else 1, log=log)]


def _h_layer_norm(c: DepthCounter, args, kwargs, ins, outs):
    x, shape = args[0], args[1]
    w = args[2] if len(args) > 2 else None
    b = args[3] if len(args) > 3 else None
    return list(_norm_nodes(c, c.node(x), _numel(shape), c.node(w), c.node(b), w is not None, b is not None))


def _norm_nodes(c, x, N, w, b, has_w, has_b):
    L = clog2(N)
    mean = c.combine("norm.mean", [x], L + 1)
    centred = c.combine("norm.centre", [x, mean], 1)
    var = c.combine("norm.var", [centred], L + 2)
    rstd = c.combine("norm.rsqrt", [var], 2)
    y = c.combine("norm.scale", [centred, rstd], 1)
    if has_w:
        y = c.combine("norm.weight", [y, w], 1)
    if has_b:
        y = c.combine("norm.bias", [y, b], 1)
    return y, mean, rstd


def _h_group_norm(c: DepthCounter, args, kwargs, ins, outs):
    x, w, b, _n, C, HxW, group = args[:7]
    return list(
        _norm_nodes(c, c.node(x), (int(C) // int(group)) * int(HxW), c.node(w), c.node(b), w is not None, b is not None)
    )


def _h_batch_norm_eval(c: DepthCounter, args, kwargs, ins, outs):
    x, w, b, mean, var = args[:5]
    rstd = c.combine("bn.rsqrt", [c.node(var)], 2)
    y = c.combine("bn.centre", [c.node(x), c.node(mean)], 1)
    y = c.combine("bn.scale", [y, rstd], 1)
    y = c.combine("bn.weight", [y, c.node(w)], 1) if w is not None else y
    y = c.combine("bn.bias", [y, c.node(b)], 1) if b is not None else y
    return [y, y, y]


def _h_gelu(c: DepthCounter, args, kwargs, ins, outs):
    approximate = kwargs.get("approximate", args[1] if len(args) > 1 else "none")
    return [c.combine("gelu", ins, 8 if approximate == "tanh" else 5)]


def _h_fixed(cost: int):
    return lambda c, args, kwargs, ins, outs: [c.combine("fused", ins, cost)]


def _h_along(cost_of_n: Callable[[int], int], dim_index: int = 1, default_dim: int = -1):
    def handler(c: DepthCounter, args, kwargs, ins, outs):
        x = args[0]
        dim = kwargs.get(
            "dim", args[dim_index] if len(args) > dim_index and isinstance(args[dim_index], int) else default_dim
        )
        n = x.shape[dim] if x.dim() else 1
        node = c.combine("along", ins, cost_of_n(n))
        return [node] * max(1, len(outs))

    return handler


def _h_reduce_then(extra: int):
    def handler(c: DepthCounter, args, kwargs, ins, outs):
        x = args[0]
        reduced = max(1, x.numel() // max(1, outs[0].numel()))
        return [c.combine("reduce", ins, clog2(reduced) + extra)] * len(outs)

    return handler


def _h_var(c: DepthCounter, args, kwargs, ins, outs, with_mean=False, sqrt=False):
    x = args[0]
    L = clog2(max(1, x.numel() // max(1, outs[0].numel())))
    mean = c.combine("var.mean", ins, L + 1)
    var = c.combine("var", [c.node(x), mean], L + 3 + (1 if sqrt else 0))
    return [var, mean] if with_mean else [var]


def _h_to_copy(c: DepthCounter, args, kwargs, ins, outs):
    changed = outs and outs[0].dtype != args[0].dtype
    return [c.combine("convert" if changed else "copy", ins, 1 if changed else 0)]


def _h_random_from(c: DepthCounter, args, kwargs, ins, outs):
    """``bernoulli(p)``, ``normal(mean, std)``, ``poisson(rate)``, ``binomial(count, p)``: +1 on their tensor
    arguments (an elementwise op on a random draw); a creation when they have none. The first argument
    only gives the shape for ``bernoulli.p`` / ``bernoulli.Tensor``, ``normal.functional`` and the in-place forms."""
    op = c._func
    name, overload = op.overloadpacket.__name__, op._overloadname
    shape_only = name.endswith("_") or (name, overload) in {
        ("bernoulli", "p"),
        ("bernoulli", "Tensor"),
        ("normal", "functional"),
    }
    deps = [c.node(a) for a in (args[1:] if shape_only else args) if isinstance(a, torch.Tensor)]
    deps += [c.node(a) for a in kwargs.values() if isinstance(a, torch.Tensor)]
    if not deps:
        return [c.combine(name.rstrip("_"), [], 0)] * len(outs)
    return [c.combine(name.rstrip("_"), deps, 1)] * len(outs)


def _h_logsumexp(c: DepthCounter, args, kwargs, ins, outs):
    x = args[0]
    L = clog2(max(1, x.numel() // max(1, outs[0].numel())))
    return [c.combine("logsumexp", ins, 2 * L + 4)]


def _h_multinomial(c: DepthCounter, args, kwargs, ins, outs):
    return [c.combine("multinomial", ins, clog2(args[0].shape[-1]) + 1)]


def _h_sdpa(c: DepthCounter, args, kwargs, ins, outs):
    q, k, v = args[0], args[1], args[2]
    mask = kwargs.get("attn_mask", args[3] if len(args) > 3 and isinstance(args[3], torch.Tensor) else None)
    scores = c.combine("sdpa.qk", [c.node(q), c.node(k)], clog2(q.shape[-1]) + 1)
    scores = c.combine("sdpa.scale", [scores], 1)
    if isinstance(mask, torch.Tensor):
        scores = c.combine("sdpa.mask", [scores, c.node(mask)], 1)
    p = softmax_nodes(c, scores, k.shape[-2])
    out = c.combine("sdpa.pv", [p, c.node(v)], clog2(k.shape[-2]) + 1)
    return [out] * len(outs)


def _h_copy_(c: DepthCounter, args, kwargs, ins, outs):
    return [c.combine("copy", [c.node(args[1])], 0)]


def _h_accumulate(source_index: int = 3, dim_index: int = 1):
    """Scatter-style accumulation (``index_add``, ``scatter_add``, ``scatter_reduce``, as mixture-of-experts
    layers gather their experts' outputs): a target may receive every source entry along ``dim``, summed
    as a tree (⌈log₂n⌉), then added into the destination (+1)."""

    def handler(c: DepthCounter, args, kwargs, ins, outs):
        source, dim = args[source_index], args[dim_index]
        n = source.shape[dim] if source.dim() else 1
        return [c.combine("accumulate", ins, clog2(n) + 1)] * max(1, len(outs))

    return handler


def _h_histogram(extra: int):
    """``histc`` / ``bincount`` over N elements (a router counting tokens per expert): each element's bin
    (``extra`` elementwise ops), then a count per bin as a tree over N."""

    def handler(c: DepthCounter, args, kwargs, ins, outs):
        return [c.combine("histogram", ins, clog2(max(1, args[0].numel())) + extra)] * max(1, len(outs))

    return handler


def _h_index_put(c: DepthCounter, args, kwargs, ins, outs):
    accumulate = kwargs.get("accumulate", args[3] if len(args) > 3 else False)
    return [c.combine("index_put", ins, 1 if accumulate else 0)]


def _bitonic(n: int) -> int:
    L = clog2(n)
    return L * (L + 1) // 2


_SPECIAL: dict[str, Callable] = {
    "mm": _h_matmul,
    "bmm": _h_matmul,
    "matmul": _h_matmul,
    "dot": _h_matmul,
    "mv": _h_matmul,
    "addmm": _h_addmm,
    "baddbmm": _h_addmm,
    "addbmm": _h_addmm,
    "convolution": _h_conv,
    "_convolution": _h_conv,
    "_softmax": _h_softmax,
    "softmax": _h_softmax,
    "_log_softmax": lambda *a: _h_softmax(*a, log=True),
    "log_softmax": lambda *a: _h_softmax(*a, log=True),
    "native_layer_norm": _h_layer_norm,
    "native_group_norm": _h_group_norm,
    "_native_batch_norm_legit_no_training": _h_batch_norm_eval,
    "gelu": _h_gelu,
    "silu": _h_fixed(2),
    "mish": _h_fixed(4),
    "hardswish": _h_fixed(3),
    "lerp": _h_fixed(3),
    "addcmul": _h_fixed(2),
    "addcdiv": _h_fixed(2),
    "topk": _h_along(clog2, dim_index=2),
    "sort": _h_along(_bitonic),
    "argsort": _h_along(_bitonic),
    "cumsum": _h_along(clog2),
    "cumprod": _h_along(clog2),
    "logcumsumexp": _h_along(lambda n: clog2(n) + 2),
    "mean": _h_reduce_then(1),
    "logsumexp": _h_logsumexp,
    "linalg_vector_norm": _h_reduce_then(2),
    "norm": _h_reduce_then(2),
    "var": _h_var,
    "std": lambda *a: _h_var(*a, sqrt=True),
    "var_mean": lambda *a: _h_var(*a, with_mean=True),
    "_to_copy": _h_to_copy,
    "multinomial": _h_multinomial,
    "bernoulli": _h_random_from,
    "normal": _h_random_from,
    "poisson": _h_random_from,
    "binomial": _h_random_from,
    "copy": _h_copy_,
    "index_put": _h_index_put,
    "histc": _h_histogram(2),  # (x - min) * bins / (max - min), floor
    "bincount": _h_histogram(1),  # compare with each bin
    "index_add": _h_accumulate(),
    "scatter_add": _h_accumulate(),
    "scatter_reduce": _h_accumulate(),
    "_grouped_mm": _h_matmul,  # experts' matmuls, grouped: each contracts the last dimension of its input
    "_index_put_impl": _h_index_put,
    "scaled_dot_product_attention": _h_sdpa,
    "_scaled_dot_product_flash_attention_for_cpu": _h_sdpa,
    "_scaled_dot_product_efficient_attention": _h_sdpa,
    "_scaled_dot_product_flash_attention": _h_sdpa,
    "_scaled_dot_product_attention_math": _h_sdpa,
}
_MOVE -= set(_SPECIAL)


# --- results ---------------------------------------------------------------------------------
def _chain(end: Node | None, opaque: bool) -> list[Node]:
    out = []
    node = end
    while node is not None:
        out.append(node)
        node = node.opaque_parent if opaque else node.parent
    return out[::-1]


@dataclass
class DepthResult:
    """Serial depth of one counted program, with its longest opaque chain."""

    serial_depth: int
    opaque_serial_depth: int
    n_ops: int
    chain: list[Node]
    meta: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_counter(cls, counter: DepthCounter, **meta: Any) -> DepthResult:
        return cls(
            serial_depth=counter.deepest.depth if counter.deepest else 0,
            opaque_serial_depth=counter.deepest_opaque.opaque if counter.deepest_opaque else 0,
            n_ops=counter.n_ops,
            chain=[n for n in _chain(counter.deepest_opaque, opaque=True) if n.cost > 0],
            meta=meta,
        )

    def frame(self) -> pd.DataFrame:
        """The longest opaque chain, one row per op with a cost: op, cost, cumulative depth, module, step."""
        depth, rows = 0, []
        for i, n in enumerate(self.chain):
            depth += n.cost
            rows.append({"index": i, "op": n.op, "cost": n.cost, "depth": depth, "module": n.module, "step": n.step})
        return pd.DataFrame(rows, columns=["index", "op", "cost", "depth", "module", "step"])

    def breakdown(self, by: tuple[str, ...] = ("module",)) -> pd.DataFrame:
        """Depth along the longest opaque chain summed per module (and/or step)."""
        frame = self.frame()
        if frame.empty:
            return pd.DataFrame(columns=[*by, "depth", "share"])
        out = frame.groupby(list(by), dropna=False, sort=False)["cost"].sum().reset_index(name="depth")
        out["share"] = out["depth"] / out["depth"].sum()
        return out.sort_values("depth", ascending=False, ignore_index=True)

    def figure(self) -> go.Figure:
        frame = self.frame()
        fig = go.Figure(
            go.Scatter(
                x=frame["index"],
                y=frame["depth"],
                mode="lines",
                text=[f"{m} (step {s})" for m, s in zip(frame["module"], frame["step"], strict=True)],
                hovertemplate="%{text}<br>depth %{y}<extra></extra>",
            )
        )
        fig.update_layout(
            xaxis_title="op along the longest opaque chain", yaxis_title="accumulated opaque depth", height=380
        )
        return fig

    def to_dict(self) -> dict[str, Any]:
        top = self.breakdown().head(5)
        steps = sorted({n.step for n in self.chain if n.step is not None})
        return {
            "serial_depth": self.serial_depth,
            "opaque_serial_depth": self.opaque_serial_depth,
            "n_ops": self.n_ops,
            "chain_steps": [steps[0], steps[-1]] if steps else None,
            "chain_top_modules": top[["module", "depth"]].to_dict("records"),
            **self.meta,
        }


# --- entry points ------------------------------------------------------------------------------
def count(
    fn: Callable[[], Any], roots: dict[str, nn.Module] | None = None, cut: str = "sampled", **meta: Any
) -> DepthResult:
    """Serial depth of whatever ``fn()`` runs (no gradients); ``cut`` as in :class:`DepthCounter`."""
    counter = DepthCounter(roots, cut=cut)
    with torch.no_grad(), counter:
        fn()
    return DepthResult.from_counter(counter, cut=cut, **meta)


def generation_depth(
    method: Any,
    prompt: torch.Tensor,
    sampler: Any,
    seed: int = 0,
    answer_len: int | None = None,
    cut: str = "sampled",
) -> DepthResult:
    """Depth of a whole sampling run of one of our methods (the loop over steps unrolled); ``cut`` as in
    :class:`DepthCounter`."""
    from interp.samplers import sample_steps

    counter = DepthCounter({"": method.model}, cut=cut)
    n_steps = 0
    with torch.no_grad(), counter:
        counter.step = 0
        for step in sample_steps(method, prompt, sampler, torch.Generator().manual_seed(seed), answer_len=answer_len):
            counter.step = step.index + 1
            n_steps += 1
    return DepthResult.from_counter(counter, kind=method.kind, sampler=sampler.name, steps=n_steps, cut=cut)


def hf_config_depth(config: Any, seq_len: int, batch: int = 1, cut: str = "sampled") -> DepthResult:
    """One forward pass of a transformers causal/masked LM built from ``config`` on meta tensors (a mixture of
    experts through the grouped experts kernel, :func:`meta_model`). A DiffusionGemma config counts one
    denoising step: the encoder over ``seq_len`` prompt tokens, then the decoder over one canvas
    (:func:`diffusion_gemma_depth`)."""
    limit = getattr(config, "max_position_embeddings", None)
    if limit is not None and seq_len > limit:
        raise SerialDepthError(f"--seq-len {seq_len} exceeds the config's max_position_embeddings {limit}")
    if seq_len < 1:
        raise SerialDepthError(f"--seq-len must be >= 1, got {seq_len}")
    if is_diffusion_gemma_config(config):
        return diffusion_gemma_depth(config, prompt_len=seq_len, steps=1, batch=batch, cut=cut)
    model = meta_model(config)
    ids = torch.zeros(batch, seq_len, dtype=torch.long, device="meta")
    return _counted(
        lambda counter: model(input_ids=ids),
        model,
        cut,
        type(model).__name__,
        architecture=type(model).__name__,
        seq_len=seq_len,
    )


# --- transformers generations on meta tensors ------------------------------------------------------------
META_EXPERTS = "grouped_mm"  # the experts' kernel counted on meta: sort + histc + cumsum + grouped matmuls


def _is_moe(config: Any) -> bool:
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    return any(
        getattr(text, name, None)
        for name in ("num_experts", "num_local_experts", "n_routed_experts", "enable_moe_block")
    )


def meta_model(config: Any, cls: Any = None) -> nn.Module:
    """``cls(config)`` (default: the config's first architecture, else a causal LM) built on the meta device, in
    eval mode, with eager attention (explicit softmax) and, for a mixture of experts, transformers' grouped
    experts kernel in bfloat16 (sort by expert, ``histc`` tokens per expert, ``cumsum`` offsets, grouped
    matmuls, the only data-independent one: the per-expert loop calls ``nonzero``). A config transformers
    cannot build is a :class:`SerialDepthError`."""
    import transformers

    config._attn_implementation = "eager"
    moe = _is_moe(config)
    if moe and hasattr(config, "_experts_implementation"):
        config._experts_implementation = META_EXPERTS
    try:
        with torch.device("meta"):
            if cls is None:
                arch = (getattr(config, "architectures", None) or [None])[0]
                cls = getattr(transformers, arch, None) if arch else None
            model = cls(config) if cls is not None else transformers.AutoModelForCausalLM.from_config(config)
    except Exception as exc:  # transformers raises many kinds for a config it cannot build
        raise SerialDepthError(
            f"transformers cannot build a model from this config: {type(exc).__name__}: {exc}"
        ) from exc
    if moe:
        model = model.to(torch.bfloat16)  # the grouped matmul kernel takes bfloat16 only
    return model.eval()


def _counted(fn: Callable[[DepthCounter], Any], model: nn.Module, cut: str, what: str, **meta: Any) -> DepthResult:
    """Run ``fn(counter)`` under a counter; what cannot run on meta tensors becomes one error naming the op and
    the module it was in."""
    counter = DepthCounter({"": model}, cut=cut)
    validate = torch.distributions.Distribution._validate_args  # its checks read values (.item())
    torch.distributions.Distribution.set_default_validate_args(False)
    try:
        with torch.no_grad(), counter:
            fn(counter)
    except (RuntimeError, NotImplementedError, ValueError, TypeError, IndexError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        where = counter._stack[-1] if counter._stack else type(model).__name__
        raise SerialDepthError(
            f"{what} cannot run on meta tensors: in {where}: {first} (its forward depends on the values; count a "
            "small config on real tensors with serial_depth.count())"
        ) from exc
    finally:
        torch.distributions.Distribution.set_default_validate_args(validate)
    return DepthResult.from_counter(counter, cut=cut, n_params=sum(p.numel() for p in model.parameters()), **meta)


def is_diffusion_gemma_config(config: Any) -> bool:
    return getattr(config, "model_type", None) == "diffusion_gemma"


def diffusion_gemma_depth(
    config: Any,
    prompt_len: int,
    steps: int,
    bottleneck: str = "none",
    k: int = 8,
    p: float = 0.9,
    canvases: int = 1,
    canvas_length: int | None = None,
    entropy_bound: float = 0.1,
    t_min: float = 0.4,
    t_max: float = 0.8,
    batch: int = 1,
    cut: str = "sampled",
) -> DepthResult:
    """Opaque serial depth of a DiffusionGemma generation from its config alone, on meta tensors: the encoder
    reads the prompt (``prompt_len`` tokens) into the KV cache, then per canvas ``steps`` denoising steps of
    the decoder over the ``C = config.canvas_length`` canvas, each as
    :class:`~interp.samplers.diffusiongemma.DiffusionGemmaSampler` runs it (logits, linear temperature
    schedule, ``multinomial``, argmax draft, transformers' ``EntropyBoundSampler`` acceptance and renoising;
    the canvas passed on is text, marked interpretable) with the previous step's logits carried as
    self-conditioning: all of them (``bottleneck="none"``, the continuous carry) or their top-k / top-p
    (``"topk"`` / ``"topp"``, marked interpretable). After a canvas its draft (argmax tokens) is encoded into
    the cache before the next one. Fixed ``steps`` per canvas: adaptive stopping only shortens a canvas,
    so this is the depth when it does not trigger. ``canvas_length``, if given, must be the config's."""
    from transformers import DiffusionGemmaForBlockDiffusion, DynamicCache
    from transformers.models.diffusion_gemma.generation_diffusion_gemma import (
        EntropyBoundSampler,
        EntropyBoundSamplerConfig,
        LinearTemperatureScheduleLogitsProcessor,
    )

    from interp.samplers.diffusiongemma import BOTTLENECKS, bottleneck_logits

    if not is_diffusion_gemma_config(config):
        raise SerialDepthError(
            f"a DiffusionGemma generation needs a diffusion_gemma config, got model_type "
            f"{getattr(config, 'model_type', None)!r}"
        )
    text = config.get_text_config()
    C = config.canvas_length
    if not isinstance(C, int) or C < 1:
        raise SerialDepthError(f"config.canvas_length must be a positive integer, got {C!r}")
    if canvas_length is not None and canvas_length != C:
        raise SerialDepthError(
            f"canvas length {canvas_length} is not this config's: it sets canvas_length={C} (positions and "
            "attention masks are built for it)"
        )
    for name, value in (("steps", steps), ("prompt length", prompt_len), ("canvases", canvases), ("batch", batch)):
        if not isinstance(value, int) or value < 1:
            raise SerialDepthError(f"{name} must be a positive integer, got {value!r}")
    if bottleneck not in BOTTLENECKS:
        raise SerialDepthError(f"bottleneck must be one of {', '.join(BOTTLENECKS)}, got {bottleneck!r}")
    V = text.vocab_size
    if bottleneck == "topk" and not 1 <= k <= V:
        raise SerialDepthError(f"top-k bottleneck: k must be in 1..{V}, got {k}")
    total = prompt_len + canvases * C
    limit = getattr(text, "max_position_embeddings", None)
    if limit is not None and total > limit:
        raise SerialDepthError(
            f"prompt ({prompt_len}) + {canvases} canvases of {C} = {total} positions exceed the config's "
            f"max_position_embeddings ({limit})"
        )
    model = meta_model(config, DiffusionGemmaForBlockDiffusion)
    processor = LinearTemperatureScheduleLogitsProcessor(t_min=t_min, t_max=t_max, max_denoising_steps=steps)

    def generate(counter: DepthCounter) -> None:
        counter.step = 0
        sampler = EntropyBoundSampler(EntropyBoundSamplerConfig(entropy_bound=entropy_bound), C, V, steps)
        cache = DynamicCache(config=text)
        new = torch.zeros(batch, prompt_len, dtype=torch.long)  # the prompt, then each canvas's draft
        done = 0
        for canvas_index in range(canvases):
            model.model.encoder(
                input_ids=new,
                attention_mask=torch.ones(batch, done + new.shape[1], dtype=torch.bool),
                cache=cache,
                position_ids=torch.arange(done, done + new.shape[1])[None],
            )
            done += new.shape[1]
            positions = torch.arange(done, done + C)[None]
            canvas = mark_interpretable(sampler.initialize_canvas(batch, torch.device("meta")))
            carry = None
            for s in range(steps):
                counter.step = canvas_index * steps + s + 1
                cur_step = steps - s
                raw = model(
                    decoder_input_ids=canvas,
                    self_conditioning_logits=carry,
                    cache=cache,
                    decoder_position_ids=positions,
                ).logits
                processed = processor(None, raw, cur_step=cur_step)
                probs = torch.softmax(processed, dim=-1, dtype=torch.float32)
                sampled = torch.multinomial(probs.view(-1, V), num_samples=1).view(batch, C)
                draft = torch.argmax(processed, dim=-1)
                accepted = sampler.accept_canvas(canvas, sampled, processed, cur_step)
                canvas = mark_interpretable(sampler.renoise_canvas(accepted, cur_step))
                carry, _ = bottleneck_logits(processed, bottleneck, k, p)
            new = draft

    with torch.device("meta"):
        return _counted(
            generate,
            model,
            cut,
            type(model).__name__,
            architecture=type(model).__name__,
            prompt_len=prompt_len,
            canvas_length=C,
            canvases=canvases,
            steps=steps,
            bottleneck=bottleneck,
            **({"k": k} if bottleneck == "topk" else {"p": p} if bottleneck == "topp" else {}),
        )


def ar_generation_depth(
    config: Any, prompt_len: int, new_tokens: int, counted: int = 4, batch: int = 1, cut: str = "sampled"
) -> DepthResult:
    """Opaque serial depth of an autoregressive transformers LM (Gemma 4's text model for a Gemma 4 config)
    generating ``new_tokens`` after ``prompt_len`` with a KV cache, greedily, on meta tensors.

    Every generated token is picked (``argmax``), so an opaque chain never passes through one: it can only climb
    the layers, through the KV cache, from earlier positions to later ones, and is no longer than one
    forward pass over the whole sequence. So the first ``prompt_len + new_tokens − counted`` positions (the
    prompt and the tokens already generated: tokens either way) are prefilled in one pass and the last
    ``counted`` tokens are decoded one by one, each reading the cache: the same chains, with softmaxes over
    as many keys as the full generation's last steps."""
    import transformers

    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    for name, value in (("prompt length", prompt_len), ("new tokens", new_tokens), ("counted", counted)):
        if not isinstance(value, int) or value < 1:
            raise SerialDepthError(f"{name} must be a positive integer, got {value!r}")
    counted = min(counted, new_tokens)
    total = prompt_len + new_tokens
    limit = getattr(text, "max_position_embeddings", None)
    if limit is not None and total > limit:
        raise SerialDepthError(f"{total} positions exceed the config's max_position_embeddings ({limit})")
    cls = None
    if getattr(text, "model_type", None) == "gemma4_text":
        cls = transformers.Gemma4ForCausalLM
    elif text is not config:
        cls = transformers.AutoModelForCausalLM._model_mapping.get(type(text), None)
    model = meta_model(text if cls is not None else config, cls)

    def generate(counter: DepthCounter) -> None:
        counter.step = 0
        cache = transformers.DynamicCache(config=model.config)
        pre = total - counted
        ids = torch.zeros(batch, pre, dtype=torch.long)
        out = model(input_ids=ids, attention_mask=torch.ones(batch, pre, dtype=torch.long), cache=cache, use_cache=True)
        for t in range(counted):
            counter.step = t + 1
            token = out.logits[:, -1].argmax(-1, keepdim=True)
            seen = pre + t + 1
            out = model(
                input_ids=token,
                attention_mask=torch.ones(batch, seen, dtype=torch.long),
                cache=cache,
                position_ids=torch.tensor([[seen - 1]]).expand(batch, 1),
                use_cache=True,
            )
        out.logits[:, -1].argmax(-1)

    with torch.device("meta"):
        return _counted(
            generate,
            model,
            cut,
            type(model).__name__,
            architecture=type(model).__name__,
            prompt_len=prompt_len,
            new_tokens=new_tokens,
            counted_tokens=counted,
        )
