"""Revision and smearing measures on hand-built runs where the answer is known, and the CLI."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from interp.analyses.revisions import decided_after, kendall_tau_b, revisions, spearman
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


def test_order_within_blocks_sees_right_to_left_canvases_written_left_to_right():
    """Two canvases of 2, written one after the other, each right to left: the whole answer correlates
    positively with time, inside each canvas the order is -1."""
    steps = [
        _step(0, [MASK, 5, MASK, MASK], committed=[1]),
        _step(1, [4, 5, MASK, MASK], committed=[0]),
        _step(2, [4, 5, MASK, 6], committed=[3]),
        _step(3, [4, 5, 7, 6], committed=[2]),
    ]
    r = revisions(steps, prompt_len=0)
    assert r.spearman[0] > 0.5
    inside = r.order_within(2)
    assert inside["spearman_in_block"] == pytest.approx(-1) and inside["n_blocks"] == 2
    assert inside["spearman_in_block_lo"] == pytest.approx(-1) and inside["spearman_in_block_hi"] == pytest.approx(-1)
    assert r.order_within(4)["spearman_in_block"] == pytest.approx(r.spearman[0])
    tied = revisions([_step(0, [4, 5], committed=[0, 1])], prompt_len=0).order_within(2)
    assert tied["n_blocks"] == 0 and tied["spearman_in_block"] != tied["spearman_in_block"]


def test_revision_summary_counts_the_samples_with_a_defined_rank_correlation():
    """Sample 0 commits every digit at step 0 (ties only: NaN), sample 1 one digit then three."""
    tied = [_step(0, [4, 5, 6, 7], committed=range(4)), _step(1, [4, 5, 6, 7])]
    two_steps = [_step(0, [4, MASK, MASK, MASK], committed=[0]), _step(1, [4, 5, 6, 7], committed=[1, 2, 3])]
    r = revisions(_batch(tied, two_steps), prompt_len=0)
    s = r.summary()
    assert s["n_samples"] == 2 and s["n_valid"] == 1
    assert s["mean_spearman"] == pytest.approx(3 / 15**0.5)  # commit steps [0, 1, 1, 1] vs positions
    assert r.spearman[0] != r.spearman[0] and r.kendall[0] != r.kendall[0]  # NaN


def test_report_revision_text_says_mdlm_order_is_random_before_its_correlation():
    from interp.reports.dlm import _revision_text

    tied = [_step(0, [4, 5, 6, 7], committed=range(4)), _step(1, [4, 5, 6, 7])]
    two_steps = [_step(0, [4, MASK, MASK, MASK], committed=[0]), _step(1, [4, 5, 6, 7], committed=[1, 2, 3])]
    summary = revisions(_batch(tied, two_steps), prompt_len=0).summary()
    frame = pd.DataFrame(
        [{"sampler": "mdlm", "kind": "mdlm", **summary}, {"sampler": "llada (blocks of 2)", "kind": "llada", **summary}]
    )
    text = _revision_text(frame)
    assert "random order by construction" in text
    assert text.index("random order by construction") < text.index("mdlm: rank correlation")
    assert "over 1 of 2 samples" in text
    assert "random order" not in _revision_text(frame[frame.kind == "llada"])


def _batch(*samples):
    """Stack single-sample runs (lists of 1-row Steps, same length) into one batched run."""
    cat = lambda name, i: torch.cat([getattr(run[i], name) for run in samples])  # noqa: E731
    fields = ("tokens", "probs", "confidence", "committed", "renoised", "revised")
    return [
        Step(index=i, t=samples[0][i].t, s=samples[0][i].s, **{f: cat(f, i) for f in fields})
        for i in range(len(samples[0]))
    ]


def _beliefs(final, shift=None, V=8):
    """``[1, A, V]``: each position certain of its final token, or (``shift``) half of its mass on the final
    token of the position ``shift[i]``."""
    A = len(final)
    p = torch.zeros(1, A, V)
    for i in range(A):
        p[0, i, final[i]] = 0.5 if shift else 1.0
        if shift:
            p[0, i, final[shift[i]]] += 0.5
    return p


def _run(final, shift):
    """Two undecided steps with ``shift`` beliefs, then everything committed and certain."""
    return [
        _step(0, [MASK] * len(final), probs=_beliefs(final, shift)),
        _step(1, [MASK] * len(final), probs=_beliefs(final, shift)),
        _step(2, final, committed=range(len(final)), probs=_beliefs(final)),
    ]


NEIGHBOUR = [1, 2, 3, 2]  # half of each position's mass on its neighbour's final token
FAR = [2, 3, 0, 1]  # ... on the final token of the position two away


def test_smearing_detects_neighbour_mass_above_the_far_baseline():
    r = smearing(_run([2, 3, 4, 5], NEIGHBOUR), prompt_len=0, max_distance=2, only_undecided=False)
    s = r.summary()
    # d=1: 4 of the 6 pairs carry 0.5 -> 1/3; d >= 2 (6 pairs): nothing -> 0
    assert s["neighbour_first"] == pytest.approx(1 / 3) and s["baseline_first"] == 0.0
    assert s["neighbour_excess_first"] == pytest.approx(1 / 3) and s["neighbour_excess_last"] == 0.0
    assert (s["neighbour_excess_first_lo"], s["neighbour_excess_first_hi"]) == pytest.approx((1 / 3, 1 / 3))
    assert s["diagonal_first"] == pytest.approx(0.5) and s["diagonal_last"] == pytest.approx(1.0)
    assert s["entropy_first"] == pytest.approx(torch.log(torch.tensor(2.0)).item(), abs=1e-5)
    assert s["entropy_last"] == pytest.approx(0.0, abs=1e-5) and s["coincident_neighbours"] == 0.0
    frame = r.frame()
    assert frame[(frame.step == 0) & (frame.distance == 2)]["mass"].item() == 0.0
    assert frame[(frame.step == 0) & (frame.distance == 1)]["excess"].item() == pytest.approx(1 / 3)
    span = smearing(_run([2, 3, 4, 5], NEIGHBOUR), prompt_len=0, span=2, only_undecided=False)
    assert span.by_distance.shape == (3, 4) and span.summary()["diagonal_last"] == pytest.approx(1.0)
    assert span.summary()["diagonal_first"] == pytest.approx(0.25)  # 0.5 x 0.5 for both tokens of a span


def test_smearing_excludes_positions_that_share_their_final_token():
    """A model certain of every final token, on an answer whose first two digits are equal: the
    neighbour's final token gets probability 1 only because it *is* the position's own token. The old
    baseline (all off-diagonal pairs) called that a neighbour excess of 1/3 - 1/6."""
    final = [2, 2, 3, 4]
    steps = [_step(i, [MASK] * 4, probs=_beliefs(final)) for i in range(2)]
    steps.append(_step(2, final, committed=range(4), probs=_beliefs(final)))
    r = smearing(steps, prompt_len=0, max_distance=2, only_undecided=False)
    s = r.summary()
    assert s["neighbour_excess_first"] == 0.0 and s["neighbour_first"] == 0.0 and s["baseline_first"] == 0.0
    assert s["coincident_neighbours"] == pytest.approx(2 / 6)
    assert r.all_pairs[0, 1].item() == pytest.approx(1 / 3)  # what the coincident pairs alone contribute
    assert r.frame()["coincident_share"].tolist()[:3] == pytest.approx([1.0, 1 / 3, 0.0])


def test_smearing_interval_is_a_seeded_bootstrap_over_samples():
    """One sample smears onto neighbours (excess +1/3), one onto far positions (-1/3): pooled, the excess
    is 0 and the bootstrap interval spans both samples' values."""
    run = _batch(_run([2, 3, 4, 5], NEIGHBOUR), _run([2, 3, 4, 5], FAR))
    r = smearing(run, prompt_len=0, max_distance=2, only_undecided=False)
    s = r.summary()
    assert s["neighbour_excess_first"] == pytest.approx(0.0, abs=1e-7)
    assert s["neighbour_first"] == pytest.approx(1 / 6) and s["baseline_first"] == pytest.approx(1 / 6)
    assert s["neighbour_excess_first_lo"] == pytest.approx(-1 / 3) and s["neighbour_excess_first_hi"] == pytest.approx(
        1 / 3
    )
    again = smearing(run, prompt_len=0, max_distance=2, only_undecided=False).summary()
    assert again == s
    # with more samples the interval's ends depend on the draws: same seed, same interval; another seed moves it
    many = _batch(*[_run([2, 3, 4, 5], NEIGHBOUR if i % 3 else FAR) for i in range(7)])
    ci = lambda seed: smearing(many, 0, only_undecided=False, n_boot=200, seed=seed).excess_ci[0].tolist()  # noqa: E731
    assert ci(0) == ci(0) and len({tuple(ci(seed)) for seed in range(5)}) > 1
    both_smear = smearing(
        _batch(_run([2, 3, 4, 5], NEIGHBOUR), _run([5, 4, 3, 2], NEIGHBOUR)), 0, only_undecided=False
    ).summary()
    assert both_smear["neighbour_excess_first_lo"] == pytest.approx(1 / 3)

    from interp.reports.dlm import _smearing_text

    text = _smearing_text(pd.DataFrame([{"sampler": "mixed", **s}]))
    assert "mixed: 0 (95% interval -0.333 to 0.333, which includes 0)" in text
    assert "Smearing is not observed" in text
    text = _smearing_text(pd.DataFrame([{"sampler": "mixed", **s}, {"sampler": "neighbours", **both_smear}]))
    assert "observed with neighbours." in text and "which includes 0" in text
    # two samples smear onto neighbours, one onto far positions: excess 2/9 - 1/9 is above the threshold,
    # but a resample of the far one alone (1 in 27) puts the interval's low end at -1/3: no verdict
    mostly = smearing(
        _batch(_run([2, 3, 4, 5], NEIGHBOUR), _run([5, 4, 3, 2], NEIGHBOUR), _run([2, 3, 4, 5], FAR)),
        0,
        only_undecided=False,
    ).summary()
    assert mostly["neighbour_excess_first"] == pytest.approx(1 / 9)
    assert mostly["neighbour_excess_first_lo"] == pytest.approx(-1 / 3)
    text = _smearing_text(pd.DataFrame([{"sampler": "mostly", **mostly}]))
    assert "which includes 0" in text and "Smearing is not observed" in text
    from interp.reports.dlm import _round

    assert _round({"excess": 3.19e-6, "lo": 5.6e-7, "rate": 0.123456, "n": 3}) == {
        "excess": 3.19e-6,  # the shipped model's excess: rounding to 4 decimals made it (and its interval) 0
        "lo": 5.6e-7,
        "rate": 0.1235,
        "n": 3,
    }


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
    assert out["n_valid"] == out["n_samples"] == 20
    out = json.loads(run_cli("analyze", "smearing", "-c", str(ck), "--n", "20", "--json", check=True).stdout)
    from interp.analyses.runs import sample_task
    from interp.checkpoints import load_checkpoint
    from interp.samplers import SamplerConfig

    dlm = load_checkpoint(ck)
    run = sample_task(dlm, 20, 0, SamplerConfig(name=out["sampler"], steps=out["steps"]))
    direct = smearing(run.steps, run.prompt_len).summary()
    assert {k: out[k] for k in direct} == pytest.approx(direct, nan_ok=True)
    # the shipped model is certain from the first step: its neighbours' tokens get mass only where they
    # coincide with the position's own (about 1 pair in 10), which is not smearing
    assert out["coincident_neighbours"] > 0.05 and abs(out["neighbour_excess_first"]) < 1e-3
    bad = run_cli("analyze", "vibes", "-c", str(ck))
    assert bad.returncode == 2 and "unknown analysis 'vibes'" in bad.stderr


