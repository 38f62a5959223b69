"""A small DiffusionGemma trained here (kind ``dgemma``): the real transformers architecture built from our config,
DiffusionGemma's objective (uniform-state corruption, two-pass self-conditioning) through the shared trainer, a
normal checkpoint that reloads exactly, its own sampler, the analyses on free text, the report (also on a
transformers folder), bad input as one error line."""

from __future__ import annotations

import json

import pytest
import torch

from interp import registry
from tests.conftest import TINY_TRAIN_ARGS, error_line, run_cli

TINY = {"d_model": 32, "n_layers": 2, "n_heads": 2, "d_mlp": 64, "d_expert": 16, "train_size": 200}
TINY_ARGS = [*TINY_TRAIN_ARGS, "--d-expert", "16"]


def tiny(**changes):
    spec = registry.spec("dgemma")
    torch.manual_seed(0)
    return spec.method(spec.config(**{**TINY, **changes}))


def batch(method, n=16, seed=0):
    data = method.collate(method.train_dataset(seed)[:n])
    return {k: v[:n] for k, v in data.items()}


def test_it_is_the_transformers_architecture_and_the_kinds_do_not_collide():
    from transformers import DiffusionGemmaForBlockDiffusion

    method = tiny()
    assert type(method.model) is DiffusionGemmaForBlockDiffusion
    assert method.model.config.canvas_length == 4 and method.canvas_length == 4  # addition, 3 digits: 4 answer digits
    assert {"dgemma", "hf_diffusion_gemma"} <= set(registry.kinds())
    assert registry.spec("dgemma").method is not registry.spec("hf_diffusion_gemma").method


