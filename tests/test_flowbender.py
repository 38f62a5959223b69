"""FlowBender: feedback channels start at zero, the feedback is scaled as specified, the training step
looks ahead with zero feedback and no gradient, the shortcut saves evaluations, the toy and the
patching view run, the CLI trains / evaluates / refuses bad input with one ``error:`` line."""

from __future__ import annotations

import itertools
import json

import pytest
import torch

from interp.errors import ConfigError, DataError
from interp.methods.flowbender import FlowBender, FlowBenderConfig, feedback_flow_loss, zero_order_feedback
from interp.samplers.flowbender import FlowBenderSamplerConfig, sample_conditional
from tests.conftest import run_cli

TINY = ["--width", "32", "--depth", "2", "--batch-size", "32", "--no-progress"]


def method(**kw) -> FlowBender:
    torch.manual_seed(0)
    return FlowBender(FlowBenderConfig(**{"operator": "sr4", "width": 32, "depth": 2, **kw}))


def test_fresh_model_ignores_feedback_and_old_models_are_unchanged():
    m = method(feedback="both")
    with torch.no_grad():  # the DiT's output layer starts at zero: give it weights, or every output is 0
        m.model.out.weight.normal_()
    z, t = torch.randn(3, 1, 8, 8), torch.rand(3)
    cond = torch.randn(3, 1, 8, 8)
    out = m.model(z, t, cond=cond, feedback=torch.randn(3, 2, 8, 8))
    assert out.abs().sum() > 0 and torch.equal(out, m.model(z, t, cond=cond, feedback=torch.zeros(3, 2, 8, 8)))
    with torch.no_grad():  # once the weights move, the feedback matters
        m.model.extra.feedback_proj.weight.normal_()
    assert not torch.allclose(out, m.model(z, t, cond=cond, feedback=torch.randn(3, 2, 8, 8)))
    from interp.checkpoints import load_checkpoint

    old = load_checkpoint("checkpoints/dit-digits-flow-cond")  # a checkpoint from before the extra inputs
    assert not any("extra" in k for k in old.model.state_dict())
    with pytest.raises(ValueError, match="no condition or feedback input"):
        old.model(z, t, feedback=torch.zeros(3, 1, 8, 8))


def test_feedback_scaling():
    m = method(feedback="both")
    x = torch.rand(4, 1, 8, 8) * 2 - 1
    y = m.observe(torch.rand(4, 1, 8, 8) * 2 - 1)
    fb = m.feedback_of(x, y)
    assert fb.shape == (4, 2, 8, 8)
    zero, first = fb[:, 0], fb[:, 1]
    assert torch.allclose(zero.flatten(1).abs().amax(1), torch.ones(4))  # scaled per sample to max |·| = 1
    r = m.operator.residual(x, y)  # and it is the residual, upsampled: same signs, same ratios
    assert torch.allclose(zero[:, ::4, ::4], r[:, 0] / r.flatten(1).abs().amax(1)[:, None, None])
    assert torch.allclose(first.flatten(1).mean(1), torch.zeros(4), atol=1e-5)
    assert torch.allclose(first.flatten(1).std(1, unbiased=False), torch.ones(4), atol=1e-4)
    assert torch.equal(zero_order_feedback(torch.zeros(2, 3)), torch.zeros(2, 3))


