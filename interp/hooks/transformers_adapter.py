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


def build_bridge(model: nn.Module):
    """A TransformerLens bridge around ``model`` (modified in place), or None if unsupported."""
    from transformer_lens.model_bridge.sources._bridge_builder import build_bridge_from_module

    architecture = type(model).__name__
    config = getattr(model, "config", None)
    if config is None:
        return None
    if getattr(config, "_attn_implementation", None) != "eager" and hasattr(model, "set_attn_implementation"):
        model.set_attn_implementation("eager")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return build_bridge_from_module(model, architecture, hf_config=config)
    except (ValueError, KeyError, NotImplementedError, AttributeError) as exc:
        warnings.warn(f"TransformerLens has no bridge for {architecture} ({exc}); using module paths", stacklevel=3)
        return None


def attach_transformers(model: nn.Module) -> Instrumented:
    bridge = build_bridge(model)
    if bridge is None:
        return Instrumented(model, "transformers", module_paths(model))
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
    inst = Instrumented(model, "transformers", sites, aliases=aliases)
    inst.bridge = bridge  # type: ignore[attr-defined]
    return inst


register_adapter(
    Adapter("transformers", lambda model: type(model).__module__.startswith("transformers."), attach_transformers)
)
