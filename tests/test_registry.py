"""One method = one module: a method defined outside the package (tests/toy_method.py: its own config,
model, sampler and report section, three networks, one frozen) trains, samples, traces, evaluates and
reports through the CLI with no edit to interp; the registry refuses clashes and unknown kinds."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from interp import registry
from interp.errors import InterpError
from tests.conftest import run_cli

TOY_ARGS = ["--hidden", "16", "--steps", "30", "--ckpt-every", "10", "--no-progress"]


@pytest.fixture(scope="module")
def toy():
    import tests.toy_method as toy

    yield toy
    registry.unregister("toy")


def test_toy_method_through_the_cli(toy, tmp_path):
    out = tmp_path / "toy"
    trained = run_cli("train", "toy", "--out", str(out), *TOY_ARGS, check=True)
    assert "trained toy for 30 steps" in trained.stdout
    header = json.loads((out / "config.json").read_text())
    assert header["kind"] == "toy" and header["config"]["hidden"] == 16
    assert header["components"] == {
        "model": "model.safetensors",
        "critic": "critic.safetensors",
        "anchor": "anchor.safetensors",
    }
    log = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert {"model/flow", "model/anchor", "critic/t"} <= set(log[-1])  # every named term is logged
    assert log[-1]["model/flow"] < log[0]["model/flow"]  # and the velocity field learns

    sampled = json.loads(run_cli("sample", "-c", str(out), "--n", "32", "--json", check=True).stdout)
    assert sampled["sampler"] == "toy-euler" and sampled["n"] == 32
    assert "--prompt does not apply" in run_cli("sample", "-c", str(out), "-p", "x").stderr

    trace_dir = tmp_path / "trace"
    run_cli("trace", "-c", str(out), "--out", str(trace_dir), "--steps", "5", "--no-progress", check=True)
    info = json.loads(run_cli("trace-info", str(trace_dir), "--json", check=True).stdout)
    assert info["n_steps"] == 5 and info["names"] == ["hook_hidden"]

    scored = json.loads(run_cli("eval", "-c", str(out), "--n", "64", "--json", check=True).stdout)
    from interp.checkpoints import load_checkpoint
    from interp.samplers import run

    method = load_checkpoint(out)
    with torch.no_grad():
        final = list(run(toy.ToyEuler(method, 64, toy.ToySamplerConfig(), 0)))[-1].x
    assert scored["evaluations"] == 8
    assert scored["radius_error"] == pytest.approx(float((final.norm(dim=1) - 1).abs().mean()), abs=1e-6)

    html = tmp_path / "toy.html"
    run_cli("report", "-c", str(out), "--out", str(html), check=True)
    assert "Toy flow" in html.read_text() and "Mean distance to the circle" in html.read_text()


def test_frozen_component_is_saved_and_never_trained(toy, tmp_path):
    from interp.checkpoints import load_checkpoint

    out = tmp_path / "toy"
    run_cli("train", "toy", "--out", str(out), *TOY_ARGS, check=True)
    torch.manual_seed(0)  # the CLI seeds with --seed 0 before building the method
    fresh = toy.ToyFlow(toy.ToyConfig(hidden=16))
    saved = load_file(str(out / "anchor.safetensors"))
    for k, v in fresh.anchor.state_dict().items():
        assert torch.equal(saved[k], v), f"frozen anchor {k} changed in training"
    assert not torch.equal(load_file(str(out / "critic.safetensors"))["0.weight"], fresh.critic[0].weight)
    loaded = load_checkpoint(out)
    assert isinstance(loaded, toy.ToyFlow) and loaded.kind == "toy"


def test_multi_network_resume_is_bit_identical(toy, tmp_path):
    """Two optimisers and a frozen component: a run stopped at step 10 and resumed ends where the straight run does."""
    from interp.train import TrainConfig, seed_everything, train

    class Stop(Exception):
        pass

    def stop_at_10(step: int) -> None:
        if step == 10:
            raise Stop

    def run(out, on_step_end=None):
        seed_everything(0)
        method = toy.ToyFlow(toy.ToyConfig(hidden=16))
        cfg = TrainConfig(steps=20, batch_size=32, warmup=0, log_every=5, ckpt_every=10, ema=0.9)
        train(method, out, cfg, progress=False, on_step_end=on_step_end)

    run(tmp_path / "straight")
    with pytest.raises(Stop):
        run(tmp_path / "resumed", stop_at_10)
    assert json.loads((tmp_path / "resumed" / "trainer_state" / "state.json").read_text())["step"] == 10
    run(tmp_path / "resumed")
    for name in ("model", "critic", "anchor"):
        a = load_file(str(tmp_path / "straight" / f"{name}.safetensors"))
        b = load_file(str(tmp_path / "resumed" / f"{name}.safetensors"))
        assert all(torch.equal(a[k], b[k]) for k in a), f"{name} differs after resume"


def test_plugin_joins_a_fresh_process_through_the_environment():
    proc = run_cli("train", "--help", env={registry.ENV_VAR: "tests.toy_method"})
    assert proc.returncode == 0 and "toy" in proc.stdout


def test_registry_refuses_clashes_and_unknown_kinds(toy):
    spec = registry.spec("toy")
    with pytest.raises(InterpError, match="already registered"):
        registry.register(
            registry.MethodSpec(kind="toy", method=type("Other", (), {}), config=toy.ToyConfig, summary="")
        )
    assert registry.spec("toy") is spec
    with pytest.raises(InterpError, match="unknown method kind 'vae'"):
        registry.spec("vae")
    assert registry.spec_of(toy.ToyFlow(toy.ToyConfig())) is spec
    assert registry.spec_of(object()) is None


def test_a_phase_may_not_train_a_frozen_component(toy, tmp_path):
    from interp.train import Phase, TrainConfig, train

    method = toy.ToyFlow(toy.ToyConfig(hidden=16))
    method.phases = lambda: [Phase("anchor", ("anchor",), lambda modules, p: modules["anchor"](p["x"]).sum(1))]
    with pytest.raises(InterpError, match=r"phase 'anchor' optimises \['anchor'\], which are frozen"):
        train(method, tmp_path / "never", TrainConfig(steps=2, batch_size=8), progress=False)
    assert not (tmp_path / "never").exists()
