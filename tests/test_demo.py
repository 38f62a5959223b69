"""`make demo`'s job on the shipped checkpoints: accuracy per model and the report."""

from __future__ import annotations

import json

from tests.conftest import ROOT, run_cli

SHIPPED = ROOT / "checkpoints"


def test_shipped_checkpoints_load_and_are_small():
    from interp.checkpoints import load_checkpoint
    from interp.demo import SHIPPED as NAMES

    for name in NAMES:
        path = SHIPPED / name
        method = load_checkpoint(path)
        assert method.cfg.task == "addition" and method.cfg.digits == 3
        assert (path / "model.safetensors").stat().st_size < 8 * 2**20
        assert not (path / "trainer_state").exists(), "shipped checkpoints carry no optimizer state"


def test_demo_runs_and_writes_report(tmp_path):
    import subprocess
    import sys

    out = tmp_path / "demo.html"
    proc = subprocess.run(
        [sys.executable, "-m", "interp.demo", "--n", "20", "--out", str(out)], capture_output=True, text=True, cwd=ROOT
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    for name in ("dlm-addition3-continuous", "dlm-addition3-topk", "dlm-addition3-none", "ar-addition3"):
        assert name in proc.stdout
    assert "report written" in proc.stdout and out.exists()
    assert out.stat().st_size > 1_000_000, "plotly.js is embedded"
    html = out.read_text()
    assert "Per-t denoising error (DiT on digits" in html and "Reading the noise level without a timestep" in html


def test_shipped_dlm_solves_a_problem():
    proc = run_cli("sample", "-c", str(SHIPPED / "dlm-addition3-continuous"), "-p", "123+456=", "--json", check=True)
    assert json.loads(proc.stdout)["outputs"] == ["0579"]


def test_shipped_image_checkpoints_load_and_are_small():
    from interp.analyses.quality import load_feature_net
    from interp.checkpoints import load_checkpoint

    for data, size in (("digits", 8), ("mnist5k", 28)):
        for variant, tc in (("cond", True), ("blind", False)):
            path = SHIPPED / f"dit-{data}-flow-{variant}"
            method = load_checkpoint(path, expected_kind="image")
            assert (method.cfg.data, method.cfg.image_size, method.cfg.time_conditioning) == (data, size, tc)
            assert (path / "model.safetensors").stat().st_size < 4 * 2**20
            assert not (path / "trainer_state").exists()
        net = load_feature_net(SHIPPED / f"feature-net-{data}")
        assert net.head.out_features == 10
