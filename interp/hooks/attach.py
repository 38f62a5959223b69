"""``attach(model)``: one instrumentation API over our native models, TransformerLens bridges,
Hugging Face transformers modules, diffusers models, and any other ``torch.nn.Module``.

Every hookable *site* is a module whose forward output is the activation: a TransformerLens
``HookPoint`` for native models and bridges (names like ``blocks.0.hook_resid_post``), a submodule
by its path otherwise (``mid_block``, ``down_blocks.1.resnets.0``), with aliases where a
convention exists (``down.{i}.hook_out`` for U-Nets).

Wherever a hook name is taken (``capture``, an :class:`Intervention`'s name, ``resolve``) it may be a
pattern over the dot-separated segments of names (aliases included; see :func:`pattern_regex`):

- ``*`` matches any characters within one segment: ``blocks.*.hook_resid_post`` is each block's
  ``hook_resid_post``, and ``model.layers.*`` the layers themselves, not the modules inside them;
- ``?`` matches one character other than a dot; ``[seq]`` / ``[!seq]`` one character (not a dot) in / not
  in ``seq``;
- ``**`` matches any characters, dots included; as a whole segment it matches any number of whole
  segments, none included: ``**.hook_out`` matches ``hook_out``, ``mid.hook_out`` and
  ``down.0.hook_out``; ``blocks.**`` matches ``blocks`` and everything under it; ``**`` alone
  matches every hook;
- every other character stands for itself.

A pattern that matches nothing raises :class:`HookNameError`, saying so when ``**`` in place of
``*`` would have matched.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from interp.errors import InterpError
from interp.hooks.interventions import Intervention, InterventionError, select_positions
from interp.hooks.trace import Trace, TraceError
from interp.steps import StepContext, StepRecord, current_step


class HookNameError(InterpError, KeyError):
    """A hook name or pattern does not match the instrumented model."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


@dataclass
class Site:
    """Where an activation is read: ``module``'s output (element ``element`` when the module returns a
    tuple), with positions along ``pos_dim``. ``meta``: what an adapter knows of the site (e.g. the
    order of the streams in a joint-attention pattern)."""

    module: nn.Module
    pos_dim: int = 1
    # True when the model never modifies this output in place (our HookPoint models), so the trace
    # may keep the tensor itself; otherwise it keeps a copy
    stable: bool = False
    element: int = 0
    meta: dict[str, Any] = field(default_factory=dict)


def _pos_dim_for(name: str, module: nn.Module | None = None) -> int:
    """The position axis of a site: the HookPoint's own ``pos_dim`` where TransformerLens set one, else
    2 for attention patterns / scores (``[B, heads, Lq, Lk]``: the query axis), else 1."""
    declared = getattr(module, "pos_dim", None)
    if isinstance(declared, int):
        return declared
    return 2 if name.endswith(("hook_pattern", "hook_attn_scores")) else 1


# one token of a pattern: a whole-segment ** (leading, after a dot, trailing, or between two dots), any
# other run of stars, ?, a character class, or one literal character
_PATTERN_TOKEN = re.compile(
    r"^\*\*+\.|(?<=\.)\*\*+\.|\.\*\*+\Z|\.\*\*+(?=\.)|\*\*+|\*|\?|\[!?(?:\][^\]]*|[^\]]+)\]|.", re.S
)


