"""Serial depth: DeepMind's worked example, hand-derived cases, opaque resets, generation ratios
on the shipped checkpoints, meta-tensor configs, and the bad inputs."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from interp.analyses.serial_depth import (
    SerialDepthError,
    clog2,
    count,
    generation_depth,
    hf_config_depth,
    mark_interpretable,
)
from interp.errors import InterpError
from interp.models import TokenTransformer, TransformerConfig
from tests.conftest import ROOT, run_cli


def test_mlp_worked_example_is_11():
    torch.manual_seed(0)
    mlp = nn.Sequential(
        nn.Linear(1, 8, bias=False), nn.ReLU(), nn.Linear(8, 8, bias=False), nn.ReLU(), nn.Linear(8, 1, bias=False)
    )
    assert count(lambda: mlp(torch.randn(4, 1))).serial_depth == 11


@pytest.mark.parametrize("n", [1, 2, 3, 64, 100])
def test_matmul_and_linear(n):
    a, b = torch.randn(5, n), torch.randn(n, 7)
    assert count(lambda: a @ b).serial_depth == clog2(n) + 1
    lin = nn.Linear(n, 3)
    assert count(lambda: lin(a)).serial_depth == clog2(n) + 2  # + bias add


@pytest.mark.parametrize("n", [2, 10, 64])
def test_softmax_and_layer_norm(n):
    x = torch.randn(3, n)
    L = clog2(n)
    assert count(lambda: x.softmax(-1)).serial_depth == 2 * L + 3  # max, sub+exp, sum, div
    assert count(lambda: nn.LayerNorm(n)(x)).serial_depth == 2 * L + 9  # two-pass + weight + bias
    assert count(lambda: nn.functional.layer_norm(x, (n,))).serial_depth == 2 * L + 7
    assert count(lambda: x.sum()).serial_depth == clog2(3 * n)


def test_attention_block_hand_derived():
    D, H, L = 64, 4, 10
    model = TokenTransformer(TransformerConfig(vocab_size=8, n_ctx=L, d_model=D, n_layers=1, n_heads=H, d_mlp=32))
    x = torch.randn(2, L, D)
    got = count(lambda: model.blocks[0].attn(x)).serial_depth
    Dh = D // H
    expected = (clog2(D) + 2) + (clog2(Dh) + 1) + 1 + (2 * clog2(L) + 3) + (clog2(L) + 1) + (clog2(D) + 2)
    #          qkv linear       QKᵀ               scale  softmax over keys    pattern·V          output linear
    assert got == expected


def test_integer_tokens_and_marked_tensors_reset_opaque_depth():
    w = torch.randn(16, 16)

    def program():
        h = torch.randn(1, 16)
        for _ in range(3):
            logits = h @ w
            token = logits.argmax(-1)  # an integer: interpretable
            h = w[token]  # embedding lookup of the decoded token
        return h

    result = count(program)
    assert result.serial_depth == 3 * (clog2(16) + 1 + clog2(16))  # matmul + argmax, three times, through tokens
    assert result.opaque_serial_depth == clog2(16) + 1  # the argmax output is an integer: the chain ends there

    def marked():
        h = torch.randn(1, 16)
        for _ in range(3):
            h = mark_interpretable((h @ w).softmax(-1))
        return h

    r = count(marked)
    assert r.opaque_serial_depth == clog2(16) + 1 + 2 * clog2(16) + 3
    with pytest.raises(InterpError, match="needs a tensor, got list"):
        mark_interpretable([1, 2])


def test_marking_a_view_and_views_of_a_marked_tensor_keep_opaque_depth_0():
    """A marked slice of a softmax, in a loop: each step's opaque chain is one matmul + one softmax
    (5 + 11 = 16), not three steps of it (48, when the view read its unmarked base)."""
    w = torch.randn(16, 16)
    one_step = (clog2(16) + 1) + (2 * clog2(16) + 3)

    def mark_the_view():
        h = torch.randn(2, 16)
        for _ in range(3):
            p = (h @ w).softmax(-1)
            h = mark_interpretable(p[:, :16])  # a view of p
        return h

    def views_of_a_marked_slice():
        h = torch.randn(2, 16)
        for _ in range(3):
            p = mark_interpretable((h @ w).softmax(-1)[:, :8])  # the marked tensor is itself a view
            h = torch.cat([p[:, :4], p[:, 4:], p], 1)  # views taken afterwards
        return h

    for program in (mark_the_view, views_of_a_marked_slice):
        r = count(program)
        assert r.opaque_serial_depth == one_step, program.__name__
        assert r.serial_depth == 3 * one_step, program.__name__


def test_a_view_still_reads_in_place_writes_made_after_it():
    def program():
        buf = torch.zeros(4, 8)
        head = buf[:2]  # taken before the write
        deep = torch.randn(2, 8)
        for _ in range(6):
            deep = deep.tanh()
        buf[2:].copy_(deep)  # written through another view
        return head * 2

    r = count(program)
    assert r.opaque_serial_depth == 7 and r.serial_depth == 7  # 6 tanh, then the multiply through the stale view


@pytest.mark.parametrize("opaque_first", [True, False])
def test_partial_in_place_writes_merge_depth_and_opaque_depth_separately(opaque_first):
    """A cache written by slice: one slot holds a pure opaque chain (depth 20, opaque 20), the other a
    deeper chain through a picked token (depth 24, opaque 15). Reading the cache must keep both."""
    w = torch.randn(16, 16)

    def program():
        cache = torch.zeros(2, 16)
        a = torch.randn(16)
        for _ in range(20):
            a = a.tanh()  # depth 20, opaque 20
        b = torch.randn(1, 16)
        for _ in range(5):
            b = b.tanh()
        token = b.argmax(-1)  # depth 5 + 4, opaque 0: a picked token
        e = w[token][0]
        for _ in range(15):
            e = e.tanh()  # depth 24, opaque 15
        for slot, value in ((0, a), (1, e)) if opaque_first else ((1, e), (0, a)):
            cache[slot] = value
        return cache.sum(0)  # + ⌈log₂2⌉

    r = count(program)
    assert r.serial_depth == 25
    assert r.opaque_serial_depth == 21  # was 16: the write that won on depth erased the other's opaque chain
    assert [n.op for n in r.chain] == ["tanh"] * 20 + ["sum"]


def test_random_ops_depend_on_their_tensor_arguments():
    x = torch.randn(4)
    assert count(lambda: torch.bernoulli(x.sigmoid())).serial_depth == 2  # was 0 + 1: the draw cut the chain
    assert count(lambda: torch.normal(x.exp(), 1.0)).serial_depth == 2
    assert count(lambda: torch.normal(0.0, x.exp())).serial_depth == 2
    assert count(lambda: torch.empty(4).bernoulli_(x.sigmoid())).serial_depth == 2

    def program():
        p = x.sigmoid()  # 1
        return torch.bernoulli(p) + torch.normal(p, p) + torch.normal(0.0, p) + torch.poisson(p)  # +1 each, adds

    r = count(program)
    assert r.serial_depth == 1 + 1 + 3  # sigmoid, the draw, three adds
    assert [n.op for n in r.chain][:2] == ["sigmoid", "bernoulli"]
    # with sizes only they are creations (depth 0)
    assert count(lambda: torch.normal(0.0, 1.0, (4,)) + torch.bernoulli(x, 0.5)).serial_depth == 1
    assert count(lambda: torch.empty(4).bernoulli_(0.3).normal_().exp()).serial_depth == 1


@pytest.mark.parametrize("n", [2, 16, 100])
def test_logsumexp_is_max_sub_exp_sum_log_add(n):
    x = torch.randn(3, n)
    assert count(lambda: torch.logsumexp(x, -1)).serial_depth == 2 * clog2(n) + 4  # 12 for n = 16
    assert count(lambda: torch.logsumexp(x, (0, 1))).serial_depth == 2 * clog2(3 * n) + 4


def test_cut_rule_sampled_vs_discrete():
    """``sampled`` (default) cuts only at picked tokens and marks; ``discrete`` at any integer/bool tensor."""
    w = torch.randn(16, 16)
    step = clog2(16) + 1  # matmul

    def through_comparisons():
        h = torch.randn(1, 16)
        for _ in range(3):
            h = ((h @ w) > 0).float()  # compare (bool) and cast: not a token
        return h

    assert count(through_comparisons).opaque_serial_depth == 3 * (step + 2)
    assert count(through_comparisons, cut="discrete").opaque_serial_depth == 1 + step  # cast, then matmul
    assert count(through_comparisons).serial_depth == count(through_comparisons, cut="discrete").serial_depth

    def through_argsort():
        h = torch.randn(1, 16)
        for _ in range(3):
            order = (h @ w).argsort(-1)  # indices, but not picked tokens: bitonic sort, L(L+1)/2
            h = w[order[:, 0]]
        return h

    sort = clog2(16) * (clog2(16) + 1) // 2
    assert count(through_argsort).opaque_serial_depth == 3 * (step + sort)
    assert count(through_argsort, cut="discrete").opaque_serial_depth == step + sort  # the sorted values

    def through_picks():
        h = torch.randn(1, 16)
        for pick in ("multinomial", "topk", "max"):
            p = (h @ w).softmax(-1)
            if pick == "multinomial":
                token = torch.multinomial(p, 1)[:, 0]
            elif pick == "topk":
                token = p.topk(2, -1).indices[:, 0]
            else:
                token = p.max(-1).indices
            h = w[token]
        return h

    for cut in ("sampled", "discrete"):
        # the longest opaque chain is one step's (matmul, softmax, then the top-k / max *values*)
        assert count(through_picks, cut=cut).opaque_serial_depth == step + 2 * clog2(16) + 3 + clog2(16), cut
    with pytest.raises(SerialDepthError, match="cut must be one of sampled, discrete, got 'tokens'"):
        count(through_picks, cut="tokens")


def test_unclassified_op_is_named():
    x = torch.randn(4, 4)
    with pytest.raises(SerialDepthError, match=r"aten op aten\.linalg_eig"):
        count(lambda: torch.linalg.eig(x))


def test_meta_tensors_need_no_memory():
    from transformers import LlamaConfig

    cfg = LlamaConfig(
        vocab_size=1000,
        hidden_size=2048,
        intermediate_size=8192,
        num_hidden_layers=2,
        num_attention_heads=32,
        num_key_value_heads=8,
        max_position_embeddings=4096,
        architectures=["LlamaForCausalLM"],
    )
    r = hf_config_depth(cfg, 4096)
    assert r.meta["n_params"] > 100_000_000 and r.serial_depth == r.opaque_serial_depth > 50
    with pytest.raises(SerialDepthError, match="exceeds the config's max_position_embeddings 4096"):
        hf_config_depth(cfg, 5000)


def test_shipped_checkpoint_ratios():
    from interp.checkpoints import load_checkpoint
    from interp.samplers import SamplerConfig

    ck = ROOT / "checkpoints"
    ar = load_checkpoint(ck / "ar-addition3")
    prompt = ar.encode_prompts(["123+456="])
    base = generation_depth(ar, prompt, SamplerConfig(name="ar")).opaque_serial_depth
    for S in (4, 8):
        ratios = {}
        for mode in ("continuous", "topk", "none"):
            dlm = load_checkpoint(ck / f"dlm-addition3-{mode}")
            ratios[mode] = generation_depth(dlm, prompt, SamplerConfig(name="mdlm", steps=S)).opaque_serial_depth / base
        assert abs(ratios["continuous"] / S - 1) <= 0.15, ratios
        assert ratios["topk"] <= 1.3, ratios
        assert abs(ratios["none"] - 1) <= 0.1, ratios


def test_cut_rule_on_generation_with_a_confidence_sampler(monkeypatch):
    """llada commits where the model is most confident. The canvas it passes on is marked interpretable,
    so each step's chain ends there (about one forward pass, under both rules); without the mark, the
    default rule carries that choice, and each step's forward pass, into the next through the canvas."""
    import interp.samplers.lm as token_samplers
    from interp.checkpoints import load_checkpoint
    from interp.samplers import SamplerConfig

    dlm = load_checkpoint(ROOT / "checkpoints" / "dlm-addition3-none")
    prompt = dlm.encode_prompts(["123+456="])
    canvas = torch.cat([prompt, torch.full((1, 4), dlm.mask_id)], 1)
    forward = count(lambda: dlm.model(canvas), {"": dlm.model}).opaque_serial_depth
    cfg = SamplerConfig(name="llada", steps=4)
    strict = generation_depth(dlm, prompt, cfg)
    loose = generation_depth(dlm, prompt, cfg, cut="discrete")
    assert strict.meta["cut"] == "sampled" and loose.meta["cut"] == "discrete"
    assert strict.serial_depth == loose.serial_depth
    assert forward <= strict.opaque_serial_depth <= forward + 30  # + confidence, sort, where of one step
    assert forward <= loose.opaque_serial_depth <= strict.opaque_serial_depth
    monkeypatch.setattr(token_samplers, "mark_interpretable", lambda tensor: tensor)
    unmarked = generation_depth(dlm, prompt, cfg)
    assert 4 * forward <= unmarked.opaque_serial_depth <= 4 * (forward + 30)
    assert generation_depth(dlm, prompt, cfg, cut="discrete").opaque_serial_depth < 2 * forward  # the bool mask cuts


