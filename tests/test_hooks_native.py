"""Trajectory hooks on our own diffusion LM: recording, selective capture, spill, save/load,
interventions at chosen steps, patching, and the bad inputs."""

from __future__ import annotations

import json
import os

import pytest
import torch

from interp.hooks import HookNameError, Intervention, InterventionError, Trace, TraceError, attach, steering
from interp.samplers import SamplerConfig, sample_steps
from tests.conftest import tiny_dlm

STEPS = 6


@pytest.fixture(scope="module")
def lm():
    return tiny_dlm(selfcond="continuous")


def _runner(lm, seed=0, prompts=("123+456=", "999+001=")):
    ids = lm.encode_prompts(list(prompts))
    return lambda: sample_steps(
        lm, ids, SamplerConfig(name="mdlm", steps=STEPS, temperature=1.0), torch.Generator().manual_seed(seed)
    )


def _plain_hook_record(lm, run, module):
    """Reference: a plain torch forward hook on ``module``, one record per forward."""
    seen = []
    handle = module.register_forward_hook(lambda m, i, o: seen.append(o.detach().clone()))
    try:
        steps = list(run())
    finally:
        handle.remove()
    return seen, steps


def test_recorded_activations_equal_plain_forward_hooks(lm):
    inst = attach(lm)
    trace = inst.trace(_runner(lm), capture="blocks.*.hook_resid_post")
    seen, steps = _plain_hook_record(lm, _runner(lm), lm.model.blocks[1].hook_resid_post)
    assert trace.n_steps == STEPS == len(seen)
    for s in range(STEPS):
        assert torch.equal(trace["blocks.1.hook_resid_post", s], seen[s])
    assert trace.stack("blocks.1.hook_resid_post").shape == (STEPS, 2, 12, 32)
    assert torch.equal(trace.state("tokens")[-1], steps[-1].tokens), "tracing does not change the trajectory"
    assert list(trace.steps["step"]) == list(range(STEPS)) and "t" in trace.steps


def test_selective_capture_steps_positions_dtype(lm):
    trace = attach(lm).trace(
        _runner(lm),
        capture=["blocks.0.attn.hook_pattern", "hook_embed"],
        steps=[1, 3],
        positions=slice(8, 12),
        dtype=torch.float16,
    )
    assert trace.names == ["blocks.0.attn.hook_pattern", "hook_embed"]
    assert trace.step_indices() == [1, 3]
    assert trace["hook_embed", 1].shape == (2, 4, 32) and trace["hook_embed", 1].dtype == torch.float16
    assert trace["blocks.0.attn.hook_pattern", 3].shape == (2, 2, 4, 12), "patterns sliced on the query axis"
    with pytest.raises(TraceError, match="not recorded at step 2"):
        trace["hook_embed", 2]


def test_spill_and_round_trip(lm, tmp_path):
    budget = 20_000
    trace = attach(lm).trace(_runner(lm), capture="blocks.**", ram_budget=budget, spill_dir=str(tmp_path / "spill"))
    assert trace.ram_bytes <= budget
    assert list((tmp_path / "spill").glob("shard-*.safetensors")), "spilled to disk"
    reference = attach(lm).trace(_runner(lm), capture="blocks.**")  # every hook of every block
    assert len(reference.names) == 2 * 13 and "blocks.1.attn.hook_pattern" in reference.names
    for name in reference.names:
        assert torch.equal(trace.stack(name), reference.stack(name)), name
    trace.save(tmp_path / "saved")
    loaded = Trace.load(tmp_path / "saved")
    assert loaded.names == reference.names
    for name in reference.names:
        assert torch.equal(loaded.stack(name), reference.stack(name))
    tensors = ["tokens", "probs", "confidence", "committed", "renoised", "revised", "carried.probs"]
    for key in tensors:  # every tensor of the step record, the self-conditioning carry included
        assert torch.equal(loaded.state(key), reference.state(key)), key
    assert loaded.steps.drop(columns=tensors).equals(reference.steps.drop(columns=tensors))


def test_partial_or_foreign_trace_is_refused(lm, tmp_path):
    trace = attach(lm).trace(_runner(lm), capture="hook_embed")
    path = trace.save(tmp_path / "t")
    header = json.loads((path / "trace.json").read_text())
    header["format_version"] = 99
    (path / "trace.json").write_text(json.dumps(header))
    with pytest.raises(TraceError, match="format_version 99"):
        Trace.load(path)
    (path / "trace.json").unlink()
    with pytest.raises(TraceError, match="not a complete trace"):
        Trace.load(path)
    path2 = trace.save(tmp_path / "t2")
    os.remove(next(path2.glob("shard-*.safetensors")))
    with pytest.raises(TraceError, match="missing"):
        Trace.load(path2)


