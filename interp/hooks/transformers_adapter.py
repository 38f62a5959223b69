"""Hugging Face transformers models, through TransformerLens ``build_bridge_from_module``.

The bridge rewires the model *in place* (its submodules become bridge components with HookPoints;
the model's own forward still gives identical outputs), so sites get TransformerLens names
(``blocks.{i}.hook_resid_post``, ``blocks.{i}.attn.hook_pattern``). Attention patterns only fire
with eager attention, so attach switches the model to it. Architectures TransformerLens has no
adapter for fall back to module paths, except DiffusionGemma, which TransformerLens cannot bridge: it
gets TransformerLens-style names from a map onto its module paths (:func:`attach_diffusion_gemma`).

Caveat for post-LayerNorm models such as BERT (checked numerically): ``hook_resid_pre`` /
``hook_resid_post`` are the true residual stream, but ``hook_attn_out`` is taken *after* the first
LayerNorm (the attention contribution itself is ``blocks.{i}.attn.o.hook_out``), ``hook_resid_mid``
is the input of the second LayerNorm, ``hook_attn_scores`` is post-softmax, and edits of
``hook_pattern`` are discarded by the bridge (it warns).
"""

from __future__ import annotations

import warnings
import weakref
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from interp.hooks.attach import (
    Adapter,
    HookNameError,
    Instrumented,
    Site,
    _pos_dim_for,
    module_paths,
    register_adapter,
)

STATE_ATTR = "_interp_attached"  # what attach did to a model, kept on it: attaching again reuses it


def build_bridge(model: nn.Module):
    """A TransformerLens bridge around ``model`` (modified in place; built once per model), or None if
    unsupported. The model's attention implementation becomes eager (so patterns fire); :func:`unwrap`
    restores it."""
    from transformer_lens.model_bridge.sources._bridge_builder import build_bridge_from_module

    architecture = type(model).__name__
    config = getattr(model, "config", None)
    if config is None:
        return None
    before = getattr(config, "_attn_implementation", None)
    # every module's own parameters and buffers, so unwrap can drop what the bridge adds (a zero lm_head bias)
    owned = [(m, dict(m._parameters), dict(m._buffers)) for m in model.modules()]
    if before != "eager" and hasattr(model, "set_attn_implementation"):
        model.set_attn_implementation("eager")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            bridge = build_bridge_from_module(model, architecture, hf_config=config)
    except (ValueError, KeyError, NotImplementedError, AttributeError) as exc:
        warnings.warn(f"TransformerLens has no bridge for {architecture} ({exc}); using module paths", stacklevel=3)
        bridge = None
    object.__setattr__(model, STATE_ATTR, {"attn": before, "owned": owned})
    return bridge


def unwrap(model: nn.Module) -> None:
    """Undo :func:`build_bridge`: every bridge component is replaced by the module it wraps (outermost
    first), parameters and buffers the bridge added are dropped, the attention implementation is put back."""
    state = vars(model).get(STATE_ATTR)
    if state is None:
        return
    stack: list[nn.Module] = [model]
    while stack:
        parent = stack.pop()
        for name, child in list(parent.named_children()):
            while hasattr(child, "_original_component"):
                child = child._original_component
                setattr(parent, name, child)
            stack.append(child)
    for module, params, buffers in state.get("owned", ()):  # the same parameter objects: trained values stay
        module._parameters.clear()
        module._parameters.update(params)
        module._buffers.clear()
        module._buffers.update(buffers)
    if state.get("attn") is not None and hasattr(model, "set_attn_implementation"):
        model.set_attn_implementation(state["attn"])
    del model.__dict__[STATE_ATTR]


def attach_transformers(model: nn.Module) -> Instrumented:
    """The instrumentation of a transformers model; built once (the bridge rewires the model in place), so
    attaching again gives the same names. ``detach()`` gives the model back as it was."""
    state = vars(model).get(STATE_ATTR)
    if state is not None and "inst" in state:
        return state["inst"]
    inst = _instrument(model)
    vars(model).setdefault(STATE_ATTR, {})["inst"] = inst
    return inst