def test_training_step_looks_ahead_with_zero_feedback_and_no_gradient():
    calls = []

    def velocity(z, sigma, fb):
        calls.append((None if fb is None else fb.clone(), torch.is_grad_enabled()))
        return z * w

    w = torch.tensor(0.5, requires_grad=True)
    x, eps = torch.randn(4, 1, 8, 8), torch.randn(4, 1, 8, 8)
    sigma = torch.tensor([0.1, 0.5, 0.15, 0.9])
    drop = torch.tensor([False, True, False, False])
    seen = []

    def feedback(x_hat):
        seen.append(x_hat)
        return torch.ones_like(x_hat)

    terms = feedback_flow_loss(velocity, x, eps, sigma, drop, feedback, lambda x_hat: x_hat.flatten(1).pow(2).mean(1))
    (fb0, grad0), (fb1, grad1) = calls
    assert fb0 is None and not grad0 and grad1  # look-ahead: zero feedback, no gradient
    z = (1 - sigma.view(-1, 1, 1, 1)) * x + sigma.view(-1, 1, 1, 1) * eps
    assert torch.allclose(seen[0], z - sigma.view(-1, 1, 1, 1) * 0.5 * z)  # x̂ = z − σ v₀
    assert fb1[1].abs().sum() == 0 and fb1[0].abs().min() == 1  # dropped examples get zeros
    assert set(terms) == {"flow", "align"}
    assert terms["align"][1] == 0 and terms["align"][3] == 0 and terms["align"][0] > 0  # σ ≤ 0.2 only
    sum(v.sum() for v in terms.values()).backward()
    assert w.grad is not None


def _toy_run(cfg, zero_at=()):
    def velocity(z, t, fb):  # a "model" that follows its feedback
        return z + (0 if fb is None else fb)

    return list(
        sample_conditional(
            velocity, lambda x_hat: -x_hat, lambda x_hat: x_hat, cfg, (3, 2), torch.Generator().manual_seed(0), zero_at
        )
    )


@pytest.mark.parametrize(("shortcut", "expected"), [(0.0, 16), (0.5, 12), (1.0, 9)])
def test_shortcut_counts_evaluations(shortcut, expected):
    cfg = FlowBenderSamplerConfig(steps=8, shortcut=shortcut)
    record = _toy_run(cfg)
    assert sum(s.evaluations for s in record) == expected == cfg.evaluations()
    assert [s.shortcut for s in record].count(True) == cfg.shortcut_steps()
    assert not record[0].shortcut and record[-1].feedback.shape == (3, 2) and record[-1].feedback_norm.shape == (3,)


def test_shortcut_reuses_the_previous_estimate():
    record = _toy_run(FlowBenderSamplerConfig(steps=4, shortcut=1.0))
    for prev, step in itertools.pairwise(record):
        assert torch.allclose(step.feedback, -prev.x0)  # x̂ of a shortcut step = previous refined estimate


def test_zeroing_feedback_changes_only_later_steps():
    cfg = FlowBenderSamplerConfig(steps=6)
    base, patched = _toy_run(cfg), _toy_run(cfg, {3})
    assert all(torch.equal(a.x, b.x) for a, b in zip(base[:3], patched[:3], strict=True))
    assert patched[3].feedback_norm.sum() == 0 and not torch.equal(base[3].x, patched[3].x)


def test_bad_configs():
    with pytest.raises(DataError, match="unknown operator 'blur'"):
        FlowBenderConfig(operator="blur")
    with pytest.raises(ConfigError, match="needs its operator"):
        FlowBenderConfig()
    with pytest.raises(ConfigError, match="'jpeg10' is not differentiable"):
        FlowBenderConfig(operator="jpeg10", feedback="first")
    with pytest.raises(ConfigError, match=r"shortcut must be in \[0, 1\], got 1.5"):
        FlowBenderSamplerConfig(shortcut=1.5)
    m = method()
    with pytest.raises(DataError, match=r"observation has shape \[2, 1, 8, 8\].*give \[2, 1, 2, 2\]"):
        m.sample(torch.zeros(2, 1, 8, 8))


def test_toy_runs_and_is_deterministic():
    from interp.studies.flowbender_toy import ToyConfig, band_residual, run_toy, spiral_points

    x, c = spiral_points(400, generator=torch.Generator().manual_seed(0))
    assert band_residual(x, c).abs().mean() < 0.01  # data sits in its band
    assert band_residual(x, (c + 1) % 4).abs().mean() > 0.1
    cfg = ToyConfig(train_steps=30, n=40, sample_steps=4, width=32)
    a, b = run_toy(cfg, seed=1), run_toy(cfg, seed=1)
    assert a.frame().equals(b.frame())
    assert list(a.frame()["evaluations"]) == [4, 4, 8, 5]
    assert a.frame()["residual"][1] < a.frame()["residual"][0]  # guidance lowers the residual it sees
    assert len(a.figure().data) > 0


