"""Hugging Face transformers models, through TransformerLens ``build_bridge_from_module``.

The bridge rewires the model *in place* (its submodules become bridge components with HookPoints;
the model's own forward still gives identical outputs), so sites get TransformerLens names
(``blocks.{i}.hook_resid_post``, ``blocks.{i}.attn.hook_pattern``). The model keeps its own attention
implementation (sdpa: outputs bit-identical to the unattached model); a session capturing attention
patterns switches it to eager for its duration (bridges that delegate attention to transformers, such as
BERT's, read patterns from eager attention's weights), and so do the bridge's own ``run_with_cache`` /
``run_with_hooks``. DiffusionGemma, ModernBERT and the BERT-layout encoders it does not bridge (a bare
``BertModel``; RoBERTa's, XLM-R's and CamemBERT's other than ``RobertaForMaskedLM``) get TransformerLens-style names from a map onto their module paths (:func:`attach_diffusion_gemma`,
:func:`attach_encoder`); other architectures TransformerLens has no adapter for fall back to module paths.

Steps: ``inst.trace(lambda: model.generate(...))`` records one step per generated token, or per denoising
step of DiffusionGemma's ``generate`` (:class:`GenerateSteps`).

Caveat for post-LayerNorm models such as BERT (checked numerically): ``hook_resid_pre`` /
``hook_resid_post`` are the true residual stream, but ``hook_attn_out`` is taken *after* the first
LayerNorm (the attention contribution itself is ``blocks.{i}.attn.o.hook_out``), ``hook_resid_mid``
is the input of the second LayerNorm, ``hook_attn_scores`` is post-softmax, and edits of
``hook_pattern`` are discarded by the bridge (it warns).
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import warnings
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

from interp.hooks.attach import (
    Adapter,
    HookNameError,
    Instrumented,
    Site,
    StepSource,
    _pos_dim_for,
    module_paths,
    register_adapter,
)

STATE_ATTR = "_interp_attached"  # what attach did to a model, kept on it: attaching again reuses it


def build_bridge(model: nn.Module):
    """A TransformerLens bridge around ``model`` (modified in place; built once per model), or None if
    unsupported. The bridge is built under eager attention; the model's own attention implementation is
    then put back (sessions capturing attention patterns switch to eager for their duration only, see
    :func:`_eager_for_patterns`), and cached generation is made to fill the model's KV cache
    (:func:`_pass_cache`). :func:`unwrap` undoes it all."""
    from transformer_lens.model_bridge.sources._bridge_builder import build_bridge_from_module

    architecture = type(model).__name__
    config = getattr(model, "config", None)
    if config is None:
        return None
    before = getattr(config, "_attn_implementation", None)
    # every module's own parameters and buffers, so unwrap can drop what the bridge adds (a zero lm_head bias)
    owned = [(m, dict(m._parameters), dict(m._buffers)) for m in model.modules()]
    switch = before != "eager" and hasattr(model, "set_attn_implementation")
    if switch:
        model.set_attn_implementation("eager")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            bridge = build_bridge_from_module(model, architecture, hf_config=config)
    except (ValueError, KeyError, NotImplementedError, AttributeError):
        bridge = None
    finally:
        if switch:
            model.set_attn_implementation(before)
    object.__setattr__(model, STATE_ATTR, {"attn": before, "owned": owned})
    if bridge is not None:
        _pass_cache(bridge)
        _eager_bridge(bridge, model)
    return bridge


@contextlib.contextmanager
def _attention(model: nn.Module, implementation: str) -> Iterator[None]:
    """``model`` on attention ``implementation`` for the block, its own afterwards."""
    before = getattr(model.config, "_attn_implementation", None)
    if before == implementation or not hasattr(model, "set_attn_implementation"):
        yield
        return
    model.set_attn_implementation(implementation)
    try:
        yield
    finally:
        model.set_attn_implementation(before)


def _eager_bridge(bridge: nn.Module, model: nn.Module) -> None:
    """The bridge's own entry points (``bridge(...)``, ``run_with_cache``, ``run_with_hooks``: all through its
    ``forward``) run the model on eager attention, so TransformerLens' caches hold attention patterns as
    before; the model called directly keeps its own implementation."""
    forward = bridge.forward

    @functools.wraps(forward)
    def eager_forward(*args: Any, **kwargs: Any) -> Any:
        with _attention(model, "eager"):
            return forward(*args, **kwargs)

    object.__setattr__(bridge, "forward", eager_forward)


def _pass_cache(bridge: nn.Module) -> None:
    """transformers 5 hands a layer's KV cache to attention as ``cache=``; TransformerLens' attention bridges
    read ``past_key_values=`` / ``layer_past=`` only, so under the bridge cached ``generate`` never filled the
    cache (every token after the first attended to itself alone; logits off by ~0.2 on a tiny Llama). Each
    attention bridge's cache update is made to take ``cache`` as well."""
    for module in bridge.modules():
        update = getattr(module, "_update_kv_cache", None)
        if update is None or "_update_kv_cache" in vars(module):
            continue

        def take_cache(k: torch.Tensor, v: torch.Tensor, _update=update, **kwargs: Any):
            if kwargs.get("past_key_values") is None and kwargs.get("layer_past") is None:
                kwargs["past_key_values"] = kwargs.get("cache")
            return _update(k, v, **kwargs)

        object.__setattr__(module, "_update_kv_cache", take_cache)


