"""A transformers DiffusionGemma folder (save_pretrained of a tiny random config) through the CLI: sample,
trace, analyze and depth take it as they take our checkpoints; bad folders are one error line, exit 2
(depth reads the config only, so a missing shard does not stop it)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from tests.conftest import error_line, run_cli
from tests.test_diffusiongemma import C, tiny_diffusion_gemma


@pytest.fixture(scope="module")
def model():
    return tiny_diffusion_gemma()


@pytest.fixture(scope="module")
def folder(model, tmp_path_factory):
    out = tmp_path_factory.mktemp("hf") / "diffusiongemma"
    model.save_pretrained(out)
    return out


def test_loads_as_a_method_with_the_same_weights(folder, model):
    from interp.checkpoints import load_checkpoint
    from interp.protocols import TokenDenoiser

    method = load_checkpoint(folder)
    assert method.kind == "hf_diffusion_gemma" and method.canvas_length == C
    assert isinstance(method, TokenDenoiser)
    for (name, a), b in zip(model.state_dict().items(), method.model.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_sample_equals_generate(folder, model):
    prompt = [5, 6, 7, 8, 9]
    out = run_cli("sample", "-c", str(folder), "--prompt", " ".join(map(str, prompt)), "--steps", "3", "--json")
    assert out.returncode == 0, out.stderr
    payload = json.loads(out.stdout)
    assert payload["sampler"] == "diffusiongemma" and payload["steps"] == 3
    torch.manual_seed(0)
    expected = model.generate(torch.tensor([prompt]), max_new_tokens=C, max_denoising_steps=3, entropy_bound=0.1)
    assert payload["outputs"][0].split() == [str(t) for t in expected.sequences[0, len(prompt) :].tolist()]


def test_trace_records_every_denoising_step(folder, tmp_path):
    from interp.hooks import Trace

    out = run_cli("trace", "-c", str(folder), "--out", str(tmp_path / "t"), "--steps", "3", "--no-progress")
    assert out.returncode == 0, out.stderr
    trace = Trace.load(tmp_path / "t")
    assert trace.n_steps == 3 and trace.info()["names"] == ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"]


@pytest.mark.parametrize("analysis", ["revisions", "smearing"])
def test_analyze(folder, analysis):
    out = run_cli("analyze", analysis, "-c", str(folder), "--n", "3", "--steps", "4", "--json")
    assert out.returncode == 0, out.stderr
    payload = json.loads(out.stdout)
    assert payload["sampler"] == "diffusiongemma" and payload["n"] == 3
    assert payload["sampler_config"]["entropy_bound"] == 0.1, "the folder's default bound, not the CLI's"
    assert payload["steps"] == payload["sampler_config"]["steps"] == 4


def test_depth_of_the_folder_is_its_config_generation(folder, tmp_path):
    from interp.analyses.serial_depth import diffusion_gemma_depth
    from interp.checkpoints import foreign_config

    out = run_cli("depth", "-c", str(folder), "--seq-len", "5", "--generate", "--steps", "3", "--json")
    assert out.returncode == 0, out.stderr
    payload = json.loads(out.stdout)
    direct = diffusion_gemma_depth(foreign_config(folder), prompt_len=5, steps=3)
    assert payload["opaque_serial_depth"] == direct.opaque_serial_depth and payload["steps"] == 3


def _copy(folder, tmp_path, name="bad"):
    out = tmp_path / name
    shutil.copytree(folder, out)
    return out


@pytest.mark.parametrize("command", ["sample", "analyze", "trace"])
def test_missing_shard_is_one_error_line(folder, tmp_path, command):
    bad = _copy(folder, tmp_path)
    (bad / "model.safetensors").rename(bad / "model-00001-of-00002.safetensors")
    weight_map = {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}
    (bad / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    args = {
        "sample": ["sample", "-c", str(bad), "--prompt", "5 6"],
        "analyze": ["analyze", "revisions", "-c", str(bad), "--n", "2"],
        "trace": ["trace", "-c", str(bad), "--out", str(tmp_path / "t")],
    }[command]
    error_line(run_cli(*args), "missing weight shard", "model-00002-of-00002.safetensors")


def test_missing_weights_file_is_one_error_line(folder, tmp_path):
    bad = _copy(folder, tmp_path)
    (bad / "model.safetensors").unlink()
    error_line(run_cli("sample", "-c", str(bad), "--prompt", "5 6"), "no model.safetensors")


def test_config_of_another_model_type_is_one_error_line(folder, tmp_path):
    bad = _copy(folder, tmp_path)
    config = json.loads((bad / "config.json").read_text())
    (bad / "config.json").write_text(json.dumps({**config["text_config"], "model_type": "llama"}))
    for args in (["sample", "-c", str(bad), "--prompt", "5 6"], ["depth", "-c", str(bad), "--seq-len", "4"]):
        error_line(run_cli(*args), "model_type 'llama'")


@pytest.mark.parametrize("canvas", [0, 10**9])
def test_canvas_length_the_config_does_not_allow_is_one_error_line(folder, tmp_path, canvas):
    bad = _copy(folder, tmp_path)
    config = json.loads((bad / "config.json").read_text())
    (bad / "config.json").write_text(json.dumps({**config, "canvas_length": canvas}))
    error_line(run_cli("sample", "-c", str(bad), "--prompt", "5 6"), f"canvas_length {canvas} is not allowed")


def test_depth_canvas_length_other_than_the_configs_is_one_error_line(folder):
    out = run_cli("depth", "-c", str(folder), "--seq-len", "5", "--generate", "--canvas-length", str(C + 1))
    error_line(out, f"canvas length {C + 1} is not this config's", f"canvas_length={C}")


def test_prompt_outside_the_vocabulary_is_one_error_line(folder):
    error_line(run_cli("sample", "-c", str(folder), "--prompt", "5 999"), "token ids must be in 0..63")


def test_our_samplers_refuse_it_and_it_refuses_training(folder, tmp_path):
    out = run_cli("sample", "-c", str(folder), "--prompt", "5 6", "--sampler", "mdlm")
    error_line(out, "samples only with its own sampler")
    out = run_cli("train", "hf-diffusion-gemma", "--out", str(tmp_path / "x"), "--steps", "1")
    error_line(out, "loaded from its folder", "not built here")
