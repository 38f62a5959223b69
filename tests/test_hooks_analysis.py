"""Activation patching grid, logit lens across steps × layers, nnsight interop, trace CLI."""

from __future__ import annotations

import json

import pytest
import torch

from interp.analyses import default_readout, logit_lens
from interp.hooks import attach
from interp.hooks.nnsight_backend import nnsight_trace
from interp.hooks.patching import final_logprob, final_match, patch_grid
from interp.samplers import SamplerConfig, sample_steps
from tests.conftest import run_cli, tiny_dlm

STEPS = 4


@pytest.fixture(scope="module")
def lm():
    return tiny_dlm(selfcond="none")


def _run(lm, prompt):
    ids = lm.encode_prompts([prompt])
    return lambda: sample_steps(lm, ids, SamplerConfig(name="mdlm", steps=STEPS), torch.Generator().manual_seed(0))


def test_patch_grid_is_a_tidy_table_with_consistent_endpoints(lm):
    inst = attach(lm)
    clean, corrupt = _run(lm, "123+456="), _run(lm, "923+456=")
    target = list(clean())[-1].tokens[:, 8:]
    metric = final_logprob(target, slice(8, 12))
    df = patch_grid(inst, clean, corrupt, ["hook_embed", "blocks.1.hook_resid_post"], list(range(STEPS)), metric)
    assert list(df.columns) == ["name", "step", "metric", "effect", "normalised"] and len(df) == 2 * STEPS
    assert df.attrs["clean_metric"] == pytest.approx(metric(list(clean())))
    # patching the whole last-layer residual at every position of the last step restores the clean final distribution
    last = df[(df.name == "blocks.1.hook_resid_post") & (df.step == STEPS - 1)].iloc[0]
    assert last.metric == pytest.approx(df.attrs["clean_metric"], abs=1e-5)
    assert final_match(target, slice(8, 12))(list(clean())) == 1.0


def test_logit_lens_last_layer_equals_model_output(lm):
    inst = attach(lm)
    trace = inst.trace(_run(lm, "123+456="), capture="blocks.*.hook_resid_post")
    lens = logit_lens(trace, default_readout(lm.model))
    assert lens.probs.shape == (STEPS, 2, 1, 12, lm.model.cfg.vocab_size)
    # the last layer through the readout is the model's own prediction at each step
    for s in range(STEPS):
        model_probs = lm.model(
            trace.state("tokens")[s - 1]
            if s
            else torch.cat([lm.encode_prompts(["123+456="]), torch.full((1, 4), lm.mask_id)], 1)
        ).softmax(-1)
        assert torch.allclose(lens.probs[s, -1], model_probs, atol=1e-5)
    final = trace.state("tokens")[-1]
    frame = lens.frame(final)
    assert {"step", "layer", "position", "top_token", "top_prob", "final_token_prob"} <= set(frame.columns)
    assert len(lens.figure(final, positions=range(8, 12)).data) == 1


def test_nnsight_backend_matches_ours(lm):
    inst = attach(lm)
    ours = inst.trace(_run(lm, "555+445="), capture="blocks.*.hook_resid_post")
    theirs = nnsight_trace(inst, _run(lm, "555+445="), "blocks.*.hook_resid_post", n_steps=STEPS)
    assert theirs.names == ours.names and theirs.n_steps == STEPS
    for name in ours.names:
        for s in range(STEPS):
            assert torch.equal(theirs[name, s], ours[name, s])


def test_trace_cli_round_trip_and_errors(dlm_checkpoint, tmp_path):
    out = tmp_path / "trace"
    run_cli(
        "trace",
        "-c",
        str(dlm_checkpoint),
        "--out",
        str(out),
        "--capture",
        "blocks.*.hook_resid_post",
        "--steps",
        "4",
        "--capture-steps",
        "0,2-3",
        "--dtype",
        "float16",
        "--ram-budget-mb",
        "0.01",
        "--no-progress",
        check=True,
    )
    info = json.loads(run_cli("trace-info", str(out), "--json", check=True).stdout)
    assert info["captured_steps"] == [0, 2, 3] and info["n_steps"] == 4
    assert info["shapes"]["blocks.1.hook_resid_post"] == [4, 12, 32]
    bad = run_cli(
        "trace", "-c", str(dlm_checkpoint), "--out", str(tmp_path / "bad"), "--capture", "blocks.9.*", "--no-progress"
    )
    assert bad.returncode == 2 and "matches no hook" in bad.stderr and not (tmp_path / "bad").exists()
    bad = run_cli(
        "trace",
        "-c",
        str(dlm_checkpoint),
        "--out",
        str(tmp_path / "bad"),
        "--steps",
        "4",
        "--capture-steps",
        "7",
        "--no-progress",
    )
    assert bad.returncode == 2 and "outside the run" in bad.stderr and not (tmp_path / "bad").exists()
    (tmp_path / "partial").mkdir()
    bad = run_cli("trace-info", str(tmp_path / "partial"))
    assert bad.returncode == 2 and "not a complete trace" in bad.stderr


