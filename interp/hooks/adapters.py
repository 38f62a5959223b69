"""The adapter for models built from TransformerLens HookPoints (ours, HookedRootModule, bridges):
their sites are the HookPoints, with TransformerLens names."""

from __future__ import annotations

from torch import nn

from interp.hooks.attach import Adapter, Instrumented, Site, _pos_dim_for, register_adapter


def _hook_point_sites(model: nn.Module) -> dict[str, Site]:
    from transformer_lens.hook_points import HookPoint

    hook_dict = getattr(model, "hook_dict", None)
    if hook_dict is None:
        hook_dict = {n: m for n, m in model.named_modules() if isinstance(m, HookPoint)}
    return {name: Site(module, pos_dim=_pos_dim_for(name, module), stable=True) for name, module in hook_dict.items()}


def native(model: nn.Module) -> Instrumented:
    """Models built from HookPoints (ours, TransformerLens): sites are the HookPoints."""
    return Instrumented(model, "native", _hook_point_sites(model))


def _has_hook_points(model: nn.Module) -> bool:
    return hasattr(model, "hook_dict") or any(type(m).__name__ == "HookPoint" for m in model.modules())


register_adapter(Adapter("native", _has_hook_points, native, priority=10))
