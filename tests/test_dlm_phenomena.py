"""Revision and smearing measures on hand-built runs where the answer is known, and the CLI."""

from __future__ import annotations

import json

import pytest
import torch

from interp.analyses.revisions import kendall_tau_b, revisions, spearman
from interp.analyses.smearing import smearing
from interp.samplers import Step
from tests.conftest import ROOT, run_cli

MASK = 1


def _step(i, tokens, committed=(), revised=(), renoised=(), probs=None, V=8):
    A = len(tokens)
    flag = lambda idx: torch.tensor([[p in idx for p in range(A)]])  # noqa: E731
    t = torch.tensor([tokens])
    return Step(
        index=i,
        t=1 - i / 4,
        s=1 - (i + 1) / 4,
        tokens=t,
        probs=probs if probs is not None else torch.zeros(1, A, V),
        confidence=torch.ones(1, A),
        committed=flag(committed),
        renoised=flag(renoised),
        revised=flag(revised),
    )


def test_rank_correlations():
    x = torch.tensor([0, 1, 2, 3])
    assert spearman(x, x) == pytest.approx(1) and spearman(x, x.flip(0)) == pytest.approx(-1)
    assert kendall_tau_b(x, x.flip(0)) == pytest.approx(-1)
    assert kendall_tau_b(torch.tensor([0, 0, 1, 1]), x) == pytest.approx(0.8165, abs=1e-4)  # tau-b with ties


def test_right_to_left_decoding_and_a_backtrack():
    steps = [
        _step(0, [MASK, MASK, MASK, 5], committed=[3]),
        _step(1, [MASK, MASK, 6, 5], committed=[2]),
        _step(2, [MASK, 7, 6, 5], committed=[1]),
        _step(3, [4, 7, 3, 5], committed=[0], revised=[2]),  # position 2 revised while 3 holds: a backtrack
    ]
    r = revisions(steps, prompt_len=0)
    assert r.first_commit.tolist() == [[3, 2, 1, 0]]
    assert r.spearman[0] == pytest.approx(-1) and r.kendall[0] == pytest.approx(-1)
    assert r.revisions.tolist() == [[0, 0, 1, 0]] and r.backtracks.tolist() == [1]
    assert r.summary()["backtrack_rate"] == 1.0
    left_to_right = [_step(i, [5] * (i + 1) + [MASK] * (3 - i), committed=[i]) for i in range(4)]
    r2 = revisions(left_to_right, prompt_len=0)
    assert r2.spearman[0] == pytest.approx(1) and r2.backtracks.tolist() == [0]
    assert len(r.figure().data) == 2


def test_smearing_detects_neighbour_mass_above_baseline():
    A, V = 4, 8
    final = [2, 3, 4, 5]

    def probs(smeared):
        p = torch.zeros(1, A, V)
        for i in range(A):
            if smeared:  # half of each position's mass on its right neighbour's final token
                p[0, i, final[i]] = 0.5
                p[0, i, final[(i + 1) % A] if i + 1 < A else final[i - 1]] += 0.5
            else:
                p[0, i, final[i]] = 1.0
        return p

    steps = [
        _step(0, [MASK] * 4, probs=probs(True)),
        _step(1, [MASK] * 4, probs=probs(True)),
        _step(2, final, committed=range(4), probs=probs(False)),
    ]
    r = smearing(steps, prompt_len=0, max_distance=2, only_undecided=False)
    s = r.summary()
    # d=1 pairs: 4 of 6 carry 0.5 -> 1/3; baseline over all 12 off-diagonal pairs: 4 x 0.5 / 12 = 1/6
    assert s["neighbour_excess_first"] == pytest.approx(1 / 6) and abs(s["neighbour_excess_last"]) < 1e-6
    assert s["diagonal_first"] == pytest.approx(0.5) and s["diagonal_last"] == pytest.approx(1.0)
    assert s["entropy_first"] > s["entropy_last"]
    frame = r.frame()
    assert set(frame.columns) >= {"step", "distance", "mass", "shuffled", "excess"}
    span = smearing(steps, prompt_len=0, span=2, only_undecided=False)
    assert span.by_distance.shape[0] == 3 and span.summary()["diagonal_last"] == pytest.approx(1.0)


def test_analyze_cli():
    ck = ROOT / "checkpoints" / "dlm-addition3-continuous"
    out = json.loads(
        run_cli(
            "analyze",
            "revisions",
            "-c",
            str(ck),
            "--n",
            "20",
            "--sampler",
            "llada",
            "--steps",
            "4",
            "--block-length",
            "1",
            "--json",
            check=True,
        ).stdout
    )
    assert out["mean_spearman"] == pytest.approx(1.0), "one-token blocks decode left to right"
    out = json.loads(run_cli("analyze", "smearing", "-c", str(ck), "--n", "20", "--json", check=True).stdout)
    assert 0 <= out["diagonal_first"] <= 1
    bad = run_cli("analyze", "vibes", "-c", str(ck))
    assert bad.returncode == 2 and "unknown analysis 'vibes'" in bad.stderr


