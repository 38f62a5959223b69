"""Adapters from each kind of model to an :class:`~interp.hooks.attach.Instrumented`."""

from __future__ import annotations

from typing import Any

from torch import nn

from interp.hooks.attach import Instrumented, Site, _pos_dim_for


def _is_method(obj: Any) -> bool:
    """A method object (ours, or a wrapper such as MaskedLMSampler): not a module, holding one as ``model``."""
    return not isinstance(obj, nn.Module) and isinstance(getattr(obj, "model", None), nn.Module)


def _hook_point_sites(model: nn.Module) -> dict[str, Site]:
    from transformer_lens.hook_points import HookPoint

    hook_dict = getattr(model, "hook_dict", None)
    if hook_dict is None:
        hook_dict = {n: m for n, m in model.named_modules() if isinstance(m, HookPoint)}
    return {name: Site(module, pos_dim=_pos_dim_for(name, module), stable=True) for name, module in hook_dict.items()}


def native(model: nn.Module, method: Any = None) -> Instrumented:
    """Models built from HookPoints (ours, TransformerLens): sites are the HookPoints."""
    return Instrumented(model, "native", _hook_point_sites(model), method=method)


def module_paths(model: nn.Module) -> dict[str, Site]:
    """Every submodule by path (tuple outputs are read at element 0)."""
    return {name: Site(module) for name, module in model.named_modules() if name}


def generic(model: nn.Module) -> Instrumented:
    return Instrumented(model, "module", module_paths(model))


def attach(model: Any) -> Instrumented:
    if _is_method(model):  # our methods, or an HF masked LM wrapped for our samplers
        inst = attach(model.model)
        inst.method = model
        return inst
    if hasattr(model, "hook_dict") or any(type(m).__name__ == "HookPoint" for m in model.modules()):
        return native(model)
    module_name = type(model).__module__
    if module_name.startswith("diffusers."):
        from interp.hooks.diffusers_adapter import attach_diffusers

        return attach_diffusers(model)
    if module_name.startswith("transformers."):
        from interp.hooks.transformers_adapter import attach_transformers

        return attach_transformers(model)
    if isinstance(model, nn.Module):
        return generic(model)
    raise TypeError(f"cannot attach to {type(model).__name__}: expected a torch.nn.Module or an interp method")
