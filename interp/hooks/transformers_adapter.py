"""Hugging Face transformers models, through TransformerLens ``build_bridge_from_module``.

The bridge rewires the model *in place* (its submodules become bridge components with HookPoints;
the model's own forward still gives identical outputs), so sites get TransformerLens names
(``blocks.{i}.hook_resid_post``, ``blocks.{i}.attn.hook_pattern``). Attention patterns only fire
with eager attention, so attach switches the model to it. Architectures TransformerLens has no
adapter for fall back to module paths.

Caveat for post-LayerNorm models such as BERT (checked numerically): ``hook_resid_pre`` /
``hook_resid_post`` are the true residual stream, but ``hook_attn_out`` is taken *after* the first
LayerNorm (the attention contribution itself is ``blocks.{i}.attn.o.hook_out``), ``hook_resid_mid``
is the input of the second LayerNorm, ``hook_attn_scores`` is post-softmax, and edits of
``hook_pattern`` are discarded by the bridge (it warns).
"""

from __future__ import annotations

import warnings

from torch import nn

from interp.hooks.attach import Adapter, Instrumented, Site, _pos_dim_for, module_paths, register_adapter

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
