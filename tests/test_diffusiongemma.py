"""The real transformers DiffusionGemma (random tiny configs, no hub): its own sampler step by step with
tokens equal to ``generate()``, step records the analyses take, hook names over both stacks that trace
per step, and the token bottleneck on the self-conditioning carry."""

from __future__ import annotations

import copy
import tempfile

import pytest
import torch

from interp.analyses.revisions import revisions
from interp.analyses.smearing import smearing
from interp.errors import ConfigError, DataError
from interp.hooks import Intervention, attach
from interp.interpretable import listening
from interp.methods.diffusion_gemma import TINY_VISION_CONFIG
from interp.samplers import DiffusionGemmaSampler, GemmaStep, run, sample_diffusion_gemma

P, C, V = 5, 8, 64


def tiny_diffusion_gemma(seed: int = 0, sharpen: float = 1.0):
    """A 2-layer DiffusionGemma (MoE 4 experts, top-2; a 1-layer vision tower, or it builds a 167M one),
    canvas of 8. ``sharpen`` scales the decoder's final norm: peaked logits, so the argmax canvas settles
    and stability-based stopping triggers."""
    from transformers import DiffusionGemmaConfig, DiffusionGemmaForBlockDiffusion

    torch.manual_seed(seed)
    config = DiffusionGemmaConfig(
        text_config={
            "vocab_size": V,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "num_key_value_heads": 1,
            "head_dim": 16,
            "global_head_dim": 16,
            "num_experts": 4,
            "top_k_experts": 2,
            "moe_intermediate_size": 16,
            "sliding_window": 8,
            "layer_types": ["sliding_attention", "full_attention"],
        },
        vision_config=dict(TINY_VISION_CONFIG),
        canvas_length=C,
    )
    model = DiffusionGemmaForBlockDiffusion(config).eval()
    with torch.no_grad():
        model.model.decoder.norm.weight.mul_(sharpen)
    return model


@pytest.fixture(scope="module")
def model():
    return tiny_diffusion_gemma()


@pytest.fixture(scope="module")
def sharp():
    return tiny_diffusion_gemma(sharpen=20.0)


@pytest.fixture(scope="module")
def prompt():
    return torch.randint(3, V, (3, P), generator=torch.Generator().manual_seed(0))


def _entropy_bound(bound):
    from transformers.models.diffusion_gemma.generation_diffusion_gemma import EntropyBoundSamplerConfig

    return EntropyBoundSamplerConfig(entropy_bound=bound)


FIXED = {"max_new_tokens": 40, "max_denoising_steps": 5, "eos_token_id": 7, "pad_token_id": 0}
STABLE = {  # adaptive stopping on: stable argmax canvas (samples stop at different steps)
    "max_new_tokens": 24,
    "max_denoising_steps": 10,
    "confidence_threshold": 10.0,
    "stability_threshold": 1,
    "t_min": 0.05,
    "t_max": 0.2,
    "sampler_config": 100.0,
}
CONFIDENT = {"max_new_tokens": 24, "max_denoising_steps": 10, "confidence_threshold": 1.0, "stability_threshold": 0}


def _options(kw):
    kw = dict(kw)
    if "sampler_config" in kw:
        kw["sampler_config"] = _entropy_bound(kw["sampler_config"])
    return kw


@pytest.mark.parametrize(
    ("which", "kw", "stops_early"),
    [("model", FIXED, False), ("sharp", STABLE, True), ("sharp", CONFIDENT, True)],
    ids=["fixed-steps-eos", "adaptive-stable", "adaptive-confident"],
)
def test_tokens_equal_generate(request, prompt, which, kw, stops_early):
    model = request.getfixturevalue(which)
    kw = _options(kw)
    torch.manual_seed(3)
    expected = model.generate(prompt, **kw)
    sampler = DiffusionGemmaSampler(model, prompt, seed=3, **kw)
    steps = list(run(sampler))
    assert torch.equal(sampler.sequences, expected.sequences)
    n = sampler.sequences.shape[1]
    assert torch.equal(steps[-1].tokens[:, :n], expected.sequences)
    valid = (sampler.sequences[:, P:] != kw["pad_token_id"]).sum(-1) if "pad_token_id" in kw else n - P
    assert torch.allclose(valid / sampler.forward_passes, expected.tokens_per_forward)
    ends = [s.canvas_step for s in steps if s.last]
    assert len(ends) == (n - P) // C >= 3, "several canvases"
    if stops_early:
        assert min(ends) < kw["max_denoising_steps"] - 1, "adaptive stopping ended a canvas early"
        assert any(0 < int(s.finished.sum()) < 3 for s in steps), "samples stopped at different steps"
    else:
        assert ends == [kw["max_denoising_steps"] - 1] * len(ends)
    # seed=None draws from the global stream, as generate does
    torch.manual_seed(3)
    unseeded = DiffusionGemmaSampler(model, prompt, **kw)
    list(run(unseeded))
    assert torch.equal(unseeded.sequences, expected.sequences)


