"""Checkpoints: a folder with ``config.json`` + one safetensors file per component (+ ``trainer_state/``
for resume).

``config.json`` holds ``kind`` (the registered method that builds the model, :mod:`interp.registry`),
``format_version``, the method's ``config`` and free-form ``meta`` (training command, seed, metrics).
A method with several networks (generator, discriminator, a frozen feature net, like diffusers'
``model_index.json``) lists them as ``components`` (``{name: file}``); a single-network method has the
one component ``model`` in ``model.safetensors`` and no list. Writes are atomic: the whole folder is
written aside and renamed into place. Loading validates everything and never unpickles: a
``.pt``/``.bin``/pickle file is refused with a message saying so.

Folders of other libraries (a transformers model folder: ``config.json`` with a ``model_type`` and no
``kind``, safetensors weights) load through a :class:`ForeignLoader` that a method module registers
(:func:`register_foreign_loader`); the method object they give is used as any checkpoint's.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from interp import registry
from interp.errors import CheckpointError, InterpError
from interp.io import atomic_directory, output_target, recover_directory

FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
MODEL_FILE = "model.safetensors"
TRAINER_DIR = "trainer_state"
_PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".pkl", ".pickle", ".ckpt")


SHIPPED_ENV = "INTERP_CHECKPOINTS"


def shipped_dirs() -> list[Path]:
    """Where shipped checkpoints are looked for, in order: ``$INTERP_CHECKPOINTS``, ``./checkpoints``, and
    the ``checkpoints/`` of the source checkout this package runs from (absent after a wheel install)."""
    dirs = [Path(os.environ[SHIPPED_ENV])] if os.environ.get(SHIPPED_ENV) else []
    dirs.append(Path("checkpoints"))
    source = Path(__file__).resolve().parents[1] / "checkpoints"
    if (source.parent / "pyproject.toml").is_file():
        dirs.append(source)
    return dirs


def find_shipped(name: str) -> Path:
    """The first ``name`` folder in :func:`shipped_dirs`; an error listing where it looked if none."""
    for folder in shipped_dirs():
        if (folder / name).is_dir():
            return folder / name
    looked = ", ".join(str(d) for d in shipped_dirs())
    raise CheckpointError(f"no shipped checkpoint {name!r} in {looked} (set ${SHIPPED_ENV} to the folder holding it)")


def known_kinds() -> list[str]:
    return registry.kinds()


def components(method: Any) -> dict[str, torch.nn.Module]:
    """``{name: module}`` of a method: ``method.components()`` where defined, else ``{"model": method.model}``."""
    get = getattr(method, "components", None)
    return dict(get()) if callable(get) else {"model": method.model}


def component_files(names: list[str]) -> dict[str, str]:
    return {name: MODEL_FILE if name == "model" else f"{name}.safetensors" for name in names}


def check_output(path: str | os.PathLike[str], kind: str) -> None:
    """Refuse to write a ``kind`` checkpoint at ``path`` if something not ours is there: a file, a folder
    with files but no checkpoint, or a checkpoint of another kind. An empty folder, or a checkpoint of
    the same kind (a run being resumed or replaced), is fine."""
    path = output_target(path)  # a file among the parents is refused here, before any work
    recover_directory(path)
    if path.is_file() or path.is_symlink():
        raise CheckpointError(f"{path} is a file; refusing to replace it with a checkpoint folder")
    if not path.exists() or not any(path.iterdir()):
        return
    config = path / CONFIG_FILE
    try:
        found = json.loads(config.read_text()).get("kind") if config.is_file() else None
    except (OSError, ValueError, AttributeError):
        found = None
    if found is None:
        raise CheckpointError(f"{path} holds files that are not an interp checkpoint; refusing to replace them")
    if found != kind:
        raise CheckpointError(f"{path} holds a {found!r} checkpoint; refusing to replace it with a {kind!r} one")


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
    """Write ``method`` (its ``kind``, ``cfg`` and the weights of each component, or ``weights``
    (``{component: state dict}``) if given) atomically.

    ``trainer_state`` (JSON) and ``trainer_tensors`` (``{file stem: tensors}``) go to ``trainer_state/``;
    ``text_files`` (``{name: content}``, e.g. ``metrics.jsonl``) beside ``config.json``. Refuses to
    replace what is not a checkpoint of the same kind (:func:`check_output`).
    """
    path = Path(path)
    spec = registry.spec_of(method)
    if spec is None:
        raise CheckpointError(f"{type(method).__name__} is not a registered method; register a MethodSpec first")
    check_output(path, spec.kind)
    header = {"kind": spec.kind, "format_version": FORMAT_VERSION, "config": method.config_dict(), "meta": meta or {}}
    states = weights if weights is not None else {n: m.state_dict() for n, m in components(method).items()}
    files = component_files(list(states))
    if list(files) != ["model"]:
        header["components"] = files
    with atomic_directory(path, check=lambda target: check_output(target, spec.kind)) as tmp:
        (tmp / CONFIG_FILE).write_text(json.dumps(header, indent=2, sort_keys=True) + "\n")
        for name, state in states.items():
            save_file({k: v.detach().contiguous() for k, v in state.items()}, str(tmp / files[name]))
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


def _check_file(file: Path) -> None:
    if file.is_dir():
        raise CheckpointError(f"{file} is a folder; expected a safetensors file")
    if not file.is_file():
        raise CheckpointError(f"checkpoint file {file} is missing")


def read_safetensors_header(file: Path) -> dict[str, tuple[list[int], str]]:
    """``{name: (shape, dtype)}`` from a safetensors file's header, without reading any tensor data."""
    from safetensors import safe_open

    _check_file(file)
    try:
        with safe_open(str(file), framework="pt") as fh:
            return {k: (list(fh.get_slice(k).get_shape()), fh.get_slice(k).get_dtype()) for k in fh.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{file}: corrupt or truncated safetensors file ({exc})") from exc


def load_safetensors(file: Path) -> dict[str, torch.Tensor]:
    _check_file(file)
    try:
        return load_file(str(file))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{file}: corrupt or truncated safetensors file ({exc})") from exc


_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
           "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
           "BOOL": torch.bool}  # fmt: skip


