"""One registry of methods and samplers.

Each method's own module registers a :class:`MethodSpec` (its ``kind``, class, config, samplers and
default sampler, evaluation, report sections, default capture sites, the options of
``interp train <kind>``); checkpoints, ``attach``, the CLI and the demo dispatch through it, so a kind
string appears only in its method's module. Samplers register their step classes by name
(:func:`register_sampler`).

Built-in methods are imported on first use; others join through the ``interp.methods`` entry-point
group of an installed package, or the ``INTERP_METHODS`` environment variable (comma-separated module
names, imported before the registry is read): a method is one module plus its registration.

``evaluate`` and ``report`` may be callables or ``"module:function"`` strings resolved when first used,
so a method module can name the report that shows it without importing the layers above it.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from interp.errors import ConfigError, InterpError

BUILTIN_METHOD_MODULES = (
    "interp.methods.diffusion_lm",
    "interp.methods.autoregressive",
    "interp.methods.image_diffusion",
    "interp.methods.feature_net",
    "interp.methods.autoencoder",
    "interp.methods.flowbender",
    "interp.methods.lwd",
    "interp.methods.latent_flow",  # CrossFlow's baseline A (issue 15)
    "interp.methods.crossflow",
    "interp.methods.hf_diffusion_gemma",  # a transformers DiffusionGemma folder (issue 18)
    "interp.methods.diffusion_gemma",  # a small DiffusionGemma trained here (issue 18)
)
ENTRY_POINT_GROUP = "interp.methods"
ENV_VAR = "INTERP_METHODS"


@dataclass(frozen=True)
class CliOption:
    """A ``interp train <kind>`` option that is not a config field (e.g. ``--class-conditional``, which
    the spec's ``derive`` turns into ``n_classes``)."""

    name: str
    type: type
    default: Any
    help: str = ""


@dataclass(frozen=True)
class MethodSpec:
    """What the rest of interp needs to know of a method.

    ``method(cfg)`` builds the method object (``.model``, ``.cfg``, ``.kind``); ``config`` is its config
    dataclass, whose fields become the options of ``interp train <kind>`` (a field's ``metadata`` may set
    ``cli`` (the option name, or False to hide it), ``help``, ``choices`` ({text: value})).
    ``derive(options) -> options`` fills config fields that follow from others (an image size from the
    data); ``train_options`` are extra options it consumes. ``train_defaults`` override
    :class:`~interp.train.TrainConfig` defaults. ``train_eval(method, seed)`` returns the eval callback
    of ``--eval-every`` (or None). ``train(method, out, steps, seed, meta) -> text`` replaces the shared
    trainer for a method that keeps its own loop (then only ``--steps`` and ``--seed`` are offered). ``sampler_config`` is the config class of its samplers; ``samplers``
    their registered names; ``default_sampler(method, steps)`` the config used when none is named.
    ``capture``: the hook names ``interp trace`` records by default (or a function of the method giving them; default ``**``, every hook). ``inputs``: what its samplers
    start from (``"prompts"`` or ``"noise"``). ``evaluate(method, options) -> (payload, text)`` and
    ``report(method, options) -> (sections, numbers, title)`` back ``interp eval`` / ``interp report``;
    ``sample(method, options) -> (payload, text)`` and ``trace_run(method, options) -> (run, meta)``
    back ``interp sample`` / ``interp trace``. ``options`` is a :class:`Options` of what the user gave.
    """

    kind: str
    method: type
    config: type
    summary: str
    sampler_config: type | None = None
    samplers: tuple[str, ...] = ()
    default_sampler: Callable[..., Any] | None = None
    capture: str | Callable[[Any], str] = "**"
    inputs: str = "noise"
    train_defaults: Mapping[str, Any] = field(default_factory=dict)
    train_options: tuple[CliOption, ...] = ()
    derive: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    train_eval: Callable[[Any, int], Any] | None = None
    train: Callable[..., Any] | str | None = None
    sample: Callable[..., Any] | str | None = None
    trace_run: Callable[..., Any] | str | None = None
    evaluate: Callable[..., Any] | str | None = None
    report: Callable[..., Any] | str | None = None

    def resolve(self, attr: str) -> Callable[..., Any]:
        """The callable behind ``attr`` (``evaluate``, ``report``, ...), importing it if named by string."""
        target = getattr(self, attr)
        if target is None:
            raise InterpError(f"method {self.kind!r} has no {attr.replace('_', ' ')}")
        if isinstance(target, str):
            module, _, name = target.partition(":")
            target = getattr(importlib.import_module(module), name)
        return target

    def build(self, config: Mapping[str, Any], source: str = "config") -> Any:
        return self.method(self.config.from_dict(dict(config), source=source))


_METHODS: dict[str, MethodSpec] = {}
_SAMPLERS: dict[str, type] = {}
_loaded = False


def register(spec: MethodSpec) -> MethodSpec:
    """Add ``spec`` (from the method's own module). Registering a kind twice with another class is an error."""
    old = _METHODS.get(spec.kind)
    if old is not None and old.method is not spec.method:
        raise ConfigError(f"method kind {spec.kind!r} is already registered by {old.method.__module__}")
    _METHODS[spec.kind] = spec
    spec.method.spec = spec  # the class knows its spec and its kind: nothing else restates them
    spec.method.kind = spec.kind
    return spec


def unregister(kind: str) -> None:
    _METHODS.pop(kind, None)


def load() -> None:
    """Import the built-in method modules, entry points and ``$INTERP_METHODS`` once."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    names = list(BUILTIN_METHOD_MODULES)
    from importlib.metadata import entry_points

    names += [ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)]
    names += [n.strip() for n in os.environ.get(ENV_VAR, "").split(",") if n.strip()]
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise InterpError(f"cannot import method module {name!r} ({exc})") from exc


def methods() -> dict[str, MethodSpec]:
    load()
    return dict(_METHODS)


def kinds() -> list[str]:
    return sorted(methods())


def spec(kind: str) -> MethodSpec:
    specs = methods()
    if kind not in specs:
        raise InterpError(f"unknown method kind {kind!r}; known kinds: {', '.join(sorted(specs))}")
    return specs[kind]


def spec_of(obj: Any) -> MethodSpec | None:
    """The spec of a method object (by class), or None for objects no method registered."""
    load()
    for cls in type(obj).__mro__:
        found = getattr(cls, "spec", None)
        if isinstance(found, MethodSpec) and found.method is cls:
            return found
    return None


# --- samplers ---------------------------------------------------------------------------------------
def register_sampler(cls: type) -> type:
    """Class decorator: register a step sampler under ``cls.name`` (its config class is ``cls.config``)."""
    name = cls.name
    if name in _SAMPLERS and _SAMPLERS[name] is not cls:
        raise ConfigError(f"sampler {name!r} is already registered by {_SAMPLERS[name].__module__}")
    _SAMPLERS[name] = cls
    return cls


def sampler_names(config: type | None = None) -> list[str]:
    """Registered sampler names (those configured by ``config`` if given)."""
    return [n for n, c in _SAMPLERS.items() if config is None or c.config is config]


def sampler_class(name: str, config: type | None = None) -> type:
    names = sampler_names(config)
    if name not in names:
        raise InterpError(f"unknown sampler {name!r}; known samplers: {', '.join(names)}")
    return _SAMPLERS[name]


# --- the options a user gave a command ----------------------------------------------------------------
class Options:
    """What the user set on a command line (unset options are absent), with the command's name for
    messages. Methods read them with :meth:`get`; :meth:`done` refuses those nobody read."""

    def __init__(self, given: Mapping[str, Any], command: str, kind: str, seed: int = 0, quiet: bool = False):
        self.given = {k: v for k, v in given.items() if v is not None and v != []}
        self.command, self.kind, self.seed, self.quiet = command, kind, seed, quiet
        self.used: set[str] = set()

    def get(self, name: str, default: Any = None) -> Any:
        self.used.add(name)
        return self.given.get(name, default)

    def require(self, name: str, why: str = "") -> Any:
        self.used.add(name)
        if name not in self.given:
            raise InterpError(f"--{name.replace('_', '-')} is required{why}")
        return self.given[name]

    def sampler(self, spec: MethodSpec, method: Any) -> Any:
        """The sampler config from ``--sampler`` and the sampler options given (refusing those its config
        does not have); the spec's default sampler when none is named."""
        if spec.sampler_config is None:
            raise InterpError(f"{spec.kind!r} checkpoints have no samplers")
        fields = {f.name for f in dataclasses.fields(spec.sampler_config)}
        default = spec.default_sampler(method) if spec.default_sampler else spec.sampler_config()
        values = default.to_dict()
        values["name"] = self.get("sampler", values["name"])
        for name in fields - {"name"}:
            if name in self.given:
                values[name] = self.get(name)
        return spec.sampler_config.from_dict(values, source="sampler options")

    def done(self) -> None:
        """Refuse every option given but not read. Handlers read all their options, then call this
        before any work, so a misplaced option changes nothing."""
        unused = sorted(k for k in self.given if k not in self.used)
        if unused:
            flags = ", ".join(f"--{u.replace('_', '-')}" for u in unused)
            verb = "does" if len(unused) == 1 else "do"
            raise InterpError(f"{flags} {verb} not apply to `interp {self.command}` on {self.kind!r} checkpoints")
