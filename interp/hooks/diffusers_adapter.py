"""diffusers models (``UNet2DModel``, ``DiTTransformer2DModel``, ``UNet2DConditionModel``, the joint-attention
(MMDiT) transformers ``SD3Transformer2DModel`` and ``FluxTransformer2DModel``, and what shares their structure).

Sites: every submodule by path (tuple outputs, such as a down block's ``(hidden, skips)``, are read at
element 0; :meth:`~interp.hooks.attach.Instrumented.add_site` reads another element), aliases in our
U-Net / transformer convention (``down.{i}.hook_out``, ``mid.hook_out``, ``up.{i}.hook_out``,
``blocks.{i}.hook_resid_post``), and attention patterns ``{attention path}.hook_pattern``
``[B, heads, Lq, Lk]``.

Joint-attention blocks return ``(text, image)``: their image stream is ``blocks.{i}.hook_resid_post``
(Flux's single-stream blocks: ``single_blocks.{i}.hook_resid_post``) and their text stream
``blocks.{i}.hook_context_post`` (absent for the last SD3 block, which returns no text stream). Their attention runs over the two streams concatenated
(SD3: image then text; Flux: text then image); the pattern's site says which (``site.meta["joint"]``),
and :func:`split_joint_pattern` cuts it into image→image, image→text, text→image and text→text blocks.

Patterns are computed only for the duration of a session that captures or edits one: an ``Attention``
module with diffusers' standard processor gets one that computes the softmax explicitly and passes it
through a HookPoint; any other attention module (joint attention, Flux) has
``torch.nn.functional.scaled_dot_product_attention`` replaced, during its own forward call only, by the
same computation with an explicit softmax. Afterwards the originals are put back, so runs that do not
touch patterns keep diffusers' fused attention.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
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


STANDARD_PROCESSORS = ("AttnProcessor", "AttnProcessor2_0")
# blocks that return (text stream, image stream); the value: the order of the streams in their attention
JOINT_BLOCKS = {
    "JointTransformerBlock": "image-first",
    "FluxTransformerBlock": "text-first",
    "FluxSingleTransformerBlock": "text-first",
}


def explicit_attention(hook: HookPoint):
    """A drop-in for ``F.scaled_dot_product_attention`` that computes the softmax explicitly and passes
    the probabilities ``[B, heads, Lq, Lk]`` through ``hook`` (dropout is refused: patterns are read in
    evaluation)."""

    def sdpa(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
        if dropout_p:
            raise ValueError("attention patterns are read without dropout; call model.eval() first")
        if enable_gqa and key.shape[-3] != query.shape[-3]:
            repeat = query.shape[-3] // key.shape[-3]
            key, value = key.repeat_interleave(repeat, -3), value.repeat_interleave(repeat, -3)
        scale = 1 / math.sqrt(query.shape[-1]) if scale is None else scale
        scores = (query @ key.transpose(-2, -1)) * scale
        if is_causal:
            causal = torch.ones(scores.shape[-2:], dtype=torch.bool, device=scores.device).tril()
            scores = scores.masked_fill(~causal, float("-inf"))
        if attn_mask is not None:
            scores = (
                scores.masked_fill(~attn_mask, float("-inf")) if attn_mask.dtype == torch.bool else scores + attn_mask
            )
        return hook(scores.softmax(-1).to(value.dtype)) @ value

    return sdpa


class _ExplicitSDPA:
    """Forward hooks that swap ``F.scaled_dot_product_attention`` for :func:`explicit_attention` while
    one module runs."""

    def __init__(self, hook: HookPoint):
        self.sdpa = explicit_attention(hook)
        self.saved: list[Any] = []

    def install(self, module: nn.Module) -> Callable[[], None]:
        def before(mod, args):
            self.saved.append(F.scaled_dot_product_attention)
            F.scaled_dot_product_attention = self.sdpa

        def after(mod, args, output):
            F.scaled_dot_product_attention = self.saved.pop()

        handles = [module.register_forward_pre_hook(before), module.register_forward_hook(after)]

        def remove() -> None:
            for h in handles:
                h.remove()
            if self.saved:  # a forward that raised never reached ``after``
                F.scaled_dot_product_attention = self.saved[0]
                self.saved.clear()

        return remove


def split_joint_pattern(pattern: torch.Tensor, n_image: int, order: str = "image-first") -> dict[str, torch.Tensor]:
    """Cut a joint-attention pattern ``[..., L, L]`` over ``n_image`` image tokens and ``L - n_image`` text
    tokens (concatenated in ``order``: ``image-first`` (SD3) or ``text-first`` (Flux)) into blocks
    ``{"image->image", "image->text", "text->image", "text->text"}`` (query -> key)."""
    L = pattern.shape[-1]
    if not 0 < n_image <= L:
        raise ValueError(f"n_image must be in 1..{L}, got {n_image}")
    image = slice(0, n_image) if order == "image-first" else slice(L - n_image, L)
    text = slice(n_image, L) if order == "image-first" else slice(0, L - n_image)
    parts = {"image": image, "text": text}
    return {f"{q}->{k}": pattern[..., parts[q], parts[k]] for q in parts for k in parts}


_ALIASES = (
    (r"down_blocks\.(\d+)", "down.{}.hook_out"),
    (r"up_blocks\.(\d+)", "up.{}.hook_out"),
    (r"mid_block", "mid.hook_out"),
    (r"transformer_blocks\.(\d+)", "blocks.{}.hook_resid_post"),
)


def attach_diffusers(model: nn.Module) -> Instrumented:
    sites = module_paths(model)
    aliases: dict[str, str] = {}
    joint: dict[str, str] = {}  # attention path -> stream order, for attention inside joint blocks
    for path, module in model.named_modules():
        order = JOINT_BLOCKS.get(type(module).__name__)
        if order is None:
            continue
        m = re.fullmatch(r"(single_)?transformer_blocks\.(\d+)", path)
        prefix = f"{'single_' if m and m.group(1) else ''}blocks.{m.group(2)}" if m else path
        sites[path] = Site(module, element=1)  # the image stream, not the text one at element 0
        sites[f"{prefix}.hook_resid_post"] = Site(module, element=1, meta={"stream": "image"})
        if not getattr(module, "context_pre_only", False):
            sites[f"{prefix}.hook_context_post"] = Site(module, element=0, meta={"stream": "text"})
        for sub, child in module.named_modules():
            if hasattr(child, "set_processor"):
                joint[f"{path}.{sub}"] = order
    for path in list(sites):
        for pattern, alias in _ALIASES:
            m = re.fullmatch(pattern, path)
            if m and alias.format(*m.groups()) not in sites:
                aliases[alias.format(*m.groups())] = path
    patterns: dict[str, tuple[nn.Module, Any]] = {}
    for path, module in list(model.named_modules()):
        if hasattr(module, "set_processor") and hasattr(module, "get_processor"):
            hook = HookPoint()
            hook.name = f"{path}.hook_pattern"
            standard = type(module.get_processor()).__name__ in STANDARD_PROCESSORS and path not in joint
            patterns[hook.name] = (module, PatternAttnProcessor(hook) if standard else _ExplicitSDPA(hook))
            meta = {"joint": joint[path]} if path in joint else {}
            sites[hook.name] = Site(hook, pos_dim=2, meta=meta)

    def activate(names: set[str]) -> Callable[[], None]:
        """Swap in the pattern computations a session needs; the returned function puts back the originals."""
        undo: list[Callable[[], None]] = []
        for name in names & patterns.keys():
            module, replacement = patterns[name]
            if isinstance(replacement, _ExplicitSDPA):
                undo.append(replacement.install(module))
            else:
                original = module.get_processor()
                module.set_processor(replacement)
                undo.append(lambda module=module, original=original: module.set_processor(original))

        def restore() -> None:
            for step in reversed(undo):
                step()

        return restore

    return Instrumented(model, "diffusers", sites, aliases=aliases, activate=activate)


register_adapter(Adapter("diffusers", lambda model: type(model).__module__.startswith("diffusers."), attach_diffusers))