def test_private_stream_is_undisturbed_by_code_between_steps(model, prompt):
    plain = DiffusionGemmaSampler(model, prompt, seed=5, **FIXED)
    list(run(plain))
    busy = DiffusionGemmaSampler(model, prompt, seed=5, **FIXED)
    for _ in run(busy):
        torch.rand(7)  # someone else drawing from the global stream
    assert torch.equal(busy.sequences, plain.sequences)
    other = DiffusionGemmaSampler(model, prompt, seed=6, **FIXED)
    list(run(other))
    assert not torch.equal(other.sequences, plain.sequences)


def test_an_edit_reaches_the_next_step_and_keeps_the_random_draws(model, prompt):
    plain = list(sample_diffusion_gemma(model, prompt, seed=2, **FIXED))
    same = list(sample_diffusion_gemma(model, prompt, seed=2, edit=lambda i, t, d: (t, d), **FIXED))
    assert all(torch.equal(a.tokens, b.tokens) for a, b in zip(plain, same, strict=True))

    def change_accepted(i, tokens, decided):
        if i == 1:  # every accepted token replaced, and undecided
            return torch.where(decided, (tokens + 1) % V, tokens), torch.zeros_like(decided)
        return tokens, decided

    edited = list(sample_diffusion_gemma(model, prompt, seed=2, edit=change_accepted, **FIXED))
    accepted = plain[1].accepted
    assert accepted.any() and torch.equal(edited[1].argmax, plain[1].argmax), "the edit follows the step"
    assert torch.equal(edited[1].canvas_tokens, torch.where(accepted, (plain[1].canvas_tokens + 1) % V,
                                                            plain[1].canvas_tokens))  # fmt: skip
    assert not edited[1].committed.any() and torch.equal(edited[1].renoised[:, P : P + C], plain[0].accepted)
    assert not torch.equal(edited[2].entropy, plain[2].entropy), "the next step's decoder read the edited canvas"
    random_both = ~plain[2].accepted & ~edited[2].accepted
    assert torch.equal(edited[2].canvas_tokens[random_both], plain[2].canvas_tokens[random_both]), "same draws"


def test_logit_lens_steering_and_patching_run_on_its_sampler(sharp, prompt):
    """The decoder's residuals read through its final norm, lm_head and soft-capping: the last layer's lens
    is the model's own logits at every step; steering and patching at a step act from that step on."""
    from interp.analyses.logit_lens import default_readout, logit_lens
    from interp.hooks import steering
    from interp.hooks.patching import patch_grid

    model = sharp  # logits of several units: the soft-capping (c = 30) moves them measurably
    assert model.config.get_text_config().final_logit_softcapping, "the soft-capping is part of what is tested"
    logits = []
    handle = model.register_forward_hook(lambda m, a, out: logits.append(out.logits))
    inst = attach(model)

    def run(seed=4):
        return lambda: sample_diffusion_gemma(model, prompt, seed=seed, **FIXED)

    trace = inst.trace(run(), capture="blocks.*.hook_resid_post")
    handle.remove()
    lens = logit_lens(trace, default_readout(model))
    assert lens.probs.shape == (len(logits), 2, 3, C, V)
    assert torch.allclose(lens.probs[:, -1], torch.stack(logits).softmax(-1), atol=1e-5)
    plain = trace.records()
    steered = inst.run(run(), [steering("blocks.1.hook_resid_post", torch.randn(32) * 50, steps=[3])])
    assert torch.equal(steered[2].argmax, plain[2].argmax) and not torch.equal(steered[3].argmax, plain[3].argmax)

    def drafts_agree(steps):  # with the clean run's draft at step 3
        return float((steps[3].argmax == plain[3].argmax).float().mean())

    grid = patch_grid(inst, run(), run(seed=5), "blocks.1.hook_resid_post", [2, 3], drafts_agree)
    by_step = grid.set_index("step")["normalised"]
    assert by_step[3] == pytest.approx(1.0) and abs(by_step[2]) < 1, "patching step 3 restores step 3's draft"