def pattern_regex(pattern: str) -> re.Pattern[str]:
    """The regex (for ``fullmatch``) of a hook-name pattern. Names are dot-separated segments
    (``blocks.0.attn.hook_pattern``). ``*`` matches any characters within one segment, ``?`` one
    character other than a dot, ``[seq]`` / ``[!seq]`` one character (never a dot) in / not in ``seq``,
    and ``**`` any characters, dots included. A ``**`` that is a whole segment matches any number of
    whole segments, none included: ``**.hook_out`` matches ``hook_out`` and ``down.0.hook_out``,
    ``a.**.b`` matches ``a.b`` and ``a.x.y.b``, ``blocks.**`` matches ``blocks`` and all under it.
    Every other character is literal (case-sensitive)."""

    def token(m: re.Match[str]) -> str:
        t = m.group()
        if t.startswith("**") and t.endswith("."):  # leading whole segment: segments and their dots
            return r"(?:[^.]+\.)*"
        if t.startswith(".**"):  # trailing or middle whole segment: dots and their segments
            return r"(?:\.[^.]+)*"
        if t.startswith("**"):
            return ".*"
        if t in ("*", "?"):
            return "[^.]*" if t == "*" else "[^.]"
        if t.startswith("[") and len(t) > 1:
            negate = t[1] == "!" and len(t) > 3
            body = re.sub(r"([\\\[\]^])", r"\\\1", t[1 + negate : -1])
            return f"[^.{body}]" if negate else rf"(?!\.)[{body}]"
        return re.escape(t)

    return re.compile(_PATTERN_TOKEN.sub(token, pattern))