def _instrument(model: nn.Module) -> Instrumented:
    if is_diffusion_gemma(model):  # no TransformerLens bridge for it: a name map (below)
        return attach_diffusion_gemma(model)
    bridge = build_bridge(model)
    if bridge is None:
        return Instrumented(model, "transformers", module_paths(model), restore=lambda: unwrap(model))
    paths = {id(m): n for n, m in bridge.named_modules() if n}
    groups: dict[int, list[str]] = {}
    for name, hp in bridge.hook_dict.items():
        groups.setdefault(id(hp), []).append(name)
    sites: dict[str, Site] = {}
    aliases: dict[str, str] = {}
    for key, names in groups.items():
        # prefer the TransformerLens name (e.g. blocks.1.hook_resid_post) over the bridge path (blocks.1.hook_out)
        legacy = [n for n in names if n != paths.get(key)]
        canonical = legacy[0] if legacy else names[0]
        sites[canonical] = Site(
            bridge.hook_dict[canonical], pos_dim=_pos_dim_for(canonical, bridge.hook_dict[canonical])
        )
        aliases.update({n: canonical for n in names if n != canonical})
    order = {n: i for i, n in enumerate(bridge.hook_dict)}
    sites = dict(sorted(sites.items(), key=lambda kv: order[kv[0]]))
    inst = Instrumented(model, "transformers", sites, aliases=aliases, restore=lambda: unwrap(model))
    inst.bridge = bridge  # type: ignore[attr-defined]
    return inst


register_adapter(
    # before the HookPoint adapter: a bridged transformers model holds HookPoints, and must come back here
    Adapter(
        "transformers",
        lambda model: type(model).__module__.startswith("transformers."),
        attach_transformers,
        priority=5,
    )
)


# --- DiffusionGemma ---------------------------------------------------------------------------------
# TransformerLens has no bridge for ``DiffusionGemmaForBlockDiffusion`` (an encoder over the prompt and
# earlier canvases that fills a KV cache, a bidirectional decoder over the canvas that reads it, a
# self-conditioning MLP, MoE layers), so its names are a map onto module paths, built here with plain
# forward hooks. Sites whose activation is not a module's output (attention patterns, the router's
# choices, the self-conditioning input) are HookPoints kept outside the model, fed only during a session
# that uses them; attaching alone changes nothing in the model.

PATTERN_ATTENTION = "interp_pattern"  # the attention implementation a session capturing patterns switches to
_PATTERN_HOOKS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # attention module -> its HookPoint


def _pattern_attention(module: nn.Module, query, key, value, attention_mask, **kwargs):
    """The model's own eager attention with the probabilities ``[B, heads, Lq, Lk]`` passed through the
    module's pattern HookPoint; an edited pattern is what weights the values."""
    import sys

    modeling = sys.modules[type(module).__module__]
    out, weights = modeling.eager_attention_forward(module, query, key, value, attention_mask, **kwargs)
    hook = _PATTERN_HOOKS.get(module)
    if hook is not None:
        edited = hook(weights)
        if edited is not weights:
            values = modeling.repeat_kv(value, module.num_key_value_groups)
            out, weights = torch.matmul(edited.to(values.dtype), values).transpose(1, 2).contiguous(), edited
    return out, weights


def _register_pattern_attention() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface

    AttentionInterface.register(PATTERN_ATTENTION, _pattern_attention)
    AttentionMaskInterface.register(PATTERN_ATTENTION, ALL_MASK_ATTENTION_FUNCTIONS["eager"])


def is_diffusion_gemma(model: nn.Module) -> bool:
    """A transformers DiffusionGemma (``DiffusionGemmaForBlockDiffusion`` or ``DiffusionGemmaModel``)."""
    return getattr(getattr(model, "config", None), "model_type", None) == "diffusion_gemma"


def _find(model: nn.Module, class_name: str) -> tuple[str, nn.Module]:
    for path, module in model.named_modules():
        if type(module).__name__ == class_name:
            return path, module
    raise HookNameError(f"this DiffusionGemma model has no {class_name}")


