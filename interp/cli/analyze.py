"""Commands over language-model analyses and probes: ``analyze``, ``depth``, ``probe noise``. Each
checks that the checkpoint's method offers what the analysis needs (a protocol), not its kind."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from interp.cli.common import AsJson, Checkpoint, InterpGroup, Seed, emit, fail, load

ANALYSES = ("revisions", "smearing", "intermediate-context", "logit-lens", "schedule-ordering")
SamplerName = Annotated[str | None, typer.Option("--sampler", help="Sampler name (default: the method's).")]
Steps = Annotated[
    int | None, typer.Option("--steps", min=1, max=10**5, help="Denoising steps (default: one per answer token).")
]


def _token_sampler(method, sampler, steps, temperature=None, block_length=None, entropy_bound=None, renoise=None):
    """The checkpoint's default sampler (e.g. a DiffusionGemma's own steps and entropy bound), or ``sampler``
    with the sampler defaults, with every option the user gave put over it."""
    from interp.samplers import SamplerConfig

    default = method.spec.default_sampler(method)
    base = default if sampler in (None, default.name) else SamplerConfig(name=sampler)
    given = {"steps": steps, "temperature": temperature, "block_length": block_length,
             "entropy_bound": entropy_bound, "renoise": renoise}  # fmt: skip
    return base.replace(**{k: v for k, v in given.items() if v is not None})


def register(app: typer.Typer) -> None:
    @app.command()
    def analyze(
        analysis: Annotated[str, typer.Argument(help=" | ".join(ANALYSES))],
        checkpoint: Checkpoint,
        n: Annotated[int, typer.Option(min=1, max=10**6, help="Held-out problems.")] = 200,
        sampler: SamplerName = None,
        steps: Steps = None,
        temperature: Annotated[float | None, typer.Option(help="Default: the sampler's (0: argmax).")] = None,
        block_length: Annotated[int | None, typer.Option(help="llada blocks. Default: the sampler's.")] = None,
        entropy_bound: Annotated[
            float | None, typer.Option(help="Acceptance bound in nats. Default: the checkpoint's sampler's.")
        ] = None,
        renoise: Annotated[str | None, typer.Option(help="uniform | mask (entropy). Default: uniform.")] = None,
        span: Annotated[int, typer.Option(help="Span length for sequence smearing.")] = 1,
        seed: Seed = 0,
        as_json: AsJson = False,
    ) -> None:
        """Headline numbers of one analysis of a diffusion LM's sampling runs, or (schedule-ordering) the
        order in which an LWD model denoises its representation spaces."""
        from interp.analyses.revisions import revisions
        from interp.analyses.runs import sample_task
        from interp.analyses.smearing import smearing
        from interp.protocols import TokenDenoiser

        if analysis not in ANALYSES:
            fail(f"unknown analysis {analysis!r}; known: {', '.join(ANALYSES)}")
        if n < 1:
            fail(f"--n must be >= 1, got {n}")
        if analysis == "schedule-ordering":
            _schedule_ordering(checkpoint, n, sampler, steps, seed, as_json)
            return
        method = load(checkpoint, TokenDenoiser, "a masked-diffusion language model")
        cfg = _token_sampler(method, sampler, steps, temperature, block_length, entropy_bound, renoise)
        if analysis == "intermediate-context":
            from interp.analyses.intermediate_context import intermediate_context

            ids = method.encode_prompts([p for p, _ in method.heldout(n, seed)])
            summary = intermediate_context(method, ids, cfg, seed=seed).summary()
        elif analysis == "logit-lens":
            summary = _logit_lens_summary(method, n, seed, cfg)
        else:
            run = sample_task(method, n, seed, cfg)
            if analysis == "revisions":
                summary = revisions(run.steps, run.prompt_len).summary()
            else:
                summary = smearing(run.steps, run.prompt_len, span=span).summary()
        payload = {
            "analysis": analysis,
            "checkpoint": str(checkpoint),
            "sampler": cfg.name,
            "steps": cfg.steps or method.answer_len_for(len(method.heldout(1, seed)[0][0])),
            "sampler_config": cfg.to_dict(),
            "n": n,
            "seed": seed,
            **summary,
        }
        emit(payload, as_json, "\n".join(f"{k}: {v}" for k, v in payload.items()))

    @app.command()
    def depth(
        checkpoint: Annotated[Path | None, typer.Option("--checkpoint", "-c", help="Checkpoint folder.")] = None,
        hf_config: Annotated[Path | None, typer.Option(help="A transformers config.json (no weights needed).")] = None,
        seq_len: Annotated[int | None, typer.Option(help="Sequence length for --hf-config.")] = None,
        generate: Annotated[bool, typer.Option(help="Count a whole generation, not one forward pass.")] = False,
        steps: Steps = None,
        length: Annotated[int | None, typer.Option(help="Tokens to generate (default: the task's answer).")] = None,
        sampler: SamplerName = None,
        baseline: Annotated[Path | None, typer.Option(help="AR checkpoint: also report the ratio to it.")] = None,
        baseline_hf_config: Annotated[
            Path | None,
            typer.Option(help="An AR transformers config (Gemma 4): with --hf-config, the ratio to its generation."),
        ] = None,
        bottleneck: Annotated[
            str, typer.Option(help="DiffusionGemma: carry the logits (none) or their topk / topp (the bottleneck).")
        ] = "none",
        top_k: Annotated[int, typer.Option(min=1, max=10**7, help="k of the topk bottleneck.")] = 8,
        top_p: Annotated[float, typer.Option(help="p of the topp bottleneck.")] = 0.9,
        canvas_length: Annotated[
            int | None, typer.Option(min=1, max=10**7, help="DiffusionGemma: must be the config's canvas_length.")
        ] = None,
        canvases: Annotated[int, typer.Option(min=1, max=10**4, help="DiffusionGemma: canvases to generate.")] = 1,
        seed: Seed = 0,
        as_json: AsJson = False,
    ) -> None:
        """Serial depth and opaque serial depth of a checkpoint (forward or whole generation) or of a
        transformers architecture from its config alone (a DiffusionGemma folder counts from its config).
        With --hf-config and --generate, a DiffusionGemma config counts a generation (--seq-len prompt
        tokens, --steps denoising steps per canvas, default 48) and an AR config a KV-cache generation of
        --length tokens; --baseline-hf-config adds the ratio to an AR config's generation of as many tokens."""
        import torch

        from interp.analyses.serial_depth import count, generation_depth

        if (checkpoint is None) == (hf_config is None):
            fail("give exactly one of --checkpoint or --hf-config")
        config, loaded = None, None
        if checkpoint is not None:
            from interp.checkpoints import foreign_config

            config = foreign_config(checkpoint)  # a transformers folder: counted from its config, weights unread
            if config is None:
                loaded = load(checkpoint)
                if not hasattr(loaded.model, "cfg") and hasattr(loaded.model, "config"):
                    config = loaded.model.config  # a transformers architecture trained here: counted the same way
        if hf_config is not None:
            config = _read_hf_config(hf_config)
        if config is not None:
            if baseline is not None:
                fail("--baseline takes our AR checkpoints; against a transformers config use --baseline-hf-config")
            if seq_len is None:
                fail("counting a transformers config needs --seq-len (with --generate: the prompt length)")
            result = _hf_depth(
                config, seq_len, generate, steps, length, bottleneck, top_k, top_p, canvas_length, canvases
            )
            if baseline_hf_config is not None:
                from interp.analyses.serial_depth import ar_generation_depth

                tokens = result.meta.get("canvases", 1) * result.meta.get("canvas_length", 0) or result.meta.get(
                    "new_tokens", length or 1
                )
                ar = ar_generation_depth(_read_hf_config(baseline_hf_config), seq_len, tokens)
                result.meta["baseline_opaque_serial_depth"] = ar.opaque_serial_depth
                result.meta["baseline_architecture"] = ar.meta["architecture"]
                result.meta["opaque_ratio_to_baseline"] = result.opaque_serial_depth / max(1, ar.opaque_serial_depth)
        elif baseline_hf_config is not None:
            fail("--baseline-hf-config goes with --hf-config (or a transformers folder); use --baseline here")
        else:
            from interp.data import problems
            from interp.methods.lm import LanguageModelMethod

            if not isinstance(loaded, LanguageModelMethod):
                fail(f"this command needs a language model; checkpoint {checkpoint} is of kind {loaded.kind!r}")
            method = loaded
            prompt = (
                [problems(method.cfg.task_config, "heldout", 1, seed)[0][0]]
                if method.cfg.task != "shakespeare"
                else ["T"]
            )
            ids = method.encode_prompts(prompt)
            answer_len = length if length is not None else method.answer_len_for(ids.shape[1])
            if answer_len < 1 or ids.shape[1] + answer_len > method.model.cfg.n_ctx:
                fail(f"--length must be 1..{method.answer_len_for(ids.shape[1])} for this checkpoint's context")
            if generate:
                cfg = _token_sampler(method, sampler, steps)
                result = generation_depth(method, ids, cfg, seed=seed, answer_len=answer_len)
            else:
                canvas = torch.cat([ids, torch.full((1, answer_len), method.tokenizer.mask_id)], 1)
                result = count(lambda: method.model(canvas), {"": method.model}, kind=method.kind)
            if baseline is not None:
                from interp.methods import AutoregressiveLM
                from interp.samplers import SamplerConfig

                base = load(baseline, AutoregressiveLM, "an autoregressive baseline")
                ar = generation_depth(
                    base, base.encode_prompts(prompt), SamplerConfig(name="ar"), seed=seed, answer_len=answer_len
                )
                result.meta["baseline_opaque_serial_depth"] = ar.opaque_serial_depth
                result.meta["opaque_ratio_to_baseline"] = result.opaque_serial_depth / max(1, ar.opaque_serial_depth)
        payload = result.to_dict()
        text = (
            f"serial depth {result.serial_depth}, opaque serial depth {result.opaque_serial_depth} ({result.n_ops} ops)"
        )
        if "bottleneck" in result.meta:
            text += f"; {result.meta['steps']} steps per canvas, carry {result.meta['bottleneck']}"
        if "opaque_ratio_to_baseline" in result.meta:
            text += f"; opaque ratio to AR baseline {result.meta['opaque_ratio_to_baseline']:.3f}"
        emit(payload, as_json, text)

    probe_app = typer.Typer(cls=InterpGroup, no_args_is_help=True, help="Probes of what a model's activations encode.")
    app.add_typer(probe_app, name="probe")

    @probe_app.command("noise")
    def probe_noise(
        checkpoint: Checkpoint,
        n: Annotated[int, typer.Option(min=2, max=10**6, help="Noisy examples per split.")] = 1000,
        capture: Annotated[
            str, typer.Option(help="Activations to probe (a pattern: * within one segment, ** across dots).")
        ] = "",
        seed: Seed = 0,
        as_json: AsJson = False,
    ) -> None:
        """How well the noise level t can be read from the corrupted input and from each layer, without a timestep."""
        from interp.analyses.noise_probes import probe_input, probe_layers
        from interp.protocols import ContinuousDenoiser

        if n < 2:
            fail(f"--n must be >= 2, got {n}")
        method = load(checkpoint, ContinuousDenoiser, "a continuous (image) denoiser")
        train, _ = method.data("train")
        test, _ = method.data("heldout")
        pattern = capture or method.layer_sites
        rows = probe_input(train, test, method.process, n=n, seed=seed)
        rows += probe_layers(method, train, test, pattern, n=n, seed=seed)
        payload = {
            "checkpoint": str(checkpoint),
            "time_conditioning": method.cfg.time_conditioning,
            "n": n,
            "seed": seed,
            "probes": [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()} for r in rows],
        }
        text = "\n".join(
            f"{r['source']:28s} {r['probe']:12s} R2 {r['r2']:.3f}  rel.err {r['rel_error']:.3f}" for r in rows
        )
        emit(payload, as_json, text)