def test_held_tokens_are_what_the_next_step_reads(model, prompt):
    """Records show the argmax draft; the canvas the next step reads holds the accepted *sampled* tokens (the
    tokens a draft effect undoes), and at a canvas's last step the final draft."""
    steps = list(sample_diffusion_gemma(model, prompt, seed=2, **FIXED))
    step = steps[1]
    held = step.held_tokens()[:, step.start : step.start + C]
    assert torch.equal(held[step.accepted], step.canvas_tokens[step.accepted])
    assert torch.equal(held[~step.accepted], step.argmax[~step.accepted])
    assert (held != step.argmax).any(), "some accepted token is not the argmax here"
    last = next(s for s in steps if s.last)
    assert torch.equal(last.held_tokens(), last.tokens)


def test_step_records(sharp, prompt):
    kw = _options(STABLE)
    steps = list(sample_diffusion_gemma(sharp, prompt, seed=3, **kw))
    N, B = kw["max_denoising_steps"], prompt.shape[0]
    L = P + 3 * C
    assert [s.index for s in steps] == list(range(len(steps)))
    assert all(isinstance(s, GemmaStep) for s in steps)
    previous = None
    for s in steps:
        assert s.tokens.shape == (B, L) and s.probs.shape == (B, L, V) and s.committed.shape == (B, L)
        assert s.entropy.shape == s.accepted.shape == s.argmax.shape == s.canvas_tokens.shape == (B, C)
        assert s.start == P + s.canvas * C
        assert s.t == pytest.approx((N - s.canvas_step) / N) and s.s == pytest.approx(s.t - 1 / N)
        assert s.temperature == pytest.approx(0.05 + 0.15 * (N - s.canvas_step) / N)
        window = slice(s.start, s.start + C)
        if not s.last:
            assert torch.equal(s.tokens[:, window], s.argmax), "the canvas shows its draft"
        assert torch.allclose(s.probs[:, window].sum(-1), torch.ones(B, C), atol=1e-5)
        assert not s.probs[:, : s.start].any() and not s.committed[:, : s.start].any()
        ent = -(s.probs[:, window] * s.probs[:, window].clamp_min(1e-30).log()).sum(-1)
        assert torch.allclose(s.entropy, ent, atol=1e-4)
        live = ~s.finished if previous is None or s.canvas_step == 0 else ~previous.finished
        if s.canvas_step > 0 and previous.finished.any():  # a stopped sample keeps its state
            stopped = previous.finished
            assert torch.equal(s.probs[stopped], previous.probs[stopped])
            assert torch.equal(s.argmax[stopped], previous.argmax[stopped])
            assert torch.equal(s.canvas_tokens[stopped], previous.canvas_tokens[stopped])
        if s.canvas_step == 0:
            assert s.selfcond_in is None
            assert torch.equal(s.committed[:, window], s.accepted)
        else:
            # the carry into this step: the previous step's temperature-scaled logits
            assert torch.allclose(s.selfcond_in.softmax(-1), previous.probs[:, window], atol=1e-6)
            was = previous.accepted
            assert torch.equal(s.committed[:, window], s.accepted & ~was & live[:, None])
            assert torch.equal(s.renoised[:, window], was & ~s.accepted & live[:, None])
            assert not (s.revised[:, window] & ~(was & s.accepted)).any()
            # a revised position holds a new sampled token in the next canvas
            assert not (s.revised[:, window] & (s.canvas_tokens == previous.canvas_tokens)).any()
        assert s.carried is None
        previous = s
    assert sum(int(s.revised.sum()) for s in steps) > 0  # (renoising: entropy bound 100 accepts all here)
    row = steps[1].to_row()
    assert row["record"] == "GemmaStep" and {"canvas", "canvas_step", "temperature", "n_revised"} <= set(row)


