"""The backbone speaks TransformerLens' hook API: names, run_with_cache, run_with_hooks, causality."""

from __future__ import annotations

import pytest
import torch
from transformer_lens import ActivationCache

from interp.models import SelfCondInput, TokenTransformer, TransformerConfig


def _model(**kw):
    torch.manual_seed(0)
    return TokenTransformer(
        TransformerConfig(vocab_size=11, n_ctx=10, d_model=16, n_layers=2, n_heads=2, d_mlp=32, **kw)
    )


def test_hook_names_follow_transformer_lens():
    names = set(_model(selfcond=True, time_conditioning=True).hook_dict)
    for expected in (
        "hook_embed",
        "hook_pos_embed",
        "hook_selfcond",
        "hook_time_embed",
        "hook_ln_final",
        "blocks.0.hook_resid_pre",
        "blocks.1.hook_resid_post",
        "blocks.0.attn.hook_pattern",
        "blocks.0.attn.hook_q",
        "blocks.0.attn.hook_z",
        "blocks.1.mlp.hook_post",
        "blocks.1.hook_mlp_out",
    ):
        assert expected in names


def test_run_with_cache_matches_forward_hooks():
    m = _model()
    x = torch.randint(3, 11, (3, 10))
    logits, cache = m.run_with_cache(x)
    assert isinstance(cache, ActivationCache)
    assert torch.equal(logits, m(x))
    seen = {}
    handle = m.blocks[1].register_forward_hook(lambda mod, inp, out: seen.setdefault("out", out))
    m(x)
    handle.remove()
    assert torch.equal(cache["blocks.1.hook_resid_post"], seen["out"])
    assert cache["blocks.0.attn.hook_pattern"].shape == (3, 2, 10, 10)
    assert torch.allclose(cache["blocks.0.attn.hook_pattern"].sum(-1), torch.ones(3, 2, 10))


def test_run_with_hooks_intervenes_and_cleans_up():
    m = _model()
    x = torch.randint(3, 11, (2, 10))
    clean = m(x)
    ablated = m.run_with_hooks(x, fwd_hooks=[("blocks.0.hook_attn_out", lambda act, hook: act * 0)])
    assert not torch.allclose(clean, ablated)
    assert torch.equal(m(x), clean), "hooks are removed after run_with_hooks"


def test_causal_model_does_not_see_the_future():
    m = _model(causal=True)
    x = torch.randint(3, 11, (1, 10))
    y = x.clone()
    y[0, 7:] = 3
    assert torch.allclose(m(x)[:, :7], m(y)[:, :7], atol=1e-6)
    bidir = _model(causal=False)
    assert not torch.allclose(bidir(x)[:, :7], bidir(y)[:, :7])


def test_selfcond_dense_and_sparse_agree():
    m = _model(selfcond=True)
    torch.nn.init.normal_(m.selfcond_mlp[2].weight)
    probs = torch.softmax(torch.randn(2, 10, 11), -1)
    values, indices = probs.topk(11, dim=-1)
    dense = m(torch.randint(3, 11, (2, 10)), selfcond=SelfCondInput(probs=probs))
    x = torch.randint(3, 11, (2, 10))
    assert torch.allclose(
        m(x, selfcond=SelfCondInput(probs=probs)),
        m(x, selfcond=SelfCondInput(indices=indices, values=values)),
        atol=1e-5,
    )
    assert dense.shape == (2, 10, 11)


def test_context_and_time_errors():
    m = _model(time_conditioning=True)
    with pytest.raises(ValueError, match="pass t"):
        m(torch.zeros(1, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="exceeds the model context"):
        m(torch.zeros(1, 11, dtype=torch.long), t=torch.zeros(1))