def test_unwritable_spill_dir(lm, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(TraceError, match="not writable"):
        attach(lm).trace(_runner(lm), capture="hook_embed", ram_budget=10, spill_dir=str(blocker / "sub"))


def test_unknown_names_and_steps(lm):
    inst = attach(lm)
    with pytest.raises(HookNameError, match=r"closest valid names: \['blocks.0.hook_resid_post'"):
        inst.trace(_runner(lm), capture="blocks.0.hook_resid_pots")
    with pytest.raises(HookNameError, match="matches no hook"):
        inst.trace(_runner(lm), capture="decoder.*")
    with pytest.raises(TraceError, match=r"step\(s\) \[40\] are outside the run"):
        inst.trace(_runner(lm), capture="hook_embed", steps=[1, 40])


def test_step_window_intervention_changes_exactly_those_steps(lm):
    inst = attach(lm)
    name = "blocks.0.hook_resid_post"
    clean = inst.trace(_runner(lm), capture=name)
    vec = torch.randn(32)
    edited = inst.trace(_runner(lm), capture=name, interventions=[steering(name, vec, steps=[2, 3], positions=[9])])
    for s in range(STEPS):
        diff = edited[name, s] - clean[name, s]
        if s < 2:
            assert torch.equal(edited[name, s], clean[name, s]), f"step {s} before the window changed"
        elif s in (2, 3):
            # only position 9 was edited at this hook (later steps differ through the trajectory)
            assert torch.allclose(diff[:, 9], vec.expand(2, -1), atol=1e-5) or not torch.equal(
                edited.state("tokens")[s - 1], clean.state("tokens")[s - 1]
            )
            if torch.equal(edited.state("tokens")[s - 1], clean.state("tokens")[s - 1]):
                other = [p for p in range(12) if p != 9]
                assert torch.equal(diff[:, other], torch.zeros_like(diff[:, other]))


def test_interventions_do_not_leak(lm):
    x = lm.encode_prompts(["123+456="])
    canvas = torch.cat([x, torch.full((1, 4), lm.mask_id)], 1)
    before = lm.model(canvas)
    params = {k: v.clone() for k, v in lm.model.state_dict().items()}
    inst = attach(lm)
    inst.run(_runner(lm), [Intervention("blocks.1.hook_mlp_out", "scale", 3.0), Intervention("hook_embed", "ablate")])
    with pytest.raises(InterventionError):
        inst.run(_runner(lm), [Intervention("hook_embed", "fn", lambda a, s: a[..., :3])])
    assert torch.equal(lm.model(canvas), before)
    assert all(torch.equal(v, params[k]) for k, v in lm.model.state_dict().items())
    assert all(not m._forward_hooks for m in lm.model.modules()), "no hook left behind, even after an error"


def test_bad_intervention_names_hook_and_step(lm):
    inst = attach(lm)
    with pytest.raises(InterventionError, match=r"'blocks.0.hook_resid_post' at step 0 returned \(2, 12, 5\)"):
        inst.run(_runner(lm), [Intervention("blocks.0.hook_resid_post", "fn", lambda a, s: a[..., :5])])
    with pytest.raises(InterventionError, match=r"at step 1 returned .*torch.float64"):
        inst.run(_runner(lm), [Intervention("blocks.0.hook_resid_post", "fn", lambda a, s: a.double(), steps=[1])])
    with pytest.raises(InterventionError, match="does not fit"):
        inst.run(_runner(lm), [Intervention("hook_embed", "add", torch.ones(7))])


def test_fn_interventions_know_where_the_loop_is(lm):
    """An ``fn`` intervention gets the StepContext of the step it runs in: index and noise levels t → s."""
    from interp.steps import StepContext

    seen: list[StepContext] = []

    def record(act, context):
        seen.append(context)
        return act

    attach(lm).run(_runner(lm), [Intervention("hook_embed", "fn", record, steps=[0, 2, 5])])
    assert seen == [StepContext(i, 1 - i / STEPS, 1 - (i + 1) / STEPS) for i in (0, 2, 5)]


def test_session_leaves_the_callers_intervention_as_given():
    from tests.conftest import tiny_diffusers_unet

    unet = tiny_diffusers_unet()
    iv = Intervention("mid.hook_out", "scale", 1.0)  # an alias of mid_block
    inst = attach(unet)
    x = torch.randn(1, 1, 8, 8)
    inst.run(lambda: [unet(x, 1).sample for _ in range(1)], [iv])
    assert iv.name == "mid.hook_out"


def test_site_position_axis_comes_from_the_hook_point():
    from transformer_lens.hook_points import HookPoint

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.hook_conv = HookPoint()
            self.hook_conv.pos_dim = 2  # e.g. [batch, channels, pos]
            self.hook_plain = HookPoint()
            self.hook_pattern = HookPoint()

        def forward(self, x):
            return self.hook_pattern(self.hook_plain(self.hook_conv(x)))

    inst = attach(Model())
    assert {n: s.pos_dim for n, s in inst.sites.items()} == {"hook_conv": 2, "hook_plain": 1, "hook_pattern": 2}


def test_traces_compare_by_identity_without_raising(lm):
    a = attach(lm).trace(_runner(lm), capture="hook_embed")
    b = attach(lm).trace(_runner(lm), capture="hook_embed")
    assert a == a and a != b and len({a, b}) == 2  # no "ambiguous truth value" from tensor fields


def test_several_calls_per_step_are_never_dropped_silently():
    """Classifier-free guidance calls the model twice per step: stack() makes the call axis explicit."""
    from tests.conftest import tiny_diffusers_unet

    unet = tiny_diffusers_unet()
    inst = attach(unet)
    x = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))

    def cfg_loop():
        for step in range(3):
            cond, uncond = unet(x, step).sample, unet(x * 0.5, step).sample  # two calls, as CFG does
            yield {"guided": uncond + 2.0 * (cond - uncond), "t": 1 - step / 3}

    trace = inst.trace(cfg_loop, capture="mid_block")
    assert trace.calls("mid_block", 1) == 2
    with pytest.raises(TraceError, match=r"called 2 times .* pass call=k"):
        trace.stack("mid_block")
    both = trace.stack("mid.hook_out", call="all")  # an alias of mid_block
    assert both.shape[:2] == (3, 2)
    assert torch.equal(both[:, 1], trace.stack("mid_block", call=1))
    assert torch.equal(trace["mid.hook_out", 2, 1], trace["mid_block", 2, 1])
    assert not torch.equal(both[:, 0], both[:, 1])