class Instrumented:
    """A model with named hook sites. Build with :func:`attach`."""

    def __init__(
        self,
        model: nn.Module,
        kind: str,
        sites: dict[str, Site],
        aliases: dict[str, str] | None = None,
        method: Any = None,
        activate: Callable[[set[str]], Callable[[], None]] | None = None,
        restore: Callable[[], None] | None = None,
    ):
        self.model = model
        self.kind = kind
        self.sites = sites
        self.aliases = aliases or {}
        self.method = method
        self._restore = restore  # undoes what attaching changed in the model (see detach)
        # what ends steps inside one call (see StepSource): a pipeline's scheduler (SchedulerSteps), a
        # transformers model's generate (GenerateSteps); a run is then one call (``lambda: pipe(...)``)
        self.step_source: StepSource | None = None
        self.pipeline: Any = None
        # called with the names a session uses; returns the function that undoes what it changed
        self._activate = activate

    # --- names -----------------------------------------------------------------------------
    @property
    def names(self) -> list[str]:
        return list(self.sites)

    def canonical(self, name: str) -> str:
        name = self.aliases.get(name, name)
        if name not in self.sites:
            close = difflib.get_close_matches(name, [*self.sites, *self.aliases], n=5, cutoff=0.5)
            hint = f"; closest valid names: {close}" if close else f"; e.g. {self.names[:5]}"
            raise HookNameError(f"unknown hook name {name!r} for this {self.kind} model{hint}")
        return name

    def resolve(self, patterns: str | Sequence[str]) -> list[str]:
        """Canonical names matching ``patterns`` (names, aliases, or patterns as in :func:`pattern_regex`;
        in model order); error if one matches nothing."""
        patterns = [patterns] if isinstance(patterns, str) else list(patterns)
        out: list[str] = []
        for pattern in patterns:
            if not any(c in pattern for c in "*?["):
                matched = [self.canonical(pattern)]
            else:
                matched = self._match(pattern)
                if not matched:
                    hint = ""
                    crossing = re.sub(r"(?<!\*)\*(?!\*)", "**", pattern)  # each single * made **
                    if crossing != pattern and self._match(crossing):
                        hint = f"; * matches within one dot-separated segment: use ** to cross dots (e.g. {crossing!r})"
                    raise HookNameError(
                        f"pattern {pattern!r} matches no hook of this {self.kind} model{hint}; e.g. {self.names[:5]}"
                    )
            out += [m for m in dict.fromkeys(matched) if m not in out]  # a name and its alias may both match
        order = {n: i for i, n in enumerate(self.sites)}
        return sorted(out, key=order.__getitem__)

    def _match(self, pattern: str) -> list[str]:
        """Canonical names whose name or alias matches ``pattern`` (with repeats)."""
        regex = pattern_regex(pattern)
        return [n for n in self.sites if regex.fullmatch(n)] + [
            c for a, c in self.aliases.items() if regex.fullmatch(a)
        ]

    def add_site(self, name: str, path: str, element: int = 0, pos_dim: int = 1) -> str:
        """Name the output of the submodule at ``path`` (element ``element`` of a tuple output) as hook
        ``name``, for modules whose default reading is not the one wanted (a block returning several
        streams). Returns ``name``."""
        modules = dict(self.model.named_modules())
        if path not in modules:
            close = difflib.get_close_matches(path, list(modules), n=5, cutoff=0.5)
            raise HookNameError(f"no submodule {path!r} in this {self.kind} model; closest: {close}")
        if name in self.sites or name in self.aliases:
            raise HookNameError(f"hook name {name!r} is taken; choose another")
        self.sites[name] = Site(modules[path], pos_dim=pos_dim, element=int(element))
        return name

    # --- running ---------------------------------------------------------------------------
    @contextlib.contextmanager
    def session(
        self,
        capture: str | Sequence[str] | None = None,
        steps: Iterable[int] | None = None,
        positions: slice | Sequence[int] | None = None,
        dtype: torch.dtype | None = None,
        ram_budget: int | None = None,
        spill_dir: str | None = None,
        interventions: Sequence[Intervention] = (),
    ) -> Iterator[TracingSession]:
        """Hooks installed for the duration of the block; call ``session.end_step(...)`` after each
        denoising step of your own loop. On exit every hook is removed, even after an error."""
        names = self.resolve(capture) if capture else []
        # one copy per hook a name or pattern resolves to; the caller's objects stay as given
        interventions = [dataclasses.replace(iv, name=n) for iv in interventions for n in self.resolve(iv.name)]
        trace = Trace(ram_budget=ram_budget, spill_dir=spill_dir)
        recorded = set(names)
        trace.meta["aliases"] = {a: c for a, c in self.aliases.items() if c in recorded}  # trace[alias, step] works
        session = TracingSession(self, names, steps, positions, dtype, trace, interventions)
        deactivate = (
            self._activate(set(session.names) | {iv.name for iv in session.interventions}) if self._activate else None
        )
        try:
            session._install()
            with _steps_from(self.step_source, session):
                yield session
        finally:
            session._remove()
            if deactivate is not None:
                deactivate()
        session._check_steps()

    def trace(
        self,
        run: Iterable[Any] | Callable[[], Iterable[Any]],
        capture: str | Sequence[str] | None = "**",
        progress: bool = False,
        **options: Any,
    ) -> Trace:
        """Run a step-wise sampler (an iterable of :class:`Step`, or a callable returning one) under
        instrumentation and return the :class:`Trace`. ``options`` as for :meth:`session`.

        ``run`` may also be one call that takes its own steps, through the model's :attr:`step_source`:
        attached to a pipeline (``attach(pipe)``), ``lambda: pipe(...)`` (each call of its scheduler's ``step``
        ends a step); attached to a transformers model, ``lambda: model.generate(...)`` (one step per
        generated token, or per denoising step of a diffusion ``generate``; see
        :class:`~interp.hooks.transformers_adapter.GenerateSteps`). The call's return value is then
        ``trace.result``. A call is told from a step iterable by whether steps ended while it ran (or it
        returned a tensor or a model output)."""
        from tqdm.auto import tqdm

        with self.session(capture=capture, **options) as session:
            result = run() if callable(run) else run
            if self._called(session, result):
                session.trace.result = result
            else:
                for item in tqdm(result, disable=not progress, desc="trace", unit="step", leave=False):
                    session.end_step(item)
        return session.trace

    def _called(self, session: TracingSession, result: Any) -> bool:
        """Whether the run just started was one call that took its own steps (a pipeline, generate), not an
        iterable of steps (a tensor or a model output is never one)."""
        return (
            self.pipeline is not None
            or (self.step_source is not None and session.step > 0)
            or isinstance(result, (torch.Tensor, Mapping))
        )

    def detach(self) -> None:
        """Give the model back as it was before :func:`attach`: a transformers model's TransformerLens bridge
        (which rewires it in place) is unwrapped and its attention implementation restored, so its outputs
        and ``save_pretrained`` are the original's. Other models are left unchanged by attach (hooks live
        only inside sessions). This instrumentation cannot be used afterwards."""
        if self._restore is not None:
            self._restore()
        self._restore, self.sites, self.aliases = None, {}, {}

    def __enter__(self) -> Instrumented:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.detach()

    def run(
        self, run: Iterable[Any] | Callable[[], Iterable[Any]], interventions: Sequence[Intervention] = ()
    ) -> list[Any]:
        """Run with interventions only (nothing recorded); returns every yielded step."""
        record = []
        with self.session(capture=None, interventions=interventions) as session:
            result = run() if callable(run) else run
            if self._called(session, result):
                return [result]
            for item in result:
                session.end_step(item)
                record.append(item)
        return record