def _read_hf_config(path: Path):
    """A transformers config (a config.json, or a folder holding one), read offline; one error line if not."""
    import transformers

    try:
        return transformers.AutoConfig.from_pretrained(str(path), local_files_only=True)
    except Exception as exc:  # transformers raises many kinds for a file it cannot read
        first = str(exc).splitlines()[0] if str(exc) else ""
        fail(f"{path}: not a usable transformers config ({type(exc).__name__}: {first})")


def _hf_depth(config, seq_len, generate, steps, length, bottleneck, top_k, top_p, canvas_length, canvases):
    """Depth of a transformers config on meta tensors: one forward (a DiffusionGemma: one denoising step), or
    with ``generate`` a DiffusionGemma generation / an AR KV-cache generation."""
    from interp.analyses.serial_depth import (
        ar_generation_depth,
        diffusion_gemma_depth,
        hf_config_depth,
        is_diffusion_gemma_config,
    )

    if is_diffusion_gemma_config(config):
        return diffusion_gemma_depth(
            config,
            prompt_len=seq_len,
            steps=(steps or 48) if generate else 1,
            bottleneck=bottleneck,
            k=top_k,
            p=top_p,
            canvases=canvases if generate else 1,
            canvas_length=canvas_length,
        )
    if bottleneck != "none" or canvas_length is not None or canvases != 1:
        fail("--bottleneck, --canvas-length and --canvases apply to DiffusionGemma configs only")
    if generate:
        return ar_generation_depth(config, seq_len, length or 1)
    return hf_config_depth(config, seq_len)