def test_existing_analyses_run_on_the_steps_unchanged(model, prompt):
    steps = list(sample_diffusion_gemma(model, prompt, seed=1, max_new_tokens=24, max_denoising_steps=6))
    rev = revisions(steps, P)
    assert rev.first_commit.shape == (3, 3 * C)
    # a position is first committed during its own canvas's steps (or never: the output is the draft)
    canvas_of = (torch.arange(3 * C) // C).expand(3, -1)
    committed = rev.first_commit >= 0
    assert committed.float().mean() > 0.3
    assert torch.equal(rev.first_commit[committed] // 6, canvas_of[committed])
    assert rev.revisions.sum() > 0 and rev.renoisings.sum() > 0 and len(rev.spearman) == 3
    assert torch.equal(rev.tokens[-1], steps[-1].tokens[:, P:])
    smear = smearing(steps, P, n_boot=50)
    assert smear.by_distance.shape == (len(steps), 4) and smear.entropy.shape == (len(steps), 3, 3 * C)
    assert torch.isfinite(smear.by_distance[:, 0]).all()
    assert set(smear.summary()) >= {"neighbour_excess_first", "diagonal_last"}


def test_attach_names_outputs_and_save_pretrained(model, prompt):
    original = copy.deepcopy(model)
    ids = prompt[:2]
    torch.manual_seed(0)
    before = model(input_ids=ids).logits  # encoder + one decoder pass over a random canvas
    inst = attach(model)
    assert attach(model) is inst and inst.kind == "transformers"
    for name in (
        "encoder.blocks.1.hook_resid_post",
        "blocks.0.hook_resid_post",
        "blocks.1.attn.hook_pattern",
        "encoder.blocks.0.attn.hook_pattern",
        "hook_selfcond_in",
        "hook_selfcond_out",
        "blocks.0.router.hook_choice",
        "blocks.0.router.hook_probs",
        "hook_embed",
    ):
        assert name in inst.names
    assert inst.canonical("model.decoder.layers.1") == "blocks.1.hook_resid_post"
    assert inst.canonical("model.encoder.language_model.layers.0") == "encoder.blocks.0.hook_resid_post"
    assert inst.canonical("model.decoder.self_conditioning") == "hook_selfcond_out"
    assert inst.resolve("blocks.*.attn.hook_pattern") == ["blocks.0.attn.hook_pattern", "blocks.1.attn.hook_pattern"]
    torch.manual_seed(0)
    assert torch.equal(model(input_ids=ids).logits, before), "attaching changes nothing"

    def one_pass():
        torch.manual_seed(0)
        return iter([model(input_ids=ids)])

    # interventions on the HookPoint sites flow into the computation; the model is back afterwards
    for edit in (
        Intervention("hook_selfcond_in", "add", 1.0),
        Intervention("blocks.1.attn.hook_pattern", "ablate"),  # (a scale would be normed away)
        Intervention("blocks.0.router.hook_weights", "ablate"),
        Intervention("encoder.blocks.0.router.hook_choice", "replace", 0),
    ):
        edited = inst.run(one_pass, [edit])
        assert (edited[0].logits - before).abs().max() > 1e-2, edit.name
        assert model.config.text_config._attn_implementation == original.config.text_config._attn_implementation
    # capturing patterns runs the model's eager attention: the same function up to float rounding, and an
    # identity edit of the pattern (recomputing the attention output from it) too
    with inst.session(capture="**.hook_pattern") as session:
        torch.manual_seed(0)
        eager = model(input_ids=ids).logits
    assert session.trace["encoder.blocks.0.attn.hook_pattern", 0].shape == (2, 2, P, P)
    assert torch.allclose(eager, before, atol=1e-5)
    same = inst.run(one_pass, [Intervention("blocks.1.attn.hook_pattern", "scale", 1.0)])[0].logits
    assert torch.allclose(same, eager, atol=1e-6)
    torch.manual_seed(0)
    assert torch.equal(model(input_ids=ids).logits, before)
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    folder = tempfile.mkdtemp()
    model.save_pretrained(folder)  # while attached
    inst.detach()
    assert list(model.state_dict()) == list(original.state_dict())
    assert [n for n, _ in model.named_modules()] == [n for n, _ in original.named_modules()]
    model.save_pretrained(tempfile.mkdtemp())
    assert attach(model) is not inst
    attach(model).detach()


def test_trace_of_a_sampling_run_records_every_step(model, prompt):
    kw = {"max_new_tokens": 24, "max_denoising_steps": 4}
    plain = list(sample_diffusion_gemma(model, prompt, seed=2, **kw))
    inst = attach(model)
    capture = [
        "blocks.*.hook_resid_post",
        "encoder.blocks.0.hook_resid_post",
        "hook_selfcond_in",
        "blocks.1.attn.hook_pattern",
        "blocks.1.router.hook_choice",
    ]
    trace = inst.trace(lambda: sample_diffusion_gemma(model, prompt, seed=2, **kw), capture=capture)
    inst.detach()
    n = len(plain)
    assert trace.n_steps == n == 12
    assert torch.equal(trace.state("tokens")[-1], plain[-1].tokens), "tracing does not change the tokens"
    decoder = trace.stack("blocks.1.hook_resid_post")
    assert decoder.shape == (n, 3, C, 32), "one decoder pass per step, each at its own step"
    assert not torch.equal(decoder[1], decoder[2])
    # the encoder runs at the first step of each canvas only, over what is new (prompt, then a canvas)
    first = [s.index for s in plain if s.canvas_step == 0]
    assert first == [0, 4, 8]
    for s in range(n):
        has = ("encoder.blocks.0.hook_resid_post", s) in trace
        assert has == (s in first), s
    assert trace["encoder.blocks.0.hook_resid_post", 0].shape == (3, P, 32)
    assert trace["encoder.blocks.0.hook_resid_post", 4].shape == (3, C, 32)
    assert not trace["hook_selfcond_in", 4].any() and trace["hook_selfcond_in", 5].abs().sum() > 0
    pattern = trace["blocks.1.attn.hook_pattern", 5]  # a full-attention layer (layer 0 slides)
    assert pattern.shape == (3, 2, C, P + 2 * C), "keys: the cached prompt and first canvas, then the canvas"
    assert torch.allclose(pattern.sum(-1), torch.ones(3, 2, C), atol=1e-5)
    assert trace["blocks.1.router.hook_choice", 0].shape == (3 * C, 2)
    records = trace.records()
    assert isinstance(records[0], GemmaStep) and records[5].canvas == 1 and records[5].canvas_step == 1
    assert torch.equal(revisions(records, P).first_commit, revisions(plain, P).first_commit)


def test_bottleneck_is_marked_and_changes_outputs(model, prompt):
    kw = {"max_new_tokens": 16, "max_denoising_steps": 5}
    plain = DiffusionGemmaSampler(model, prompt, seed=4, **kw)
    list(run(plain))
    marked: list[torch.Tensor] = []
    topk = DiffusionGemmaSampler(model, prompt, seed=4, bottleneck="topk", k=2, **kw)
    with listening(marked.append):
        steps = list(run(topk))
    assert not torch.equal(topk.sequences, plain.sequences), "the bottleneck changes the output"
    later = steps[2]
    carried = later.selfcond_in
    assert (carried.isfinite().sum(-1) == 2).all(), "only the top-2 tokens are carried"
    pairs = steps[1].carried
    assert pairs["tokens"].shape == pairs["probs"].shape == (3, C, 2)
    assert torch.allclose(pairs["probs"].sum(-1), torch.ones(3, C))
    assert torch.allclose(carried.softmax(-1).gather(-1, pairs["tokens"]), pairs["probs"], atol=1e-6)
    # what the next decoder receives is a marked tensor: the carried logits themselves
    assert any(m is carried or (m.shape == carried.shape and torch.equal(m, carried)) for m in marked)
    assert any(m.dtype == torch.long and m.shape == (3, C, 2) for m in marked)
    everything = DiffusionGemmaSampler(model, prompt, seed=4, bottleneck="topk", k=V, **kw)
    list(run(everything))
    assert torch.equal(everything.sequences, plain.sequences), "keeping all V tokens is the continuous carry"
    topp = DiffusionGemmaSampler(model, prompt, seed=4, bottleneck="topp", p=0.3, **kw)
    tsteps = list(run(topp))
    kept = tsteps[2].selfcond_in.isfinite().sum(-1)
    assert (kept >= 1).all() and (kept < V).all()
    assert not torch.equal(topp.sequences, plain.sequences)


def test_bad_input_is_refused_with_one_line(model, prompt):
    from transformers import LlamaConfig, LlamaForCausalLM

    llama = LlamaForCausalLM(
        LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
    )
    cases = [
        (ConfigError, "needs a transformers DiffusionGemmaForBlockDiffusion.*'llama'", (llama, prompt), {}),
        (
            DataError,
            "canvas length 12 is not this model's: its config sets canvas_length=8",
            (model, prompt),
            {"canvas_length": 12},
        ),
        (ConfigError, "bottleneck must be one of none, topk, topp", (model, prompt), {"bottleneck": "top3"}),
        (ConfigError, "k must be an integer in 1..64", (model, prompt), {"bottleneck": "topk", "k": 0}),
        (ConfigError, "DiffusionGemma generation config: .*t_max", (model, prompt), {"t_min": 0.9, "t_max": 0.5}),
        (DataError, "token ids in 0..63", (model, prompt + 100), {}),
        (ConfigError, "unsupported generate.. arguments .*pixel_values", (model, prompt), {"pixel_values": 1}),
    ]
    for error, message, args, kw in cases:
        with pytest.raises(error, match=message) as info:
            DiffusionGemmaSampler(*args, **kw)
        assert "\n" not in str(info.value)