PATTERN_SUFFIXES = ("hook_pattern", "hook_attn_scores")  # sites that need explicit attention probabilities


def _eager_for_patterns(model: nn.Module, pattern_names: set[str]) -> Callable[[set[str]], Callable[[], None]]:
    """A session's ``activate``: eager attention while it uses one of ``pattern_names`` (bridges of models that
    delegate attention to transformers, such as BERT, read patterns from eager attention's weights), the
    model's own implementation (sdpa: outputs bit-identical to the unattached model) otherwise."""

    def activate(names: set[str]) -> Callable[[], None]:
        if not names & pattern_names:
            return lambda: None
        switched = _attention(model, "eager")
        switched.__enter__()
        return lambda: switched.__exit__(None, None, None)

    return activate


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
    if callable(getattr(model, "generate", None)):
        inst.step_source = GenerateSteps(model)
    vars(model).setdefault(STATE_ATTR, {})["inst"] = inst
    return inst


class GenerateSteps(StepSource):
    """The step source of a transformers model: inside ``model.generate(...)``, each call of its logits
    processors ends a step, so ``inst.trace(lambda: model.generate(...))`` records one step per generated
    token (autoregressive ``generate``, greedy, sampling or beam search: one forward per token) or per
    denoising step (DiffusionGemma's ``generate``: one decoder pass per step; the encoder, run once per
    canvas, falls in the canvas's first step). While a session runs, ``generate`` is wrapped to append one
    processor to the ``logits_processor`` list (the caller's own ones are kept, and run first); it leaves
    the scores unchanged and records ``position``, the length of the sequence the step extends (the index of
    the token being generated; the canvas start for DiffusionGemma). The processors run after the step's
    forward pass and before its token is chosen, so each step holds exactly its own forward pass.

    With a KV cache, step 0 (the prefill) sees the whole prompt (``[B, P, d]``) and later steps one position
    (``[B, 1, d]``): ``trace.stack`` pads such ragged steps (see :meth:`~interp.hooks.Trace.stack`).
    Generation modes that run the processors several times per forward (assisted / speculative decoding)
    get one step per candidate token."""

    def __init__(self, model: nn.Module):
        self.model = model

    @contextlib.contextmanager
    def install(self, session: Any) -> Iterator[None]:
        from transformers import LogitsProcessor, LogitsProcessorList

        model = self.model
        original = model.generate
        had_own = "generate" in vars(model)
        signature = inspect.signature(original)

        class EndStep(LogitsProcessor):
            def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
                session.end_step(position=int(input_ids.shape[-1]))
                return scores

        def generate(*args: Any, **kwargs: Any) -> Any:
            bound = signature.bind_partial(*args, **kwargs)
            processors = LogitsProcessorList(bound.arguments.get("logits_processor") or [])
            processors.append(EndStep())
            bound.arguments["logits_processor"] = processors
            return original(*bound.args, **bound.kwargs)

        object.__setattr__(model, "generate", functools.wraps(original)(generate))
        try:
            yield
        finally:
            if had_own:
                object.__setattr__(model, "generate", original)
            else:
                del model.__dict__["generate"]


