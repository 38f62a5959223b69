"""attach() on foreign models built from configs (no hub): diffusers U-Net and DiT, a transformers
masked LM through the TransformerLens bridge, and a plain torch module."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from interp.hooks import HookNameError, Intervention, attach
from tests.conftest import tiny_diffusers_unet


def _ddpm_run(model, steps=5, seed=0, shape=(2, 1, 8, 8), **kwargs):
    from diffusers import DDPMScheduler

    def run():
        sched = DDPMScheduler(num_train_timesteps=1000)
        sched.set_timesteps(steps)
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(*shape, generator=g)
        with torch.no_grad():
            for t in sched.timesteps:
                eps = model(x, t, return_dict=False, **kwargs)[0]
                x = sched.step(eps, t, x, generator=g).prev_sample
                yield {"t": int(t), "x": x}

    return run


def test_unet_trace_matches_plain_hooks_and_patterns():
    unet = tiny_diffusers_unet()
    x = torch.randn(2, 1, 8, 8)
    before = unet(x, 10, return_dict=False)[0]
    inst = attach(unet)
    assert torch.equal(unet(x, 10, return_dict=False)[0], before), "attach alone changes nothing"
    trace = inst.trace(_ddpm_run(unet), capture=["down.*.hook_out", "mid.hook_out"])
    seen = []
    h = unet.mid_block.register_forward_hook(lambda m, i, o: seen.append(o.clone()))
    list(_ddpm_run(unet)())
    h.remove()
    assert trace.n_steps == 5 and len(seen) == 5
    for s in range(5):
        assert torch.equal(trace["mid_block", s], seen[s])
    assert trace["down_blocks.0", 0].shape == (2, 16, 4, 4), "tuple output read at element 0"
    # capturing patterns computes the softmax explicitly: same function up to float rounding
    with_patterns = inst.trace(_ddpm_run(unet), capture=["mid.hook_out", "**.hook_pattern"])
    assert torch.allclose(with_patterns["mid_block", 0], trace["mid_block", 0], atol=1e-4)
    pattern = with_patterns["mid_block.attentions.0.hook_pattern", 2]
    assert pattern.shape[:2] == (2, 4) and torch.allclose(pattern.sum(-1), torch.ones_like(pattern.sum(-1)), atol=1e-5)
    assert torch.equal(trace.state("x")[-1], list(_ddpm_run(unet)())[-1]["x"])
    assert type(unet.mid_block.attentions[0].processor).__name__ != "PatternAttnProcessor", "swapped back"
    assert torch.equal(unet(x, 10, return_dict=False)[0], before)


def test_unet_step_window_intervention():
    unet = tiny_diffusers_unet()
    inst = attach(unet)
    clean = inst.trace(_ddpm_run(unet), capture="up.1.hook_out")
    edited = inst.trace(
        _ddpm_run(unet), capture="up.1.hook_out", interventions=[Intervention("mid.hook_out", "scale", 0.0, steps=[3])]
    )
    for s in range(3):
        assert torch.equal(edited["up_blocks.1", s], clean["up_blocks.1", s])
    assert not torch.equal(edited["up_blocks.1", 3], clean["up_blocks.1", 3])
    assert all(not m._forward_hooks for m in unet.modules())


def test_dit_blocks_and_patterns():
    from diffusers import DiTTransformer2DModel

    torch.manual_seed(0)
    dit = DiTTransformer2DModel(
        sample_size=8,
        in_channels=4,
        patch_size=2,
        num_layers=2,
        num_attention_heads=2,
        attention_head_dim=8,
        num_embeds_ada_norm=10,
    ).eval()
    labels = torch.tensor([1, 9])

    def run():
        x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            for t in (900, 500, 100):
                v = dit(x, timestep=torch.tensor([t, t]), class_labels=labels, return_dict=False)[0]
                x = x - 0.3 * v
                yield {"t": t}

    trace = attach(dit).trace(run, capture=["blocks.*.hook_resid_post", "**.attn1.hook_pattern"])
    assert trace.names == [
        "transformer_blocks.0",
        "transformer_blocks.0.attn1.hook_pattern",
        "transformer_blocks.1",
        "transformer_blocks.1.attn1.hook_pattern",
    ]
    assert trace.stack("transformer_blocks.1").shape == (3, 2, 16, 16)
    assert trace["transformer_blocks.0.attn1.hook_pattern", 0].shape == (2, 2, 16, 16)


def test_transformers_masked_lm_through_bridge_with_our_sampler():
    from transformers import BertConfig, BertForMaskedLM

    from interp.models.hf import MaskedLMSampler
    from interp.samplers import SamplerConfig, sample_steps

    torch.manual_seed(0)
    bert = BertForMaskedLM(
        BertConfig(
            vocab_size=40,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=32,
        )
    ).eval()
    lm = MaskedLMSampler(bert, mask_id=4, special_ids=[0, 1, 2, 3])
    prompt = torch.randint(5, 40, (2, 5))
    canvas = torch.cat([prompt, torch.full((2, 3), 4)], 1)
    before = bert(input_ids=canvas).logits
    inst = attach(lm)
    assert inst.kind == "transformers" and "blocks.1.hook_resid_post" in inst.names
    assert torch.allclose(bert(input_ids=canvas).logits, before, atol=1e-5)

    def run():
        return sample_steps(
            lm, prompt, SamplerConfig(name="mdlm", steps=3), torch.Generator().manual_seed(0), answer_len=3
        )

    trace = inst.trace(run, capture=["blocks.*.hook_resid_post", "blocks.0.attn.hook_pattern"])
    assert trace.stack("blocks.1.hook_resid_post").shape == (3, 2, 8, 32)
    assert trace["blocks.0.attn.hook_pattern", 0].shape == (2, 2, 8, 8)
    final = trace.state("tokens")[-1]
    assert not (final == 4).any() and torch.equal(final[:, :5], prompt)
    # the step-1 forward saw the canvas after step 0: compare with TransformerLens' own cache of the
    # same canvas, and with HF's hidden states after layer 0
    seen = trace.state("tokens")[0]
    _, cache = inst.bridge.run_with_cache(seen)
    for name in ("blocks.0.hook_resid_post", "blocks.1.hook_resid_post"):
        assert torch.equal(trace[name, 1], cache[name])
    hf_hidden = bert(input_ids=seen, output_hidden_states=True).hidden_states
    assert torch.allclose(trace["blocks.0.hook_resid_post", 1], hf_hidden[1], atol=1e-6)
    with pytest.raises(HookNameError, match="closest valid names"):
        inst.resolve("blocks.1.hook_resid_psot")


def test_any_module_by_path_with_globs():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Sequential(nn.Linear(8, 8), nn.Tanh()), nn.Linear(8, 2))
    inst = attach(net)
    assert inst.kind == "module" and inst.resolve("2.*") == ["2.0", "2.1"]

    def run():
        x = torch.randn(3, 4, generator=torch.Generator().manual_seed(0))
        for i in range(4):
            y = net(x)
            x = x + 0.1 * y.sum(-1, keepdim=True)
            yield {"i": i}

    trace = inst.trace(run, capture="2.*")
    assert trace.stack("2.1").shape == (4, 3, 8)
    out = inst.run(run, [Intervention("1", "ablate", steps=[0])])
    assert len(out) == 4
    with pytest.raises(HookNameError, match="unknown hook name '9'"):
        inst.resolve("9")


def test_attach_to_a_pipeline_takes_its_steps_from_the_scheduler():
    """attach(pipe): hooks on its denoiser, one trace step per scheduler.step call, the output kept."""
    from diffusers import DDPMPipeline, DDPMScheduler

    pipe = DDPMPipeline(unet=tiny_diffusers_unet(), scheduler=DDPMScheduler(num_train_timesteps=50))
    pipe.set_progress_bar_config(disable=True)
    inst = attach(pipe)
    assert inst.pipeline is pipe and "mid.hook_out" in inst.aliases

    def call():
        return pipe(batch_size=1, num_inference_steps=4, generator=torch.Generator().manual_seed(0), output_type="np")

    trace = inst.trace(call, capture="mid.hook_out")
    assert trace.n_steps == 4 and trace.step_indices("mid_block") == [0, 1, 2, 3]
    assert all(trace.calls("mid_block", s) == 1 for s in range(4))
    assert trace.steps["timestep"].tolist() == [float(t) for t in pipe.scheduler.timesteps]
    assert trace.result.images.shape == (1, 8, 8, 1)
    assert "step" not in vars(pipe.scheduler), "the scheduler is left as it was"
    plain = call().images
    assert (plain == trace.result.images).all(), "tracing does not change the output"
    ablated = inst.run(call, [Intervention("mid.hook_out", "ablate", steps=[3])])[0].images
    assert not (ablated == plain).all()


def test_attach_is_idempotent_and_detach_gives_the_model_back():
    """A transformers model is rewired in place by the bridge: attaching again gives the same names, and
    detach() restores the original outputs, attention implementation, state dict and save_pretrained."""
    import copy
    import tempfile

    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(
        LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)
    ).eval()
    original = copy.deepcopy(model)
    ids = torch.randint(0, 50, (1, 6))
    first = attach(model)
    again = attach(model)
    assert again is first and again.names == first.names and "blocks.1.hook_resid_post" in first.names
    with attach(model) as inst:  # a context manager detaches on exit
        trace = inst.trace(lambda: iter([model(ids)]), capture="blocks.*.hook_resid_post")
    assert trace.names == ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"]
    with torch.no_grad():
        assert torch.equal(model(ids).logits, original(ids).logits)
    assert model.config._attn_implementation == original.config._attn_implementation
    assert list(model.state_dict()) == list(original.state_dict())
    assert [n for n, _ in model.named_modules()] == [n for n, _ in original.named_modules()]
    model.save_pretrained(tempfile.mkdtemp())  # failed on the bridge's shared tensors
    assert attach(model) is not first, "after detach a new attach builds a fresh bridge"


def _tiny_sd3():
    from diffusers import SD3Transformer2DModel

    torch.manual_seed(0)
    model = SD3Transformer2DModel(sample_size=8, patch_size=2, in_channels=4, num_layers=2, attention_head_dim=8,
                                  num_attention_heads=2, joint_attention_dim=16, caption_projection_dim=16,
                                  pooled_projection_dim=8, out_channels=4, pos_embed_max_size=16).eval()  # fmt: skip
    inputs = {"hidden_states": torch.randn(2, 4, 8, 8), "encoder_hidden_states": torch.randn(2, 5, 16),
              "pooled_projections": torch.randn(2, 8), "timestep": torch.tensor([500.0, 500.0])}  # fmt: skip
    return model, inputs


def _tiny_flux():
    from diffusers import FluxTransformer2DModel

    torch.manual_seed(0)
    model = FluxTransformer2DModel(patch_size=1, in_channels=8, num_layers=1, num_single_layers=1, attention_head_dim=8,
                                   num_attention_heads=2, joint_attention_dim=16, pooled_projection_dim=8,
                                   axes_dims_rope=(2, 2, 4)).eval()  # fmt: skip
    inputs = {"hidden_states": torch.randn(2, 16, 8), "encoder_hidden_states": torch.randn(2, 5, 16),
              "pooled_projections": torch.randn(2, 8), "timestep": torch.tensor([0.5, 0.5]),
              "img_ids": torch.zeros(16, 3), "txt_ids": torch.zeros(5, 3)}  # fmt: skip
    return model, inputs


@pytest.mark.parametrize("family", ["sd3", "flux"])
def test_joint_attention_streams_and_patterns(family):
    import torch.nn.functional as F

    from interp.hooks.diffusers_adapter import split_joint_pattern

    model, inputs = _tiny_sd3() if family == "sd3" else _tiny_flux()
    sdpa = F.scaled_dot_product_attention
    with torch.no_grad():
        reference = model(**inputs).sample
    plain = {}
    handle = model.transformer_blocks[0].register_forward_hook(
        lambda m, a, out: plain.update(text=out[0], image=out[1])
    )
    inst = attach(model)
    with torch.no_grad(), inst.session(capture=["**.hook_pattern", "**.hook_resid_post", "**.hook_context_post"]) as s:
        out = model(**inputs).sample
        s.end_step()
    handle.remove()
    trace = s.trace
    assert torch.allclose(out, reference, atol=1e-5), "reading the patterns does not change the output"
    assert F.scaled_dot_product_attention is sdpa, "the fused attention is back after the session"
    assert torch.equal(trace["blocks.0.hook_resid_post", 0], plain["image"])  # the image stream, not the text
    assert torch.equal(trace["blocks.0.hook_context_post", 0], plain["text"])
    pattern = trace["transformer_blocks.0.attn.hook_pattern", 0]
    assert pattern.shape == (2, 2, 16 + 5, 16 + 5)
    assert torch.allclose(pattern.sum(-1), torch.ones(2, 2, 21), atol=1e-5)
    order = inst.sites["transformer_blocks.0.attn.hook_pattern"].meta["joint"]
    assert order == ("image-first" if family == "sd3" else "text-first")
    blocks = split_joint_pattern(pattern, 16, order)
    assert blocks["image->text"].shape == (2, 2, 16, 5) and blocks["text->image"].shape == (2, 2, 5, 16)
    if family == "sd3":
        assert "blocks.1.hook_context_post" not in inst.names  # the last SD3 block returns no text stream
        with pytest.raises(HookNameError):
            inst.resolve("blocks.1.hook_context_post")
    else:
        assert trace["single_blocks.0.hook_resid_post", 0].shape == (2, 16, 16)
    # zeroing image->text attention is an ordinary pattern intervention and moves the output
    text = slice(16, 21) if order == "image-first" else slice(0, 5)

    def cut(p, ctx):
        p = p.clone()
        p[..., text] = 0
        return p

    with (
        torch.no_grad(),
        inst.session(interventions=[Intervention("transformer_blocks.0.attn.hook_pattern", "fn", cut)]),
    ):
        edited = model(**inputs).sample
    assert not torch.allclose(edited, reference, atol=1e-4)


def test_add_site_reads_another_element_of_a_tuple_output():
    model, inputs = _tiny_sd3()
    inst = attach(model)
    inst.add_site("text0", "transformer_blocks.0", element=0)
    with torch.no_grad(), inst.session(capture=["text0", "blocks.0.hook_context_post"]) as s:
        model(**inputs)
        s.end_step()
    assert torch.equal(s.trace["text0", 0], s.trace["blocks.0.hook_context_post", 0])
    with pytest.raises(HookNameError, match="no submodule"):
        inst.add_site("x", "transformer_blocks.9")
