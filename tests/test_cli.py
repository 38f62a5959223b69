"""The command line: happy paths print what the README says; bad input is one line, exit 2, nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import ROOT, TINY_TRAIN_ARGS, error_line, run_cli


def test_sample_json(dlm_checkpoint):
    proc = run_cli(
        "sample",
        "--checkpoint",
        str(dlm_checkpoint),
        "--prompt",
        "123+456=",
        "--prompt",
        "001+002=",
        "--sampler",
        "llada",
        "--steps",
        "4",
        "--json",
        check=True,
    )
    out = json.loads(proc.stdout)
    assert out["sampler"] == "llada" and out["steps"] == 4 and len(out["outputs"]) == 2
    assert all(len(o) == 4 for o in out["outputs"])


def test_sample_is_deterministic_per_seed(dlm_checkpoint):
    args = ["sample", "-c", str(dlm_checkpoint), "-p", "123+456=", "--temperature", "1.0", "--json"]
    a = json.loads(run_cli(*args, "--seed", "3", check=True).stdout)["outputs"]
    b = json.loads(run_cli(*args, "--seed", "3", check=True).stdout)["outputs"]
    assert a == b


def test_eval_json(ar_checkpoint):
    proc = run_cli(
        "eval",
        "--checkpoint",
        str(ar_checkpoint),
        "--task",
        "addition",
        "--digits",
        "3",
        "--n",
        "20",
        "--seed",
        "1",
        "--json",
        check=True,
    )
    out = json.loads(proc.stdout)
    assert out["n"] == 20 and out["sampler"] == "ar"
    from interp.checkpoints import load_checkpoint
    from interp.data import TaskConfig
    from interp.evaluation import evaluate

    expected = evaluate(load_checkpoint(ar_checkpoint), TaskConfig("addition", 3), 20, 1)
    assert out["exact_match"] == expected.exact_match and out["examples"] == expected.examples


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--prompt", "12a+456="], "outside the tokenizer alphabet"),
        (["--prompt", "123+456=0000000"], "leaves no room to generate"),
        (["--prompt", "123+456=", "--steps", "0"], "Invalid value for '--steps'"),
        (["--prompt", "123+456=", "--sampler", "beam"], "unknown sampler 'beam'"),
        (["--prompt", "123+456=", "--sampler", "ar"], "needs an autoregressive"),
    ],
)
def test_sample_bad_input(dlm_checkpoint, args, message):
    assert message in error_line(run_cli("sample", "--checkpoint", str(dlm_checkpoint), *args))


def test_eval_bad_input(dlm_checkpoint, tmp_path):
    assert "unknown task 'poetry'" in error_line(run_cli("eval", "-c", str(dlm_checkpoint), "--task", "poetry"))
    assert "does not fit it" in error_line(run_cli("eval", "-c", str(dlm_checkpoint), "--digits", "4"))
    assert "Invalid value for '--n'" in error_line(run_cli("eval", "-c", str(dlm_checkpoint), "--n", "0"))
    assert "does not exist" in error_line(run_cli("eval", "-c", str(tmp_path / "missing")))


def test_other_kind_checkpoint_refused(dlm_checkpoint, tmp_path):
    import shutil

    other = tmp_path / "other"
    shutil.copytree(dlm_checkpoint, other)
    header = json.loads((other / "config.json").read_text())
    header["kind"] = "vae"
    (other / "config.json").write_text(json.dumps(header))
    assert "unknown kind 'vae'" in error_line(run_cli("sample", "-c", str(other), "-p", "123+456="))
    image = ROOT / "checkpoints" / "dit-digits-flow-cond"
    out = str(Path(other).parent / "never")
    assert "needs a masked-diffusion language model; checkpoint" in error_line(
        run_cli("analyze", "revisions", "-c", str(image))
    )
    assert "--prompt does not apply to `interp trace` on 'image'" in error_line(
        run_cli("trace", "-c", str(image), "--out", out, "-p", "123+456=", "--no-progress")
    )
    assert not Path(out).exists()


def test_train_bad_input_writes_nothing(tmp_path):
    out = tmp_path / "never"
    assert "unknown task 'chess'" in error_line(run_cli("train", "dlm", "--out", str(out), "--task", "chess"))
    assert "selfcond must be one of" in error_line(run_cli("train", "dlm", "--out", str(out), "--selfcond", "half"))
    assert "steps must be >= 1" in error_line(
        run_cli("train", "ar", "--out", str(out), "--steps", "0", *TINY_TRAIN_ARGS)
    )
    assert not out.exists()
    mine = tmp_path / "mine"  # a folder of the user's is never replaced by a checkpoint
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    line = error_line(run_cli("train", "ar", "--out", str(mine), "--steps", "2", *TINY_TRAIN_ARGS))
    assert "holds files that are not an interp checkpoint" in line
    assert [p.name for p in mine.iterdir()] == ["notes.txt"] and (mine / "notes.txt").read_text() == "keep"


def test_pickle_given_to_sample_is_refused(tmp_path):
    f = tmp_path / "model.pt"
    f.write_bytes(b"\x80\x04K\x01.")
    assert "never unpickles" in error_line(run_cli("sample", "-c", str(f), "-p", "123+456="))


def test_installed_entry_point_prints_one_error_line(dlm_checkpoint):
    """The real process boundary: ``python -m interp.cli`` exits 2 with one ``error:`` line and no traceback."""
    proc = run_cli("sample", "-c", str(dlm_checkpoint), "-p", "12a+456=", subprocess_=True)
    assert "outside the tokenizer alphabet" in error_line(proc)
