"""The shipped checkpoints are what checkpoints/README.md says: the command each records is the one the
page gives, the sizes match, and the digits feature network retrains from its command (to float rounding:
the shipped one was trained on another machine, whose kernels round differently; on one machine the
same command gives the same bits)."""

from __future__ import annotations

import json
import re
import shlex

import torch
from safetensors.torch import load_file

from tests.conftest import ROOT, run_cli

ROW = re.compile(r"^\| `([^`]+)` \| .* \| ([0-9.]+) (MB|kB) \| `(interp [^`]+)` \|$")


def _rows() -> dict[str, tuple[float, str]]:
    rows = {}
    for line in (ROOT / "checkpoints" / "README.md").read_text().splitlines():
        m = ROW.match(line)
        if m:
            rows[m.group(1)] = (float(m.group(2)) * (1e6 if m.group(3) == "MB" else 1e3), m.group(4))
    return rows


def test_every_shipped_checkpoint_is_documented_with_its_recorded_command_and_size():
    rows = _rows()
    folders = sorted(p.name for p in (ROOT / "checkpoints").iterdir() if (p / "config.json").is_file())
    assert sorted(rows) == folders
    for name, (size, command) in rows.items():
        folder = ROOT / "checkpoints" / name
        assert json.loads((folder / "config.json").read_text())["meta"]["command"] == command, name
        assert f"--out checkpoints/{name}" in command, name
        actual = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
        assert abs(actual - size) / actual < 0.01, (name, actual, size)


def test_the_digits_feature_network_retrains_from_its_command(tmp_path):
    command = _rows()["feature-net-digits"][1]
    args = shlex.split(command)[1:]
    args[args.index("--out") + 1] = str(tmp_path / "net")
    run_cli(*args, check=True)
    shipped = load_file(str(ROOT / "checkpoints" / "feature-net-digits" / "model.safetensors"))
    again = load_file(str(tmp_path / "net" / "model.safetensors"))
    assert shipped.keys() == again.keys()
    assert all(torch.allclose(shipped[k], again[k], rtol=0, atol=1e-4) for k in shipped)  # measured: 8e-6
    meta = json.loads((tmp_path / "net" / "config.json").read_text())["meta"]
    shipped_meta = json.loads((ROOT / "checkpoints" / "feature-net-digits" / "config.json").read_text())["meta"]
    assert meta["heldout_accuracy"] == shipped_meta["heldout_accuracy"]