def check_state_dict(
    loaded: dict[str, Any], expected: dict[str, torch.Tensor], file: Path, shape_of=lambda v: list(v.shape)
) -> None:
    """The names and shapes of ``loaded`` (tensors, or anything ``shape_of`` reads) against ``expected``."""
    missing = sorted(set(expected) - set(loaded))
    unexpected = sorted(set(loaded) - set(expected))
    if missing:
        raise CheckpointError(f"{file}: missing tensor(s) {missing}")
    if unexpected:
        raise CheckpointError(f"{file}: unexpected tensor(s) {unexpected}")
    for name, tensor in expected.items():
        if shape_of(loaded[name]) != list(tensor.shape):
            raise CheckpointError(
                f"{file}: tensor {name!r} has shape {shape_of(loaded[name])}, the config expects {list(tensor.shape)}"
            )


def check_header(header: dict[str, tuple[list[int], str]], expected: dict[str, torch.Tensor], file: Path) -> None:
    """Names, shapes and dtypes of a safetensors header against the state dict a config builds."""
    check_state_dict(header, expected, file, shape_of=lambda entry: entry[0])
    for name, tensor in expected.items():
        if _DTYPES.get(header[name][1]) != tensor.dtype:
            raise CheckpointError(
                f"{file}: tensor {name!r} is stored as {header[name][1]}, the model expects {tensor.dtype}"
            )


def check_finite(tensors: dict[str, torch.Tensor], file: Path) -> None:
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise CheckpointError(f"{file}: tensor {name!r} holds NaN or infinite values; refusing to load it")


# --- folders of other libraries -----------------------------------------------------------------------
@dataclass(frozen=True)
class ForeignLoader:
    """How a method reads a folder that is not an interp checkpoint: ``claims(config)`` says whether the parsed
    ``config.json`` (a JSON object without ``kind``) is one it reads, ``load(path)`` returns the method object
    (``.meta``, ``.checkpoint_path`` set; every problem a :class:`CheckpointError`), ``config(path)`` the
    library's config object without reading weights. ``what`` names the folders it reads, for messages."""

    what: str
    claims: Callable[[dict[str, Any]], bool]
    load: Callable[[Path], Any]
    config: Callable[[Path], Any]