def test_patching_view_on_the_toy():
    from interp.analyses.feedback_patching import feedback_patching
    from interp.studies.flowbender_toy import ToyConfig, band_residual, sample_toy, train_toy

    model = train_toy(True, ToyConfig(train_steps=30, width=32), seed=0)
    classes = torch.arange(16) % 4
    cfg = FlowBenderSamplerConfig(steps=4)
    result = feedback_patching(
        lambda zero_at: sample_toy(model, classes, cfg, 0, zero_at)[1], lambda x: band_residual(x, classes)
    )
    frame = result.frame()
    assert list(frame["step"]) == [0, 1, 2, 3, "all"] and (frame["shift"] >= 0).all()
    assert frame["shift"].iloc[-1] > 0  # a trained model uses its feedback
    with pytest.raises(DataError, match="outside the run"):
        feedback_patching(lambda zero_at: sample_toy(model, classes, cfg, 0, zero_at)[1], lambda x: x, [7])


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("fb") / "ck"
    run_cli("train", "flowbender", "--operator", "sr4", "--out", str(out), "--steps", "20", *TINY, check=True)
    return out


def test_train_then_eval_prints_fidelity_plausibility_and_evaluations(checkpoint):
    result = run_cli("eval", "-c", str(checkpoint), "--json", check=True)
    payload = json.loads(result.stdout)
    for key in ("psnr", "residual", "fd", "fd_floor", "precision", "recall"):
        assert isinstance(payload[key], float), key
    assert payload["evaluations"] == 40 and payload["n"] == 180 and payload["operator"] == "sr4"
    short = json.loads(
        run_cli("eval", "-c", str(checkpoint), "--json", "--shortcut", "1", "--n", "8", check=True).stdout
    )
    assert short["evaluations"] == 21


def test_trace_records_the_feedback(checkpoint, tmp_path):
    from interp.hooks import Trace

    run_cli("trace", "-c", str(checkpoint), "--out", str(tmp_path / "tr"), "--n", "2", "--steps", "3", check=True)
    trace = Trace.load(tmp_path / "tr")
    assert trace.state("feedback").shape == (3, 2, 1, 8, 8)
    assert trace.state("feedback_norm").shape == (3, 2)
    assert trace.calls("blocks.0.hook_resid_post", 0) == 2  # look-ahead + refined pass


def _refused(result, message: str):
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], result.stderr


def test_bad_input_on_the_command_line(checkpoint, tmp_path):
    out = tmp_path / "new"
    _refused(
        run_cli("train", "flowbender", "--operator", "blur", "--out", str(out), "--steps", "2", *TINY),
        "unknown operator 'blur'",
    )
    assert not out.exists()
    _refused(run_cli("eval", "-c", str(checkpoint), "--shortcut", "1.5"), "shortcut must be in [0, 1]")
    broken = tmp_path / "broken"
    broken.mkdir()
    header = json.loads((checkpoint / "config.json").read_text())
    del header["config"]["operator"]
    (broken / "config.json").write_text(json.dumps(header))
    (broken / "model.safetensors").write_bytes((checkpoint / "model.safetensors").read_bytes())
    png = tmp_path / "grid.png"
    _refused(run_cli("sample", "-c", str(broken), "--out", str(png)), "needs its operator")
    assert not png.exists()
    _refused(run_cli("sample", "-c", str(checkpoint), "--out", str(png), "--n", "999"), "more than the 180")
    assert not png.exists()


def test_report_has_the_flowbender_sections(checkpoint, tmp_path):
    out = tmp_path / "r.html"
    run_cli("report", "-c", str(checkpoint), "--out", str(out), "--n", "8", check=True)
    text = out.read_text()
    for title in ("Fidelity and plausibility per sampler", "step by step", "When the model uses its feedback"):
        assert title in text, title
