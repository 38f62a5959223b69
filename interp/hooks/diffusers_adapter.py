"""diffusers models (``UNet2DModel``, ``DiTTransformer2DModel`` and what shares their structure).

Sites: every submodule by path (tuple outputs, such as a down block's ``(hidden, skips)``, are
read at element 0), aliases in our U-Net / transformer convention (``down.{i}.hook_out``,
``mid.hook_out``, ``up.{i}.hook_out``, ``blocks.{i}.hook_resid_post``), and attention patterns
``{attention path}.hook_pattern`` ``[B, heads, Lq, Lk]``: for the duration of a session that
captures or edits a pattern, that ``Attention`` module's processor is swapped for one that computes
the softmax explicitly and passes it through a HookPoint; the original is put back afterwards, so
runs that do not touch patterns keep diffusers' fused attention.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from transformer_lens.hook_points import HookPoint

from interp.hooks.attach import Adapter, Instrumented, Site, module_paths, register_adapter


class PatternAttnProcessor:
    """Attention with an explicit softmax whose probabilities go through ``hook`` (shape
    ``[B, heads, Lq, Lk]``), otherwise the computation of diffusers' default processor."""

    def __init__(self, hook: HookPoint):
        self.hook = hook

    def __call__(
        self,
        attn: Any,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        *args: Any,
        **kwargs: Any,
    ) -> torch.Tensor:
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        image_layout = hidden_states.ndim == 4
        if image_layout:
            b, c, h, w = hidden_states.shape
            hidden_states = hidden_states.view(b, c, h * w).transpose(1, 2)
        source = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        attention_mask = attn.prepare_attention_mask(attention_mask, source.shape[1], source.shape[0])
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        if encoder_hidden_states is None:
            context = hidden_states  # self-attention: keys and values from the normalised states too
        else:
            context = (
                attn.norm_encoder_hidden_states(encoder_hidden_states) if attn.norm_cross else encoder_hidden_states
            )
        query, key, value = attn.to_q(hidden_states), attn.to_k(context), attn.to_v(context)
        if attn.norm_q is not None or attn.norm_k is not None:
            q4, k4 = attn.head_to_batch_dim(query, out_dim=4), attn.head_to_batch_dim(key, out_dim=4)
            q4 = attn.norm_q(q4) if attn.norm_q is not None else q4
            k4 = attn.norm_k(k4) if attn.norm_k is not None else k4
            query, key = q4.flatten(0, 1), k4.flatten(0, 1)
        else:
            query, key = attn.head_to_batch_dim(query), attn.head_to_batch_dim(key)
        value = attn.head_to_batch_dim(value)
        probs = attn.get_attention_scores(query, key, attention_mask)  # [B*heads, Lq, Lk]
        heads = attn.heads
        probs = self.hook(probs.view(-1, heads, *probs.shape[1:])).flatten(0, 1)
        out = attn.batch_to_head_dim(torch.bmm(probs, value))
        out = attn.to_out[1](attn.to_out[0](out))
        if image_layout:
            out = out.transpose(-1, -2).reshape(b, c, h, w)
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor


_ALIASES = (
    (r"down_blocks\.(\d+)", "down.{}.hook_out"),
    (r"up_blocks\.(\d+)", "up.{}.hook_out"),
    (r"mid_block", "mid.hook_out"),
    (r"transformer_blocks\.(\d+)", "blocks.{}.hook_resid_post"),
)


def attach_diffusers(model: nn.Module) -> Instrumented:
    sites = module_paths(model)
    aliases: dict[str, str] = {}
    for path in sites:
        for pattern, alias in _ALIASES:
            m = re.fullmatch(pattern, path)
            if m:
                aliases[alias.format(*m.groups())] = path
    patterns: dict[str, tuple[nn.Module, PatternAttnProcessor]] = {}
    for path, module in list(model.named_modules()):
        if hasattr(module, "set_processor") and hasattr(module, "get_processor"):
            hook = HookPoint()
            hook.name = f"{path}.hook_pattern"
            patterns[hook.name] = (module, PatternAttnProcessor(hook))
            sites[hook.name] = Site(hook, pos_dim=2)

    def activate(names: set[str]) -> Callable[[], None]:
        """Swap in the pattern processors a session needs; the returned function puts back the originals."""
        swapped = []
        for name in names & patterns.keys():
            module, processor = patterns[name]
            swapped.append((module, module.get_processor()))
            module.set_processor(processor)

        def restore() -> None:
            for module, original in swapped:
                module.set_processor(original)

        return restore

    return Instrumented(model, "diffusers", sites, aliases=aliases, activate=activate)


register_adapter(Adapter("diffusers", lambda model: type(model).__module__.startswith("diffusers."), attach_diffusers))