class _DraftStub:
    """A 'model' with a 1-token prompt and 4 answer positions a0..a3, run by the entropy sampler for 2
    steps (near-certain positions accepted, the rest set back to <mask>).

    Step 0 (all masked): a0 -> 5, a1 -> 6, a3 -> 6 are certain and accepted; a2 is undecided.
    Step 1: a0 is revised to 7, so the 5 was a draft; a2 -> 8 if a0 (and, for prompt token 5, a1)
    holds a token, else 9. Undoing the draft a0 changes the answer; the matched control is a1 (the
    nearest decided non-draft; a3 is farther): it changes the answer only for prompt token 5.
    With prompt token 4 the sample's step 0 holds two drafts (a0, a3) and no non-draft: no control.
    """

    kind = "dlm"
    mask_id = 1
    content_ids = torch.arange(3, 12)
    V = 12

    def empty_carry(self, B, L):
        return None

    def carry(self, logits):
        return None

    def answer_len_for(self, p):
        return 4

    def predict(self, canvas, t, carried):
        B, L = canvas.shape
        logits = torch.full((B, L, self.V), -30.0)
        for b in range(B):
            short, neighbour, c = int(canvas[b, 0]) == 4, int(canvas[b, 0]) == 5, canvas[b, 1:]
            held = c != self.mask_id
            if not held.any():  # step 0
                logits[b, 1, 5] = logits[b, 4, 6] = 0
                logits[b, 3, 9] = logits[b, 3, 10] = 0
                if short:
                    logits[b, 2, 9] = logits[b, 2, 10] = 0
                else:
                    logits[b, 2, 6] = 0
            else:
                logits[b, 1, 7 if held[0] else 5] = 0
                logits[b, 2, 6] = 0
                logits[b, 4, 7 if short and held[3] else 6] = 0
                logits[b, 3, 8 if held[0] and (held[1] or not neighbour) else 9] = 0
        return logits