class TracingSession:
    def __init__(
        self,
        inst: Instrumented,
        names: list[str],
        steps,
        positions,
        dtype,
        trace: Trace,
        interventions: list[Intervention],
    ):
        self.inst = inst
        self.names = names
        self.steps = None if steps is None else frozenset(int(s) for s in steps)
        self.positions = positions
        self.dtype = dtype
        self.trace = trace
        self.interventions = interventions
        self.step = 0
        self._handles: list[Any] = []

    def _install(self) -> None:
        by_name: dict[str, list[Intervention]] = {}
        for iv in self.interventions:
            by_name.setdefault(iv.name, []).append(iv)
        for name in dict.fromkeys([*self.names, *by_name]):
            site = self.inst.sites[name]
            self._handles.append(
                site.module.register_forward_hook(
                    self._make_hook(name, site, name in self.names, by_name.get(name, []))
                )
            )

    def _make_hook(self, name: str, site: Site, record: bool, ivs: list[Intervention]):
        def hook(module: nn.Module, inputs: Any, output: Any) -> Any:
            step = self.step
            if isinstance(output, torch.Tensor):
                tensor, index = output, None
            elif isinstance(output, (tuple, list)) and len(output) > site.element:
                index = site.element
                tensor = output[index]
                if not isinstance(tensor, torch.Tensor):
                    raise TraceError(
                        f"hook {name!r} reads element {index} of its module's output, which is "
                        f"{type(tensor).__name__} here, not a tensor"
                    )
            else:
                raise TraceError(f"hook {name!r} does not produce a tensor (got {type(output).__name__})")
            changed = False
            for iv in ivs:
                if iv.applies(step):
                    loop = current_step()
                    context = StepContext(step, loop.t, loop.s) if loop is not None else StepContext(step)
                    tensor = iv.apply(tensor, context, site.pos_dim)
                    changed = True
            if record and (self.steps is None or step in self.steps):
                saved = select_positions(tensor, self.positions, site.pos_dim)
                if self.dtype is not None and saved.dtype != self.dtype:
                    saved = saved.to(self.dtype)
                elif not site.stable or saved._is_view():
                    saved = saved.clone()  # foreign code may edit it in place; a view would pin its base
                self.trace.add(name, step, saved)
            if not changed:
                return None
            if index is None:
                return tensor
            rebuilt = list(output)
            rebuilt[index] = tensor
            return type(output)(rebuilt)

        return hook

    def _remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def end_step(self, item: Any = None, **scalars: Any) -> None:
        """Mark the end of the current step; record the sampler state (a step record,
        :class:`~interp.steps.StepRecord`, a dict of scalars and tensors, or keyword scalars such as ``t=...``)."""
        row: dict[str, Any] = {"step": self.step}
        state: dict[str, torch.Tensor] = {}
        if isinstance(item, StepRecord):
            row.update(item.to_row())
            state = item.state()
        elif isinstance(item, dict):
            for k, v in item.items():
                (state if isinstance(v, torch.Tensor) and v.dim() > 0 else row)[k] = v
        row.update(scalars)
        row = {k: (v.item() if isinstance(v, torch.Tensor) else v) for k, v in row.items()}
        row["step"] = self.step
        self.trace.add_step(row, state)
        self.step += 1

    def _check_steps(self) -> None:
        n = self.step
        wanted = set(self.steps or ())
        for iv in self.interventions:
            wanted |= set(iv.step_set or ())
        outside = sorted(s for s in wanted if s >= n or s < 0)
        if outside:
            raise TraceError(f"step(s) {outside} are outside the run, which had {n} steps (0..{n - 1})")