def _schedule_ordering(checkpoint: Path, n: int, sampler: str | None, steps: int | None, seed: int, as_json: bool):
    from interp.analyses.schedule_ordering import schedule_ordering
    from interp.protocols import ScheduledDenoiser

    method = load(checkpoint, ScheduledDenoiser, "a multi-space (LWD) model")
    default = method.spec.default_sampler(method)
    cfg = default.replace(name=sampler or default.name, steps=steps or default.steps)
    result = schedule_ordering(method, n=n, sampler=cfg, seed=seed)
    summary = {"analysis": "schedule-ordering", "checkpoint": str(checkpoint), "sampler": cfg.name, **result.summary()}
    crossing = result.summary()["crossing_tau"]
    lines = [f"schedule {result.schedule}; spaces clean in the order {' > '.join(result.order())}"]
    lines += [f"  {name}: reaches t = 0.9 / 0.5 / 0.1 at tau = {' / '.join(str(v) for v in crossing[name].values())}; "
              f"its estimate shows the final class from tau = {summary['decided_tau'][name]}" for name in result.names]  # fmt: skip
    emit(summary, as_json, "\n".join(lines))


def _logit_lens_summary(method, n: int, seed: int, cfg) -> dict:
    """Probability of the final answer token per layer, at the first and the last step."""
    from interp.analyses import answer_logit_lens

    ids = method.encode_prompts([p for p, _ in method.heldout(n, seed)])
    lens, _, p = answer_logit_lens(method, ids, cfg, seed)
    return {
        "layers": lens.layers,
        "final_token_prob_first_step": [round(float(x), 4) for x in p[0]],
        "final_token_prob_last_step": [round(float(x), 4) for x in p[-1]],
    }


__all__ = ["ANALYSES", "register"]