def _ic(n_independent, n_neighbour=0, n_short=0, **kw):
    from interp.analyses.intermediate_context import intermediate_context
    from interp.samplers import SamplerConfig

    prompt = torch.tensor([[3]] * n_independent + [[5]] * n_neighbour + [[4]] * n_short)
    cfg = SamplerConfig(name="entropy", steps=2, entropy_bound=1e-3, renoise="mask")
    return intermediate_context(_DraftStub(), prompt, cfg, **kw)


def test_intermediate_context_control_is_matched_in_step_and_position():
    r = _ic(24, n_short=2)
    assert (r.n_samples, r.with_drafts, r.control_short, r.n_compared) == (26, 26, 2, 24)
    assert r.change_rate_drafts == 1.0 and r.tokens_changed_drafts == 2.0  # [7, 6, 8, 6] -> [5, 6, 9, 6]
    assert r.change_rate_control == 0.0 and r.tokens_changed_control == 0.0  # a1 undone: a1 -> 6, a2 -> 8 again
    assert r.drafts_per_sample == 1.0 and r.control_distance == 1.0
    frame = r.frame()
    assert frame.loc[0, ["step", "drafts", "control", "compared"]].tolist() == [0, [0], [1], True]
    assert frame.loc[25, ["drafts", "control", "compared"]].tolist() == [[0, 3], [], False]
    # Wilson 95%: 24 of 24 -> [24 / (24 + z^2), 1]; 0 of 24 -> [0, z^2 / (24 + z^2)]
    z2 = 1.959964**2
    assert r.change_rate_drafts_lo == pytest.approx(24 / (24 + z2)) and r.change_rate_drafts_hi == 1.0
    assert r.change_rate_control_lo == 0.0 and r.change_rate_control_hi == pytest.approx(z2 / (24 + z2))
    # the nearest control (a1) is the one a2 depends on: undoing it changes every answer, as the drafts do
    near = _ic(0, n_neighbour=24)
    assert near.change_rate_control == 1.0 and near.tokens_changed_control == 1.0 and near.control_short == 0
    # samples without a full control count in neither rate
    only_short = _ic(0, n_short=3)
    assert (only_short.with_drafts, only_short.n_compared) == (3, 0)
    assert torch.isnan(torch.tensor(only_short.change_rate_drafts)) and torch.isnan(
        torch.tensor(only_short.change_rate_drafts_lo)
    )
    assert _ic(2, mode="resample").n_compared == 2


