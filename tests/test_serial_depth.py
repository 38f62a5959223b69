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
    assert payload["opaque_serial_depth"] > 0 and 3.4 <= payload["opaque_ratio_to_baseline"] <= 4.6
    bad = run_cli("depth", "--seq-len", "10")
    assert bad.returncode == 2 and "exactly one of --checkpoint or --hf-config" in bad.stderr
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({"model_type": "not-a-model"}))
    bad = run_cli("depth", "--hf-config", str(cfg), "--seq-len", "8")
    assert bad.returncode == 2 and "not a transformers config" in bad.stderr


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