@dataclass(frozen=True)
class Adapter:
    """How one family of models is instrumented: ``matches(model)`` and ``build(model) -> Instrumented``.
    Adapters register themselves (:func:`register_adapter`); the first that matches, by ``priority``
    (lower first), wins."""

    name: str
    matches: Callable[[nn.Module], bool]
    build: Callable[[nn.Module], Instrumented]
    priority: int = 50


_ADAPTERS: list[Adapter] = []


def register_adapter(adapter: Adapter) -> Adapter:
    _ADAPTERS[:] = sorted([a for a in _ADAPTERS if a.name != adapter.name] + [adapter], key=lambda a: a.priority)
    return adapter


def module_paths(model: nn.Module) -> dict[str, Site]:
    """Every submodule by path (tuple outputs are read at element 0)."""
    return {name: Site(module) for name, module in model.named_modules() if name}


class StepSource:
    """Something that ends steps of a session by itself while one call runs (a pipeline, ``generate``), so
    ``inst.trace(lambda: call(...))`` records one step per denoising step / generated token. Subclasses
    implement :meth:`install`; a session installs its model's source for its whole duration."""

    def install(self, session: TracingSession) -> contextlib.AbstractContextManager[None]:
        raise NotImplementedError


class SchedulerSteps(StepSource):
    """Every ``scheduler.step(model_output, timestep, sample, ...)`` call ends a step (recording the timestep):
    the step source of a diffusers pipeline. The original ``step`` is put back afterwards."""

    def __init__(self, scheduler: Any):
        self.scheduler = scheduler

    @contextlib.contextmanager
    def install(self, session: TracingSession) -> Iterator[None]:
        source = self.scheduler
        original = source.step
        had_own = "step" in vars(source)

        def step(*args: Any, **kwargs: Any) -> Any:
            out = original(*args, **kwargs)
            timestep = kwargs.get("timestep", args[1] if len(args) > 1 else None)
            session.end_step(**({"timestep": float(timestep)} if timestep is not None else {}))
            return out

        source.step = step
        try:
            yield
        finally:
            if had_own:
                source.step = original
            else:
                del source.step


@contextlib.contextmanager
def _steps_from(source: StepSource | None, session: TracingSession) -> Iterator[None]:
    """While the block runs, ``source`` ends the steps of ``session``."""
    if source is None:
        yield
        return
    with source.install(session):
        yield


def _is_pipeline(obj: Any) -> bool:
    """A diffusers pipeline: not a module, with a scheduler and a ``unet`` or ``transformer`` denoiser."""
    return (
        not isinstance(obj, nn.Module)
        and hasattr(getattr(obj, "scheduler", None), "step")
        and isinstance(getattr(obj, "unet", None) or getattr(obj, "transformer", None), nn.Module)
    )


def _is_method(obj: Any) -> bool:
    """A method object (ours, or a wrapper such as MaskedLMSampler): not a module, holding one as ``model``."""
    return not isinstance(obj, nn.Module) and isinstance(getattr(obj, "model", None), nn.Module)


def attach(model: Any) -> Instrumented:
    """Instrument ``model``: one of our methods (anything holding its network as ``model``), a
    TransformerLens ``HookedRootModule`` / ``TransformerBridge``, a Hugging Face transformers model,
    a diffusers model or pipeline (its denoiser, steps delimited by its scheduler), or any ``nn.Module``
    (its submodules by path)."""
    if _is_pipeline(model):
        denoiser = model.unet if isinstance(getattr(model, "unet", None), nn.Module) else model.transformer
        inst = attach(denoiser)
        inst.pipeline, inst.step_source = model, SchedulerSteps(model.scheduler)
        return inst
    if _is_method(model):
        inst = attach(model.model)
        inst.method = model
        return inst
    if not isinstance(model, nn.Module):
        raise TypeError(f"cannot attach to {type(model).__name__}: expected a torch.nn.Module or an interp method")
    for adapter in _ADAPTERS:
        if adapter.matches(model):
            return adapter.build(model)
    return Instrumented(model, "module", module_paths(model))


__all__ = [
    "HookNameError",
    "Instrumented",
    "InterventionError",
    "SchedulerSteps",
    "Site",
    "StepSource",
    "TracingSession",
    "attach",
    "pattern_regex",
]
