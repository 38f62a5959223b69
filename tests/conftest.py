from __future__ import annotations

import os
import subprocess
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]
TINY = {"d_model": 32, "n_layers": 2, "n_heads": 2, "d_mlp": 64, "train_size": 500}


def tiny_dlm(**overrides):
    from interp.methods import DiffusionLM, DLMConfig

    torch.manual_seed(0)
    return DiffusionLM(DLMConfig(**{**TINY, **overrides}))


def tiny_ar(**overrides):
    from interp.methods import ARConfig, AutoregressiveLM

    torch.manual_seed(0)
    return AutoregressiveLM(ARConfig(**{**TINY, **overrides}))


def tiny_diffusers_unet():
    """A small randomly initialised diffusers ``UNet2DModel`` on 1×8×8 images (seed 0), with attention."""
    from diffusers import UNet2DModel

    torch.manual_seed(0)
    return UNet2DModel(
        sample_size=8,
        in_channels=1,
        out_channels=1,
        block_out_channels=(16, 32),
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        layers_per_block=1,
        norm_num_groups=8,
        attention_head_dim=8,
    ).eval()


@dataclass
class CliResult:
    returncode: int
    stdout: str
    stderr: str


def error_line(proc, *fragments: str) -> str:
    """The one line a refused command prints: exit 2, a single non-blank stderr line starting ``error: ``, no
    traceback, containing each of ``fragments``; returned for further checks."""
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr[-2000:])
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def run_cli(*args: str, env: dict | None = None, check: bool = False, subprocess_: bool = False):
    """Run ``interp ARGS``: in this process (typer's CliRunner, cwd = the repository, ``sys.argv`` as the
    real command would see it), or in a child process with ``subprocess_`` or ``env`` (where the process
    boundary is what is tested). Returns ``returncode`` / ``stdout`` / ``stderr``."""
    if subprocess_ or env is not None:
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        proc = subprocess.run(
            [sys.executable, "-m", "interp.cli", *args], capture_output=True, text=True, env=full_env, cwd=ROOT
        )
        result = CliResult(proc.returncode, proc.stdout, proc.stderr)
    else:
        from typer.testing import CliRunner

        from interp.cli import build_app

        old_argv, old_cwd = sys.argv, os.getcwd()
        sys.argv = ["interp", *args]
        os.chdir(ROOT)
        try:
            out = CliRunner().invoke(build_app(), list(args), prog_name="interp")
        finally:
            sys.argv = old_argv
            os.chdir(old_cwd)
        stderr = out.stderr
        if out.exception is not None and not isinstance(out.exception, SystemExit):
            stderr += "".join(traceback.format_exception(out.exception))
        result = CliResult(out.exit_code, out.stdout, stderr)
    if check and result.returncode != 0:
        raise AssertionError(f"interp {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


TINY_TRAIN_ARGS = [
    "--d-model",
    "32",
    "--n-layers",
    "2",
    "--n-heads",
    "2",
    "--d-mlp",
    "64",
    "--train-size",
    "500",
    "--batch-size",
    "16",
    "--log-every",
    "5",
    "--no-progress",
]


@pytest.fixture(scope="session")
def dlm_checkpoint(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ck") / "dlm"
    run_cli("train", "dlm", "--out", str(out), "--steps", "20", *TINY_TRAIN_ARGS, check=True)
    return out


@pytest.fixture(scope="session")
def ar_checkpoint(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ck") / "ar"
    run_cli("train", "ar", "--out", str(out), "--steps", "20", *TINY_TRAIN_ARGS, check=True)
    return out