def _instrument(model: nn.Module) -> Instrumented:
    if is_diffusion_gemma(model):  # no TransformerLens bridge for it: a name map (below)
        return attach_diffusion_gemma(model)
    bridge = build_bridge(model)
    if bridge is None:
        encoder = _encoder_kind(model)
        if encoder is not None:
            return attach_encoder(model, *encoder)
        warnings.warn(f"TransformerLens has no bridge for {type(model).__name__}; using module paths", stacklevel=4)
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
    patterns = {n for n in [*sites, *aliases] if n.endswith(PATTERN_SUFFIXES)}
    inst = Instrumented(
        model,
        "transformers",
        sites,
        aliases=aliases,
        activate=_eager_for_patterns(model, {aliases.get(n, n) for n in patterns}),
        restore=lambda: unwrap(model),
    )
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
            groups = getattr(module, "num_key_value_groups", 1)
            values = modeling.repeat_kv(value, groups) if groups > 1 else value
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


# --- Encoders TransformerLens does not bridge: ModernBERT, a bare BertModel, XLM-R, ... -----------------
# TransformerLens bridges ``BertForMaskedLM`` and ``RobertaForMaskedLM`` but not ``BertModel`` (nor ``BertFor*``
# other heads), XLM-R, CamemBERT nor any ModernBERT; their names are a map onto module paths, and attention patterns come from HookPoints fed by
# the model's own eager attention (``PATTERN_ATTENTION``) during a session that uses them, as for
# DiffusionGemma. Attaching alone changes nothing in the model.

ENCODERS = {  # encoder class -> name map family (RoBERTa and its kin have BERT's module layout)
    "BertModel": "bert",
    "RobertaModel": "bert",
    "XLMRobertaModel": "bert",
    "CamembertModel": "bert",
    "ModernBertModel": "modernbert",
}


def _encoder_kind(model: nn.Module) -> tuple[str, str] | None:
    """(path of the encoder inside ``model``, family) for a model that is or holds one encoder of
    :data:`ENCODERS`, else None."""
    found = [(path, ENCODERS[type(m).__name__]) for path, m in model.named_modules() if type(m).__name__ in ENCODERS]
    return found[0] if len(found) == 1 else None


def _encoder_names(root: str, family: str, n_layers: int) -> tuple[dict[str, str], dict[str, str]]:
    """(TransformerLens-style name -> module path, extra alias -> name) for an encoder at ``root``."""
    p = f"{root}." if root else ""
    named: dict[str, str] = {}
    extra: dict[str, str] = {}
    if family == "bert":
        named["embed.hook_out"] = f"{p}embeddings.word_embeddings"
        named["hook_pos_embed"] = f"{p}embeddings.position_embeddings"
        named["token_type_embed.hook_out"] = f"{p}embeddings.token_type_embeddings"
        named["hook_embed"] = f"{p}embeddings"  # after the embedding LayerNorm: what block 0 reads
        for i in range(n_layers):
            base = f"{p}encoder.layer.{i}"
            named[f"blocks.{i}.attn.hook_z"] = f"{base}.attention.self"
            named[f"blocks.{i}.hook_attn_out"] = f"{base}.attention.output.dense"
            named[f"blocks.{i}.hook_resid_mid"] = f"{base}.attention"
            named[f"blocks.{i}.mlp.hook_post"] = f"{base}.intermediate"
            named[f"blocks.{i}.hook_mlp_out"] = f"{base}.output.dense"
            named[f"blocks.{i}.hook_resid_post"] = base
            extra[f"blocks.{i}.attn.o.hook_out"] = f"blocks.{i}.hook_attn_out"
    else:
        named["embed.hook_out"] = f"{p}embeddings.tok_embeddings"
        named["hook_embed"] = f"{p}embeddings"  # after the embedding norm: what block 0 reads
        for i in range(n_layers):
            base = f"{p}layers.{i}"
            named[f"blocks.{i}.ln1.hook_normalized"] = f"{base}.attn_norm"
            named[f"blocks.{i}.hook_attn_out"] = f"{base}.attn"
            named[f"blocks.{i}.ln2.hook_normalized"] = f"{base}.mlp_norm"
            named[f"blocks.{i}.hook_mlp_out"] = f"{base}.mlp"
            named[f"blocks.{i}.hook_resid_post"] = base
        named["ln_final.hook_normalized"] = f"{p}final_norm"
    return named, extra