def test_logit_lens_on_a_transformers_masked_lm():
    from transformers import BertConfig, BertForMaskedLM

    from interp.models.hf import MaskedLMSampler

    torch.manual_seed(0)
    bert = BertForMaskedLM(
        BertConfig(
            vocab_size=30,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=16,
        )
    ).eval()
    lm = MaskedLMSampler(bert, mask_id=4, special_ids=[0, 1, 2, 3])
    prompt = torch.randint(5, 30, (1, 4))
    inst = attach(lm)
    trace = inst.trace(
        lambda: sample_steps(
            lm, prompt, SamplerConfig(name="mdlm", steps=3), torch.Generator().manual_seed(0), answer_len=3
        ),
        capture="blocks.*.hook_resid_post",
    )
    lens = logit_lens(trace, default_readout(bert))
    assert lens.probs.shape == (3, 2, 1, 7, 30)
    # last layer through BERT's MLM head = the model's logits on that step's input
    canvas0 = torch.cat([prompt, torch.full((1, 3), 4)], 1)
    assert torch.allclose(lens.probs[0, -1], bert(input_ids=canvas0).logits.softmax(-1), atol=1e-5)


def _last_layer_lens(model, ids):
    """(the residual after the last block of a transformers model, the default readout of it, the model's
    logits) for ``ids``."""
    from interp.analyses.logit_lens import default_readout

    seen = []
    handle = model.model.layers[-1].register_forward_hook(
        lambda m, i, o: seen.append(o[0] if isinstance(o, tuple) else o)
    )
    with torch.no_grad():
        expected = model(ids).logits
        lens = default_readout(model)(seen[0])
    handle.remove()
    return seen[0], lens, expected


def test_logit_lens_of_the_last_layer_is_the_models_output_for_a_pre_norm_causal_lm():
    """Llama applies a final RMSNorm before lm_head: the default readout must too."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=32,
    )  # fmt: skip
    model = LlamaForCausalLM(cfg).eval()
    ids = torch.randint(0, 64, (2, 7))
    residual, lens, expected = _last_layer_lens(model, ids)
    assert torch.allclose(lens, expected, atol=1e-5), "the last layer's lens equals the model's logits"
    assert not torch.allclose(model.lm_head(residual), expected, atol=1e-3), "skipping the norm would differ"


def test_modernbert_lens_and_a_model_without_an_mlm_head():
    """ModernBERT's readout is final_norm → head → decoder (the last layer's lens is the model's output);
    a bare BertModel has no head and gets a clear error from MaskedLMSampler."""
    import transformers

    from interp.errors import DataError
    from interp.models.hf import MaskedLMSampler

    torch.manual_seed(0)
    cfg = transformers.ModernBertConfig(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=64, pad_token_id=0, mask_token_id=3, bos_token_id=1, eos_token_id=2,
        cls_token_id=1, sep_token_id=2, global_attn_every_n_layers=1,
    )  # fmt: skip
    model = transformers.ModernBertForMaskedLM(cfg).eval()
    ids = torch.randint(4, 64, (2, 9))
    _, lens, expected = _last_layer_lens(model, ids)
    assert torch.allclose(lens, expected, atol=1e-5)
    bare = transformers.BertModel(
        transformers.BertConfig(
            vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64
        )
    )
    with pytest.raises(DataError, match="BertModel has no language-model head"):
        MaskedLMSampler(bare, mask_id=3)


def test_nnsight_backend_on_transformers_names_nested_modules_and_interp_hook_points():
    """nnsight takes what attach takes: TransformerLens names of a transformers model (bridge hook points),
    a module listed before one nested in it; and refuses, with a message, a hook point interp computes itself."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from interp.errors import InterpError
    from interp.hooks.nnsight_backend import nnsight_trace
    from tests.conftest import tiny_diffusers_unet

    torch.manual_seed(0)
    llama = LlamaForCausalLM(
        LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)
    ).eval()
    inst = attach(llama)
    ids = torch.randint(0, 50, (1, 6))

    def run():  # lazily, one forward per step, as a sampler yields
        for step in range(2):
            with torch.no_grad():
                yield llama(ids + step)

    ours = inst.trace(run, capture="blocks.*.hook_resid_post")
    theirs = nnsight_trace(inst, run, "blocks.*.hook_resid_post", n_steps=2)
    for name in ours.names:
        for step in range(2):
            assert torch.equal(ours[name, step], theirs[name, step]), (name, step)

    unet = tiny_diffusers_unet()
    unet_inst = attach(unet)
    x = torch.randn(1, 1, 8, 8)

    def unet_run():
        for t in (10, 5):
            with torch.no_grad():
                yield unet(x, t).sample

    nested = nnsight_trace(unet_inst, unet_run, ["down_blocks.0", "down_blocks.0.resnets.0"], n_steps=2)
    reference = unet_inst.trace(unet_run, capture=["down_blocks.0", "down_blocks.0.resnets.0"])
    assert torch.equal(nested["down_blocks.0.resnets.0", 1], reference["down_blocks.0.resnets.0", 1])
    assert torch.equal(nested["down_blocks.0", 0], reference["down_blocks.0", 0])
    pattern = next(n for n in unet_inst.names if n.endswith("hook_pattern"))
    with pytest.raises(InterpError, match=r"nnsight cannot read .* interp's own hook point"):
        nnsight_trace(unet_inst, unet_run, pattern, n_steps=2)
