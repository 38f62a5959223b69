"""``Trace``: activations × denoising steps, plus the sampler state of every step.

``trace[name, step]`` → tensor (the first forward call of that step; ``trace[name, step, call]``
for later calls, e.g. Heun's second evaluation), ``trace.stack(name)`` → ``[steps, ...]``,
``trace.steps`` → pandas frame of the sampler state per step, ``trace.names``.

Activations live in RAM up to ``ram_budget`` bytes; past it they are spilled to safetensors shards
in ``spill_dir`` and read back lazily. ``save(dir)`` writes the whole trace atomically (a folder
appears complete or not at all, and never replaces anything but a saved trace) and ``Trace.load(dir)``
reads it back exactly.

A saved trace is ``trace.json`` (the index) beside ``shard-NNNNN.safetensors`` (activations) and
``state.safetensors`` (sampler state). The index records, per file, its size in bytes and, per tensor,
its dtype, shape and the sha256 of its bytes. ``load`` checks the index in full and every file against it
(present, its size, its tensors' names, dtypes and shapes) without reading the activations; each
activation's sha256 is checked when it is read (``verify()`` reads them all now). Hashing when read keeps
``load`` instant for traces of many gigabytes and checks exactly the bytes handed out; the sampler state,
read whole by ``load``, is checked there.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from interp.errors import InterpError
from interp.io import (
    TAG_PATTERN,
    TMP_MARK,
    OutputError,
    atomic_directory,
    atomic_file,
    output_target,
    recover_directory,
    remove_stale,
    temp_tag,
)

TRACE_FORMAT_VERSION = 2  # 2: per-file sizes and per-tensor dtype, shape and sha256 in trace.json
TRACE_FILE = "trace.json"
STATE_FILE = "state.safetensors"
Key = tuple[str, int, int]  # (hook name, step, call within the step)

_KEY = re.compile(r"(?P<name>.+)@(?P<step>-?\d+)#(?P<call>\d+)")
_STATE_KEY = re.compile(r"(?P<name>.+)@(?P<step>-?\d+)")
_FILE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*\.safetensors")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_SPILL_DIR = "interp-trace-spill-"
# a spilled shard, or its temporary file while it is written: the tag names the process that spilled it
_SPILL_FILE = rf"\.?shard-{TAG_PATTERN}-\d{{5}}\.safetensors({re.escape(TMP_MARK)}\d+-[0-9a-f]{{8}}-[0-9a-f]{{8}})?"
# safetensors' names of torch dtypes, to check a shard's header against the index without reading data
_SAFETENSORS_DTYPES = {
    "float64": "F64", "float32": "F32", "float16": "F16", "bfloat16": "BF16", "int64": "I64", "int32": "I32",
    "int16": "I16", "int8": "I8", "uint8": "U8", "uint16": "U16", "uint32": "U32", "uint64": "U64", "bool": "BOOL",
    "float8_e4m3fn": "F8_E4M3", "float8_e5m2": "F8_E5M2", "complex64": "C64",
}  # fmt: skip


class TraceError(InterpError):
    """A trace cannot be read, written or indexed as asked."""


def _key_str(key: Key) -> str:
    name, step, call = key
    return f"{name}@{step}#{call}"


def _parse_key(text: str) -> Key:
    match = _KEY.fullmatch(text)
    if match is None:
        raise ValueError(f"{text!r} is not a tensor name (expected NAME@STEP#CALL)")
    return match["name"], int(match["step"]), int(match["call"])


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _digest(tensor: torch.Tensor) -> str:
    """sha256 of ``tensor``'s bytes in row-major order (the bytes safetensors stores)."""
    flat = tensor.detach().cpu().contiguous().reshape(-1)
    return hashlib.sha256(flat.view(torch.uint8).numpy()).hexdigest()


@dataclass
class _Shard:
    """A safetensors file: ``tensors`` maps each tensor's name to ``{"dtype", "shape", "sha256"}``, ``size`` is
    the file's length in bytes; ``owned``: a shard this trace spilled, deleted by :meth:`Trace.close`."""

    path: Path
    tensors: dict[str, dict[str, Any]]
    size: int
    owned: bool = False

    def header(self, file: str) -> dict[str, Any]:
        return {"file": file, "size": self.size, "tensors": self.tensors}


