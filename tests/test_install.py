"""A non-editable (wheel) install: the package runs without its source tree, finds shipped checkpoints
through ``$INTERP_CHECKPOINTS`` (or ``./checkpoints``), and says where it looked when it cannot."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from tests.conftest import ROOT


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "interp", src / "interp", ignore=shutil.ignore_patterns("__pycache__"))
    pip = [sys.executable, "-m", "pip", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", str(src), "-w", str(tmp / "dist")], check=True)
    wheel = next((tmp / "dist").glob("interp-*.whl"))
    subprocess.run([*pip, "install", "--no-deps", "--target", str(tmp / "site"), str(wheel)], check=True)
    return tmp / "site"


def _run(site, cwd, code, **env):
    full = {k: v for k, v in os.environ.items() if k != "INTERP_CHECKPOINTS"}
    full.update(PYTHONPATH=str(site), **env)
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=full, capture_output=True, text=True)


def test_wheel_install_finds_shipped_checkpoints_through_the_environment(site, tmp_path):
    code = (
        "import interp, json\n"
        "from interp.evaluation import feature_net_dir\n"
        "assert 'site' in interp.__file__, interp.__file__\n"
        "print(json.dumps(str(feature_net_dir('digits'))))\n"
    )
    found = _run(site, tmp_path, code, INTERP_CHECKPOINTS=str(ROOT / "checkpoints"))
    assert found.returncode == 0, found.stderr
    assert found.stdout.strip() == f'"{ROOT / "checkpoints" / "feature-net-digits"}"'
    missing = _run(site, tmp_path, code)
    assert missing.returncode == 1 and "no feature network for data 'digits'" in missing.stderr
    assert "INTERP_CHECKPOINTS" in missing.stderr and str(ROOT) not in missing.stderr  # not the source tree
