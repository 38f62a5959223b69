"""Checkpoints: a folder with ``config.json`` + ``model.safetensors`` (+ ``trainer_state/`` for resume).

``config.json`` holds ``kind`` (which method builds the model), ``format_version``, the method's
``config`` and free-form ``meta`` (training command, seed, metrics). Writes are atomic: the whole
folder is written aside and renamed into place. Loading validates everything and never unpickles:
a ``.pt``/``.bin``/pickle file is refused with a message saying so.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from interp.errors import CheckpointError, InterpError
from interp.io import atomic_directory, recover_directory

FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
MODEL_FILE = "model.safetensors"
TRAINER_DIR = "trainer_state"
_PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".pkl", ".pickle", ".ckpt")


def _builders() -> dict[str, Callable[[dict[str, Any]], Any]]:
    from interp.methods import METHODS

    def make(method_cls, cfg_cls):
        return lambda cfg: method_cls(cfg_cls.from_dict(cfg, source=f"{CONFIG_FILE}: config"))

    return {kind: make(m, c) for kind, (m, c) in METHODS.items()}


def known_kinds() -> list[str]:
    return sorted(_builders())


def save_checkpoint(
    path: str | os.PathLike[str],
    method: Any,
    *,
    weights: dict[str, torch.Tensor] | None = None,
    meta: dict[str, Any] | None = None,
    trainer_state: dict[str, Any] | None = None,
    trainer_tensors: dict[str, dict[str, torch.Tensor]] | None = None,
    text_files: dict[str, str] | None = None,
) -> Path:
    """Write ``method`` (its ``kind``, ``cfg`` and model weights, or ``weights`` if given) atomically.

    ``trainer_state`` (JSON) and ``trainer_tensors`` (``{file stem: tensors}``) go to ``trainer_state/``;
    ``text_files`` (``{name: content}``, e.g. ``metrics.jsonl``) beside ``config.json``.
    """
    path = Path(path)
    header = {"kind": method.kind, "format_version": FORMAT_VERSION, "config": method.config_dict(), "meta": meta or {}}
    state = weights if weights is not None else method.model.state_dict()
    with atomic_directory(path) as tmp:
        (tmp / CONFIG_FILE).write_text(json.dumps(header, indent=2, sort_keys=True) + "\n")
        save_file({k: v.detach().contiguous() for k, v in state.items()}, str(tmp / MODEL_FILE))
        for name, content in (text_files or {}).items():
            (tmp / name).write_text(content)
        if trainer_state is not None:
            (tmp / TRAINER_DIR).mkdir()
            (tmp / TRAINER_DIR / "state.json").write_text(json.dumps(trainer_state, indent=2, sort_keys=True) + "\n")
            for stem, tensors in (trainer_tensors or {}).items():
                save_file(
                    {k: v.detach().contiguous() for k, v in tensors.items()},
                    str(tmp / TRAINER_DIR / f"{stem}.safetensors"),
                )
    return path


def read_header(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Validated ``config.json`` of a checkpoint folder."""
    path = Path(path)
    recover_directory(path)
    if path.is_file():
        _refuse_file(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    config_path = path / CONFIG_FILE
    if not config_path.is_file():
        pickles = [p.name for p in path.iterdir() if p.suffix in _PICKLE_SUFFIXES]
        hint = f"; found {pickles}, which are pickle-based and are never loaded" if pickles else ""
        raise CheckpointError(f"checkpoint {path} has no {CONFIG_FILE}{hint}")
    try:
        header = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{config_path}: not valid JSON ({exc})") from exc
    if not isinstance(header, dict):
        raise CheckpointError(f"{config_path}: expected a JSON object")
    for field in ("kind", "format_version", "config"):
        if field not in header:
            raise CheckpointError(f"{config_path}: missing field {field!r}")
    kinds = known_kinds()
    if header["kind"] not in kinds:
        raise CheckpointError(f"{config_path}: unknown kind {header['kind']!r}; known kinds: {', '.join(kinds)}")
    if header["format_version"] != FORMAT_VERSION:
        raise CheckpointError(
            f"{config_path}: unsupported format_version {header['format_version']!r}; this interp reads version {FORMAT_VERSION}"
        )
    return header


def _refuse_file(path: Path) -> None:
    with open(path, "rb") as fh:
        magic = fh.read(2)
    if path.suffix in _PICKLE_SUFFIXES or magic[:1] == b"\x80" or magic == b"PK":
        raise CheckpointError(
            f"{path} looks like a pickle-based torch file; interp never unpickles files (they can run code). "
            "Convert it to a checkpoint folder with config.json + model.safetensors"
        )
    raise CheckpointError(f"{path} is a file; a checkpoint is a folder with {CONFIG_FILE} and {MODEL_FILE}")


def load_safetensors(file: Path) -> dict[str, torch.Tensor]:
    if not file.is_file():
        raise CheckpointError(f"checkpoint file {file} is missing")
    try:
        return load_file(str(file))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{file}: corrupt or truncated safetensors file ({exc})") from exc


def check_state_dict(loaded: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], file: Path) -> None:
    missing = sorted(set(expected) - set(loaded))
    unexpected = sorted(set(loaded) - set(expected))
    if missing:
        raise CheckpointError(f"{file}: missing tensor(s) {missing}")
    if unexpected:
        raise CheckpointError(f"{file}: unexpected tensor(s) {unexpected}")
    for name, tensor in expected.items():
        if loaded[name].shape != tensor.shape:
            raise CheckpointError(
                f"{file}: tensor {name!r} has shape {list(loaded[name].shape)}, the config expects {list(tensor.shape)}"
            )


def load_checkpoint(path: str | os.PathLike[str], expected_kind: str | tuple[str, ...] | None = None) -> Any:
    """Load a checkpoint folder and return the method object (``.model`` in eval mode, ``.meta``)."""
    path = Path(path)
    header = read_header(path)
    if expected_kind is not None:
        allowed = (expected_kind,) if isinstance(expected_kind, str) else expected_kind
        if header["kind"] not in allowed:
            raise CheckpointError(
                f"checkpoint {path} is of kind {header['kind']!r}; this command needs {' or '.join(allowed)}"
            )
    try:
        method = _builders()[header["kind"]](header["config"])
    except InterpError as exc:
        raise CheckpointError(f"{path / CONFIG_FILE}: {exc}") from exc
    file = path / MODEL_FILE
    loaded = load_safetensors(file)
    check_state_dict(loaded, method.model.state_dict(), file)
    method.model.load_state_dict(loaded)
    method.model.eval()
    method.meta = header.get("meta", {})
    method.checkpoint_path = path
    return method
