"""Checkpoint round trip, atomic writes, and every bad checkpoint giving a specific error."""

from __future__ import annotations

import json
import pickle
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from interp.checkpoints import load_checkpoint, save_checkpoint
from interp.errors import CheckpointError
from interp.io import atomic_directory, recover_directory
from tests.conftest import tiny_ar, tiny_dlm


@pytest.fixture()
def ckpt(tmp_path):
    m = tiny_dlm(selfcond="topk")
    path = save_checkpoint(tmp_path / "ck", m, meta={"note": "x"})
    return m, path


def test_round_trip(ckpt):
    m, path = ckpt
    loaded = load_checkpoint(path)
    assert loaded.kind == "dlm" and loaded.cfg == m.cfg and loaded.meta == {"note": "x"}
    for (k, a), (_, b) in zip(m.model.state_dict().items(), loaded.model.state_dict().items(), strict=True):
        assert torch.equal(a, b), k


def _header(path):
    return json.loads((path / "config.json").read_text())


def _write_header(path, header):
    (path / "config.json").write_text(json.dumps(header))


def test_missing_folder_and_files(tmp_path, ckpt):
    _, path = ckpt
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope")
    (path / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"model\.safetensors is missing"):
        load_checkpoint(path)
    (path / "config.json").unlink()
    with pytest.raises(CheckpointError, match=r"no config\.json"):
        load_checkpoint(path)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda h: h.update(kind="vae"), "unknown kind 'vae'"),
        (lambda h: h.update(format_version=99), "unsupported format_version 99"),
        (lambda h: h.pop("config"), "missing field 'config'"),
        (lambda h: h["config"].update(selfcond="sideways"), "selfcond must be one of"),
        (lambda h: h["config"].update(colour="red"), r"unknown field\(s\) \['colour'\]"),
    ],
)
def test_bad_header(ckpt, change, message):
    _, path = ckpt
    header = _header(path)
    change(header)
    _write_header(path, header)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(path)


def test_invalid_json(ckpt):
    _, path = ckpt
    (path / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_checkpoint(path)


def test_tensor_missing_unexpected_wrong_shape(ckpt):
    _, path = ckpt
    file = path / "model.safetensors"
    good = load_file(str(file))
    broken = dict(good)
    broken.pop("W_pos")
    save_file(broken, str(file))
    with pytest.raises(CheckpointError, match=r"missing tensor\(s\) \['W_pos'\]"):
        load_checkpoint(path)
    save_file({**good, "extra.weight": torch.zeros(2)}, str(file))
    with pytest.raises(CheckpointError, match=r"unexpected tensor\(s\) \['extra.weight'\]"):
        load_checkpoint(path)
    save_file({**good, "W_pos": torch.zeros(3, 3)}, str(file))
    with pytest.raises(CheckpointError, match=r"'W_pos' has shape \[3, 3\], the config expects \[12, 32\]"):
        load_checkpoint(path)


def test_truncated_and_corrupt_safetensors(ckpt):
    _, path = ckpt
    file = path / "model.safetensors"
    data = file.read_bytes()
    file.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint(path)
    file.write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint(path)


class _Boom:
    def __reduce__(self):
        import pathlib

        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def test_pickle_is_refused_and_never_unpickled(tmp_path):
    marker = tmp_path / "UNPICKLED"
    boom = _Boom()
    boom.marker = str(marker)
    for name in ("model.pt", "weights.bin"):
        f = tmp_path / name
        f.write_bytes(pickle.dumps(boom))
        with pytest.raises(CheckpointError, match="never unpickles"):
            load_checkpoint(f)
    torch_file = tmp_path / "torchsave.pt"
    torch.save({"w": torch.zeros(1)}, torch_file)
    with pytest.raises(CheckpointError, match="never unpickles"):
        load_checkpoint(torch_file)
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "pytorch_model.bin").write_bytes(pickle.dumps(boom))
    with pytest.raises(CheckpointError, match="never loaded"):
        load_checkpoint(folder)
    assert not marker.exists(), "a pickle was executed"


def test_expected_kind(tmp_path):
    path = save_checkpoint(tmp_path / "ar", tiny_ar())
    with pytest.raises(CheckpointError, match="of kind 'ar'; this command needs dlm"):
        load_checkpoint(path, expected_kind="dlm")


def test_atomic_write_keeps_old_checkpoint_on_failure(tmp_path, ckpt):
    _m, path = ckpt
    before = (path / "model.safetensors").read_bytes()
    with pytest.raises(RuntimeError), atomic_directory(path) as tmp:
        (tmp / "config.json").write_text("{}")
        raise RuntimeError("killed mid-write")
    assert (path / "model.safetensors").read_bytes() == before
    assert [p.name for p in path.parent.iterdir() if p.name.startswith(".")] == [], "no temp folders left behind"
    load_checkpoint(path)


def test_recover_after_death_between_renames(tmp_path, ckpt):
    _, path = ckpt
    aside = path.parent / f".{path.name}.old"
    shutil.move(path, aside)  # the state if a process died between the two renames
    recover_directory(path)
    load_checkpoint(path)