def test_depth_cli(tmp_path):
    out = run_cli(
        "depth",
        "-c",
        str(ROOT / "checkpoints" / "dlm-addition3-continuous"),
        "--generate",
        "--steps",
        "4",
        "--baseline",
        str(ROOT / "checkpoints" / "ar-addition3"),
        "--json",
        check=True,
    )
    payload = json.loads(out.stdout)
    from interp.checkpoints import load_checkpoint
    from interp.data import problems
    from interp.samplers import SamplerConfig

    dlm = load_checkpoint(ROOT / "checkpoints" / "dlm-addition3-continuous")
    prompt = dlm.encode_prompts([problems(dlm.cfg.task_config, "heldout", 1, 0)[0][0]])
    direct = generation_depth(dlm, prompt, SamplerConfig(name="mdlm", steps=4))
    assert payload["opaque_serial_depth"] == direct.opaque_serial_depth and payload["cut"] == "sampled"
    assert payload["serial_depth"] == direct.serial_depth
    ratio = payload["opaque_serial_depth"] / payload["baseline_opaque_serial_depth"]
    assert payload["opaque_ratio_to_baseline"] == ratio
    assert 3.4 <= payload["opaque_ratio_to_baseline"] <= 4.6
    bad = run_cli("depth", "--seq-len", "10")
    assert bad.returncode == 2 and "exactly one of --checkpoint or --hf-config" in bad.stderr
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({"model_type": "not-a-model"}))
    bad = run_cli("depth", "--hf-config", str(cfg), "--seq-len", "8")
    assert bad.returncode == 2 and "not a usable transformers config" in bad.stderr


