"""Logit lens across denoising steps × layers: what the model "currently believes" at each
position, read from each layer's residual stream with the model's own final readout."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pandas as pd
import plotly.graph_objects as go
import torch
from torch import nn

from interp.errors import InterpError
from interp.hooks.trace import Trace

Readout = Callable[[torch.Tensor], torch.Tensor]


def final_norm(model: nn.Module) -> nn.Module | None:
    """The norm a pre-norm transformers model applies to the last residual before its head
    (``model.model.norm`` for Llama / Gemma / Qwen / Mistral, ``model.model.final_norm`` for ModernBERT,
    ``model.model.decoder.norm`` for DiffusionGemma's decoder), or None where the head has its own (BERT's
    ``cls``, RoBERTa's ``lm_head``)."""
    base = getattr(model, "model", None)
    for holder in (base, getattr(base, "decoder", None)):
        for name in ("norm", "final_norm", "final_layernorm", "ln_f"):
            module = getattr(holder, name, None) if holder is not None else None
            if isinstance(module, nn.Module):
                return module
    return None


def _softcapped(model: nn.Module, head: Readout) -> Readout:
    """``head`` followed by the model's final logit soft-capping (c·tanh(logits / c): Gemma 2 and later,
    DiffusionGemma), when its config sets one."""
    config = getattr(model, "config", None)
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    cap = getattr(text, "final_logit_softcapping", None)
    if not cap:
        return head
    return lambda r: torch.tanh(head(r) / cap) * cap


def default_readout(model: nn.Module) -> Readout:
    """Residual ``[..., D]`` → logits ``[..., V]`` for models we know: ours (final LayerNorm +
    unembedding), BERT-style (``cls``) and RoBERTa-style (``lm_head``) masked LMs, and pre-norm causal LMs
    and DiffusionGemma's decoder (their final norm, then ``lm_head``, then the final logit soft-capping where
    the config sets one: the last layer's lens is then the model's own output)."""
    if hasattr(model, "ln_final") and hasattr(model, "unembed"):
        return lambda r: model.unembed(model.ln_final(r))
    if hasattr(model, "cls"):
        return lambda r: model.cls(r)
    if hasattr(model, "head") and hasattr(model, "decoder"):  # ModernBERT: final norm, head, decoder
        norm = final_norm(model)
        return lambda r: model.decoder(model.head(norm(r) if norm is not None else r))
    if hasattr(model, "lm_head"):
        norm = final_norm(model)
        if norm is not None:
            return _softcapped(model, lambda r: model.lm_head(norm(r)))
        return _softcapped(model, lambda r: model.lm_head(r))
    raise InterpError(f"no default logit-lens readout for {type(model).__name__}; pass readout=")


def residual_names(trace: Trace) -> list[str]:
    names = [n for n in trace.names if n.startswith("blocks.") and n.endswith("hook_resid_post")]
    return sorted(names, key=lambda n: int(n.split(".")[1]))


@dataclass
class LogitLens:
    """``probs [steps, layers, B, L, V]`` for ``layers`` at ``steps``."""

    probs: torch.Tensor
    layers: list[str]
    steps: list[int]

    def final_token_prob(self, final_tokens: torch.Tensor) -> torch.Tensor:
        """Probability of each position's final token, ``[steps, layers, B, L]``; ``final_tokens [B, L]``, or
        ``[steps, B, L]`` when the positions read differ per step (DiffusionGemma's decoder reads one canvas
        per step: the final tokens of that canvas)."""
        S, n_layers = self.probs.shape[:2]
        per_step = final_tokens if final_tokens.dim() == 3 else final_tokens.unsqueeze(0).expand(S, -1, -1)
        idx = per_step.unsqueeze(1).unsqueeze(-1).expand(S, n_layers, *per_step.shape[1:], 1)
        return self.probs.gather(-1, idx).squeeze(-1)

    def frame(self, final_tokens: torch.Tensor | None = None, example: int = 0) -> pd.DataFrame:
        """Tidy: one row per (step, layer, position) of ``example``: top token, its probability,
        and the probability of the final token when ``final_tokens [B, L]`` is given."""
        top_p, top_i = self.probs[:, :, example].max(-1)
        final = self.final_token_prob(final_tokens)[:, :, example] if final_tokens is not None else None
        rows = []
        for si, step in enumerate(self.steps):
            for li, layer in enumerate(self.layers):
                for pos in range(top_p.shape[-1]):
                    row = {
                        "step": step,
                        "layer": li,
                        "hook": layer,
                        "position": pos,
                        "top_token": int(top_i[si, li, pos]),
                        "top_prob": float(top_p[si, li, pos]),
                    }
                    if final is not None:
                        row["final_token_prob"] = float(final[si, li, pos])
                    rows.append(row)
        return pd.DataFrame(rows)

    def mean_final_prob(
        self, final_tokens: torch.Tensor, positions: Sequence[int], example: int | None = None
    ) -> torch.Tensor:
        """``[steps, layers]``: the final token's probability averaged over ``positions`` (and over
        examples, unless ``example`` picks one)."""
        p = self.final_token_prob(final_tokens)[..., list(positions)]  # [steps, layers, B, n]
        return p[:, :, example].mean(-1) if example is not None else p.mean((-1, -2))

    def figure(self, final_tokens: torch.Tensor, positions: Sequence[int], example: int | None = 0) -> go.Figure:
        """Heatmap, steps × layers, of :meth:`mean_final_prob`."""
        return self.heatmap(self.mean_final_prob(final_tokens, positions, example))

    def heatmap(self, p: torch.Tensor) -> go.Figure:
        """Heatmap of ``p [steps, layers]`` (e.g. what :func:`answer_logit_lens` returns)."""
        fig = go.Figure(
            go.Heatmap(
                z=p.T.numpy(),
                x=self.steps,
                y=[f"L{i}" for i in range(len(self.layers))],
                colorscale="Viridis",
                zmin=0,
                zmax=1,
                colorbar={"title": "p(final)"},
            )
        )
        fig.update_layout(xaxis_title="denoising step", yaxis_title="layer (resid_post)", height=360)
        return fig


def logit_lens(
    trace: Trace, readout: Readout, layers: Sequence[str] | None = None, position: int | None = None
) -> LogitLens:
    """Apply ``readout`` to every recorded residual ``layers`` (default: all ``blocks.*.hook_resid_post``).

    ``position``: read only that sequence position at each step (``probs [steps, layers, B, 1, V]``; -1 the
    last). Needed where the residual's length changes across steps: a ``generate()`` trace with a KV cache
    records the prompt at step 0 and then one new token per step, and ``position=-1`` reads, at every step,
    what the model predicts next."""
    layers = list(layers) if layers is not None else residual_names(trace)
    if not layers:
        raise InterpError("the trace has no blocks.*.hook_resid_post: capture them to use the logit lens")
    steps = trace.step_indices(layers[0])
    lengths = sorted({trace[layers[0], s].shape[1] for s in steps}) if position is None else []
    if len(lengths) > 1:
        raise InterpError(
            f"the residuals' length changes across steps ({', '.join(map(str, lengths))} positions: e.g. a "
            "generate() trace with a KV cache); pass position=-1 to read the newest position at each step"
        )

    def read(name: str, step: int) -> torch.Tensor:
        h = trace[name, step].float()
        if position is not None:
            if not -h.shape[1] <= position < h.shape[1]:
                raise InterpError(f"position {position} is outside the {h.shape[1]} positions of {name} at step {step}")
            h = h.narrow(1, position % h.shape[1], 1)
        return readout(h).softmax(-1)

    with torch.no_grad():
        probs = torch.stack([torch.stack([read(name, s) for name in layers]) for s in steps])
    return LogitLens(probs=probs, layers=layers, steps=steps)


def answer_logit_lens(
    method, prompt: torch.Tensor, sampler, seed: int = 0
) -> tuple[LogitLens, torch.Tensor, torch.Tensor]:
    """Run ``sampler`` on ``prompt [B, P]`` while recording every ``blocks.*.hook_resid_post``, and read
    it through the model's own unembedding. Returns the lens, the final tokens ``[B, L]`` and
    ``[steps, layers]``: the final answer token's probability averaged over answer positions and problems."""
    from interp.hooks import attach
    from interp.samplers import sample_steps

    trace = attach(method).trace(
        lambda: sample_steps(method, prompt, sampler, torch.Generator().manual_seed(seed)),
        capture="blocks.*.hook_resid_post",
    )
    lens = logit_lens(trace, default_readout(method.model))
    final = trace.state("tokens")[-1]
    records = trace.records()
    if records and hasattr(records[0], "start"):  # DiffusionGemma: the decoder reads the canvas of its step
        C = lens.probs.shape[3]
        targets = torch.stack([final[:, r.start : r.start + C] for r in records])
        return lens, final, lens.mean_final_prob(targets, range(C))
    return lens, final, lens.mean_final_prob(final, range(prompt.shape[1], final.shape[1]))
