"""Running an attached model's sampling loop inside an nnsight trace.

The whole loop is nnsight's ``fn=``; the model is called raw inside it (calling the NNsight
wrapper there serves nothing: nnsight raises OutOfOrderError), and ``tracer.iter[:n_steps]`` walks
the forward calls, one per denoising step for our samplers, so nnsight's iteration index equals
our step index. Modules are read in execution order (nnsight's requirement) and the iteration is
bounded (an open-ended ``tracer.iter[:]`` swallows the code after it).

Example (tested in ``tests/test_hooks_analysis.py``)::

    inst = attach(dlm)
    trace = nnsight_trace(inst, run, capture="blocks.*.hook_resid_post", n_steps=8)
    trace["blocks.1.hook_resid_post", 3]  # same tensor as inst.trace(run, ...)

Our own ``Instrumented.trace`` is the default backend (measured faster on our workloads,
``benchmarks/trace_overhead.py``); this one is for researchers who already work in nnsight.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from interp.errors import InterpError
from interp.hooks.attach import Instrumented
from interp.hooks.trace import Trace
from interp.steps import StepRecord


def _envoy(root: Any, path: str) -> Any:
    node = root
    for part in path.split("."):
        node = node[int(part)] if part.isdigit() else getattr(node, part)
    return node


def _module_paths(inst: Instrumented, names: list[str]) -> dict[str, str]:
    """The path of each hook's module inside the model (a TransformerLens name of a transformers model is a
    bridge HookPoint such as ``model.layers.0.hook_out``); a hook that is not a module of the model (a
    diffusers attention pattern, which interp computes in its own processor) is refused."""
    where = {id(module): path for path, module in inst.model.named_modules()}
    paths = {}
    for name in names:
        path = where.get(id(inst.sites[name].module))
        if path is None:
            raise InterpError(
                f"nnsight cannot read {name!r}: it is interp's own hook point, not a module of the model; "
                "record it with Instrumented.trace (the default backend)"
            )
        paths[name] = path
    return paths


def _children_first(names: list[str], paths: dict[str, str]) -> list[str]:
    """``names`` with every module moved before the first requested module that contains it."""
    ordered: list[str] = []
    for name in names:
        parent = next((i for i, o in enumerate(ordered) if paths[name].startswith(paths[o] + ".")), None)
        ordered.insert(parent if parent is not None else len(ordered), name)
    return ordered


def nnsight_trace(
    inst: Instrumented, run: Callable[[], Iterable[Any]], capture: str | Sequence[str], n_steps: int
) -> Trace:
    """Record ``capture`` (hook names or patterns as in :meth:`Instrumented.resolve`, listed in execution
    order, e.g. ``["down_blocks.*", "mid_block", "up_blocks.*"]``: ``*`` stays within one dot-separated
    segment, so these are the blocks themselves, not their submodules) at each of ``n_steps`` forward calls."""
    from nnsight import NNsight

    patterns = [capture] if isinstance(capture, str) else list(capture)
    # nnsight needs execution order: patterns are taken in the order given (model order within one), and a
    # module nested in another requested one is read first (it finishes first)
    names = list(dict.fromkeys(n for p in patterns for n in inst.resolve(p)))
    paths = _module_paths(inst, names)
    names = _children_first(names, paths)
    wrapped = NNsight(inst.model)
    steps_out: list[Any] = []

    def loop(_: Any) -> None:
        steps_out.extend(run())

    saved: list[list[Any]] = [[] for _ in names]
    with wrapped.trace(None, fn=loop) as tracer:
        for _ in tracer.iter[:n_steps]:
            for i, name in enumerate(names):
                saved[i].append(_envoy(wrapped, paths[name]).output.save())
    trace = Trace()
    for i, name in enumerate(names):
        for step, value in enumerate(saved[i]):
            value = getattr(value, "value", value)
            if isinstance(value, (tuple, list)):  # a U-Net down block's (hidden, skips): the first tensor;
                value = next(v for v in value if v is not None)  # SD3's last block returns (None, image)
            trace.add(name, step, value)
    for index, step in enumerate(steps_out):
        row = step.to_row() if isinstance(step, StepRecord) else {}
        trace.add_step({**row, "step": index})
    return trace