def test_breakdown_table_and_figure():
    from interp.checkpoints import load_checkpoint
    from interp.samplers import SamplerConfig

    dlm = load_checkpoint(ROOT / "checkpoints" / "dlm-addition3-continuous")
    r = generation_depth(dlm, dlm.encode_prompts(["123+456="]), SamplerConfig(name="mdlm", steps=2))
    frame = r.frame()
    assert frame["depth"].iloc[-1] == r.opaque_serial_depth and frame["cost"].sum() == r.opaque_serial_depth
    assert set(frame["step"]) == {0, 1}, "the continuous chain runs through every step (0-based, as Step.index)"
    by_step = r.breakdown(by=("step",))
    assert by_step["depth"].sum() == r.opaque_serial_depth
    assert any(m.startswith("blocks.3") for m in r.breakdown()["module"])
    assert len(r.figure().data) == 1


def test_unet_and_dit_ops_are_all_classified():
    from diffusers import DiTTransformer2DModel, UNet2DModel

    torch.manual_seed(0)
    with torch.device("meta"):
        unet = UNet2DModel(
            sample_size=32,
            in_channels=3,
            out_channels=3,
            block_out_channels=(32, 64),
            down_block_types=("DownBlock2D", "AttnDownBlock2D"),
            up_block_types=("AttnUpBlock2D", "UpBlock2D"),
            layers_per_block=1,
            norm_num_groups=8,
        ).eval()
    x = torch.randn(1, 3, 32, 32, device="meta")
    r = count(lambda: unet(x, torch.tensor([10], device="meta"), return_dict=False), {"": unet})
    assert r.serial_depth > 100 and any(m.startswith("mid_block") for m in r.breakdown()["module"])
    dit = DiTTransformer2DModel(
        sample_size=8,
        in_channels=4,
        patch_size=2,
        num_layers=2,
        num_attention_heads=2,
        attention_head_dim=8,
        num_embeds_ada_norm=10,
    ).eval()
    r = count(
        lambda: dit(
            torch.randn(2, 4, 8, 8),
            timestep=torch.tensor([3, 700]),
            class_labels=torch.tensor([1, 9]),
            return_dict=False,
        ),
        {"": dit},
    )
    assert r.serial_depth > 50


