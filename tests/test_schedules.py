"""Multi-representation schedules (LWD): clocks from 0 to 1, monotone, convex / concave by construction;
SFD's formulas in our noise convention; a learned schedule starts synchronous, can reach SFD's shapes,
and is differentiable."""

from __future__ import annotations

import pytest
import torch

from interp.errors import ConfigError
from interp.processes.schedules import (
    SFD,
    LearnedSchedule,
    LearnedScheduleConfig,
    Synchronous,
    check_schedule,
    crossing_times,
)


def test_sfd_in_our_convention():
    sfd = SFD(delta=0.3)  # spaces (texture, semantics)
    t = sfd.clocks(torch.tensor([0.0, 0.2, 0.5, 1 / 1.3, 1.0]))
    expected_texture = [0.0, 0.26, 0.65, 1.0, 1.0]  # min(1, 1.3 τ)
    expected_semantic = [0.0, 0.0, 0.35, 0.7, 1.0]  # max(0, 1.3 τ - 0.3)
    assert torch.allclose(t[:, 0], torch.tensor(expected_texture), atol=1e-6)
    assert torch.allclose(t[:, 1], torch.tensor(expected_semantic), atol=1e-6)
    report = check_schedule(sfd)
    assert report["concave"] == [True, False] and report["convex"] == [False, True]
    crossings = crossing_times(sfd, levels=(0.0,))
    assert crossings[0.0][1] == pytest.approx(0.3 / 1.3, abs=1e-3)  # semantics clean at τ = Δ/(1+Δ), first
    assert crossings[0.0][0] == pytest.approx(0.0, abs=1e-3)
    assert torch.allclose(sfd.rates(torch.tensor([0.1, 0.9])), torch.tensor([[1.3, 0.0], [0.0, 1.3]]))
    with pytest.raises(ConfigError, match="delta must be in"):
        SFD(delta=1.0)


def test_synchronous():
    sync = Synchronous(3)
    tau = torch.rand(5)
    assert torch.equal(sync.clocks(tau), tau[:, None].expand(5, 3))
    assert check_schedule(sync)["convex"] == [True] * 3


def test_learned_schedule_starts_synchronous_and_keeps_its_shapes():
    sched = LearnedSchedule(LearnedScheduleConfig(shapes=("concave", "convex"), bins=8))
    tau = torch.linspace(0, 1, 101)
    assert torch.allclose(sched.clocks(tau), tau[:, None].expand(101, 2), atol=0.02)
    with torch.no_grad():  # any parameters: still monotone 0 → 1 and of its shape
        sched.base.normal_(0, 3)
        sched.increments.normal_(0, 3)
    report = check_schedule(sched)
    assert report["concave"][0] and report["convex"][1]
    t = sched.clocks(tau)
    assert (t[:, 0] >= tau - 1e-6).all() and (t[:, 1] <= tau + 1e-6).all()
    # rates are the derivative of the clocks (between kinks)
    mid = torch.tensor([0.31, 0.77])
    numeric = (sched.clocks(mid + 1e-3) - sched.clocks(mid - 1e-3)) / 2e-3
    assert torch.allclose(sched.rates(mid), numeric, atol=1e-3)


def test_learned_schedule_can_approach_sfd_and_is_differentiable():
    sched = LearnedSchedule(LearnedScheduleConfig(shapes=("concave", "convex"), bins=64))
    target = SFD(0.3)
    tau = torch.linspace(0, 1, 257)
    opt = torch.optim.Adam(sched.parameters(), lr=0.1)
    first = None
    for _ in range(300):
        loss = ((sched.clocks(tau) - target.clocks(tau)) ** 2).mean()
        first = first if first is not None else float(loss.detach())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss.detach()) < 0.02 * first, (first, float(loss.detach()))
    assert crossing_times(sched, levels=(0.05,))[0.05][1] > crossing_times(sched, levels=(0.05,))[0.05][0] + 0.1


def test_bad_schedule_configs_and_hand_edited_parameters_are_refused():
    with pytest.raises(ConfigError, match="shapes must each be one of"):
        LearnedScheduleConfig(shapes=("wiggly",))
    with pytest.raises(ConfigError, match="bins must be in"):
        LearnedScheduleConfig(bins=0)

    class Broken(Synchronous):
        def clocks(self, tau):
            return (1 - tau)[:, None]

    with pytest.raises(ConfigError, match="space 0: clock must rise monotonically from 0 to 1"):
        check_schedule(Broken(1))
