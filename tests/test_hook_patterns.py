"""Hook-name patterns: ``*`` and ``?`` stay within one dot-separated segment, ``**`` crosses dots (as a whole
segment: any number of segments, none included), aliases match like names, and a pattern that matches
nothing says whether ``**`` would have."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from interp.hooks import HookNameError, attach
from interp.hooks.attach import pattern_regex
from tests.conftest import tiny_diffusers_unet, tiny_dlm

N_LAYERS = 3


def _tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=50,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=N_LAYERS,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=32,
    )
    return LlamaForCausalLM(config).eval()


@pytest.fixture(scope="module")
def bridged_llama():
    return attach(_tiny_llama())


@pytest.fixture(scope="module")
def dlm():
    return attach(tiny_dlm())


def _nested() -> nn.Module:
    """Module paths ``hook_out``, ``down``, ``down.0``, ``down.0.hook_out``, ``down.0.conv``, ``down.1``, ..."""
    net = nn.Module()
    net.down = nn.ModuleList([nn.ModuleDict({"conv": nn.Identity(), "hook_out": nn.Identity()}) for _ in range(2)])
    net.hook_out = nn.Identity()
    return net


@pytest.mark.parametrize(
    ("pattern", "matches", "rejects"),
    [
        ("blocks.*", ["blocks.0", "blocks.10"], ["blocks.0.attn", "blocks", "down.0"]),
        ("*.hook_out", ["mid.hook_out"], ["down.0.hook_out", "hook_out"]),
        ("blocks.?.hook_z", ["blocks.1.hook_z"], ["blocks.12.hook_z", "blocks...hook_z"]),
        ("down?0", ["downx0"], ["down.0"]),
        ("**.hook_out", ["hook_out", "mid.hook_out", "down.0.hook_out"], ["hook_out_x", "down.0.hook_outs"]),
        ("blocks.**", ["blocks", "blocks.0", "blocks.0.attn.hook_z"], ["blocksx", "down.blocks.0"]),
        ("blocks.**.hook_z", ["blocks.hook_z", "blocks.0.hook_z", "blocks.0.attn.hook_z"], ["blocks.0.hook_zz"]),
        ("blocks.[01]*.hook_z", ["blocks.0.hook_z", "blocks.10.hook_z"], ["blocks.2.hook_z", "blocks.0.x.hook_z"]),
        ("blocks.[!0].*", ["blocks.1.x"], ["blocks.0.x", "blocks...x"]),
        ("a+b.*(c)", ["a+b.(c)", "a+b.x(c)"], ["aab.(c)", "a+b.xc", "a+b.x.(c)"]),  # everything else is literal
    ],
)
def test_pattern_regex_rules(pattern, matches, rejects):
    regex = pattern_regex(pattern)
    for name in matches:
        assert regex.fullmatch(name), (pattern, name)
    for name in rejects:
        assert not regex.fullmatch(name), (pattern, name)


def test_star_stays_within_a_segment_on_module_paths(monkeypatch):
    """A transformers Llama by module paths (as for an architecture TransformerLens has no bridge for):
    ``model.layers.*`` is the layers, not every module inside them."""
    from interp.hooks import transformers_adapter

    monkeypatch.setattr(transformers_adapter, "build_bridge", lambda model: None)
    inst = attach(_tiny_llama())
    assert inst.kind == "transformers" and "model.layers.0.self_attn.q_proj" in inst.names
    layers = [f"model.layers.{i}" for i in range(N_LAYERS)]
    assert inst.resolve("model.layers.*") == layers
    assert inst.resolve("model.layers.*.mlp") == [f"{layer}.mlp" for layer in layers]
    below = inst.resolve("model.layers.**")
    assert below == [n for n in inst.names if n == "model.layers" or n.startswith("model.layers.")]
    assert len(below) > 10 * N_LAYERS, "** crosses dots: every module in every layer"
    assert inst.resolve("model.layers.**.q_proj") == [f"{layer}.self_attn.q_proj" for layer in layers]


def test_star_stays_within_a_segment_on_transformerlens_names(bridged_llama):
    """Through the bridge: ``blocks.0.*`` is block 0's own hooks, not those of its attention, MLP or norms."""
    inst = bridged_llama
    assert inst.resolve("blocks.*.hook_resid_post") == [f"blocks.{i}.hook_resid_post" for i in range(N_LAYERS)]
    block0 = inst.resolve("blocks.0.*")
    assert {"blocks.0.hook_resid_pre", "blocks.0.hook_resid_post", "blocks.0.hook_mlp_in"} <= set(block0)
    expected = [n for n in inst.names if n.startswith("blocks.0.") and n.count(".") == 2]
    expected += [c for a, c in inst.aliases.items() if a.startswith("blocks.0.") and a.count(".") == 2]
    assert block0 == [n for n in inst.names if n in expected]
    assert "blocks.0.ln1.hook_in" not in block0 and "blocks.0.attn.hook_pattern" not in block0
    everything = inst.resolve("blocks.0.**")
    assert {"blocks.0.ln1.hook_in", "blocks.0.attn.hook_pattern", "blocks.0.attn.q.hook_out"} <= set(everything)
    assert set(block0) < set(everything)


