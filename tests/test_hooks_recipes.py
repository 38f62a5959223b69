"""The README's "Attach to your model" recipes, one per family, each run on a tiny random model of the real
class (or our shipped checkpoint), plus what they rely on: ``generate()`` traced one step per token /
denoising step, a bridged causal LM's cached generation equal to the model's own, ModernBERT and a bare
``BertModel`` with TransformerLens-style names and attention patterns, and eager attention only while a
session captures patterns. Recipes already tested elsewhere are named in their test's docstring."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch

from interp.hooks import Intervention, attach


def _tiny_llama(seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, pad_token_id=0)  # fmt: skip
    return LlamaForCausalLM(config).eval()


def _tiny_modernbert(seed: int = 0):
    import transformers

    torch.manual_seed(seed)
    config = transformers.ModernBertConfig(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=64, pad_token_id=0, mask_token_id=3, bos_token_id=1, eos_token_id=2,
        cls_token_id=1, sep_token_id=2, global_attn_every_n_layers=1,
    )  # fmt: skip
    return transformers.ModernBertForMaskedLM(config).eval()


def _tiny_bert(cls_name: str = "BertForMaskedLM", seed: int = 0):
    """A 2-layer BERT-layout model; ``cls_name`` may also be a RoBERTa / XLM-R / CamemBERT class (its config)."""
    import transformers

    torch.manual_seed(seed)
    family = next(f for f in ("XLMRoberta", "Roberta", "Camembert", "Bert") if cls_name.startswith(f))
    config = getattr(transformers, f"{family}Config")(vocab_size=40, hidden_size=32, num_hidden_layers=2,
                                                      num_attention_heads=2, intermediate_size=64,
                                                      max_position_embeddings=40)  # fmt: skip
    return getattr(transformers, cls_name)(config).eval()


# --- recipe: our checkpoints --------------------------------------------------------------------------
def test_recipe_our_checkpoint():
    from interp.checkpoints import load_checkpoint
    from interp.samplers import SamplerConfig, sample_steps

    dlm = load_checkpoint("checkpoints/dlm-addition3-continuous")
    ids = dlm.encode_prompts(["123+456="])
    inst = attach(dlm)
    trace = inst.trace(
        lambda: sample_steps(dlm, ids, SamplerConfig(name="mdlm", steps=4), torch.Generator().manual_seed(0)),
        capture=["blocks.*.hook_resid_post", "blocks.0.attn.hook_pattern"],
    )
    assert trace.n_steps == 4 and trace.stack("blocks.1.hook_resid_post").shape[:2] == (4, 1)
    assert trace["blocks.0.attn.hook_pattern", 0].dim() == 4


# --- recipe: a diffusers U-Net (cross-attention) in your own loop --------------------------------------
def test_recipe_diffusers_unet_in_your_loop():
    """(DiT / PixArt and the unconditional U-Net: tests/test_hooks_foreign.py)"""
    from diffusers import DDIMScheduler, UNet2DConditionModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(16, 32),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=16, attention_head_dim=8, norm_num_groups=8,
    ).eval()  # fmt: skip
    scheduler = DDIMScheduler(num_train_timesteps=1000)
    scheduler.set_timesteps(3)
    x, text = torch.randn(2, 4, 8, 8), torch.randn(2, 5, 16)

    inst = attach(unet)
    with torch.no_grad(), inst.session(capture=["mid.hook_out", "**.attn2.hook_pattern"]) as s:
        for t in scheduler.timesteps:
            eps = unet(x, t, encoder_hidden_states=text).sample
            x = scheduler.step(eps, t, x).prev_sample
            s.end_step(t=int(t))
    trace = s.trace
    assert trace.n_steps == 3 and trace.stack("mid.hook_out").shape == (3, 2, 32, 4, 4)
    name = next(n for n in trace.names if n.endswith("attn2.hook_pattern"))
    assert trace[name, 0].shape[-1] == 5, "cross-attention: image queries over the 5 text tokens"


# --- recipe: SD3 / Flux joint attention -----------------------------------------------------------------
def test_recipe_joint_attention_sd3():
    """(both SD3 and Flux, with the interventions: tests/test_hooks_foreign.py::test_joint_attention_*)"""
    from interp.hooks.diffusers_adapter import split_joint_pattern
    from tests.test_hooks_foreign import _tiny_sd3

    transformer, inputs = _tiny_sd3()
    inst = attach(transformer)
    inst.add_site("text_in_block_0", "transformer_blocks.0", element=0)  # any element of a tuple output
    capture = ["blocks.*.hook_resid_post", "blocks.*.hook_context_post", "**.hook_pattern", "text_in_block_0"]
    with torch.no_grad(), inst.session(capture=capture) as s:
        transformer(**inputs)
        s.end_step()
    image = s.trace["blocks.0.hook_resid_post", 0]  # the image stream; .hook_context_post: the text stream
    site = "transformer_blocks.0.attn.hook_pattern"
    parts = split_joint_pattern(s.trace[site, 0], n_image=image.shape[1], order=inst.sites[site].meta["joint"])
    assert parts["image->text"].shape == (2, 2, 16, 5)
    assert torch.equal(s.trace["text_in_block_0", 0], s.trace["blocks.0.hook_context_post", 0])


# --- recipe: a diffusers pipeline -----------------------------------------------------------------------
def test_recipe_pipeline():
    """(more: tests/test_hooks_foreign.py::test_attach_to_a_pipeline_takes_its_steps_from_the_scheduler)"""
    from diffusers import DDPMPipeline, DDPMScheduler

    from tests.conftest import tiny_diffusers_unet

    pipe = DDPMPipeline(unet=tiny_diffusers_unet(), scheduler=DDPMScheduler(num_train_timesteps=50))
    pipe.set_progress_bar_config(disable=True)
    inst = attach(pipe)
    trace = inst.trace(
        lambda: pipe(batch_size=1, num_inference_steps=3, generator=torch.Generator().manual_seed(0)),
        capture="mid.hook_out",
    )
    assert trace.n_steps == 3 and len(trace.steps["timestep"]) == 3 and trace.result.images


# --- recipe: a transformers causal LM and generate() ------------------------------------------------------
def test_recipe_causal_lm_generate_one_step_per_token():
    model = _tiny_llama()
    reference = copy.deepcopy(model)
    ids = torch.randint(1, 50, (2, 6), generator=torch.Generator().manual_seed(0))
    expected = reference.generate(ids, max_new_tokens=5, do_sample=False)

    inst = attach(model)
    trace = inst.trace(
        lambda: model.generate(ids, max_new_tokens=5, do_sample=False),
        capture=["blocks.*.hook_resid_post", "blocks.0.attn.hook_pattern"],
    )
    assert trace.n_steps == 5, "one step per generated token"
    assert torch.equal(trace.result, expected), "traced generate gives the model's own tokens"
    assert trace.steps["position"].tolist() == [6, 7, 8, 9, 10]
    assert trace["blocks.1.hook_resid_post", 0].shape == (2, 6, 32), "step 0: the prompt (prefill)"
    assert all(trace["blocks.1.hook_resid_post", s].shape == (2, 1, 32) for s in range(1, 5)), "then one token"
    assert all(trace.calls("blocks.1.hook_resid_post", s) == 1 for s in range(5))
    assert trace["blocks.0.attn.hook_pattern", 3].shape == (2, 4, 1, 9), "the new token over the cached ones"
    padded, mask = trace.stack("blocks.1.hook_resid_post", pad=0.0)
    assert padded.shape == (5, 2, 6, 32) and mask[1:, :, 1:].sum() == 0
    # step k's residual at its token = the model run without a cache on the sequence so far
    with torch.no_grad():
        full = reference(expected, output_hidden_states=True).hidden_states[1]  # after block 0 (the last is normed)
    for step in range(1, 5):
        assert torch.allclose(trace["blocks.0.hook_resid_post", step][:, 0], full[:, 5 + step], atol=1e-5), step
    # logit lens at the newest position of each step: the last layer predicts the token generate() picks next
    from interp.analyses.logit_lens import default_readout, logit_lens
    from interp.errors import InterpError

    lens = logit_lens(trace, default_readout(model), position=-1)
    assert lens.probs.shape == (5, 2, 2, 1, 50)
    assert torch.equal(lens.probs[:, -1, :, 0].argmax(-1).T, expected[:, 6:])
    with pytest.raises(InterpError, match="pass position=-1"):
        logit_lens(trace, default_readout(model))
    assert "generate" not in vars(model), "generate is the model's own again after the session"
    # an iterable of steps is still one step per item
    lazy = inst.trace(lambda: (model(ids) for _ in range(2)), capture="blocks.0.hook_resid_post")
    assert lazy.n_steps == 2 and lazy.result is None
    ablated = inst.run(lambda: model.generate(ids, max_new_tokens=5, do_sample=False),
                       [Intervention("blocks.*.hook_resid_post", "ablate", steps=[2])])[0]  # fmt: skip
    assert torch.equal(ablated[:, :8], expected[:, :8]) and not torch.equal(ablated, expected)


def test_bridged_generate_fills_the_kv_cache():
    """TransformerLens' attention bridges read ``past_key_values``; transformers 5 passes ``cache``: without
    the fix every token after the first attended to itself alone."""
    model = _tiny_llama()
    reference = copy.deepcopy(model)
    ids = torch.randint(1, 50, (1, 7), generator=torch.Generator().manual_seed(1))
    options = {"max_new_tokens": 4, "do_sample": False, "output_logits": True, "return_dict_in_generate": True}
    expected = reference.generate(ids, **options)
    attach(model)
    got = model.generate(ids, **options)
    for mine, theirs in zip(got.logits, expected.logits, strict=True):
        assert torch.allclose(mine, theirs, atol=1e-5)


# --- recipe: BERT / ModernBERT under our masked sampler ----------------------------------------------
def test_recipe_modernbert_under_our_masked_sampler():
    from interp.analyses.logit_lens import default_readout, logit_lens
    from interp.models.hf import MaskedLMSampler
    from interp.samplers import SamplerConfig, sample_steps

    mlm = _tiny_modernbert()
    reference = copy.deepcopy(mlm)
    lm = MaskedLMSampler(mlm, special_ids=[0, 1, 2])  # mask_id from the config
    prompt = torch.randint(4, 64, (2, 5), generator=torch.Generator().manual_seed(0))
    inst = attach(lm)
    assert {"hook_embed", "blocks.1.hook_resid_post", "blocks.1.attn.hook_pattern", "blocks.0.hook_attn_out",
            "blocks.0.hook_mlp_out", "ln_final.hook_normalized"} <= set(inst.names)  # fmt: skip
    assert inst.canonical("model.layers.1") == "blocks.1.hook_resid_post"
    trace = inst.trace(
        lambda: sample_steps(lm, prompt, SamplerConfig(name="mdlm", steps=3), torch.Generator().manual_seed(0),
                             answer_len=3),
        capture=["blocks.*.hook_resid_post", "blocks.*.attn.hook_pattern"],
    )  # fmt: skip
    pattern = trace["blocks.1.attn.hook_pattern", 0]
    assert pattern.shape == (2, 4, 8, 8) and torch.allclose(pattern.sum(-1), torch.ones(2, 4, 8), atol=1e-5)
    lens = logit_lens(trace, default_readout(mlm))  # final norm → head → decoder
    canvas0 = torch.cat([prompt, torch.full((2, 3), 3)], 1)
    with torch.no_grad():
        expected = reference(input_ids=canvas0).logits.softmax(-1)
    assert torch.allclose(lens.probs[0, -1], expected, atol=1e-5), "the last layer's lens is the model's output"
    # an edited pattern flows into the computation; outside pattern sessions the model is its sdpa self
    with torch.no_grad(), inst.session(interventions=[Intervention("blocks.0.attn.hook_pattern", "ablate")]):
        edited = mlm(input_ids=canvas0).logits
    with torch.no_grad():
        assert (edited - reference(input_ids=canvas0).logits).abs().max() > 1e-4
        assert torch.equal(mlm(input_ids=canvas0).logits, reference(input_ids=canvas0).logits)
    assert mlm.config._attn_implementation == reference.config._attn_implementation


@pytest.mark.parametrize("cls_name", ["BertModel", "RobertaModel", "XLMRobertaModel", "CamembertModel"])
def test_bare_bert_layout_models_get_names_and_patterns_and_a_clear_sampler_error(cls_name):
    """TransformerLens bridges none of these: names come from interp's map of BERT's module layout."""
    from interp.errors import DataError
    from interp.models.hf import MaskedLMSampler

    bert = _tiny_bert(cls_name)
    reference = copy.deepcopy(bert)
    ids = torch.randint(5, 40, (2, 7), generator=torch.Generator().manual_seed(0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "using module paths" fallback
        inst = attach(bert)
    with inst:
        assert inst.canonical("encoder.layer.1") == "blocks.1.hook_resid_post"
        with torch.no_grad(), inst.session(capture=["blocks.*.hook_resid_post", "blocks.*.attn.hook_pattern",
                                                    "blocks.0.hook_attn_out", "blocks.0.hook_resid_mid"]) as s:  # fmt: skip
            out = bert(input_ids=ids).last_hidden_state
            s.end_step()
        with torch.no_grad():
            plain = reference(input_ids=ids, output_hidden_states=True, output_attentions=True)
    assert torch.allclose(out, plain.last_hidden_state, atol=1e-5)
    assert torch.allclose(s.trace["blocks.0.hook_resid_post", 0], plain.hidden_states[1], atol=1e-5)
    assert s.trace["blocks.1.attn.hook_pattern", 0].shape == (2, 2, 7, 7)
    with pytest.raises(DataError, match=f"{cls_name} has no language-model head"):
        MaskedLMSampler(bert, mask_id=4)


def test_xlm_roberta_masked_lm_gets_names_patterns_and_its_readout():
    from interp.analyses.logit_lens import default_readout

    mlm = _tiny_bert("XLMRobertaForMaskedLM")
    ids = torch.randint(5, 40, (2, 7), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = mlm(input_ids=ids).logits
    inst = attach(mlm)
    with torch.no_grad(), inst.session(capture=["blocks.*.hook_resid_post", "blocks.*.attn.hook_pattern"]) as s:
        out = mlm(input_ids=ids).logits
        s.end_step()
    assert torch.allclose(out, expected, atol=1e-5)
    assert torch.allclose(s.trace["blocks.1.attn.hook_pattern", 0].sum(-1), torch.ones(2, 2, 7), atol=1e-5)
    with torch.no_grad():
        lens = default_readout(mlm)(s.trace["blocks.1.hook_resid_post", 0])
    assert torch.allclose(lens, expected, atol=1e-4), "the last layer's lens is the model's output"


# --- item 8: eager attention only while a session captures patterns ---------------------------------------
def test_bridge_keeps_sdpa_except_while_capturing_patterns():
    bert = _tiny_bert()
    reference = copy.deepcopy(bert)
    ids = torch.randint(5, 40, (2, 8), generator=torch.Generator().manual_seed(0))
    inst = attach(bert)
    assert hasattr(inst, "bridge") and bert.config._attn_implementation == "sdpa"
    with torch.no_grad():
        assert torch.equal(bert(input_ids=ids).logits, reference(input_ids=ids).logits), "bit-identical"
    with torch.no_grad(), inst.session(capture=["blocks.0.hook_resid_post", "blocks.*.attn.hook_pattern"]) as s:
        assert bert.config._attn_implementation == "eager"
        bert(input_ids=ids)
        s.end_step()
    assert s.trace["blocks.1.attn.hook_pattern", 0].shape == (2, 2, 8, 8)
    assert bert.config._attn_implementation == "sdpa"
    _, cache = inst.bridge.run_with_cache(ids)  # TransformerLens' own API still sees the patterns
    assert "blocks.0.attn.hook_pattern" in cache
    assert bert.config._attn_implementation == "sdpa"


# --- recipe: DiffusionGemma ---------------------------------------------------------------------------------
def test_recipe_diffusion_gemma_generate_one_step_per_denoising_step():
    """``generate()`` traced: one step per denoising step of every canvas, the same activations as our
    step-wise sampler (its tokens equal generate's), the encoder in each canvas's first step. (Names,
    interventions and the sampler's trace: tests/test_diffusiongemma.py)"""
    from interp.samplers import sample_diffusion_gemma
    from tests.test_diffusiongemma import P, tiny_diffusion_gemma

    model = tiny_diffusion_gemma()
    prompt = torch.randint(3, 64, (2, P), generator=torch.Generator().manual_seed(0))
    kw = {"max_new_tokens": 16, "max_denoising_steps": 3}
    capture = ["blocks.*.hook_resid_post", "encoder.blocks.0.hook_resid_post"]
    inst = attach(model)
    ours = inst.trace(lambda: sample_diffusion_gemma(model, prompt, seed=2, **kw), capture=capture)

    def generate():
        torch.manual_seed(2)
        return model.generate(prompt, **kw)

    theirs = inst.trace(generate, capture=capture)
    inst.detach()
    assert theirs.n_steps == ours.n_steps == 6
    assert torch.equal(theirs.result.sequences, ours.records()[-1].tokens[:, : theirs.result.sequences.shape[1]])
    for step in range(6):
        assert torch.allclose(theirs["blocks.1.hook_resid_post", step], ours["blocks.1.hook_resid_post", step])
        assert (("encoder.blocks.0.hook_resid_post", step) in theirs) == (step in (0, 3))


# --- recipe: nnsight ----------------------------------------------------------------------------------------
def test_recipe_nnsight():
    """(more: tests/test_hooks_analysis.py::test_nnsight_backend_on_transformers_*)"""
    from interp.hooks.nnsight_backend import nnsight_trace

    model = _tiny_llama()
    ids = torch.randint(1, 50, (1, 6), generator=torch.Generator().manual_seed(0))

    def run():
        for step in range(2):
            with torch.no_grad():
                yield model(ids + step)

    inst = attach(model)
    trace = nnsight_trace(inst, run, "blocks.*.hook_resid_post", n_steps=2)
    ours = inst.trace(run, capture="blocks.*.hook_resid_post")
    assert torch.equal(trace["blocks.1.hook_resid_post", 1], ours["blocks.1.hook_resid_post", 1])