class _DraftStub:
    """A 'model' whose answer at position 1 depends on a draft at position 0 (prompt of 1 token)."""

    kind = "dlm"
    mask_id = 1
    content_ids = torch.arange(3, 12)
    V = 12

    def empty_carry(self, B, L):
        return None

    def carry(self, logits):
        return None

    def answer_len_for(self, p):
        return 2

    def predict(self, canvas, t, carried):
        B, L = canvas.shape
        logits = torch.full((B, L, self.V), -30.0)
        for b in range(B):
            if canvas[b, 1] == self.mask_id:  # nothing decided yet: position 0 -> 5, position 1 undecided (9 or 10)
                logits[b, 1, 5] = 0
                logits[b, 2, 9] = logits[b, 2, 10] = 0
            else:  # a draft at position 0 exists: it is revised to 7, and position 1 becomes 8
                logits[b, 1, 7] = 0
                logits[b, 2, 8] = 0
        return logits


def test_intermediate_context_detects_a_draft_that_matters():
    from interp.analyses.intermediate_context import intermediate_context
    from interp.samplers import SamplerConfig

    stub = _DraftStub()
    prompt = torch.tensor([[3], [4]])
    cfg = SamplerConfig(name="entropy", steps=2, entropy_bound=0.0, renoise="mask")
    r = intermediate_context(stub, prompt, cfg)
    assert r.with_drafts == 2 and r.drafts_per_sample == 1.0
    assert r.change_rate_drafts == 1.0 and r.tokens_changed_drafts == 2.0  # [7, 8] -> [5, 9]
    assert r.change_rate_control == 0.0 and r.control_short == 2  # no non-draft token to undo at step 0
    resampled = intermediate_context(stub, prompt, cfg, mode="resample")
    assert resampled.with_drafts == 2


def test_analyses_run_on_a_transformers_masked_lm():
    """Not tied to our model: the same analyses on a randomly initialised BERT under our samplers."""
    from transformers import BertConfig, BertForMaskedLM

    from interp.analyses.intermediate_context import intermediate_context
    from interp.models.hf import MaskedLMSampler
    from interp.samplers import SamplerConfig, sample_steps

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
    prompt = torch.randint(5, 30, (6, 3))
    cfg = SamplerConfig(name="entropy", steps=4, temperature=1.0, entropy_bound=0.0)
    steps = list(sample_steps(lm, prompt, cfg, torch.Generator().manual_seed(0), answer_len=5))
    rev = revisions(steps, prompt_len=3)
    assert rev.first_commit.shape == (6, 5) and rev.revisions.sum() > 0, "a random model revises under T=1"
    sm = smearing(steps, prompt_len=3, only_undecided=False)
    assert sm.by_distance.shape == (4, 4)
    ic = intermediate_context(lm, prompt, SamplerConfig(name="entropy", steps=4, temperature=1.0), answer_len=5)
    assert ic.n_samples == 6 and ic.with_drafts >= 0


def test_smearing_through_the_logit_lens_per_layer():
    from interp.analyses import default_readout, logit_lens
    from interp.analyses.smearing import smearing_by_layer
    from interp.checkpoints import load_checkpoint
    from interp.hooks import attach
    from interp.samplers import SamplerConfig, sample_steps

    dlm = load_checkpoint(ROOT / "checkpoints" / "dlm-addition3-continuous")
    ids = dlm.encode_prompts(["123+456=", "905+118="])
    run = lambda: sample_steps(dlm, ids, SamplerConfig(name="mdlm", steps=4), torch.Generator().manual_seed(0))  # noqa: E731
    trace = attach(dlm).trace(run, capture="blocks.*.hook_resid_post")
    lens = logit_lens(trace, default_readout(dlm.model))
    frame = smearing_by_layer(lens.probs, list(run()), 8)
    assert set(frame["layer"]) == {0, 1, 2, 3} and {"step", "distance", "mass", "excess"} <= set(frame.columns)
    last_layer = frame[(frame.layer == 3) & (frame.distance == 0)]
    direct = smearing(list(run()), 8, max_distance=2).frame()
    assert last_layer["mass"].tolist() == pytest.approx(
        direct[direct.distance == 0]["mass"].tolist(), abs=1e-5, nan_ok=True
    )
