"""DiffusionGemma's own sampler (transformers' ``DiffusionGemmaForBlockDiffusion.generate``), step by step.

``generate()`` writes canvases of ``C = config.canvas_length`` tokens one after the other (block
diffusion). For each canvas the encoder reads the prompt and the earlier canvases into a KV cache,
then up to ``N = max_denoising_steps`` denoising steps run the bidirectional decoder over the canvas:

1. the decoder sees the current canvas and, from the second step on, the previous step's logits
   (self-conditioning: softmax(logits)·E through a small MLP, added to the canvas embeddings);
2. the logits are divided by a temperature falling linearly from ``t_max`` to ``t_min``; a token is
   sampled per position (``torch.multinomial``) and the argmax canvas (the *draft*) is kept;
3. the lowest-entropy positions are accepted while Σ entropy − max entropy ≤ ``entropy_bound``
   (fresh each step: a position accepted before may be dropped), the rest are renoised with uniformly
   random tokens (``torch.randint``);
4. with adaptive stopping, a sample stops once its draft is stable and its mean entropy is low.

The draft of the last step is the canvas's output; a sample whose canvas holds an end token stops,
and its later positions become padding.

:class:`DiffusionGemmaSampler` is the same computation as a step object for
:func:`interp.samplers.loop.run`, with transformers' own pieces (its ``EntropyBoundSampler``,
temperature processor, stopping criteria, cache and mask preparation); it yields one
:class:`GemmaStep` per denoising step of every canvas, and its tokens equal ``generate()``'s for the
same seed and generation config: it draws the same random numbers in the same order (a ``randint``
canvas per canvas, then per step one ``multinomial`` and one ``randint`` renoising).

The token bottleneck (``bottleneck="topk"`` / ``"topp"``): the logits carried to the next step are
replaced by their top-k / top-p, renormalised (the decoder receives log-probabilities, ``-inf`` off the
kept tokens), and marked interpretable (:func:`interp.interpretable.mark_interpretable`): the only
continuous state passed between steps is then a readable list of (token, probability) pairs.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from interp.errors import ConfigError, DataError
from interp.interpretable import mark_interpretable
from interp.samplers.loop import run
from interp.steps import Step, StepContext

BOTTLENECKS = ("none", "topk", "topp")


@dataclass
class GemmaStep(Step):
    """One denoising step of DiffusionGemma. ``B`` batch, ``L`` the whole sequence (prompt, then room for
    every canvas ``generate`` may write; positions not written yet hold ``pad_token_id``, or 0), ``C``
    the canvas length, ``V`` the vocabulary.

    As in :class:`~interp.steps.Step`: ``tokens [B, L]`` the sequence with the current canvas shown as
    its *draft* (the argmax canvas, what ``generate`` outputs at the canvas's last step; at that step the
    canvas is final, padding applied); ``probs [B, L, V]`` the temperature-scaled distribution sampled from
    (zero outside the canvas, or ``[B, L, 0]`` with ``keep_probs=False``); ``confidence [B, L]`` the
    probability of the draft token (1 outside the canvas). ``committed`` / ``renoised`` / ``revised``
    ``[B, L]`` are the sampler's acceptance events on its canvas: accepted now and not at the previous
    step / accepted then and renoised now / accepted at both with a different sampled token. A sample
    that stopped (adaptive stopping, or an end token in an earlier canvas) has none.

    Own fields: ``canvas`` index and ``canvas_step`` (0 = the canvas's first step), ``start`` the first
    position of the canvas in ``L``, ``temperature``, ``entropy [B, C]`` per position (of the
    temperature-scaled distribution, what acceptance ranks by), ``accepted [B, C]`` (positions whose
    sampled token was accepted), ``argmax [B, C]`` the draft, ``canvas_tokens [B, C]`` the sampler's
    canvas after the step (accepted tokens, random tokens elsewhere: the next step's input),
    ``selfcond_in [B, C, V]`` the self-conditioning logits this step's decoder received (None at a
    canvas's first step), ``finished [B]`` samples done denoising this canvas, ``last`` whether this
    step ends the canvas. ``carried``: with a bottleneck, the pairs passed to the next step
    (``{"tokens": [B, C, k], "probs": [B, C, k]}``, probability 0 pads a top-p list), else None (the
    next record's ``selfcond_in`` is the carry)."""

    canvas: int = 0
    canvas_step: int = 0
    start: int = 0
    temperature: float = 1.0
    last: bool = False
    entropy: torch.Tensor | None = None
    accepted: torch.Tensor | None = None
    argmax: torch.Tensor | None = None
    canvas_tokens: torch.Tensor | None = None
    selfcond_in: torch.Tensor | None = None
    finished: torch.Tensor | None = None

    def held_tokens(self) -> torch.Tensor:
        """``[B, L]``: what the next step's decoder reads at accepted positions, the accepted (sampled) token,
        where ``tokens`` shows the argmax draft; at a canvas's last step the draft is final and is what it holds."""
        if self.last:
            return self.tokens
        held = self.tokens.clone()
        window = held[:, self.start : self.start + self.accepted.shape[1]]
        window.copy_(torch.where(self.accepted, self.canvas_tokens, window))
        return held


def bottleneck_logits(
    logits: torch.Tensor, mode: str, k: int = 8, p: float = 0.9
) -> tuple[torch.Tensor, dict[str, torch.Tensor] | None]:
    """The token bottleneck of ``logits [..., V]``: keep the top-``k`` tokens (``mode="topk"``) or the
    smallest set whose probability reaches ``p`` (``"topp"``, at least one token), renormalise. Returns
    the logits to carry (log-probabilities, ``-inf`` off the kept tokens, so that their softmax is the
    renormalised distribution) and the pairs ``{"tokens": [..., k'], "probs": [..., k']}`` (``k'`` = k,
    or the largest top-p set, padded with probability 0); both are marked interpretable. ``"none"``:
    ``(logits, None)``."""
    if mode == "none":
        return logits, None
    probs = logits.softmax(-1, dtype=torch.float32)
    if mode == "topk":
        kept, tokens = probs.topk(min(k, probs.shape[-1]), dim=-1)
        keep = torch.ones_like(kept, dtype=torch.bool)
    elif mode == "topp":
        sorted_probs, order = probs.sort(-1, descending=True)
        before = sorted_probs.cumsum(-1) - sorted_probs  # mass of the tokens ranked above
        keep = before < p
        keep[..., 0] = True
        width = int(keep.sum(-1).max())
        kept, tokens, keep = sorted_probs[..., :width], order[..., :width], keep[..., :width]
    else:
        raise ConfigError(f"bottleneck must be one of {', '.join(BOTTLENECKS)}, got {mode!r}")
    kept = torch.where(keep, kept, 0.0)
    kept = kept / kept.sum(-1, keepdim=True)
    pairs = {"tokens": mark_interpretable(tokens), "probs": mark_interpretable(kept)}
    carried = torch.full_like(logits, float("-inf")).scatter(-1, tokens, kept.log().to(logits.dtype))
    return mark_interpretable(carried), pairs


class DiffusionGemmaSampler:
    """``DiffusionGemmaForBlockDiffusion.generate(input_ids, ...)`` as a step sampler (see the module
    docstring); drive it with :func:`interp.samplers.loop.run` (or :func:`sample_diffusion_gemma`).

    ``input_ids [B, P]`` the prompt; ``generation_config`` and ``**generation`` (``max_new_tokens``,
    ``max_denoising_steps``, ``t_min``, ``t_max``, ``sampler_config``, ``stability_threshold``,
    ``confidence_threshold``, ``eos_token_id``, ``pad_token_id``, ...; ``attention_mask [B, P]``) as for
    ``generate``; ``logits_processor`` as for ``generate``. ``seed``: draw from a private random stream
    seeded as ``torch.manual_seed(seed)`` would seed the global one (the tokens then equal
    ``torch.manual_seed(seed); model.generate(...)``, and code running between steps does not disturb
    them); None draws from the global stream, as ``generate`` does. ``canvas_length``, if given, must be
    the model's. ``bottleneck`` ``none`` | ``topk`` (``k``) | ``topp`` (``p``): the token bottleneck on the
    carried self-conditioning logits. ``keep_probs`` False leaves ``probs`` empty (``[B, L, 0]``; a real
    vocabulary makes the full ``[B, L, V]`` large). ``edit(step, tokens [B, L], decided [B, L]) -> (tokens,
    decided)`` changes, after each step, the canvas the next step sees (``tokens``: the sequence with that
    canvas, accepted tokens and random ones elsewhere; ``decided``: the accepted positions): a changed token is
    what the decoder reads next, and a position set undecided counts as renoised. Its draws must not come from
    the sampler's random stream (they do not, with ``seed`` set), so an edited run keeps the plain run's draws.

    After the run, :attr:`sequences` ``[B, P + n·C]`` is what ``generate(...).sequences`` returns and
    :attr:`forward_passes` ``[B]`` its decoder-pass count. Caches that ``generate`` would compile (static)
    run uncompiled here."""

    def __init__(
        self,
        model: Any,
        input_ids: torch.Tensor,
        generation_config: Any = None,
        *,
        seed: int | None = None,
        canvas_length: int | None = None,
        bottleneck: str = "none",
        k: int = 8,
        p: float = 0.9,
        keep_probs: bool = True,
        logits_processor: Any = None,
        edit: Any = None,
        **generation: Any,
    ):
        config = getattr(model, "config", None)
        model_type = getattr(config, "model_type", None)
        if model_type != "diffusion_gemma" or not hasattr(model, "_prepare_denoiser_inputs"):
            raise ConfigError(
                f"the DiffusionGemma sampler needs a transformers DiffusionGemmaForBlockDiffusion; got "
                f"{type(model).__name__} (model_type {model_type!r})"
            )
        C = config.canvas_length
        if canvas_length is not None and canvas_length != C:
            raise DataError(
                f"canvas length {canvas_length} is not this model's: its config sets canvas_length={C} "
                "(positions and attention masks are built for it)"
            )
        if not isinstance(C, int) or C < 1:
            raise DataError(f"config.canvas_length must be a positive integer, got {C!r}")
        if bottleneck not in BOTTLENECKS:
            raise ConfigError(f"bottleneck must be one of {', '.join(BOTTLENECKS)}, got {bottleneck!r}")
        V = config.text_config.vocab_size
        if bottleneck == "topk" and not (isinstance(k, int) and 1 <= k <= V):
            raise ConfigError(f"top-k bottleneck: k must be an integer in 1..{V}, got {k!r}")
        if bottleneck == "topp" and not (isinstance(p, (int, float)) and 0 < p <= 1):
            raise ConfigError(f"top-p bottleneck: p must be in (0, 1], got {p!r}")
        if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2 or input_ids.shape[1] == 0:
            raise DataError(f"input_ids must be a [batch, prompt length] tensor with a prompt, got {input_ids!r}")
        if input_ids.dtype not in (torch.int32, torch.int64) or input_ids.min() < 0 or input_ids.max() >= V:
            raise DataError(f"input_ids must be token ids in 0..{V - 1}")
        try:
            gen_config, model_kwargs = model._prepare_generation_config(generation_config, **generation)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"DiffusionGemma generation config: {exc}") from exc
        unknown = sorted(set(model_kwargs) - {"attention_mask"})
        if unknown:
            raise ConfigError(f"unsupported generate() arguments for the step-wise sampler: {', '.join(unknown)}")
        B, P = input_ids.shape
        self.model, self.config, self.gen, self.C, self.V, self.B, self.P = model, config, gen_config, C, V, B, P
        self.bottleneck, self.k, self.p, self.keep_probs, self.seed = bottleneck, k, p, keep_probs, seed
        self.edit = edit
        self.max_length, max_new_tokens = model._prepare_generated_length(gen_config, P)
        self.n_canvases = math.ceil(max_new_tokens / C)
        self.N = gen_config.max_denoising_steps
        self.L = P + self.n_canvases * C
        limit = getattr(config.text_config, "max_position_embeddings", None)
        if limit is not None and self.L > limit:
            raise DataError(
                f"prompt ({P}) + {self.n_canvases} canvases of {C} = {self.L} positions exceed the model's "
                f"max_position_embeddings ({limit})"
            )
        self.fill = gen_config.pad_token_id if gen_config.pad_token_id is not None else 0
        self.device = input_ids.device
        attention_mask = model_kwargs.pop("attention_mask", None)
        self.attention_mask = (
            attention_mask.bool() if attention_mask is not None else torch.ones(B, P, dtype=torch.bool)
        ).to(self.device)
        self.decoder_attention_mask = torch.nn.functional.pad(self.attention_mask, (0, C), value=True)
        self.input_ids = input_ids
        self.cache = model._prepare_cache_for_generation(gen_config, B, self.max_length)
        self.eos = (
            torch.tensor(gen_config.eos_token_id, device=self.device) if gen_config.eos_token_id is not None else None
        )
        self.sampler = model._prepare_sampler(gen_config)
        self.logits_processor = model._prepare_logits_processor(gen_config, logits_processor)
        self.stopping = model._prepare_ar_stopping_criteria(gen_config, None)
        self.adaptive = model._prepare_diffusion_stopping_criteria(gen_config)
        self.cur_len = P
        self.encoder_position_ids = torch.arange(0, P, dtype=torch.int32, device=self.device).unsqueeze(0)
        self.decoder_position_ids = torch.arange(P, P + C, dtype=torch.int32, device=self.device).unsqueeze(0)
        self.finished_sequences = torch.zeros(B, dtype=torch.bool, device=self.device)
        self.forward_passes = torch.zeros(B, dtype=torch.int, device=self.device)
        self.canvas, self.canvas_step, self.done, self.is_prefill = 0, 0, False, True
        self._rng: dict[str, Any] | None = None

    # --- the loop's interface -------------------------------------------------------------------
    def schedule(self) -> Iterator[tuple[float, float]]:
        """``(t, s)`` per step, produced lazily (adaptive stopping ends a canvas early): at step ``n`` of
        ``N`` of a canvas, ``t = (N − n) / N`` and ``s = (N − n − 1) / N`` (1 at a canvas's random start)."""
        while not self.done:
            remaining = self.N - self.canvas_step
            yield remaining / self.N, (remaining - 1) / self.N

    @property
    def sequences(self) -> torch.Tensor:
        """``[B, P + n·C]``: the prompt and the canvases written so far (``generate(...).sequences``)."""
        return self.input_ids

    def step(self, ctx: StepContext) -> GemmaStep:
        if self.done:
            raise RuntimeError("the DiffusionGemma sampler has finished")
        with self._random_stream():
            return self._step(ctx)

    # --- internals ------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _random_stream(self) -> Iterator[None]:
        """The random stream the step draws from: the global one (seed None), or a private one seeded as
        ``torch.manual_seed(seed)`` seeds the global stream, resumed where the last step left it."""
        if self.seed is None:
            yield
            return
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            if self._rng is None:
                torch.manual_seed(self.seed)
            else:
                torch.set_rng_state(self._rng["cpu"])
                if devices:
                    torch.cuda.set_rng_state(self._rng["cuda"], self.device)
            try:
                yield
            finally:
                self._rng = {"cpu": torch.get_rng_state()}
                if devices:
                    self._rng["cuda"] = torch.cuda.get_rng_state(self.device)

    def _start_canvas(self) -> None:
        """Encode what is new since the last canvas into the cache; draw the random starting canvas."""
        model = self.model
        unprocessed, encoder_masks = model._prepare_encoder_inputs(
            input_ids=self.input_ids,
            attention_mask=self.attention_mask,
            encoder_position_ids=self.encoder_position_ids,
            cache=self.cache,
            is_prefill=self.is_prefill,
            canvas_length=self.C,
            batch_size=self.B,
        )
        out = model.model.encoder(
            input_ids=unprocessed,
            attention_mask=encoder_masks,
            cache=self.cache,
            position_ids=self.encoder_position_ids,
        )
        self.cache, self.is_prefill = out.cache, False
        self.current, self.carry, self.masks, self.finished = model._prepare_denoiser_inputs(
            decoder_attention_mask=self.decoder_attention_mask,
            cache=self.cache,
            sampler=self.sampler,
            diffusion_stopping_criteria=self.adaptive,
            batch_size=self.B,
            device=self.device,
            model_kwargs={},
        )
        self.draft = self.current
        self.logits = None  # the previous step's processed logits (what adaptive stopping freezes)
        self.was_accepted = torch.zeros(self.B, self.C, dtype=torch.bool, device=self.device)

    def _temperature(self, cur_step: torch.Tensor) -> float:
        from transformers.models.diffusion_gemma.generation_diffusion_gemma import (
            LinearTemperatureScheduleLogitsProcessor,
        )

        temperature = 1.0
        for proc in self.logits_processor:
            if isinstance(proc, LinearTemperatureScheduleLogitsProcessor):
                temperature *= float(proc.t_min + (proc.t_max - proc.t_min) * (cur_step / proc.max_denoising_steps))
        return temperature

    def _step(self, ctx: StepContext) -> GemmaStep:
        model, B, C, V = self.model, self.B, self.C, self.V
        if self.canvas_step == 0:
            self._start_canvas()
        # as generate's _denoising_step: the step counter runs N..1, as an int32 tensor
        cur_step = torch.tensor(self.N - self.canvas_step, device=self.device, dtype=torch.int32)
        active = ~(self.finished | self.finished_sequences)
        self.forward_passes += active
        selfcond_in = self.carry
        raw = model(
            decoder_input_ids=self.current,
            self_conditioning_logits=self.carry,
            decoder_attention_mask=self.masks,
            cache=self.cache,
            decoder_position_ids=self.decoder_position_ids,
        ).logits
        processed = self.logits_processor(self.input_ids, raw, cur_step=cur_step)
        probs = torch.softmax(processed, dim=-1, dtype=torch.float32)
        sampled = torch.multinomial(probs.view(-1, V), num_samples=1).squeeze(-1).view(B, C)
        argmax = torch.argmax(processed, dim=-1)
        accepted_canvas = self.sampler.accept_canvas(self.current, sampled, processed, cur_step).clone()
        accepted = self.sampler.accepted_token_mask.clone()
        new_current = self.sampler.renoise_canvas(accepted_canvas, cur_step).clone()
        frozen = self.finished.clone()
        if self.adaptive is not None:
            if frozen.any():
                argmax = torch.where(frozen[:, None], self.draft, argmax)
                new_current = torch.where(frozen[:, None], self.current, new_current)
                processed = torch.where(frozen[:, None, None], self.logits, processed)
                probs = torch.softmax(processed, dim=-1, dtype=torch.float32)  # what the record shows
            self.finished = self.finished | self.adaptive(argmax, processed)
        start = self.P + self.canvas * C
        if self.edit is not None:
            new_current, accepted = self._edited(ctx.index, start, new_current, accepted)
        carry, pairs = bottleneck_logits(processed, self.bottleneck, self.k, self.p)
        if self.bottleneck != "none" and frozen.any():
            carry = torch.where(frozen[:, None, None], self.carry, carry)
        dtype = model.model.decoder.embed_tokens.weight.dtype

        # the sampler's acceptance events (none for samples that stopped)
        live = active & ~frozen
        committed = accepted & ~self.was_accepted & live[:, None]
        renoised = self.was_accepted & ~accepted & live[:, None]
        revised = self.was_accepted & accepted & (sampled != self.current) & live[:, None]
        entropy = torch.distributions.Categorical(logits=processed).entropy()
        self.was_accepted = torch.where(live[:, None], accepted, self.was_accepted)
        self.current, self.draft, self.logits, self.carry = new_current, argmax, processed, carry.to(dtype)
        record_canvas, record_step = self.canvas, self.canvas_step
        self.canvas_step += 1
        last = bool(torch.all(self.finished)) or self.canvas_step == self.N
        if last:
            self._finish_canvas(argmax)
        tokens = torch.full((B, self.L), self.fill, dtype=torch.long, device=self.device)
        tokens[:, : self.input_ids.shape[1]] = self.input_ids
        if not last:
            tokens[:, start : start + C] = argmax
        shown = tokens[:, start : start + C]
        conf = torch.ones(B, self.L, device=self.device)
        conf[:, start : start + C] = probs.gather(-1, shown.clamp(max=V - 1).unsqueeze(-1)).squeeze(-1)
        full_probs = torch.zeros(B, self.L, V if self.keep_probs else 0, device=self.device)
        if self.keep_probs:
            full_probs[:, start : start + C] = probs

        def spread(mask: torch.Tensor) -> torch.Tensor:
            out = torch.zeros(B, self.L, dtype=torch.bool, device=self.device)
            out[:, start : start + C] = mask
            return out

        # what a reader of the run sees passed on: the tokens (an opaque chain ends at them)
        mark_interpretable(self.current)
        return GemmaStep(
            index=ctx.index,
            t=ctx.t,
            s=ctx.s,
            tokens=tokens,
            probs=full_probs,
            confidence=conf,
            committed=spread(committed),
            renoised=spread(renoised),
            revised=spread(revised),
            carried=pairs,
            canvas=record_canvas,
            canvas_step=record_step,
            start=start,
            temperature=self._temperature(cur_step),
            last=last,
            entropy=entropy,
            accepted=accepted,
            argmax=argmax.clone(),
            canvas_tokens=new_current.clone(),
            selfcond_in=selfcond_in,
            finished=self.finished.clone(),
        )

    def _edited(
        self, index: int, start: int, canvas: torch.Tensor, accepted: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``edit(index, tokens [B, L], decided [B, L])`` on the canvas the next step will see (accepted tokens,
        random ones elsewhere) placed in the sequence, and the accepted positions; returns the canvas and
        acceptance ``[B, C]`` it leaves (a position it marks undecided counts as renoised by this step)."""
        C = self.C
        tokens = torch.full((self.B, self.L), self.fill, dtype=torch.long, device=self.device)
        tokens[:, : self.input_ids.shape[1]] = self.input_ids
        tokens[:, start : start + C] = canvas
        decided = torch.zeros(self.B, self.L, dtype=torch.bool, device=self.device)
        decided[:, start : start + C] = accepted
        tokens, decided = self.edit(index, tokens, decided)
        return tokens[:, start : start + C].clone(), decided[:, start : start + C] & accepted

    def _finish_canvas(self, argmax: torch.Tensor) -> None:
        """Append the draft (generate's 1.d–1.f): end tokens finish samples and pad after them; set up
        the next canvas, or end the run."""
        model = self.model
        self.input_ids = torch.cat([self.input_ids, argmax], dim=-1)
        self.input_ids, self.finished_sequences = model._finalize_canvas(
            input_ids=self.input_ids,
            finished_sequences=self.finished_sequences,
            generation_config=self.gen,
            stopping_criteria=self.stopping,
            canvas_length=self.C,
            eos_tensor=self.eos,
        )
        self.canvas += 1
        self.canvas_step = 0
        if torch.all(self.finished_sequences) or self.canvas == self.n_canvases:
            self.done = True
            return
        (
            self.cur_len,
            self.decoder_attention_mask,
            self.attention_mask,
            self.encoder_position_ids,
            self.decoder_position_ids,
        ) = model._prepare_kwargs_for_next_canvas(
            attention_mask=self.attention_mask,
            decoder_attention_mask=self.decoder_attention_mask,
            decoder_position_ids=self.decoder_position_ids,
            canvas_length=self.C,
            cur_len=self.cur_len,
        )


def sample_diffusion_gemma(model: Any, input_ids: torch.Tensor, **options: Any) -> Iterator[GemmaStep]:
    """Run :class:`DiffusionGemmaSampler` (``options`` as its constructor's), one :class:`GemmaStep` per
    denoising step of every canvas. Bad settings are refused here, before the first step."""
    return run(DiffusionGemmaSampler(model, input_ids, **options))


__all__ = ["BOTTLENECKS", "DiffusionGemmaSampler", "GemmaStep", "bottleneck_logits", "sample_diffusion_gemma"]