def test_loss_falls_on_a_fixed_batch():
    method = tiny()
    prepared = method.prepare(batch(method, 32), torch.Generator().manual_seed(0))
    opt = torch.optim.AdamW(method.model.parameters(), lr=3e-3)
    method.model.train()
    losses = []
    for _ in range(15):
        loss = sum(v.mean() for v in method.loss(method.model, prepared).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.7 * losses[0], losses


def test_corruption_is_uniform_state_with_no_mask_token():
    method = tiny(task="sorting", digits=8)  # canvas of 8
    V = method.vocab_size
    p = method.prepare(batch(method, 512), torch.Generator().manual_seed(1))
    noisy, target, corrupted = p["noisy"], p["target"], p["corrupted"]
    assert torch.equal(noisy[~corrupted], target[~corrupted])  # clean positions are the data
    drawn = noisy[corrupted]
    counts = torch.bincount(drawn, minlength=V).float()
    # every id of the vocabulary, specials included, about equally often: random tokens, not a mask
    assert (counts > 0).all() and counts.max() / counts.min() < 2, counts
    share_mask = float((drawn == method.tokenizer.mask_id).float().mean())
    assert share_mask == pytest.approx(1 / V, abs=0.02)
    # the corruption probability follows t
    assert torch.corrcoef(torch.stack([corrupted.float().mean(1), p["t"]]))[0, 1] > 0.8
    # the prompt goes to the encoder clean
    assert p["context"].shape[1] == 9 and torch.equal(p["context"], batch(method, 512)["input_ids"][:, :9])


def test_the_second_pass_receives_the_first_pass_logits_detached():
    method = tiny(selfcond_train_prob=0.5)
    p = method.prepare(batch(method, 16), torch.Generator().manual_seed(2))
    assert 0 < int(p["use_selfcond"].sum()) < 16
    calls = []

    def before(module, args, kwargs):
        calls.append({"in": dict(kwargs)})

    def after(module, args, kwargs, out):
        calls[-1]["out"] = out.logits

    h1 = method.model.register_forward_pre_hook(before, with_kwargs=True)
    h2 = method.model.register_forward_hook(after, with_kwargs=True)
    try:
        method.model.train()
        loss = sum(v.mean() for v in method.loss(method.model, p).values())
    finally:
        h1.remove()
        h2.remove()
    assert len(calls) == 2
    first, second = calls
    assert first["in"].get("self_conditioning_logits") is None
    carried = second["in"]["self_conditioning_logits"]
    assert torch.equal(carried, first["out"]) and not carried.requires_grad
    assert torch.equal(second["in"]["self_conditioning_mask"], p["use_selfcond"])
    assert second["out"].requires_grad and loss.requires_grad
    # nobody trained with self-conditioning: one pass, nothing carried
    calls.clear()
    p0 = {**p, "use_selfcond": torch.zeros_like(p["use_selfcond"])}
    h = method.model.register_forward_pre_hook(before, with_kwargs=True)
    try:
        method.loss(method.model, p0)
    finally:
        h.remove()
    assert len(calls) == 1 and calls[0]["in"].get("self_conditioning_logits") is None


@pytest.fixture(scope="module")
def addition(tmp_path_factory):
    out = tmp_path_factory.mktemp("dgemma") / "addition"
    run_cli("train", "dgemma", "--steps", "6", "--out", str(out), *TINY_ARGS, check=True)
    return out


@pytest.fixture(scope="module")
def text(tmp_path_factory):
    out = tmp_path_factory.mktemp("dgemma") / "text"
    run_cli(
        "train", "dgemma", "--task", "shakespeare", "--seq-len", "16", "--canvas-length", "4", "--steps", "4",
        "--out", str(out), *TINY_ARGS, check=True,
    )  # fmt: skip
    return out


def test_checkpoint_reloads_exactly_and_samples(addition):
    from safetensors.torch import load_file

    from interp.checkpoints import load_checkpoint
    from interp.samplers import run_to_end, sample_steps

    header = json.loads((addition / "config.json").read_text())
    assert header["kind"] == "dgemma" and header["config"]["d_expert"] == 16
    method = load_checkpoint(addition)
    saved = load_file(str(addition / "model.safetensors"))
    state = method.model.state_dict()
    assert set(saved) == set(state) and all(torch.equal(saved[k], state[k]) for k in saved)
    again = load_checkpoint(addition)
    ids = method.encode_prompts(["123+456=", "999+001="])
    cfg = method.spec.default_sampler(method)
    a, steps = run_to_end(sample_steps(method, ids, cfg, torch.Generator().manual_seed(3)))
    b, _ = run_to_end(sample_steps(again, ids, cfg, torch.Generator().manual_seed(3)))
    assert torch.equal(a, b) and a.shape == (2, 12) and len(steps) == 4  # one canvas, one step per position
    out = run_cli("sample", "-c", str(addition), "--prompt", "123+456=", check=True)
    assert out.stdout.strip().startswith("123+456=") and len(out.stdout.strip()) == 12
    scored = json.loads(run_cli("eval", "-c", str(addition), "--n", "8", "--json", check=True).stdout)
    assert scored["n"] == 8 and 0 <= scored["exact_match"] <= 1


@pytest.mark.parametrize("analysis", ["revisions", "smearing"])
def test_analyses_run_on_free_text(text, analysis):
    out = run_cli("analyze", analysis, "-c", str(text), "--n", "3", "--json", check=True)
    payload = json.loads(out.stdout)
    assert payload["sampler"] == "diffusiongemma" and payload["n"] == 3 and "exact_match" not in payload
    from interp.checkpoints import load_checkpoint

    method = load_checkpoint(text)
    own = method.spec.default_sampler(method).to_dict()
    assert payload["sampler_config"] == own and payload["steps"] == method.default_steps() == 4, "its own sampler"
    assert not method.has_answers and method.answer_len_for(4) == 12  # 3 canvases of 4 after 4 characters
    sampled = json.loads(run_cli("sample", "-c", str(text), "--prompt", "ROME", "--json", check=True).stdout)
    assert len(sampled["outputs"][0]) == 12 and sampled["steps"] == 12  # 3 canvases, 4 steps each


def test_report_on_a_trained_checkpoint_and_on_a_transformers_folder(addition, text, tmp_path):
    from tests.test_diffusiongemma import tiny_diffusion_gemma

    folder = tmp_path / "hf"
    tiny_diffusion_gemma().save_pretrained(folder)
    for name, checkpoint in (("add", addition), ("text", text), ("hf", folder)):
        out = run_cli("report", "-c", str(checkpoint), "--n", "3", "--out", str(tmp_path / f"{name}.html"))
        assert out.returncode == 0, out.stderr
        page = (tmp_path / f"{name}.html").read_text()
        titles = ("Decode order and revisions", "Token smearing", "Intermediate context", "Logit lens across steps",
                  "Entropy and acceptance", "Token bottleneck")  # fmt: skip
        for title in titles:
            assert title in page, (name, title)
        assert ("Held-out exact match" in page) == (name == "add")
        assert ("words of the corpus" in page) == (name == "text")


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--task", "multiplication"], "unknown task 'multiplication'"),
        (["--d-model", "30", "--n-heads", "4"], "not a multiple of n_heads"),
        (["--top-k-experts", "5", "--n-experts", "4"], "top_k_experts"),
        (["--canvas-length", "3"], "canvas_length 3 must divide"),
        (["--n-kv-heads", "3", "--n-heads", "4", "--d-model", "32"], "n_kv_heads 3 must divide"),
    ],
)
def test_bad_input_is_one_error_line(tmp_path, args, fragment):
    out = run_cli("train", "dgemma", "--out", str(tmp_path / "x"), "--steps", "1", "--no-progress", *args)
    error_line(out, fragment)
    assert not (tmp_path / "x").exists()