_FOREIGN: dict[str, ForeignLoader] = {}


def register_foreign_loader(loader: ForeignLoader) -> ForeignLoader:
    _FOREIGN[loader.what] = loader
    return loader


def foreign_loader(path: str | os.PathLike[str]) -> ForeignLoader | None:
    """The loader of folder ``path`` if its ``config.json`` is another library's (no ``kind``); None for an interp
    checkpoint or a folder without a readable ``config.json`` (:func:`read_header` then says what is wrong). A
    transformers config no registered loader reads is a :class:`CheckpointError` naming its ``model_type``."""
    config_path = Path(path) / CONFIG_FILE
    if not config_path.is_file():
        return None
    try:
        data = json.loads(config_path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or "kind" in data:
        return None
    registry.load()  # method modules register their loaders
    for loader in _FOREIGN.values():
        if loader.claims(data):
            return loader
    if "model_type" in data:
        readable = ", ".join(sorted(_FOREIGN)) or "none"
        raise CheckpointError(
            f"{config_path}: a transformers config of model_type {data['model_type']!r}, which interp does not load "
            f"as a checkpoint (it reads: {readable}; interp depth --hf-config counts any transformers config)"
        )
    return None


def foreign_config(path: str | os.PathLike[str]) -> Any | None:
    """The library config of a foreign folder (no weights read), or None for an interp checkpoint."""
    loader = foreign_loader(path)
    return loader.config(Path(path)) if loader is not None else None


def load_checkpoint(path: str | os.PathLike[str], expected_kind: str | tuple[str, ...] | None = None) -> Any:
    """Load a checkpoint folder and return the method object (every component in eval mode, ``.meta``,
    ``.checkpoint_path``)."""
    path = Path(path)
    loader = foreign_loader(path) if path.is_dir() else None
    if loader is not None:
        method = loader.load(path)
        allowed = (expected_kind,) if isinstance(expected_kind, str) else expected_kind
        if allowed is not None and method.kind not in allowed:
            raise CheckpointError(f"{path} is {loader.what}; this command needs {' or '.join(allowed)}")
        return method
    header = read_header(path)
    if expected_kind is not None:
        allowed = (expected_kind,) if isinstance(expected_kind, str) else expected_kind
        if header["kind"] not in allowed:
            raise CheckpointError(
                f"checkpoint {path} is of kind {header['kind']!r}; this command needs {' or '.join(allowed)}"
            )
    spec = registry.spec(header["kind"])
    source = f"{CONFIG_FILE}: config"
    files = header.get("components", component_files(["model"]))
    try:
        # first on the meta device: sizes are checked against the files' headers before any memory is taken
        with torch.device("meta"):
            shadow = spec.build(header["config"], source=source)
    except InterpError as exc:
        raise CheckpointError(f"{path / CONFIG_FILE}: {exc}") from exc
    except (RuntimeError, ValueError, OverflowError) as exc:  # sizes no tensor can have
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(f"{path / CONFIG_FILE}: the sizes in its config cannot be built ({first})") from exc
    shadow_modules = components(shadow)
    if not isinstance(files, dict) or sorted(files) != sorted(shadow_modules):
        raise CheckpointError(
            f"{path / CONFIG_FILE}: components {files!r} do not match the method's {sorted(shadow_modules)}"
        )
    for name, module in shadow_modules.items():
        file = path / str(files[name])
        check_header(read_safetensors_header(file), module.state_dict(), file)
    method = spec.build(header["config"], source=source)
    for name, module in components(method).items():
        file = path / str(files[name])
        loaded = load_safetensors(file)
        check_state_dict(loaded, module.state_dict(), file)
        check_finite(loaded, file)
        module.load_state_dict(loaded)
        module.eval()
    method.meta = header.get("meta", {})
    method.checkpoint_path = path
    return method