def test_double_star_crosses_dots_and_may_match_no_segment(dlm):
    assert dlm.resolve("**.hook_embed") == ["hook_embed"]
    assert dlm.resolve("blocks.0.**.hook_resid_post") == ["blocks.0.hook_resid_post"]
    assert dlm.resolve("**.hook_pattern") == ["blocks.0.attn.hook_pattern", "blocks.1.attn.hook_pattern"]
    assert dlm.resolve("**") == dlm.names
    assert dlm.resolve("blocks.**") == [n for n in dlm.names if n.startswith("blocks.")]
    # inside a segment ** is any characters, dots included
    assert dlm.resolve("blocks.1.**_z") == ["blocks.1.attn.hook_z"]
    assert dlm.resolve("blocks.1.*_out") == ["blocks.1.hook_attn_out", "blocks.1.hook_mlp_out"]
    inst = attach(_nested())
    assert inst.resolve("**.hook_out") == ["down.0.hook_out", "down.1.hook_out", "hook_out"]
    assert inst.resolve("down.*") == ["down.0", "down.1"]


def test_question_mark_is_one_character_within_a_segment(dlm):
    assert dlm.resolve("blocks.?.hook_resid_post") == ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"]
    assert dlm.resolve("blocks.1.hook_resid_???") == ["blocks.1.hook_resid_pre", "blocks.1.hook_resid_mid"]
    inst = attach(_nested())
    with pytest.raises(HookNameError, match="matches no hook"):
        inst.resolve("down?0")


def test_aliases_are_matched_by_patterns(bridged_llama):
    unet = attach(tiny_diffusers_unet())
    assert unet.resolve("down.*.hook_out") == ["down_blocks.0", "down_blocks.1"]
    assert unet.resolve("*.hook_out") == ["mid_block"], "one segment: mid.hook_out only"
    assert unet.resolve("**.hook_out") == ["down_blocks.0", "down_blocks.1", "up_blocks.0", "up_blocks.1", "mid_block"]
    # the bridge's blocks.{i}.hook_out are aliases of blocks.{i}.hook_resid_post; blocks.{i}.ln1.hook_out is a site
    resid = bridged_llama.resolve("blocks.*.hook_resid_post")
    assert bridged_llama.resolve("blocks.*.hook_out") == resid
    assert "blocks.0.ln1.hook_out" in bridged_llama.resolve("blocks.**.hook_out")


def test_a_pattern_matching_nothing_says_when_double_star_would(dlm):
    with pytest.raises(HookNameError, match=r"matches no hook.*use \*\* to cross dots.*'blocks\.\*\*'") as err:
        dlm.resolve("blocks.*")
    assert "e.g. ['hook_embed'" in str(err.value), "still lists some valid names"
    with pytest.raises(HookNameError, match=r"use \*\* to cross dots.*'\*\*\.hook_pattern'"):
        dlm.resolve("*.hook_pattern")
    with pytest.raises(HookNameError, match="matches no hook") as err:
        dlm.resolve("decoder.*")
    assert "cross dots" not in str(err.value), "** would not match either"
    with pytest.raises(HookNameError, match=r"use \*\* to cross dots \(e\.g\. 'blocks\.\*\*_post'\)"):
        dlm.resolve("blocks.*_post")
