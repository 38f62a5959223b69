"""Sampler invariants: MDLM never changes a committed token; the renoising sampler can revise;
LLaDA blocks go left to right; every sampler ends with a complete answer; AR one token per step."""

from __future__ import annotations

import pytest
import torch

from interp.errors import DataError, InterpError
from interp.samplers import SamplerConfig, run_to_end, sample_steps
from tests.conftest import tiny_ar, tiny_dlm

PROMPTS = ["123+456=", "999+001=", "000+000=", "555+445="]


def _run(method, **cfg):
    prompt = method.encode_prompts(PROMPTS)
    return run_to_end(sample_steps(method, prompt, SamplerConfig(**cfg), torch.Generator().manual_seed(0)))


@pytest.mark.parametrize("selfcond", ["none", "continuous", "topk", "topp"])
def test_mdlm_never_changes_a_committed_token(selfcond):
    m = tiny_dlm(selfcond=selfcond)
    final, steps = _run(m, name="mdlm", steps=8, temperature=1.0)
    mask = m.mask_id
    previous = steps[0].tokens
    for st in steps[1:]:
        was_set = previous != mask
        assert torch.equal(st.tokens[was_set], previous[was_set]), f"step {st.index} changed a committed token"
        assert not st.revised.any() and not st.renoised.any()
        previous = st.tokens
    assert not (final == mask).any(), "MDLM leaves no mask at the end"
    assert torch.equal(final[:, :8], m.encode_prompts(PROMPTS)), "the prompt is never changed"


def test_entropy_sampler_revises_and_renoises():
    m = tiny_dlm()
    total_revised = total_renoised = 0
    for renoise in ("uniform", "mask"):
        final, steps = _run(m, name="entropy", steps=8, temperature=1.0, entropy_bound=0.0, renoise=renoise)
        total_revised += sum(int(s.revised.sum()) for s in steps)
        total_renoised += sum(int(s.renoised.sum()) for s in steps)
        assert not (final[:, 8:] == m.mask_id).any()
        if renoise == "mask":  # unaccepted positions are masks
            mid = steps[3]
            accepted = mid.tokens[:, 8:] != m.mask_id
            assert accepted.sum(1).min() >= 2  # at least the schedule's minimum (ceil(4*4/8))
            for st in steps:  # a renoised position holds <mask> again, and was decided the step before
                assert (st.tokens[st.renoised] == m.mask_id).all()
    assert total_revised > 0, "tokens can be revised"
    assert total_renoised > 0, "with a zero entropy bound, decided tokens are thrown back to noise"


def test_entropy_sampler_with_large_bound_accepts_everything_at_once():
    m = tiny_dlm()
    _, steps = _run(m, name="entropy", steps=4, entropy_bound=1e9)
    assert int(steps[0].committed.sum()) == 4 * len(PROMPTS)


def test_llada_blocks_go_left_to_right():
    m = tiny_dlm()
    _, steps = _run(m, name="llada", steps=4, block_length=2)
    first_commit = torch.full((len(PROMPTS), 12), -1)
    for st in steps:
        first_commit[st.committed & (first_commit < 0)] = st.index
    answer = first_commit[:, 8:]
    assert (answer >= 0).all()
    # every position of block 0 (8, 9) is committed before any of block 1 (10, 11)
    assert (answer[:, :2].max(1).values < answer[:, 2:].min(1).values).all()
    for st in steps:  # one token per step per example: 4 positions over 4 steps
        assert st.committed.sum(1).tolist() == [1] * len(PROMPTS)


def test_ar_sampler_one_token_per_step_left_to_right():
    m = tiny_ar()
    final, steps = _run(m, name="ar")
    assert len(steps) == 4
    for i, st in enumerate(steps):
        assert st.committed[:, 8 + i].all() and int(st.committed.sum()) == len(PROMPTS)
    assert not (final == m.tokenizer.mask_id).any()


def test_sampler_checkpoint_mismatch_and_bad_config():
    with pytest.raises(DataError, match="autoregressive"):
        _run(tiny_dlm(), name="ar")
    with pytest.raises(DataError, match="diffusion"):
        _run(tiny_ar(), name="mdlm")
    with pytest.raises(DataError, match="unknown sampler"):
        SamplerConfig(name="nope")
    with pytest.raises(InterpError, match="steps"):
        SamplerConfig(steps=0)


def test_same_seed_same_samples():
    m = tiny_dlm()
    a, _ = _run(m, name="mdlm", steps=4, temperature=1.0)
    b, _ = _run(m, name="mdlm", steps=4, temperature=1.0)
    assert torch.equal(a, b)
