"""The shared training loop: exact resume after SIGKILL, two real processes, LR schedule, EMA."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from interp.train import TrainConfig, train
from tests.conftest import ROOT, TINY, TINY_TRAIN_ARGS, run_cli, tiny_dlm


def _weights(path):
    return load_file(str(path / "model.safetensors"))


def test_sigkill_and_resume_is_bit_identical(tmp_path):
    args = ["train", "dlm", "--steps", "30", "--ckpt-every", "10", "--selfcond", "topk", *TINY_TRAIN_ARGS]
    run_cli(*args, "--out", str(tmp_path / "straight"), check=True)

    # the same run, SIGKILLed right after step 17 by an on_step_end callback (in its own process)
    script = (
        "import os, signal, torch\n"
        "torch.set_num_threads(1)\n"  # as in this process (conftest): same reduction order, same floats
        "from interp.methods import DiffusionLM, DLMConfig\n"
        "from interp.train import TrainConfig, seed_everything, train\n"
        "seed_everything(0)\n"
        f"method = DiffusionLM(DLMConfig(selfcond='topk', **{TINY!r}))\n"
        "cfg = TrainConfig(steps=30, ckpt_every=10, batch_size=16, log_every=5)\n"
        "kill = lambda step: os.kill(os.getpid(), signal.SIGKILL) if step == 17 else None\n"
        f"train(method, {str(tmp_path / 'resumed')!r}, cfg, progress=False, on_step_end=kill)\n"
    )
    killed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT)
    assert killed.returncode == -9, f"expected SIGKILL, got {killed.returncode}: {killed.stderr[-500:]}"
    state = json.loads((tmp_path / "resumed" / "trainer_state" / "state.json").read_text())
    assert state["step"] == 10, "the last complete checkpoint survives the kill"
    resumed = run_cli(*args, "--out", str(tmp_path / "resumed"), check=True)
    assert "resumed from step 10" in resumed.stdout

    a, b = _weights(tmp_path / "straight"), _weights(tmp_path / "resumed")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs after resume"
    log_a = json.loads((tmp_path / "straight" / "trainer_state" / "state.json").read_text())["metrics"]
    log_b = json.loads((tmp_path / "resumed" / "trainer_state" / "state.json").read_text())["metrics"]
    assert [r["loss"] for r in log_a] == [r["loss"] for r in log_b]


def test_resume_refuses_another_config(tmp_path):
    out = tmp_path / "ck"
    run_cli("train", "dlm", "--out", str(out), "--steps", "5", *TINY_TRAIN_ARGS, check=True)
    proc = run_cli("train", "dlm", "--out", str(out), "--steps", "10", "--selfcond", "none", *TINY_TRAIN_ARGS)
    assert proc.returncode == 2 and "another configuration" in proc.stderr
    proc = run_cli("train", "dlm", "--out", str(out), "--steps", "10", "--lr", "0.5", *TINY_TRAIN_ARGS)
    assert proc.returncode == 2 and "differ in ['lr']" in proc.stderr


@pytest.mark.slow
def test_two_processes_match_one_process(tmp_path):
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable))
    assert torchrun, "torchrun is installed with torch"
    tiny = list(TINY_TRAIN_ARGS)
    tiny[tiny.index("--log-every") + 1] = "1"
    args = ["train", "dlm", "--steps", "12", *tiny]
    common = ["-m", "interp.cli", *args]
    one = tmp_path / "one"
    two = tmp_path / "two"
    run_cli(*args, "--out", str(one), check=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [torchrun, "--nproc_per_node", "2", "--master_port", "29517", *common, "--out", str(two)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    meta_one = json.loads((one / "config.json").read_text())["meta"]
    meta_two = json.loads((two / "config.json").read_text())["meta"]
    assert meta_one["world_size"] == 1
    assert meta_two["world_size"] == 2 and len(set(meta_two["process_ids"])) == 2, "two processes really ran"
    loss_one = [r["loss"] for r in json.loads((one / "trainer_state" / "state.json").read_text())["metrics"]]
    loss_two = [r["loss"] for r in json.loads((two / "trainer_state" / "state.json").read_text())["metrics"]]
    assert len(loss_one) == len(loss_two) >= 2
    assert loss_one == pytest.approx(loss_two, rel=1e-4, abs=1e-5), "same global batch, same loss curve"


def test_lr_schedule_warmup_and_cosine():
    cfg = TrainConfig(steps=100, lr=1.0, warmup=10, min_lr_ratio=0.1)
    assert cfg.lr_at(0) == pytest.approx(0.1)
    assert cfg.lr_at(9) == pytest.approx(1.0)
    assert cfg.lr_at(10) == pytest.approx(1.0)
    assert cfg.lr_at(99) == pytest.approx(0.1, abs=1e-3)
    lrs = [cfg.lr_at(s) for s in range(10, 100)]
    assert all(a >= b for a, b in itertools.pairwise(lrs))


def test_ema_weights_are_saved_and_differ_from_raw(tmp_path):
    m = tiny_dlm(selfcond="none")
    train(m, tmp_path / "ck", TrainConfig(steps=6, batch_size=8, ema=0.9, ckpt_every=0, log_every=2), progress=False)
    ema = _weights(tmp_path / "ck")
    raw = load_file(str(tmp_path / "ck" / "trainer_state" / "train_model.safetensors"))
    assert any(not torch.equal(ema[k], raw[k]) for k in ema)
    assert all(torch.equal(ema[k], v) for k, v in m.model.state_dict().items()), "the method ends with EMA weights"


def test_eval_callback_and_metrics(tmp_path):
    m = tiny_dlm(selfcond="none")
    seen = []

    def eval_fn(method, step):
        seen.append(step)
        return {"custom": float(step)}

    result = train(
        m,
        tmp_path / "ck",
        TrainConfig(steps=6, batch_size=8, eval_every=3, log_every=3),
        eval_fn=eval_fn,
        progress=False,
    )
    assert seen == [3, 6]
    assert [r.get("custom") for r in result.metrics if "custom" in r] == [3.0, 6.0]


def test_bad_train_settings():
    from interp.errors import ConfigError

    with pytest.raises(ConfigError, match="steps must be >= 1"):
        TrainConfig(steps=0)
    with pytest.raises(ConfigError, match="ema"):
        TrainConfig(ema=1.5)


def test_cli_eval_every_logs_exact_match(tmp_path):
    out = tmp_path / "ck"
    run_cli("train", "ar", "--out", str(out), "--steps", "10", "--eval-every", "5", *TINY_TRAIN_ARGS, check=True)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "exact_match" in r] == [5, 10]
    from interp.checkpoints import load_checkpoint
    from interp.evaluation import evaluate

    final = load_checkpoint(out)  # no EMA: the weights evaluated at step 10 are the saved ones
    expected = evaluate(final, final.cfg.task_config, 100, 0, batch_size=100).exact_match
    assert [r["exact_match"] for r in rows if "exact_match" in r][-1] == expected


from dataclasses import dataclass as _dataclass  # noqa: E402

from interp.config import Config  # noqa: E402


@_dataclass
class _TwoPhasesConfig(Config):
    b_reads_a: bool = True
    b_steps: int = -1  # -1: every step


class _TwoPhases:
    """Two linear networks: phase ``a`` trains ``a`` alone; phase ``b`` trains ``b`` on a loss that also
    reads ``a`` (its gradient must not reach ``a``'s next update), optionally only on the first steps."""

    def __init__(self, cfg: _TwoPhasesConfig):
        torch.manual_seed(0)
        self.cfg = cfg
        self.a, self.b = torch.nn.Linear(3, 3), torch.nn.Linear(3, 3)
        self.b_reads_a, self.b_steps = cfg.b_reads_a, (None if cfg.b_steps < 0 else cfg.b_steps)

    def components(self):
        return {"a": self.a, "b": self.b}

    def set_component(self, name, module):
        setattr(self, name, module)

    def config_dict(self):
        return self.cfg.to_dict()

    def train_dataset(self, seed):
        import datasets

        return datasets.Dataset.from_dict({"x": torch.randn(64, 3, generator=torch.Generator().manual_seed(seed))})

    def collate(self, rows):
        return {"x": torch.as_tensor(rows["x"], dtype=torch.float32)}

    def prepare(self, batch, generator):
        return batch

    def phases(self):
        from interp.train import Phase

        def loss_a(m, p):
            return (m["a"](p["x"]) ** 2).sum(1)

        def loss_b(m, p):
            a_out = m["a"](p["x"])
            return 100 * (m["b"](a_out if self.b_reads_a else a_out.detach()) - 1).pow(2).sum(1)

        active = None if self.b_steps is None else (lambda step, steps: step < self.b_steps)
        log = lambda: {"b_bias": float(self.b.bias.sum())}  # noqa: E731
        return [Phase("a", ("a",), loss_a), Phase("b", ("b",), loss_b, active=active, log=log)]


@pytest.fixture
def two_phases():
    from interp.registry import MethodSpec, register, unregister

    register(MethodSpec(kind="two-phases", method=_TwoPhases, config=_TwoPhasesConfig, summary="test"))
    yield _TwoPhases
    unregister("two-phases")


def test_a_phase_gradient_does_not_leak_into_another_components_update(tmp_path, two_phases):
    cfg = TrainConfig(steps=3, batch_size=8, warmup=0, grad_clip=0, ckpt_every=0, log_every=1)
    runs = {}
    for reads in (True, False):
        method = two_phases(_TwoPhasesConfig(b_reads_a=reads))
        train(method, tmp_path / str(reads), cfg, progress=False)
        runs[reads] = method.a.weight.detach().clone()
    assert torch.equal(runs[True], runs[False])  # b's backward through a never moves a


def test_phase_active_window_and_log_rows(tmp_path, two_phases):
    cfg = TrainConfig(steps=4, batch_size=8, warmup=0, ckpt_every=0, log_every=2)
    method = two_phases(_TwoPhasesConfig(b_steps=1))
    result = train(method, tmp_path / "run", cfg, progress=False)
    phase_rows = [r for r in result.metrics if r.get("phase") == "b"]
    assert [r["step"] for r in phase_rows] == [1]  # b ran on step 0 only, then stayed frozen
    assert phase_rows[0]["b_bias"] == pytest.approx(float(method.b.bias.sum()))
    loss_rows = [r for r in result.metrics if "loss" in r]
    assert loss_rows[-1]["time/b"] < loss_rows[-1]["time/a"]  # b's time is one step's, a's four