def attach_diffusion_gemma(model: nn.Module) -> Instrumented:
    """TransformerLens-style names for a DiffusionGemma, every module path kept as an alias (unmapped
    modules keep their path as their name). ``B`` batch, ``C`` canvas length, ``P`` encoded length, ``d``
    hidden size, ``E`` experts, ``K`` experts per token:

    - decoder (the canvas): ``hook_embed`` ``[B, C, d]`` (token embeddings of the canvas),
      ``hook_selfcond_in`` ``[B, C, d]`` (the soft embedding softmax(previous logits)·E the
      self-conditioning MLP receives; zeros at a canvas's first step), ``hook_selfcond_out`` ``[B, C, d]``
      (its output: the decoder's input), ``blocks.{i}.hook_resid_post`` ``[B, C, d]``,
      ``blocks.{i}.attn.hook_pattern`` ``[B, heads, C, P + C]`` (keys: the cached prefix, then the canvas),
      ``blocks.{i}.hook_attn_out``, ``blocks.{i}.hook_mlp_out`` (the dense MLP), ``blocks.{i}.hook_moe_out``
      (the experts, ``[B·C, d]``), ``blocks.{i}.router.hook_probs`` ``[B·C, E]``,
      ``blocks.{i}.router.hook_weights`` ``[B·C, K]`` and ``blocks.{i}.router.hook_choice`` ``[B·C, K]``
      (the chosen experts; rows are (batch, position) flattened, batch-major), ``ln_final.hook_normalized``;
    - encoder (prompt and earlier canvases, once per canvas): the same under ``encoder.``
      (``encoder.blocks.{i}.hook_resid_post`` ``[B, P_new, d]``, ``encoder.blocks.{i}.attn.hook_pattern``, ...).

    Patterns need explicit attention probabilities: a session that uses one switches the text attention to
    the model's eager attention routed through the HookPoints, and back afterwards. Edits of patterns,
    router choices and the self-conditioning input flow into the computation."""
    from transformer_lens.hook_points import HookPoint

    _register_pattern_attention()
    _, text_config_holder = _find(model, "DiffusionGemmaDecoderModel")
    text_config = text_config_holder.text_config
    paths = module_paths(model)
    prefixes = {
        "": _find(model, "DiffusionGemmaDecoderModel")[0],
        "encoder.": _find(model, "DiffusionGemmaEncoderTextModel")[0],
    }
    named: dict[str, str] = {}  # TransformerLens name -> module path
    extra: dict[str, tuple[str, Site]] = {}  # HookPoint sites: name -> (module path they sit on, site)
    feeders: dict[str, Callable[[], Any]] = {}  # name -> installs what feeds it, returns the handle(s)

    def output_element(module: nn.Module, index: int, hook: Any) -> Callable[[], Any]:
        def feed(mod, args, output):
            out = list(output)
            out[index] = hook(out[index])
            return type(output)(out)

        return lambda: module.register_forward_hook(feed)

    for prefix, root in prefixes.items():
        stack = model.get_submodule(root)
        named[f"{prefix}hook_embed"] = f"{root}.embed_tokens"
        named[f"{prefix}ln_final.hook_normalized"] = f"{root}.norm"
        for i, layer in enumerate(stack.layers):
            base = f"{root}.layers.{i}"
            named[f"{prefix}blocks.{i}.hook_resid_post"] = base
            named[f"{prefix}blocks.{i}.hook_attn_out"] = f"{base}.self_attn"
            named[f"{prefix}blocks.{i}.hook_mlp_out"] = f"{base}.mlp"
            named[f"{prefix}blocks.{i}.hook_moe_out"] = f"{base}.experts"
            named[f"{prefix}blocks.{i}.router.hook_probs"] = f"{base}.router"
            hook = HookPoint()
            _PATTERN_HOOKS[layer.self_attn] = hook
            extra[f"{prefix}blocks.{i}.attn.hook_pattern"] = (f"{base}.self_attn", Site(hook, pos_dim=2))
            for index, what in ((1, "weights"), (2, "choice")):
                hook = HookPoint()
                name = f"{prefix}blocks.{i}.router.hook_{what}"
                extra[name] = (f"{base}.router", Site(hook, pos_dim=0))
                feeders[name] = output_element(layer.router, index, hook)
    selfcond_path = f"{prefixes['']}.self_conditioning"
    selfcond = model.get_submodule(selfcond_path)
    named["hook_selfcond_out"] = selfcond_path
    hook_in = HookPoint()
    extra["hook_selfcond_in"] = (selfcond_path, Site(hook_in))

    def feed_selfcond(mod, args, kwargs):
        if len(args) > 1:
            return (args[0], hook_in(args[1]), *args[2:]), kwargs
        return args, {**kwargs, "self_conditioning_signal": hook_in(kwargs["self_conditioning_signal"])}

    feeders["hook_selfcond_in"] = lambda: selfcond.register_forward_pre_hook(feed_selfcond, with_kwargs=True)

    by_path = {path: name for name, path in named.items()}
    after: dict[str, list[str]] = {}
    for name, (path, _) in extra.items():
        after.setdefault(path, []).append(name)
    sites: dict[str, Site] = {}
    aliases: dict[str, str] = {}
    for path, site in paths.items():  # model order; a HookPoint site comes right after its module
        name = by_path.get(path, path)
        sites[name] = site
        if name != path:
            aliases[path] = name
        for hp_name in after.get(path, ()):
            sites[hp_name] = extra[hp_name][1]
            aliases[f"{path}.{hp_name.rsplit('.', 1)[-1]}"] = hp_name
    patterns = {n for n in extra if n.endswith("hook_pattern")}

    def activate(names: set[str]) -> Callable[[], None]:
        """Feed the HookPoint sites the session uses; the returned function undoes it."""
        handles = [feeders[n]() for n in sorted(names & feeders.keys())]
        before = text_config._attn_implementation
        if names & patterns:
            text_config._attn_implementation = PATTERN_ATTENTION

        def restore() -> None:
            for h in handles:
                h.remove()
            if names & patterns:
                text_config._attn_implementation = before

        return restore

    return Instrumented(model, "transformers", sites, aliases=aliases, activate=activate, restore=lambda: unwrap(model))