@functools.cache
def _malloc_trim() -> Any:
    """glibc's ``malloc_trim``, or None (another C library, or none found)."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        return getattr(ctypes.CDLL(name), "malloc_trim", None) if name else None
    except OSError:
        return None


def _release_freed_memory() -> None:
    """Hand the memory of spilled tensors back to the system (glibc ``malloc_trim``; elsewhere nothing). glibc
    raises its mmap threshold as large blocks are freed, so later activations come from the heap, whose freed
    pages it keeps: without this the process grows past the RAM budget (measured in
    ``benchmarks/trace_overhead.py``'s memory probe)."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def _write_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> _Shard:
    """Write ``{name: tensor}`` to the safetensors file ``path`` and describe it.

    safetensors refuses tensors that share storage; recorded ones often do (a hook point's output is also its
    module's output, a view of another activation), so each tensor whose storage an earlier one uses is copied.
    """
    seen: set[tuple[torch.device, int]] = set()
    ready: dict[str, torch.Tensor] = {}
    for name, tensor in tensors.items():
        tensor = tensor.detach().cpu().contiguous()  # once: safetensors and the hash both need host memory
        if (tensor.device, tensor.untyped_storage().data_ptr()) in seen:
            tensor = tensor.clone()
        seen.add((tensor.device, tensor.untyped_storage().data_ptr()))
        ready[name] = tensor
    save_file(ready, str(path))
    entries = {
        name: {"dtype": _dtype_name(t.dtype), "shape": list(t.shape), "sha256": _digest(t)} for name, t in ready.items()
    }
    return _Shard(path, entries, path.stat().st_size)


def _read_tensor(shard: _Shard, name: str) -> torch.Tensor:
    """Tensor ``name`` of ``shard``, checked against its recorded dtype, shape and sha256."""
    meta = shard.tensors[name]
    try:
        with safe_open(str(shard.path), framework="pt") as fh:
            tensor = fh.get_tensor(name)
    except Exception as exc:  # safetensors raises several types for missing or damaged files
        raise TraceError(f"{shard.path}: cannot read tensor {name!r} ({exc})") from exc
    if _dtype_name(tensor.dtype) != meta["dtype"] or list(tensor.shape) != meta["shape"]:
        raise TraceError(
            f"{shard.path}: tensor {name!r} is {_dtype_name(tensor.dtype)} {list(tensor.shape)}, "
            f"the index says {meta['dtype']} {meta['shape']}"
        )
    if _digest(tensor) != meta["sha256"]:
        raise TraceError(
            f"{shard.path}: tensor {name!r} does not match the sha256 the index records for it "
            "(the file was changed or damaged, or belongs to another trace)"
        )
    return tensor


def _describe(value: Any) -> str:
    """``value`` as JSON if short, else what it is: ``[true]``, ``"12"``, ``a list``."""
    text = json.dumps(value, default=str)
    if len(text) <= 40:
        return text
    return {dict: "an object", list: "a list", str: "a long string"}.get(type(value), type(value).__name__)


def _check_index(file: Path, header: Any) -> None:
    """Raise :class:`TraceError` naming ``file`` and the field unless ``header`` is a complete trace index."""

    def need(ok: bool, name: str, expected: str, value: Any) -> None:
        if not ok:
            raise TraceError(f"{file}: field '{name}' must be {expected}, got {_describe(value)}")

    def get(obj: dict[str, Any], key: str, name: str) -> Any:
        if key not in obj:
            raise TraceError(f"{file}: missing field '{name}'")
        return obj[key]

    def is_int(value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool)

    if not isinstance(header, dict):
        raise TraceError(f"{file}: expected a JSON object, got {_describe(header)}")
    version = header.get("format_version")
    if not is_int(version) or version != TRACE_FORMAT_VERSION:
        raise TraceError(
            f"{file.parent}: trace format_version {version!r} is not supported (this interp reads "
            f"{TRACE_FORMAT_VERSION}; trace the run again to write it in this format)"
        )
    if get(header, "complete", "complete") is not True:
        raise TraceError(f"{file.parent}: trace is marked incomplete")
    need(isinstance(get(header, "meta", "meta"), dict), "meta", "an object", header["meta"])
    steps = get(header, "steps", "steps")
    need(isinstance(steps, list), "steps", "a list", steps)
    for i, row in enumerate(steps):
        need(isinstance(row, dict), f"steps[{i}]", "an object", row)
        if not is_int(row.get("step")):
            raise TraceError(f"{file}: field 'steps[{i}]' has no integer 'step'")
    shards = get(header, "shards", "shards")
    need(isinstance(shards, list), "shards", "a list", shards)
    state = get(header, "state", "state")
    files: set[str] = set()
    for where, entry, pattern in [
        *((f"shards[{i}]", entry, _KEY) for i, entry in enumerate(shards)),
        *([("state", state, _STATE_KEY)] if state is not None else []),
    ]:
        need(isinstance(entry, dict), where, "an object" + (" or null" if where == "state" else ""), entry)
        name = get(entry, "file", f"{where}.file")
        if not isinstance(name, str) or not _FILE_NAME.fullmatch(name) or name == TRACE_FILE:
            raise TraceError(f"{file}: field '{where}.file' is {_describe(name)}, not a file name in the trace folder")
        if name in files:
            raise TraceError(f"{file}: {name} is listed twice")
        files.add(name)
        size = get(entry, "size", f"{where}.size")
        need(is_int(size) and size >= 0, f"{where}.size", "an integer >= 0", size)
        tensors = get(entry, "tensors", f"{where}.tensors")
        need(isinstance(tensors, dict), f"{where}.tensors", "an object", tensors)
        for tname, meta in tensors.items():
            if not pattern.fullmatch(tname):
                form = "NAME@STEP#CALL" if pattern is _KEY else "NAME@STEP"
                raise TraceError(
                    f"{file}: in field '{where}.tensors', {tname!r} is not a tensor name (expected {form})"
                )
            label = f"{where}.tensors[{tname!r}]"
            need(isinstance(meta, dict), label, "an object", meta)
            dtype, shape, digest = (get(meta, k, f"{label}.{k}") for k in ("dtype", "shape", "sha256"))
            known = isinstance(dtype, str) and isinstance(getattr(torch, dtype, None), torch.dtype)
            need(known and _dtype_name(getattr(torch, dtype)) == dtype, f"{label}.dtype", "a torch dtype name", dtype)
            need(
                isinstance(shape, list) and all(is_int(d) and d >= 0 for d in shape),
                f"{label}.shape",
                "a list of sizes",
                shape,
            )
            need(isinstance(digest, str) and bool(_SHA256.fullmatch(digest)), f"{label}.sha256", "a sha256", digest)


def _open_shard(folder: Path, entry: dict[str, Any]) -> _Shard:
    """The shard ``entry`` of a checked index: the file must exist, have the recorded size and hold exactly the
    listed tensors with their dtypes and shapes (read from its header; the data is not read)."""
    path = folder / entry["file"]
    if not path.is_file():
        raise TraceError(f"{path} is {'not a file' if os.path.lexists(path) else 'missing'} (listed in {TRACE_FILE})")
    size = path.stat().st_size
    if size != entry["size"]:
        raise TraceError(
            f"{path}: {size} bytes, the index says {entry['size']} (truncated, or not the file this trace wrote)"
        )
    try:
        with safe_open(str(path), framework="pt") as fh:
            found = {name: (fh.get_slice(name).get_dtype(), fh.get_slice(name).get_shape()) for name in fh.keys()}
    except Exception as exc:  # safetensors raises several types for damaged files
        raise TraceError(f"{path}: corrupt or truncated shard ({exc})") from exc
    missing = [name for name in entry["tensors"] if name not in found]
    if missing:
        raise TraceError(f"{path}: missing tensors {missing[:3]}")
    extra = [name for name in found if name not in entry["tensors"]]
    if extra:
        raise TraceError(f"{path}: holds tensors the index does not list ({extra[:3]}); is it another trace's?")
    for name, meta in entry["tensors"].items():
        dtype, shape = found[name]
        expected = _SAFETENSORS_DTYPES.get(meta["dtype"], dtype)
        if list(shape) != meta["shape"] or dtype != expected:
            raise TraceError(
                f"{path}: tensor {name!r} is {dtype} {list(shape)}, the index says {expected} {meta['shape']}"
            )
    return _Shard(path, dict(entry["tensors"]), size)


def _saved_trace_files(path: Path) -> set[str] | None:
    """The files a saved trace in ``path`` consists of (any format version), or ``None`` if it is not one."""
    try:
        header = json.loads((path / TRACE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(header, dict) or not isinstance(header.get("format_version"), int):
        return None
    if "shards" not in header and "index" not in header:  # format 2 / format 1
        return None
    files = {TRACE_FILE, STATE_FILE}
    shards, index = header.get("shards"), header.get("index")
    for entry in shards if isinstance(shards, list) else []:
        if isinstance(entry, dict) and isinstance(entry.get("file"), str):
            files.add(entry["file"])
    files.update(f for f in (index.values() if isinstance(index, dict) else []) if isinstance(f, str))
    return files


def check_output(path: str | os.PathLike[str]) -> None:
    """Refuse (:class:`TraceError`) an output folder that :meth:`Trace.save` would refuse, before the run that
    records the trace: a file, a folder holding anything but a saved trace, a file among its parent folders."""
    try:
        target = output_target(path)
    except OutputError as exc:
        raise TraceError(str(exc)) from exc
    recover_directory(target)
    _check_replaceable(target)


def _check_replaceable(path: Path) -> None:
    """Refuse to write a trace to ``path`` unless it is absent, an empty folder, or a saved trace to which
    nothing was added."""
    if not os.path.lexists(path):
        return
    if not path.is_dir():
        raise TraceError(f"{path} is a file; refusing to replace it with a trace folder")
    present = sorted(os.listdir(path))
    if not present:
        return
    ours = _saved_trace_files(path)
    if ours is None:
        raise TraceError(
            f"{path} holds files that are not an interp trace (no readable {TRACE_FILE}); refusing to replace them"
        )
    extra = [name for name in present if name not in ours]
    if extra:
        raise TraceError(
            f"{path} holds files that are not part of the trace saved there ({', '.join(extra[:3])}); "
            "refusing to replace them"
        )


@dataclass(eq=False)  # identity equality: comparing tensors element-wise has no single truth value
class Trace:
    """A recorded sampling trajectory (see the module docstring)."""

    ram_budget: int | None = None
    spill_dir: Path | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    _ram: dict[Key, torch.Tensor] = field(default_factory=dict, repr=False)
    _spilled: dict[Key, _Shard] = field(default_factory=dict, repr=False)
    _ram_bytes: int = 0
    _shards: list[_Shard] = field(default_factory=list, repr=False)
    _step_rows: list[dict[str, Any]] = field(default_factory=list, repr=False)
    _state: dict[str, dict[int, torch.Tensor]] = field(default_factory=dict, repr=False)
    _owns_spill_dir: bool = False
    result: Any = field(default=None, repr=False)  # what a traced pipeline call returned (not saved)
    _made_spill_dir: bool = False
    _tag: str = field(default_factory=temp_tag, repr=False)  # names this trace's spilled shards

    def __post_init__(self) -> None:
        """Set up spilling: shards go to ``spill_dir`` (created if needed, left as found by :meth:`close`) or, with
        only ``ram_budget``, to a folder of their own in the temp folder. Shards and spill folders that a killed
        process left there are removed (see :func:`interp.io.remove_stale`)."""
        if self.ram_budget is not None and self.spill_dir is None:
            root = Path(tempfile.gettempdir())
            remove_stale(root, re.escape(_SPILL_DIR) + TAG_PATTERN)
            try:
                (root / f"{_SPILL_DIR}{self._tag}").mkdir(mode=0o700)
            except OSError as exc:
                raise TraceError(f"cannot create a spill folder in {root} ({exc.strerror or exc})") from exc
            self.spill_dir = root / f"{_SPILL_DIR}{self._tag}"
            self._owns_spill_dir = True
        elif self.spill_dir is not None:
            self.spill_dir = Path(self.spill_dir)
            try:
                self._made_spill_dir = not self.spill_dir.exists()
                self.spill_dir.mkdir(parents=True, exist_ok=True)
                with tempfile.TemporaryFile(dir=self.spill_dir):  # a name of its own: no user file is touched
                    pass
            except OSError as exc:
                raise TraceError(f"spill directory {self.spill_dir} is not writable ({exc.strerror or exc})") from exc
            remove_stale(self.spill_dir, _SPILL_FILE)

    # --- recording -------------------------------------------------------------------------
    def add(self, name: str, step: int, tensor: torch.Tensor) -> None:
        """Store ``tensor`` as ``(name, step, next call index)``; it is kept, not copied."""
        call = 0
        while (name, step, call) in self._ram or (name, step, call) in self._spilled:
            call += 1
        tensor = tensor.detach()  # the caller hands over a tensor nothing else will modify
        self._ram[(name, step, call)] = tensor
        self._ram_bytes += tensor.numel() * tensor.element_size()
        if self.ram_budget is not None and self._ram_bytes > self.ram_budget:
            self._spill()

    def add_step(self, row: dict[str, Any], state: dict[str, torch.Tensor] | None = None) -> None:
        """Record the sampler state after a step: scalars in ``row`` (must include ``step``),
        tensors (tokens, confidences, committed, ...) in ``state``."""
        self._step_rows.append(row)
        for k, v in (state or {}).items():
            self._state.setdefault(k, {})[int(row["step"])] = v.detach().clone()

    def _spill(self) -> None:
        if not self._ram:
            return
        assert self.spill_dir is not None
        path = self.spill_dir / f"shard-{self._tag}-{len(self._shards):05d}.safetensors"
        try:
            with atomic_file(path, durable=False) as tmp:  # scratch: it does not outlive the process
                written = _write_tensors(tmp, {_key_str(k): v for k, v in self._ram.items()})
        except OutputError as exc:
            raise TraceError(str(exc)) from exc
        except (OSError, SafetensorError) as exc:
            reason = getattr(exc, "strerror", None) or exc
            raise TraceError(f"cannot spill activations to {self.spill_dir} ({reason})") from exc
        shard = _Shard(path, written.tensors, written.size, owned=True)
        self._shards.append(shard)
        for k in self._ram:
            self._spilled[k] = shard
        self._ram.clear()
        self._ram_bytes = 0
        _release_freed_memory()

    # --- access ----------------------------------------------------------------------------
    @property
    def names(self) -> list[str]:
        return sorted({k[0] for k in (*self._ram, *self._spilled)})

    def step_indices(self, name: str | None = None) -> list[int]:
        keys = (*self._ram, *self._spilled)
        return sorted({k[1] for k in keys if name is None or k[0] == name})

    def __contains__(self, item: tuple) -> bool:
        key = self._normalise(item)
        return key in self._ram or key in self._spilled

    def canonical(self, name: str) -> str:
        """``name``, or the hook an alias of the instrumented model names (``meta["aliases"]``)."""
        return self.meta.get("aliases", {}).get(name, name)

    def _normalise(self, item: tuple) -> Key:
        if not isinstance(item, tuple) or len(item) not in (2, 3):
            raise TraceError("index a trace as trace[name, step] or trace[name, step, call]")
        name, step, *rest = item
        return self.canonical(str(name)), int(step), int(rest[0]) if rest else 0

    def calls(self, name: str, step: int) -> int:
        """How many forward calls of ``name`` were recorded at ``step`` (2 for classifier-free guidance's
        conditional and unconditional passes, 2 for a Heun step, ...)."""
        name = self.canonical(name)
        return sum(1 for k in (*self._ram, *self._spilled) if k[0] == name and k[1] == step)

    def __getitem__(self, item: tuple) -> torch.Tensor:
        key = self._normalise(item)
        if key in self._ram:
            return self._ram[key]
        if key in self._spilled:
            return _read_tensor(self._spilled[key], _key_str(key))
        name, step, call = key
        if name not in self.names:
            import difflib

            close = difflib.get_close_matches(name, self.names, n=3)
            hint = f"; did you mean {close}?" if close else f"; recorded: {self.names[:8]}"
            raise TraceError(f"no activation {name!r} in this trace{hint}")
        raise TraceError(
            f"{name!r} was not recorded at step {step} (call {call}); recorded steps: {self.step_indices(name)}"
        )

    def stack(
        self, name: str, steps: Iterable[int] | None = None, call: int | str | None = None, pad: float | None = None
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Activations of ``name`` over its recorded steps (or ``steps``): ``[n_steps, ...]``.

        ``call``: which forward call of each step (``trace[name, step, call]``); ``"all"`` gives
        ``[n_steps, n_calls, ...]``. With several calls per step and no ``call``, it is an error rather
        than a silent choice. ``pad``: for activations whose shape changes from step to step (a growing
        sequence), pad each to the largest shape with ``pad`` and return ``(stacked, mask)`` where
        ``mask`` (bool, same shape) marks real entries; without it such activations are an error."""
        name = self.canonical(name)
        indices = list(steps) if steps is not None else self.step_indices(name)
        if not indices:
            raise TraceError(f"no activation {name!r} in this trace; recorded: {self.names[:8]}")
        recorded = collections.Counter(k[1] for k in (*self._ram, *self._spilled) if k[0] == name)  # one pass
        counts = {s: recorded[s] for s in indices}
        if call is None:
            several = sorted(s for s, c in counts.items() if c > 1)
            if several:
                raise TraceError(
                    f"{name!r} was called {max(counts.values())} times in step(s) {several[:5]} (e.g. classifier-free "
                    "guidance or a two-evaluation sampler): pass call=k for one of them or call='all'"
                )
            call = 0
        if call == "all":
            if len(set(counts.values())) != 1:
                raise TraceError(f"{name!r} has different numbers of calls per step ({counts}); pick one with call=k")
            per_step = [self._stack([self[name, s, c] for c in range(counts[s])], name, pad) for s in indices]
        else:
            per_step = [self[name, s, int(call)] for s in indices]
        if pad is not None and call == "all":
            tensors, masks = zip(*per_step, strict=True)
            return self._stack(list(tensors), name, pad)[0], self._stack(list(masks), name, False)[0]
        return self._stack(per_step, name, pad)

    @staticmethod
    def _stack(tensors: list[torch.Tensor], name: str, pad: float | None):
        shapes = {tuple(t.shape) for t in tensors}
        if pad is None:
            if len(shapes) > 1:
                raise TraceError(
                    f"{name!r} changes shape across steps ({sorted(shapes)[:4]}): pass pad=value for a padded "
                    "tensor and a mask, or index the steps one by one"
                )
            return torch.stack(tensors)
        if len({len(s) for s in shapes}) > 1:
            raise TraceError(f"{name!r} changes its number of dimensions across steps; it cannot be padded")
        biggest = [max(s[d] for s in shapes) for d in range(len(next(iter(shapes))))]
        out = torch.full((len(tensors), *biggest), pad, dtype=tensors[0].dtype)
        mask = torch.zeros((len(tensors), *biggest), dtype=torch.bool)
        for i, t in enumerate(tensors):
            region = (i, *(slice(0, n) for n in t.shape))
            out[region] = t
            mask[region] = True
        return out, mask

    @property
    def steps(self) -> pd.DataFrame:
        """Sampler state per step: scalar columns plus tensor state as nested lists (sorted by name)."""
        frame = pd.DataFrame(self._step_rows)
        for k, per_step in sorted(self._state.items()):
            frame[k] = [per_step[int(s)].tolist() if int(s) in per_step else None for s in frame.get("step", [])]
        return frame

    def records(self) -> list[Any]:
        """The sampler's step records (:class:`~interp.steps.StepRecord`), rebuilt from the recorded rows and
        state, so analyses that take a run's steps take a trace too (``revisions(trace.records(), P)``)."""
        from interp.steps import StepRecord

        if not self._step_rows:
            raise TraceError("this trace recorded no steps")
        records = []
        for row in self._step_rows:
            step = int(row["step"])
            state = {k: per_step[step] for k, per_step in self._state.items() if step in per_step}
            records.append(StepRecord.rebuild(row, state))
        return records

    def state(self, key: str, pad: float | None = None) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """A sampler-state tensor over steps, e.g. ``trace.state("tokens")`` → ``[steps, B, L]``; ``pad`` as
        for :meth:`stack` when its shape changes from step to step."""
        if key not in self._state:
            raise TraceError(f"no sampler state {key!r}; recorded: {sorted(self._state)}")
        per_step = self._state[key]
        return self._stack([per_step[s] for s in sorted(per_step)], key, pad)

    @property
    def n_steps(self) -> int:
        return len(self._step_rows)

    @property
    def ram_bytes(self) -> int:
        return self._ram_bytes

    def info(self) -> dict[str, Any]:
        shapes: dict[str, list[int]] = {}
        for name in self.names:
            first = self.step_indices(name)[0]
            shapes[name] = list(self[name, first].shape)
        return {
            "format_version": TRACE_FORMAT_VERSION,
            "names": self.names,
            "shapes": shapes,
            "captured_steps": self.step_indices(),
            "steps": [int(r["step"]) for r in self._step_rows],
            "n_steps": self.n_steps,
            "state": sorted(self._state),
            "meta": self.meta,
        }

    # --- persistence -----------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write atomically to folder ``path`` (``trace.json``, the shards and ``state.safetensors``; see the
        module docstring). Refuses, changing nothing, to replace a file, or a folder that holds anything but a
        saved trace; an existing trace (of any version) is replaced."""
        path = Path(path)
        try:
            with atomic_directory(path, check=_check_replaceable) as tmp:
                shards = []
                for i, shard in enumerate(self._shards):
                    target = tmp / f"shard-{i:05d}.safetensors"
                    try:
                        shutil.copyfile(shard.path, target)
                    except OSError as exc:
                        raise TraceError(f"cannot copy {shard.path} into the trace ({exc.strerror or exc})") from exc
                    if target.stat().st_size != shard.size:
                        raise TraceError(
                            f"{shard.path}: changed on disk since it was written ({shard.size} bytes then)"
                        )
                    shards.append(shard.header(target.name))
                if self._ram:
                    name = f"shard-{len(self._shards):05d}.safetensors"
                    written = _write_tensors(tmp / name, {_key_str(k): v for k, v in self._ram.items()})
                    shards.append(written.header(name))
                state = None
                if self._state:
                    tensors = {f"{k}@{s}": v for k, d in self._state.items() for s, v in d.items()}
                    state = _write_tensors(tmp / STATE_FILE, tensors).header(STATE_FILE)
                header = {
                    "format_version": TRACE_FORMAT_VERSION,
                    "complete": True,
                    "shards": shards,
                    "state": state,
                    "steps": self._step_rows,
                    "meta": self.meta,
                }
                try:
                    text = json.dumps(header, default=float)
                except (TypeError, ValueError) as exc:
                    raise TraceError(
                        f"cannot write {path / TRACE_FILE}: meta or a step row is not JSON ({exc})"
                    ) from exc
                (tmp / TRACE_FILE).write_text(text, encoding="utf-8")
        except OutputError as exc:
            raise TraceError(str(exc)) from exc
        except (OSError, SafetensorError) as exc:
            raise TraceError(f"cannot write trace to {path} ({getattr(exc, 'strerror', None) or exc})") from exc
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Trace:
        """Read a trace written by :meth:`save`, checking the index and every file against it (see the module
        docstring); activations are read when indexed, the sampler state now."""
        path = Path(path)
        recover_directory(path)
        if not os.path.lexists(path):
            raise TraceError(f"trace folder {path} does not exist")
        if not path.is_dir():
            raise TraceError(f"{path} is a file, not a trace folder")
        header_file = path / TRACE_FILE
        if not header_file.is_file():
            raise TraceError(f"{path} is not a complete trace: {TRACE_FILE} is missing (partial or interrupted write?)")
        try:
            header = json.loads(header_file.read_text(encoding="utf-8"))
        except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
            raise TraceError(f"{header_file}: not valid JSON ({exc})") from exc
        except OSError as exc:
            raise TraceError(f"{header_file}: cannot be read ({exc.strerror or exc})") from exc
        _check_index(header_file, header)
        trace = cls(meta=header["meta"])
        for entry in header["shards"]:
            shard = _open_shard(path, entry)
            for name in shard.tensors:
                key = _parse_key(name)
                if key in trace._spilled:
                    raise TraceError(f"{header_file}: tensor {name!r} is listed in two shards")
                trace._spilled[key] = shard
            trace._shards.append(shard)
        trace._step_rows = [dict(row) for row in header["steps"]]
        if header["state"] is not None:
            shard = _open_shard(path, header["state"])
            for name in shard.tensors:
                key, step = name.rsplit("@", 1)
                trace._state.setdefault(key, {})[int(step)] = _read_tensor(shard, name)
        return trace

    def verify(self) -> None:
        """Read every spilled or saved activation now and check it against its recorded sha256 (``load`` checks
        the files' sizes, names, dtypes and shapes; contents are otherwise checked as each tensor is read)."""
        for shard in self._shards:
            for name in shard.tensors:
                _read_tensor(shard, name)

    def close(self) -> None:
        """Delete what spilling wrote: this trace's shards, and the spill folder if this trace created it."""
        for shard in self._shards:
            if shard.owned:
                with contextlib.suppress(OSError):
                    shard.path.unlink()
        if self.spill_dir is not None and self._owns_spill_dir:
            shutil.rmtree(self.spill_dir, ignore_errors=True)
        elif self.spill_dir is not None and self._made_spill_dir:
            with contextlib.suppress(OSError):
                self.spill_dir.rmdir()  # only if empty: whatever else is there now is not ours

    def __del__(self) -> None:  # best effort: temp spill folders do not outlive the trace
        try:
            self.close()
        except Exception:
            pass