def test_wilson_interval():
    from interp.analyses.intermediate_context import wilson

    assert wilson(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    assert wilson(0, 0) != wilson(0, 0)  # NaN, NaN


def test_report_gives_an_intermediate_context_verdict_only_when_intervals_separate():
    from interp.analyses.intermediate_context import MIN_SAMPLES
    from interp.reports.dlm import _ic_text

    def row(name, r):
        return {"sampler": name, **r.summary()}

    few = _ic(MIN_SAMPLES - 1, n_short=3)  # rates 1 vs 0, intervals apart, but too few samples
    assert few.change_rate_drafts_lo > few.change_rate_control_hi
    text = _ic_text(pd.DataFrame([row("entropy", few)]))
    assert "not enough drafts" in text and "Drafts change answers more" not in text
    assert f"{MIN_SAMPLES - 1} samples compared, {MIN_SAMPLES} needed" in text
    separated = _ic(MIN_SAMPLES)
    text = _ic_text(pd.DataFrame([row("entropy", separated), row("entropy (T=1.5)", few)]))
    assert "Drafts change answers more than the control (95% intervals separate) with entropy." in text
    # drafts 20 of 20, control 17 of 20: the rates differ, the intervals overlap: no verdict
    overlapping = _ic(3, n_neighbour=17)
    assert overlapping.change_rate_control == 0.85 and overlapping.change_rate_drafts == 1.0
    text = _ic_text(pd.DataFrame([row("entropy", overlapping)]))
    assert "Drafts change answers more" not in text and "intervals overlap" in text


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
    ic = intermediate_context(lm, prompt, cfg, answer_len=5)  # the same run as ``steps``, then edited
    tokens = torch.stack([s.tokens[:, 3:] for s in steps])
    drafts = decided_after(steps, 3) & (tokens != tokens[-1])
    has = drafts.any(2)  # [S, B]
    assert ic.n_samples == 6 and ic.with_drafts == int(has.any(0).sum())
    assert ic.with_drafts >= int((rev.revisions.sum(1) > 0).sum()) > 0, "a revision leaves a draft behind"
    assert ic.frame()["step"].tolist() == [int(has[:, b].float().argmax()) for b in range(6) if has[:, b].any()]
    assert ic.n_compared + ic.control_short == ic.with_drafts


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


@pytest.fixture(scope="module")
def shakespeare_dlm(tmp_path_factory):
    from tests.conftest import TINY_TRAIN_ARGS, run_cli

    out = tmp_path_factory.mktemp("text") / "dlm"
    run_cli(
        "train", "dlm", "--task", "shakespeare", "--seq-len", "16", "--steps", "10", "--out", str(out),
        *TINY_TRAIN_ARGS, check=True,
    )  # fmt: skip
    return out


@pytest.mark.parametrize("analysis", ["revisions", "smearing", "intermediate-context", "logit-lens"])
def test_analyses_run_on_free_text(shakespeare_dlm, analysis):
    """Decode order, smearing, drafts and the logit lens need no answer key: they run on openings of
    held-out text (4 characters of 16), with nothing scored."""
    import json

    from tests.conftest import run_cli

    args = ["analyze", analysis, "-c", str(shakespeare_dlm), "--n", "6", "--sampler", "entropy", "--json"]
    out = json.loads(run_cli(*args, check=True).stdout)
    assert out["steps"] == 12 and "exact_match" not in out


def test_report_on_free_text_scores_nothing(shakespeare_dlm, tmp_path):
    from interp.checkpoints import load_checkpoint
    from interp.reports.dlm import dlm_sections

    method = load_checkpoint(shakespeare_dlm)
    prompts = method.heldout(3, seed=0)
    assert [len(p) for p, _ in prompts] == [4, 4, 4] and all(len(a) == 12 for _, a in prompts)
    assert prompts == method.heldout(3, seed=0) and prompts != method.heldout(3, seed=1)
    _, numbers = dlm_sections(method, n=4, seed=0)
    assert numbers["revisions"] and all("exact_match" not in row for row in numbers["revisions"])