def test_growing_sequences_stack_with_padding_and_a_mask():
    """The AR sampler feeds a longer prefix each step: stack() pads on request and never fails silently."""
    from tests.conftest import tiny_ar

    ar = tiny_ar()
    ids = ar.encode_prompts(["123+456="])
    run = lambda: sample_steps(ar, ids, SamplerConfig(name="ar"), torch.Generator().manual_seed(0))  # noqa: E731
    trace = attach(ar).trace(run, capture="hook_embed")
    with pytest.raises(TraceError, match="changes shape across steps"):
        trace.stack("hook_embed")
    padded, mask = trace.stack("hook_embed", pad=0.0)
    assert padded.shape == (4, 1, 11, 32)  # 4 answer tokens; prefixes of 8..11 tokens
    assert mask[:, 0, :, 0].sum(1).tolist() == [8, 9, 10, 11]
    for step in range(4):
        assert torch.equal(padded[step, :, : 8 + step], trace["hook_embed", step])
    assert (padded[~mask] == 0).all()


def test_an_intervention_may_name_hooks_by_glob(lm):
    ablate_all = attach(lm).run(_runner(lm), [Intervention("blocks.*.hook_mlp_out", "ablate", steps=[0])])
    one_by_one = attach(lm).run(
        _runner(lm), [Intervention(f"blocks.{i}.hook_mlp_out", "ablate", steps=[0]) for i in range(2)]
    )
    plain = attach(lm).run(_runner(lm))
    assert torch.equal(ablate_all[0].probs, one_by_one[0].probs)
    assert not torch.equal(ablate_all[0].probs, plain[0].probs)


def test_analyses_run_on_a_trace(lm):
    """A trace keeps the sampler's step records: revisions and smearing take it as they take the steps."""
    from interp.analyses.revisions import revisions
    from interp.analyses.smearing import smearing
    from interp.steps import Step

    steps = list(_runner(lm)())
    trace = attach(lm).trace(_runner(lm), capture="hook_embed")
    records = trace.records()
    assert [type(r) for r in records] == [Step] * STEPS
    assert all(
        torch.equal(a.tokens, b.tokens) and torch.equal(a.probs, b.probs) for a, b in zip(records, steps, strict=True)
    )
    assert revisions(trace, 8).summary() == revisions(steps, 8).summary()
    assert smearing(trace, 8).summary() == smearing(steps, 8).summary()