def attach_encoder(model: nn.Module, root: str, family: str) -> Instrumented:
    """TransformerLens-style names for a ModernBERT (``ModernBertModel`` / ``ModernBertForMaskedLM`` / ...) or
    a BERT without the bridge (``BertModel``, ``BertFor*`` other than masked LM), every module path kept as an
    alias (unmapped modules keep their path). ``B`` batch, ``L`` length, ``d`` hidden size:

    - ``hook_embed`` ``[B, L, d]`` the embeddings after their norm (the residual block 0 reads),
      ``embed.hook_out`` the token embeddings (BERT: also ``hook_pos_embed``, ``token_type_embed.hook_out``);
    - per block: ``blocks.{i}.hook_resid_post``, ``blocks.{i}.attn.hook_pattern`` ``[B, heads, L, L]``
      (post-softmax; an edited pattern is what weights the values), ``blocks.{i}.hook_attn_out`` (the attention
      output projection: the attention's contribution), ``blocks.{i}.hook_mlp_out`` (the MLP's contribution);
      ModernBERT (pre-norm): ``blocks.{i}.ln1.hook_normalized`` / ``ln2.hook_normalized`` and
      ``ln_final.hook_normalized`` (the final norm, before the MLM head); BERT (post-LayerNorm):
      ``blocks.{i}.attn.hook_z`` (the heads' outputs, concatenated), ``blocks.{i}.hook_resid_mid`` (after the
      attention's LayerNorm: what the MLP reads), ``blocks.{i}.mlp.hook_post``.

    Note: on the bridged ``BertForMaskedLM``, ``hook_attn_out`` is taken after the first LayerNorm (see the
    module docstring); here it is the attention's own contribution (the bridge's ``attn.o.hook_out``, an alias).
    Patterns need explicit attention probabilities: a session that uses one switches the model to its eager
    attention routed through the HookPoints, and back afterwards (sdpa otherwise: outputs are the model's own)."""
    from transformer_lens.hook_points import HookPoint

    _register_pattern_attention()
    encoder = model.get_submodule(root)
    layers = encoder.encoder.layer if family == "bert" else encoder.layers
    named, extra_aliases = _encoder_names(root, family, len(layers))
    attention_of = {"bert": "attention.self", "modernbert": "attn"}[family]
    by_path = {path: name for name, path in named.items()}
    hooks: dict[str, str] = {}  # pattern HookPoint name -> the module path it follows
    pattern_sites: dict[str, Site] = {}
    layer_prefix = f"{root}.encoder.layer" if family == "bert" else f"{root}.layers"
    layer_prefix = layer_prefix.lstrip(".")
    for i, layer in enumerate(layers):
        attention = layer.get_submodule(attention_of)
        hook = HookPoint()
        _PATTERN_HOOKS[attention] = hook
        name = f"blocks.{i}.attn.hook_pattern"
        hooks[name] = f"{layer_prefix}.{i}.{attention_of}"
        pattern_sites[name] = Site(hook, pos_dim=2)
    after: dict[str, list[str]] = {}
    for name, path in hooks.items():
        after.setdefault(path, []).append(name)
    sites: dict[str, Site] = {}
    aliases: dict[str, str] = {}
    for path, site in module_paths(model).items():  # model order; a pattern comes right after its attention
        name = by_path.get(path, path)
        sites[name] = site
        if name != path:
            aliases[path] = name
        for hp_name in after.get(path, ()):
            sites[hp_name] = pattern_sites[hp_name]
            aliases[f"{path}.hook_pattern"] = hp_name
    aliases.update(extra_aliases)
    config = model.config

    def activate(names: set[str]) -> Callable[[], None]:
        """The pattern attention while the session uses a pattern; the model's own otherwise."""
        before = config._attn_implementation
        if not names & pattern_sites.keys():
            return lambda: None
        config._attn_implementation = PATTERN_ATTENTION

        def restore() -> None:
            config._attn_implementation = before

        return restore

    return Instrumented(model, "transformers", sites, aliases=aliases, activate=activate, restore=lambda: unwrap(model))
