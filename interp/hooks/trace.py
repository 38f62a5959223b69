"""``Trace``: activations × denoising steps, plus the sampler state of every step.

``trace[name, step]`` → tensor (the first forward call of that step; ``trace[name, step, call]``
for later calls, e.g. Heun's second evaluation), ``trace.stack(name)`` → ``[steps, ...]``,
``trace.steps`` → pandas frame of the sampler state per step, ``trace.names``.

Activations live in RAM up to ``ram_budget`` bytes; past it they are spilled to safetensors shards
in ``spill_dir`` and read back lazily. ``save(dir)`` writes the whole trace atomically (a folder
appears complete or not at all) and ``Trace.load(dir)`` reads it back exactly.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from interp.errors import InterpError
from interp.io import atomic_directory

TRACE_FORMAT_VERSION = 1
TRACE_FILE = "trace.json"
Key = tuple[str, int, int]  # (hook name, step, call within the step)


class TraceError(InterpError):
    """A trace cannot be read, written or indexed as asked."""


def _key_str(key: Key) -> str:
    name, step, call = key
    return f"{name}@{step}#{call}"


def _parse_key(text: str) -> Key:
    name, rest = text.rsplit("@", 1)
    step, call = rest.split("#")
    return name, int(step), int(call)


@dataclass
class _Shard:
    path: Path
    keys: list[str]


@dataclass(eq=False)  # identity equality: comparing tensors element-wise has no single truth value
class Trace:
    """A recorded sampling trajectory (see the module docstring)."""

    ram_budget: int | None = None
    spill_dir: Path | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    _ram: dict[Key, torch.Tensor] = field(default_factory=dict, repr=False)
    _spilled: dict[Key, Path] = field(default_factory=dict, repr=False)
    _ram_bytes: int = 0
    _shards: list[_Shard] = field(default_factory=list, repr=False)
    _step_rows: list[dict[str, Any]] = field(default_factory=list, repr=False)
    _state: dict[str, dict[int, torch.Tensor]] = field(default_factory=dict, repr=False)
    _owns_spill_dir: bool = False

    def __post_init__(self) -> None:
        if self.ram_budget is not None and self.spill_dir is None:
            self.spill_dir = Path(tempfile.mkdtemp(prefix="interp-trace-spill-"))
            self._owns_spill_dir = True
        if self.spill_dir is not None:
            self.spill_dir = Path(self.spill_dir)
            try:
                self.spill_dir.mkdir(parents=True, exist_ok=True)
                probe = self.spill_dir / ".write-test"
                probe.write_bytes(b"")
                probe.unlink()
            except OSError as exc:
                raise TraceError(f"spill directory {self.spill_dir} is not writable ({exc.strerror})") from exc

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
        path = self.spill_dir / f"shard-{len(self._shards):05d}.safetensors"
        tensors = {_key_str(k): v.contiguous() for k, v in self._ram.items()}
        tmp = path.with_suffix(".tmp")
        save_file(tensors, str(tmp))
        os.replace(tmp, path)
        self._shards.append(_Shard(path, list(tensors)))
        for k in self._ram:
            self._spilled[k] = path
        self._ram.clear()
        self._ram_bytes = 0

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

    @staticmethod
    def _normalise(item: tuple) -> Key:
        if not isinstance(item, tuple) or len(item) not in (2, 3):
            raise TraceError("index a trace as trace[name, step] or trace[name, step, call]")
        name, step, *rest = item
        return str(name), int(step), int(rest[0]) if rest else 0

    def __getitem__(self, item: tuple) -> torch.Tensor:
        key = self._normalise(item)
        if key in self._ram:
            return self._ram[key]
        if key in self._spilled:
            with safe_open(str(self._spilled[key]), framework="pt") as fh:
                return fh.get_tensor(_key_str(key))
        name, step, call = key
        if name not in self.names:
            import difflib

            close = difflib.get_close_matches(name, self.names, n=3)
            hint = f"; did you mean {close}?" if close else f"; recorded: {self.names[:8]}"
            raise TraceError(f"no activation {name!r} in this trace{hint}")
        raise TraceError(
            f"{name!r} was not recorded at step {step} (call {call}); recorded steps: {self.step_indices(name)}"
        )

    def stack(self, name: str, steps: Iterable[int] | None = None) -> torch.Tensor:
        """``[n_steps, ...]`` activations of ``name`` over its recorded steps (or ``steps``)."""
        indices = list(steps) if steps is not None else self.step_indices(name)
        if not indices:
            raise TraceError(f"no activation {name!r} in this trace; recorded: {self.names[:8]}")
        return torch.stack([self[name, s] for s in indices])

    @property
    def steps(self) -> pd.DataFrame:
        """Sampler state per step: scalar columns plus tensor state as nested lists (sorted by name)."""
        frame = pd.DataFrame(self._step_rows)
        for k, per_step in sorted(self._state.items()):
            frame[k] = [per_step[int(s)].tolist() if int(s) in per_step else None for s in frame.get("step", [])]
        return frame

    def state(self, key: str) -> torch.Tensor:
        """A sampler-state tensor over steps, e.g. ``trace.state("tokens")`` → ``[steps, B, L]``."""
        if key not in self._state:
            raise TraceError(f"no sampler state {key!r}; recorded: {sorted(self._state)}")
        per_step = self._state[key]
        return torch.stack([per_step[s] for s in sorted(per_step)])

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
        """Write atomically to folder ``path``."""
        path = Path(path)
        try:
            with atomic_directory(path) as tmp:
                shard_index: dict[str, str] = {}
                for i, shard in enumerate(self._shards):
                    target = tmp / f"shard-{i:05d}.safetensors"
                    shutil.copyfile(shard.path, target)
                    shard_index.update({k: target.name for k in shard.keys})
                if self._ram:
                    name = f"shard-{len(self._shards):05d}.safetensors"
                    save_file({_key_str(k): v.contiguous() for k, v in self._ram.items()}, str(tmp / name))
                    shard_index.update({_key_str(k): name for k in self._ram})
                if self._state:
                    save_file(
                        {f"{k}@{s}": v.contiguous() for k, d in self._state.items() for s, v in d.items()},
                        str(tmp / "state.safetensors"),
                    )
                header = {
                    "format_version": TRACE_FORMAT_VERSION,
                    "index": shard_index,
                    "steps": self._step_rows,
                    "meta": self.meta,
                    "complete": True,
                }
                (tmp / TRACE_FILE).write_text(json.dumps(header, default=float))
        except OSError as exc:
            raise TraceError(f"cannot write trace to {path} ({exc.strerror or exc})") from exc
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Trace:
        path = Path(path)
        header_file = path / TRACE_FILE
        if not path.is_dir():
            raise TraceError(f"trace folder {path} does not exist")
        if not header_file.is_file():
            raise TraceError(f"{path} is not a complete trace: {TRACE_FILE} is missing (partial or interrupted write?)")
        try:
            header = json.loads(header_file.read_text())
        except json.JSONDecodeError as exc:
            raise TraceError(f"{header_file}: not valid JSON ({exc})") from exc
        version = header.get("format_version")
        if version != TRACE_FORMAT_VERSION:
            raise TraceError(
                f"{path}: trace format_version {version!r} is not supported (this interp reads {TRACE_FORMAT_VERSION})"
            )
        if not header.get("complete"):
            raise TraceError(f"{path}: trace is marked incomplete")
        trace = cls(meta=header.get("meta", {}))
        files = sorted(set(header["index"].values()))
        for fname in files:
            fpath = path / fname
            if not fpath.is_file():
                raise TraceError(f"{path}: shard {fname} is missing")
            try:
                with safe_open(str(fpath), framework="pt") as fh:
                    present = set(fh.keys())
            except Exception as exc:  # safetensors raises several types for damaged files
                raise TraceError(f"{fpath}: corrupt or truncated shard ({exc})") from exc
            wanted = [k for k, f in header["index"].items() if f == fname]
            missing = [k for k in wanted if k not in present]
            if missing:
                raise TraceError(f"{fpath}: missing tensors {missing[:3]}")
            trace._shards.append(_Shard(fpath, wanted))
            for k in wanted:
                trace._spilled[_parse_key(k)] = fpath
        trace._step_rows = list(header["steps"])
        state_file = path / "state.safetensors"
        if state_file.is_file():
            with safe_open(str(state_file), framework="pt") as fh:
                for k in fh.keys():
                    name, step = k.rsplit("@", 1)
                    trace._state.setdefault(name, {})[int(step)] = fh.get_tensor(k)
        return trace

    def close(self) -> None:
        """Delete the temporary spill folder, if this trace created it."""
        if self._owns_spill_dir and self.spill_dir is not None:
            shutil.rmtree(self.spill_dir, ignore_errors=True)

    def __del__(self) -> None:  # best effort: temp spill folders do not outlive the trace
        try:
            self.close()
        except Exception:
            pass
