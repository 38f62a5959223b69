"""LWD: representation spaces, the schedule correction, the joint probe, the multi-space samplers, the
schedule-ordering analysis and the CLI on tiny models."""

from __future__ import annotations

import json

import pytest
import torch

from interp.methods.lwd import LWD, LWDConfig, derive_config
from interp.models.spaces import patchify, unpatchify
from interp.processes.schedules import (
    SFD,
    LearnedSchedule,
    LearnedScheduleConfig,
    corrected_weight,
)
from interp.train import TrainConfig, train
from tests.conftest import run_cli

TINY = {"width": 16, "depth": 1, "n_heads": 2}
TINY_ARGS = ["--width", "16", "--depth", "1", "--n-heads", "2", "--batch-size", "16", "--log-every", "5"]


def tiny(**overrides) -> LWD:
    torch.manual_seed(0)
    return LWD(LWDConfig(**derive_config({**TINY, **overrides})))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny learned-schedule LWD trained 40 steps (probe on steps 8..9 at the defaults)."""
    out = tmp_path_factory.mktemp("lwd") / "learned"
    method = tiny(schedule="learned")
    result = train(method, out, TrainConfig(steps=40, batch_size=16, log_every=5, ckpt_every=0), progress=False)
    return method, out, result


def test_patches_round_trip_and_space_shapes_match_the_config():
    x = torch.randn(3, 2, 8, 8)
    assert torch.equal(unpatchify(patchify(x, 2), 2, 2, 8), x)
    cfg = LWDConfig(**derive_config({"spaces": "pixels,semantic,coarse", **TINY}))
    spaces = cfg.spaces_module()
    assert spaces.shapes == cfg.space_shapes() == [(16, 4), (1, 8), (16, 1)]
    method = LWD(cfg)
    assert method.model.cfg.shapes == "16x4,1x8,16x1"  # a third space is a config change
    assert method.model.clock_widths == [6, 5, 5]  # width 16 over 3 clocks
    out = method.model([torch.randn(2, n, d) for n, d in cfg.space_shapes()], torch.rand(2, 3))
    assert [tuple(o.shape) for o in out] == [(2, 16, 4), (2, 1, 8), (2, 16, 1)]


def test_semantic_space_is_whitened_and_reads_the_class():
    method = tiny()
    method.fit_spaces()
    images, _ = method.data("train")
    z = method.spaces.encode(images)[1].squeeze(1)  # [N, 8]
    assert torch.allclose(z.mean(0), torch.zeros(8), atol=1e-4)
    assert torch.allclose(z.std(0), torch.ones(8), atol=1e-3)
    held, held_labels = method.data("heldout")
    shown = method.spaces.classify(1, method.spaces.encode(held)[1])
    assert float((shown == held_labels).float().mean()) > 0.8  # 8 whitened dims keep the class


def test_corrected_weight_keeps_each_spaces_noise_weights_fixed():
    """E_τ[φ'(τ) L(φ(τ))] = ∫ L(t) dt whatever the schedule: the correction removes the schedule's own
    pull on a space whose loss depends on its own noise level only."""
    tau = (torch.arange(200_000) + 0.5) / 200_000

    def loss(t):
        return (1 - t) ** 3 + 0.5 * t  # any per-space loss of its noise level; ∫ = 1/4 + 1/4

    learned = LearnedSchedule(LearnedScheduleConfig(shapes=("concave", "convex"), bins=8, init_scale=-6))
    with torch.no_grad():
        learned.increments.copy_(torch.linspace(-3, 2, 7).expand(2, 7))
        for schedule in (SFD(0.3), learned):
            t = schedule.clocks(tau)
            corrected = (corrected_weight(schedule, tau, clip=1e9) * loss(t)).mean(0)
            plain = loss(t).mean(0)
            assert torch.allclose(corrected, torch.full((2,), 0.5), atol=2e-3)
            assert (plain - 0.5).abs().max() > 0.02  # without it the schedule changes what each space learns


def test_sfd_generalises_to_three_spaces():
    sfd = SFD(0.3, ahead=(False, True, True))
    tau = torch.tensor([0.1, 0.5, 0.9])
    t = sfd.clocks(tau)
    assert torch.allclose(t[:, 1], t[:, 2]) and torch.allclose(t[:, 1], ((1.3 * tau) - 0.3).clamp(min=0))
    assert torch.allclose(t[:, 0], (1.3 * tau).clamp(max=1))


def test_probe_updates_the_schedule_only_in_its_window_and_logs_it(trained):
    method, out, result = trained
    rows = [r for r in result.metrics if r.get("phase") == "schedule"]
    assert [r["step"] for r in rows] == [9]  # probe_start 0.2 x 40 = step 8, share 0.03 x 40 -> 1 update
    with torch.no_grad():
        now = method.learned.clocks(torch.tensor([0.5]))[0]
    assert now.tolist() == pytest.approx([rows[-1]["phi/pixels@0.5"], rows[-1]["phi/semantic@0.5"]], abs=1e-6)
    fresh = tiny(schedule="learned").learned
    assert not torch.equal(fresh.increments, method.learned.increments), "the probe moved the schedule"
    log = (out / "metrics.jsonl").read_text()
    assert '"phase": "schedule"' in log and "time/schedule" in log
    assert (out / "schedule.safetensors").is_file() and (out / "spaces.safetensors").is_file()


def test_correction_changes_the_learned_schedule(tmp_path):
    cfg = TrainConfig(steps=20, batch_size=16, ckpt_every=0, log_every=0)
    curves = []
    for correction in (True, False):
        method = tiny(schedule="learned", correction=correction, probe_share=0.25)
        train(method, tmp_path / str(correction), cfg, progress=False)
        curves.append(method.learned.increments.detach().clone())
    assert not torch.equal(*curves)


def test_sfd_sampler_moves_each_space_only_inside_its_window():
    method = tiny(schedule="sfd")
    for io in method.model.spaces:  # a fresh model predicts zero velocity: give it one
        torch.nn.init.normal_(io.out.weight)
    from interp.samplers.spaces import SpacesSamplerConfig

    _, record = method.sample(3, SpacesSamplerConfig(name="tau-euler", steps=10), seed=0)
    clocks = torch.stack([r.clocks for r in record])  # [steps, 2] after each step
    pixels = [r.states["pixels"] for r in record]
    semantic = [r.states["semantic"] for r in record]
    # texture stays pure noise while τ ≥ 1/1.3: its clock is still 1 after steps 0 and 1 (τ = 0.9, 0.8)
    assert clocks[:2, 0].tolist() == [1.0, 1.0] and float(clocks[2, 0]) < 1
    assert torch.equal(pixels[0], pixels[1]) and not torch.equal(pixels[1], pixels[2])
    # semantics are clean once τ ≤ 0.3/1.3: the last steps leave them unchanged
    assert float(clocks[-3, 1]) == 0.0 and torch.equal(semantic[-3], semantic[-1])
    assert not torch.equal(pixels[-3], pixels[-1])
    _, heun = method.sample(2, SpacesSamplerConfig(name="tau-heun", steps=4), seed=0)
    assert [r.evaluations for r in heun] == [2, 2, 2, 1]


def test_trace_records_every_spaces_state(trained):
    from interp.hooks import attach
    from interp.samplers.spaces import SpacesSamplerConfig

    method, _, _ = trained
    trace = attach(method).trace(
        lambda: method.sampling(2, SpacesSamplerConfig(steps=5), seed=0)[1], capture="blocks.*.hook_resid_post"
    )
    assert trace.n_steps == 5
    assert trace.state("states.semantic").shape == (5, 2, 1, 8)
    assert trace.state("estimates.pixels").shape == (5, 2, 16, 4)
    assert "clock/semantic" in trace.steps.columns


def test_schedule_ordering_from_the_checkpoint(trained):
    from interp.analyses.schedule_ordering import schedule_ordering
    from interp.checkpoints import load_checkpoint
    from interp.samplers.spaces import SpacesSamplerConfig

    _, out, _ = trained
    method = load_checkpoint(out)
    result = schedule_ordering(method, n=20, sampler=SpacesSamplerConfig(steps=5), seed=0)
    summary = result.summary()
    assert summary["order"] == ["semantic", "pixels"]  # convex semantic: clean first, even barely moved
    assert summary["checks"]["monotone"] == [True, True] and summary["checks"]["convex"][1]
    assert summary["probe_updates"] == 1 and set(result.probe.space) == {"pixels", "semantic"}
    assert len(result.commitments) == 5 * 2
    last = result.commitments[(result.commitments.space == "pixels")].agreement.iloc[-1]
    assert last == 1.0  # the final pixel estimate shows the final class by definition
    result.figure()


def test_cli_train_sample_eval_analyze_report(tmp_path):
    out = tmp_path / "sfd"
    run_cli("train", "lwd", "--schedule", "sfd", "--steps", "10", "--out", str(out), *TINY_ARGS, check=True)
    sample = run_cli("sample", "-c", str(out), "--n", "4", "--steps", "3", "--out", str(tmp_path / "s.png"), "--json")
    assert sample.returncode == 0 and json.loads(sample.stdout)["evaluations"] == 3
    ev = run_cli("eval", "-c", str(out), "--n", "20", "--steps", "3", "--json", check=True)
    assert {"fd", "precision", "recall"} <= set(json.loads(ev.stdout))
    an = run_cli("analyze", "schedule-ordering", "-c", str(out), "--n", "10", "--steps", "4", "--json", check=True)
    payload = json.loads(an.stdout)
    assert payload["schedule"] == "sfd" and payload["clean_first"] == "semantic"
    assert payload["crossing_tau"]["semantic"]["0.1"] == pytest.approx(0.4 / 1.3, abs=2e-3)
    rep = run_cli("report", "-c", str(out), "--n", "10", "--out", str(tmp_path / "r.html"), check=True)
    assert "When each space is denoised" in (tmp_path / "r.html").read_text() and rep.returncode == 0


def test_bad_input(tmp_path, trained):
    import shutil

    bad = run_cli("train", "lwd", "--delta", "1.0", "--schedule", "sfd", "--out", str(tmp_path / "d"), *TINY_ARGS)
    assert bad.returncode == 2 and "delta must be in [0, 1)" in bad.stderr and not (tmp_path / "d").exists()
    image = tmp_path / "img"
    run_cli("train", "image", "--steps", "2", "--width", "16", "--depth", "1", "--n-heads", "2", "--out", str(image),
            check=True)  # fmt: skip
    wrong = run_cli("analyze", "schedule-ordering", "-c", str(image))
    assert wrong.returncode == 2 and "multi-space (LWD)" in wrong.stderr

    _, out, _ = trained
    edited = tmp_path / "edited"
    shutil.copytree(out, edited)
    from safetensors.torch import load_file, save_file

    state = load_file(str(edited / "schedule.safetensors"))
    state["increments"] = torch.full_like(state["increments"], 1e38)  # overflows: no monotone clock left
    save_file(state, str(edited / "schedule.safetensors"))
    r = run_cli("analyze", "schedule-ordering", "-c", str(edited), "--n", "4", "--steps", "2")
    assert r.returncode == 2 and "must rise monotonically" in r.stderr
    r = run_cli("sample", "-c", str(edited), "--n", "2", "--out", str(tmp_path / "x.png"))
    assert r.returncode == 2 and not (tmp_path / "x.png").exists()

    spaces = tmp_path / "spaces"
    shutil.copytree(out, spaces)
    header = json.loads((spaces / "config.json").read_text())
    header["config"]["spaces"] = "pixels,semantic,coarse"
    (spaces / "config.json").write_text(json.dumps(header))
    r = run_cli("sample", "-c", str(spaces), "--n", "2", "--out", str(tmp_path / "y.png"))
    assert r.returncode == 2 and r.stderr.startswith("error:") and not (tmp_path / "y.png").exists()


def test_resume_after_the_probe_is_bit_identical(tmp_path):
    cfg = TrainConfig(steps=20, batch_size=16, ckpt_every=5, log_every=5)
    straight = tiny(schedule="learned", probe_start=0.25, probe_share=0.25)
    train(straight, tmp_path / "a", cfg, progress=False)
    part = tiny(schedule="learned", probe_start=0.25, probe_share=0.25)
    with pytest.raises(_Stop):
        train(part, tmp_path / "b", cfg, progress=False, on_step_end=_stop_at(7))
    resumed = tiny(schedule="learned", probe_start=0.25, probe_share=0.25)
    result = train(resumed, tmp_path / "b", cfg, progress=False)
    assert result.resumed_from == 5  # the last checkpoint before the stop, inside the probe window (5..9)
    for name, module in straight.components().items():
        for (k, v), w in zip(
            module.state_dict().items(), resumed.components()[name].state_dict().values(), strict=True
        ):
            assert torch.equal(v, w), f"{name}.{k}"


class _Stop(Exception):
    pass


def _stop_at(step: int):
    def callback(done: int) -> None:
        if done == step:
            raise _Stop

    return callback


def test_both_phases_weight_each_space_by_its_clock_rate(trained):
    """The denoiser's loss and the schedule's probe loss are the same corrected objective: per space the
    uncorrected error times min(φ_k'(τ), clip) (and the semantic weight)."""
    method, _, _ = trained
    off = LWD(method.cfg.replace(correction=False))
    off.model, off.learned, off.spaces = method.model, method.learned, method.spaces
    batch = method.collate({"image": method.data("heldout")[0][:8], "label": method.data("heldout")[1][:8]})
    p = method.prepare(batch, torch.Generator().manual_seed(0))
    rates = corrected_weight(method.learned, p["tau"], method.cfg.clip)
    with torch.no_grad():
        on_terms, off_terms = method.loss(method.model, p), off.loss(off.model, p)
        for k, name in enumerate(method.names):
            assert torch.allclose(on_terms[name], off_terms[name] * rates[:, k], rtol=1e-5)
        modules = {"model": method.model, "schedule": method.learned}
        on, plain = method.schedule_loss(modules, p), off.schedule_loss(modules, p)
    assert torch.allclose(on["denoise"], sum(off_terms[n] * rates[:, k] for k, n in enumerate(method.names)), rtol=1e-5)
    assert torch.allclose(plain["denoise"], sum(off_terms.values()), rtol=1e-5)
