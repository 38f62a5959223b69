"""Hostile inputs to the loaders and the command line: each gets one ``error:`` line naming the file,
the field and what was expected, exit 2, and changes nothing; no input allocates what it cannot hold."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
from safetensors.torch import load_file, save_file

from interp.checkpoints import load_checkpoint
from interp.errors import CheckpointError, InterpError
from tests.conftest import ROOT, TINY_TRAIN_ARGS, error_line, run_cli

SHIPPED = ROOT / "checkpoints" / "dlm-addition3-none"


@pytest.fixture
def copy(tmp_path):
    def make(source=SHIPPED):
        out = tmp_path / source.name
        shutil.copytree(source, out)
        return out

    return make


def _edit_config(folder, **changes):
    header = json.loads((folder / "config.json").read_text())
    header["config"].update(changes)
    (folder / "config.json").write_text(json.dumps(header))


@pytest.mark.parametrize(
    ("d_model", "message"),
    [(10**5, "model.safetensors: tensor 'W_E' has shape [15, 128], the config expects [15, 100000]"),
     (10**9, "config.json: d_model must be in 1..1048576, got 1000000000")],
)  # fmt: skip
def test_huge_sizes_in_a_config_are_refused_before_anything_is_allocated(copy, d_model, message):
    folder = copy()
    _edit_config(folder, d_model=d_model, n_heads=1)
    code = (
        "import resource, sys\n"
        "resource.setrlimit(resource.RLIMIT_AS, (3 * 2**30, 3 * 2**30))\n"  # 3 GB: a 60 GB model cannot be built
        "from interp.checkpoints import load_checkpoint\n"
        "from interp.errors import CheckpointError\n"
        f"try:\n    load_checkpoint({str(folder)!r})\nexcept CheckpointError as e:\n    print(e); sys.exit(2)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2, proc.stderr[-1000:]
    assert message in proc.stdout, proc.stdout


def test_non_finite_weights_and_lying_dtypes_are_refused(copy):
    folder = copy()
    weights = load_file(str(folder / "model.safetensors"))
    name = "blocks.0.attn.qkv.weight"
    weights[name][0, 0] = float("nan")
    save_file(weights, str(folder / "model.safetensors"))
    with pytest.raises(CheckpointError, match=rf"tensor '{name}' holds NaN or infinite values"):
        load_checkpoint(folder)
    weights[name] = weights[name].nan_to_num().half()
    save_file(weights, str(folder / "model.safetensors"))
    with pytest.raises(CheckpointError, match=rf"'{name}' is stored as F16, the model expects torch.float32"):
        load_checkpoint(folder)


def test_a_config_field_of_the_wrong_type_is_named(copy):
    folder = copy(ROOT / "checkpoints" / "dit-digits-flow-blind")
    _edit_config(folder, time_conditioning="false")
    line = error_line(run_cli("sample", "-c", str(folder), "--out", str(folder.parent / "g.png")))
    assert "config.json" in line and "time_conditioning must be bool, got 'false' (str)" in line
    assert not (folder.parent / "g.png").exists()


def test_a_folder_where_the_weights_file_should_be(copy):
    folder = copy()
    (folder / "model.safetensors").unlink()
    (folder / "model.safetensors").mkdir()
    with pytest.raises(CheckpointError, match=r"model\.safetensors is a folder; expected a safetensors file"):
        load_checkpoint(folder)


def test_a_truncated_resume_state_is_a_clear_error(tmp_path):
    out = tmp_path / "ck"
    run_cli("train", "ar", "--out", str(out), "--steps", "2", *TINY_TRAIN_ARGS, check=True)
    state = out / "trainer_state" / "state.json"
    state.write_text(state.read_text()[:40])
    line = error_line(run_cli("train", "ar", "--out", str(out), "--steps", "4", *TINY_TRAIN_ARGS))
    assert "trainer_state/state.json" in line and "not valid JSON" in line


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--n", str(10**12)], "Invalid value for '--n'"),
        (["--steps", str(10**12)], "Invalid value for '--steps'"),
        (["--seed", str(2**70)], "Invalid value for '--seed'"),
        (["--bogus"], "No such option: --bogus"),
    ],
)
def test_numbers_out_of_range_are_refused_up_front(args, message):
    blind = str(ROOT / "checkpoints" / "dit-digits-flow-blind")
    assert message in error_line(run_cli("eval", "-c", blind, *args))


def test_prompts_empty_or_huge(tmp_path):
    assert "a prompt is empty" in error_line(run_cli("sample", "-c", str(SHIPPED), "-p", ""))
    line = error_line(run_cli("sample", "-c", str(SHIPPED), "-p", "x" * 10_000))
    assert "outside the tokenizer alphabet" in line and "(10000 characters)" in line and len(line) <= 310


def test_a_bad_transformers_config_is_one_line(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": "big"}))
    line = error_line(run_cli("depth", "--hf-config", str(tmp_path), "--seq-len", "8"))
    assert "not a usable transformers config" in line and "hidden_size" in line


def test_a_language_model_given_as_feature_network():
    blind = str(ROOT / "checkpoints" / "dit-digits-flow-blind")
    line = error_line(run_cli("eval", "-c", blind, "--n", "8", "--feature-net", str(SHIPPED)))
    assert "is a 'dlm' checkpoint, not a feature network" in line


def test_a_model_too_large_for_memory_is_one_line(tmp_path):
    out = tmp_path / "big"
    args = ["train", "dlm", "--out", str(out), "--d-model", str(2**20), "--d-mlp", str(2**22), "--n-heads", "1"]
    assert "out of memory" in error_line(run_cli(*args))
    assert not out.exists()


# --- property-based: no config.json value and no damaged weights file crashes the loader ---------------
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

JSON_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
)
FUZZ = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FUZZ
@given(field=st.sampled_from(sorted(json.loads((SHIPPED / "config.json").read_text())["config"])), value=JSON_VALUES)
def test_fuzz_config_fields(tmp_path_factory, field, value):
    folder = tmp_path_factory.mktemp("fuzz") / "ck"
    shutil.copytree(SHIPPED, folder)
    _edit_config(folder, **{field: value})
    try:
        load_checkpoint(folder)
    except InterpError:
        pass  # a clear error; anything else (TypeError, KeyError, a huge allocation) fails the test


WEIGHTS = (SHIPPED / "model.safetensors").read_bytes()


@FUZZ
@given(cut=st.integers(0, len(WEIGHTS) - 1), flip=st.integers(0, len(WEIGHTS) - 1), truncate=st.booleans())
def test_fuzz_damaged_weights(tmp_path_factory, cut, flip, truncate):
    folder = tmp_path_factory.mktemp("fuzz") / "ck"
    shutil.copytree(SHIPPED, folder)
    data = bytearray(WEIGHTS[:cut] if truncate else WEIGHTS)
    if not truncate:
        data[flip] ^= 0xFF
    (folder / "model.safetensors").write_bytes(bytes(data))
    try:
        load_checkpoint(folder)
    except InterpError:
        pass


def test_report_and_image_outputs_never_replace_a_users_file(tmp_path):
    blind = str(ROOT / "checkpoints" / "dit-digits-flow-blind")
    notes = tmp_path / "notes.html"
    notes.write_text("<html>my notes</html>")
    line = error_line(run_cli("report", "-c", str(SHIPPED), "--out", str(notes), "--n", "2"))
    assert "is not an HTML report written by interp" in line and notes.read_text() == "<html>my notes</html>"
    photo = tmp_path / "photo.png"
    photo.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    line = error_line(run_cli("sample", "-c", blind, "--n", "4", "--steps", "2", "--out", str(photo)))
    assert "is not a PNG grid written by interp" in line and photo.read_bytes().endswith(b"not really")
    grid = tmp_path / "grid.png"
    for steps in ("2", "3"):  # a grid interp wrote is replaced
        run_cli("sample", "-c", blind, "--n", "4", "--steps", steps, "--out", str(grid), check=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grid.png", "notes.html", "photo.png"]  # no debris


def test_an_output_under_a_file_is_refused_before_training(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    line = error_line(run_cli("train", "ar", "--out", str(notes / "ck"), "--steps", "2", *TINY_TRAIN_ARGS))
    assert "notes.txt is a file, not a folder" in line and notes.read_text() == "mine"