def test_free_text_has_nothing_to_score(text):
    error_line(run_cli("eval", "-c", str(text), "--n", "2"), "free text")


def test_depth_draft_effects_and_the_logit_lens_run_on_a_trained_dgemma(tmp_path):
    out = tmp_path / "dg"
    run_cli("train", "dgemma", "--steps", "2", "--out", str(out), *TINY_ARGS, check=True)
    depth = run_cli("depth", "-c", str(out), "--seq-len", "8", "--generate", "--steps", "2", "--json", check=True)
    assert json.loads(depth.stdout)["opaque_serial_depth"] > 0
    drafts = run_cli("analyze", "intermediate-context", "-c", str(out), "--n", "4", "--json", check=True)
    summary = json.loads(drafts.stdout)
    assert summary["mode"] == "resample", "no mask token: drafts are undone by random tokens, as it renoises"
    assert summary["n_samples"] == 4
    lens = json.loads(run_cli("analyze", "logit-lens", "-c", str(out), "--n", "2", "--json", check=True).stdout)
    n_layers = TINY_ARGS[TINY_ARGS.index("--n-layers") + 1]
    assert len(lens["layers"]) == len(lens["final_token_prob_last_step"]) == int(n_layers)
    assert all(0 <= p <= 1 for p in lens["final_token_prob_first_step"] + lens["final_token_prob_last_step"])


def test_answer_logit_lens_reads_each_step_against_the_canvas_it_denoises():
    """Multi-canvas text: at the last step of each canvas the draft is the canvas's final text, so there the
    last layer's probability of the final token is its top probability (a lens compared with the wrong
    canvas's tokens would not be)."""
    from interp.analyses import answer_logit_lens

    method = tiny(task="shakespeare", seq_len=16, canvas_length=4)
    ids = method.encode_prompts(["ROME", "KING"])
    cfg = method.spec.default_sampler(method)
    lens, final, p = answer_logit_lens(method, ids, cfg, seed=0)
    assert final.shape == (2, 16) and p.shape == (lens.probs.shape[0], lens.probs.shape[1])
    per_canvas = lens.probs.shape[0] // 3
    for last in range(per_canvas - 1, lens.probs.shape[0], per_canvas):  # 3 canvases of 4 after 4 characters
        assert torch.allclose(p[last, -1], lens.probs[last, -1].max(-1).values.mean(), atol=1e-6), last


def test_drafts_are_the_accepted_tokens_the_decoder_reads_not_the_argmax_it_shows():
    from interp.analyses.intermediate_context import intermediate_context
    from interp.analyses.revisions import decided_after
    from interp.samplers import sample_steps

    method = tiny(task="shakespeare", seq_len=16, canvas_length=4)
    ids = method.encode_prompts(["ROME", "KING", "LORD", "O ME", "WHAT", "LIKE"])
    cfg = method.spec.default_sampler(method)
    result = intermediate_context(method, ids, cfg, seed=0)
    steps = list(sample_steps(method, ids, cfg, torch.Generator().manual_seed(0)))
    final, decided = steps[-1].tokens[:, 4:], decided_after(steps, 4)
    differs_from_shown = 0
    assert len(result.samples) > 0
    for row in result.samples.itertuples():
        held = steps[row.step].held_tokens()[row.sample, 4:]
        expected = (decided[row.step, row.sample] & (held != final[row.sample])).nonzero().flatten().tolist()
        assert row.drafts == expected, row
        shown = steps[row.step].tokens[row.sample, 4:]
        differs_from_shown += (
            expected != (decided[row.step, row.sample] & (shown != final[row.sample])).nonzero().flatten().tolist()
        )
    assert differs_from_shown > 0, "the test must see a case where the two definitions differ"