def test_mixture_of_experts_routing_is_counted_on_real_tensors_and_on_meta():
    """histc (tokens per expert), index_add (gathering expert outputs) and top-k routing have rules; on meta
    tensors a MoE runs through transformers' grouped experts kernel (sort, histc, cumsum, grouped matmuls: no
    data-dependent loop), in bfloat16 (the kernel's dtype)."""
    import transformers

    from interp.analyses.serial_depth import hf_config_depth

    cfg = transformers.MixtralConfig(
        vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, num_local_experts=4, num_experts_per_tok=2, max_position_embeddings=64,
    )  # fmt: skip
    on_meta = hf_config_depth(cfg, 16)
    assert on_meta.meta["architecture"] == "MixtralForCausalLM" and on_meta.opaque_serial_depth > 100
    cfg._attn_implementation, cfg._experts_implementation = "eager", "eager"
    torch.manual_seed(0)
    model = transformers.MixtralForCausalLM(cfg).eval()
    ids = torch.randint(0, 128, (1, 16))
    result = count(lambda: model(input_ids=ids), {"": model})
    dense = transformers.MistralForCausalLM(transformers.MistralConfig(**{
        k: getattr(cfg, k) for k in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                                     "num_attention_heads", "num_key_value_heads", "max_position_embeddings")
    })).eval()  # fmt: skip
    dense.config._attn_implementation = "eager"
    baseline = count(lambda: dense(input_ids=ids), {"": dense})
    assert result.serial_depth > baseline.serial_depth  # routing adds softmax, top-k and the gathering of experts
    assert on_meta.serial_depth > baseline.serial_depth


def test_diffusion_gemma_generation_on_meta_continuous_carry_vs_bottleneck():
    """A DiffusionGemma generation counted from its config on meta tensors: with the continuous
    self-conditioning carry every denoising step adds a decoder pass to the longest opaque chain; with the top-k
    bottleneck (marked interpretable) the chain stays about one pass, as long as an AR Gemma 4's with a KV cache."""
    import transformers

    from interp.analyses.serial_depth import ar_generation_depth, diffusion_gemma_depth
    from tests.test_diffusiongemma import tiny_diffusion_gemma

    config = tiny_diffusion_gemma().config
    cont = {S: diffusion_gemma_depth(config, 5, S).opaque_serial_depth for S in (1, 2, 4)}
    topk = {S: diffusion_gemma_depth(config, 5, S, bottleneck="topk", k=4).opaque_serial_depth for S in (1, 2, 4)}
    step = cont[2] - cont[1]
    assert step > 0.8 * cont[1] and cont[4] - cont[2] == 2 * step  # each step: one more decoder pass
    assert topk[1] == cont[1] and topk[4] == topk[2] < cont[1] * 1.1  # the chain restarts at the bottleneck
    two = diffusion_gemma_depth(config, 5, 2, canvases=2)
    assert two.opaque_serial_depth < cont[2] * 1.2 and two.serial_depth > cont[2]  # canvases chain through tokens
    with pytest.raises(SerialDepthError, match="canvas length 9 is not this config's"):
        diffusion_gemma_depth(config, 5, 2, canvas_length=9)
    gemma = transformers.Gemma4TextConfig(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, head_dim=16, global_head_dim=16, num_experts=4, top_k_experts=2,
        moe_intermediate_size=16, enable_moe_block=True, sliding_window=8,
        layer_types=["sliding_attention", "full_attention"], hidden_size_per_layer_input=0,
    )  # fmt: skip
    ar = ar_generation_depth(gemma, 5, 8)
    forward = hf_config_depth(gemma, 13).opaque_serial_depth
    assert ar.opaque_serial_depth == forward  # picked tokens cut: a KV-cache generation is one pass deep
    assert ar.serial_depth > 4 * forward  # but not serially: the decoded tokens chain


def test_depth_cli_diffusion_gemma_config_against_a_gemma4_config(tmp_path):
    from tests.test_diffusiongemma import tiny_diffusion_gemma

    tiny_diffusion_gemma().config.save_pretrained(tmp_path / "dg")
    import transformers

    transformers.Gemma4TextConfig(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, head_dim=16, global_head_dim=16, sliding_window=8,
        layer_types=["sliding_attention", "full_attention"], hidden_size_per_layer_input=0,
    ).save_pretrained(tmp_path / "g4")  # fmt: skip
    ratios = {}
    for carry in ("none", "topk"):
        out = run_cli(
            "depth", "--hf-config", str(tmp_path / "dg"), "--seq-len", "5", "--generate", "--steps", "4",
            "--bottleneck", carry, "--baseline-hf-config", str(tmp_path / "g4"), "--json", check=True,
        )  # fmt: skip
        payload = json.loads(out.stdout)
        assert payload["bottleneck"] == carry and payload["steps"] == 4
        assert payload["baseline_architecture"] == "Gemma4ForCausalLM"
        ratios[carry] = payload["opaque_ratio_to_baseline"]
    assert ratios["none"] > 3 * ratios["topk"]
    bad = run_cli("depth", "--hf-config", str(tmp_path / "dg"), "--seq-len", "5", "--canvas-length", "3")
    assert bad.returncode == 2 and "canvas length 3 is not this config's" in bad.stderr
    assert "Traceback" not in bad.stderr
