"""Hostile inputs to trace and atomic writes: outputs never replace what is not ours, killed writes leave
nothing a user could mistake for output (and the next write cleans up), every shard of a saved trace is
checked against its index, and tensors that share storage are saved and spilled exactly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from interp.errors import InterpError
from interp.hooks import Trace, TraceError, attach
from interp.io import atomic_directory, atomic_write_bytes, recover_directory
from tests.conftest import ROOT, error_line, run_cli, tiny_dlm
from tests.test_hooks_native import _runner


def _small_trace(seed: int = 0, shape: tuple[int, ...] = (2, 3), **kwargs) -> Trace:
    """Two hooks × three steps of random tensors of ``shape``, plus ``tokens`` state ``[2, 4]`` per step."""
    g = torch.Generator().manual_seed(seed)
    trace = Trace(**kwargs)
    for step in range(3):
        trace.add("a", step, torch.randn(shape, generator=g))
        trace.add("b", step, torch.randn(shape, generator=g).half())
        trace.add_step({"step": step, "t": 1.0 - step / 3}, {"tokens": torch.randint(0, 9, (2, 4), generator=g)})
    return trace


def _listing(folder: Path) -> dict[str, bytes | None]:
    """``{relative path: bytes}`` (``None`` for folders) of everything under ``folder``, hidden entries included."""
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None) for p in sorted(folder.rglob("*"))}


def _assert_same(a: Trace, b: Trace) -> None:
    assert a.names == b.names and a.step_indices() == b.step_indices()
    for name in a.names:
        for step in a.step_indices(name):
            x, y = a[name, step], b[name, step]
            assert x.dtype == y.dtype and torch.equal(x, y), (name, step)
    assert torch.equal(a.state("tokens"), b.state("tokens"))


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _run_killed(code: str, env: dict | None = None) -> int:
    """Run ``code`` in a child Python that SIGKILLs itself at ``KILL()``; returns the child's pid."""
    script = "import os, signal\nKILL = lambda: os.kill(os.getpid(), signal.SIGKILL)\n" + textwrap.dedent(code)
    proc = subprocess.Popen(
        [sys.executable, "-c", script], cwd=ROOT, env={**os.environ, **(env or {})}, stderr=subprocess.PIPE, text=True
    )
    _, stderr = proc.communicate()
    assert proc.returncode == -signal.SIGKILL, stderr
    return proc.pid


@pytest.fixture(scope="module")
def lm():
    return tiny_dlm()


# --- 1. an output location that holds something not ours is refused, and nothing changes ---------------------
def test_save_refuses_a_user_folder_and_changes_nothing(tmp_path):
    user = tmp_path / "results"
    user.mkdir()
    (user / "thesis.tex").write_text("three years of work")
    before = _listing(tmp_path)
    with pytest.raises(TraceError, match=r"results holds files that are not an interp trace.*refusing"):
        _small_trace().save(user)
    assert _listing(tmp_path) == before, "the user's folder and its parent are untouched"


def test_save_refuses_a_trace_folder_the_user_added_files_to(tmp_path):
    path = _small_trace().save(tmp_path / "t")
    (path / "notes.md").write_text("what I saw at step 2")
    before = _listing(tmp_path)
    with pytest.raises(TraceError, match=r"notes\.md"):
        _small_trace(seed=1).save(path)
    assert _listing(tmp_path) == before


def test_save_refuses_a_file_and_moves_nothing_aside(tmp_path):
    user = tmp_path / "notes.txt"
    user.write_text("mine")
    with pytest.raises(TraceError, match=r"notes\.txt is a file; refusing to replace it"):
        _small_trace().save(user)
    assert _listing(tmp_path) == {"notes.txt": b"mine"}, "no .notes.txt.old, no temporary folder"


def test_save_under_a_file_names_the_file_in_the_way(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(TraceError, match=r"notes\.txt is a file, not a folder") as info:
        _small_trace().save(tmp_path / "notes.txt" / "x")
    assert "File exists" not in str(info.value)
    assert _listing(tmp_path) == {"notes.txt": b"mine"}


def test_failed_save_leaves_nothing_not_even_the_folders_it_made(tmp_path):
    trace = _small_trace()
    trace.meta["labels"] = {"a", "b"}  # a set is not JSON: found only once the shards are written
    with pytest.raises(TraceError, match=r"trace\.json: meta or a step row is not JSON"):
        trace.save(tmp_path / "new" / "deeper" / "t")
    assert _listing(tmp_path) == {}


def test_save_replaces_an_existing_trace_and_an_empty_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    _assert_same(Trace.load(_small_trace().save(tmp_path / "empty")), _small_trace())
    path = _small_trace(seed=0).save(tmp_path / "t")
    _small_trace(seed=1, shape=(5,)).save(path)
    _assert_same(Trace.load(path), _small_trace(seed=1, shape=(5,)))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "t"], "no temporary or aside folder left"


def test_cli_trace_refuses_a_user_folder_and_a_file(dlm_checkpoint, tmp_path):
    user = tmp_path / "mine"
    user.mkdir()
    (user / "data.csv").write_text("1,2,3")
    (tmp_path / "notes.txt").write_text("mine")
    before = _listing(tmp_path)
    for out in (user, tmp_path / "notes.txt"):
        line = error_line(
            run_cli("trace", "-c", str(dlm_checkpoint), "--out", str(out), "--steps", "2", "--no-progress")
        )
        assert str(out) in line and "refusing" in line, line
    assert _listing(tmp_path) == before


def test_atomic_directory_checks_the_target_before_creating_anything(tmp_path):
    (tmp_path / "f").write_text("mine")
    with pytest.raises(InterpError, match=r"f is a file; refusing"), atomic_directory(tmp_path / "f") as tmp:
        (tmp / "x").write_text("never")
    (tmp_path / "g").mkdir()
    with pytest.raises(InterpError, match=r"g is a folder; refusing"):
        atomic_write_bytes(tmp_path / "g", b"never")
    with pytest.raises(InterpError, match=r"f is a file, not a folder"), atomic_directory(tmp_path / "f" / "sub"):
        pass
    with pytest.raises(InterpError, match=r"f is a file, not a folder"):
        atomic_write_bytes(tmp_path / "f" / "sub" / "x.bin", b"never")
    (tmp_path / ".h.old").write_text("a user's file that happens to have the aside name")
    with pytest.raises(InterpError, match=r"\.h\.old is in the way"), atomic_directory(tmp_path / "h"):
        pass
    assert _listing(tmp_path) == {
        "f": b"mine",
        "g": None,
        ".h.old": b"a user's file that happens to have the aside name",
    }


def test_check_output_refuses_before_the_run(tmp_path):
    from interp.hooks.trace import check_output

    (tmp_path / "user").mkdir()
    (tmp_path / "user" / "data.csv").write_text("1")
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "empty").mkdir()
    saved = _small_trace().save(tmp_path / "t")
    before = _listing(tmp_path)
    for path, message in [
        (tmp_path / "user", r"user holds files that are not an interp trace"),
        (tmp_path / "notes.txt", r"notes\.txt is a file; refusing"),
        (tmp_path / "notes.txt" / "x", r"notes\.txt is a file, not a folder"),
    ]:
        with pytest.raises(TraceError, match=message):
            check_output(path)
    for path in (saved, tmp_path / "empty", tmp_path / "new"):
        check_output(path)
    assert _listing(tmp_path) == before


def test_atomic_directory_restores_the_old_folder_if_the_final_rename_fails(tmp_path, monkeypatch):
    import interp.io

    old = tmp_path / "out"
    old.mkdir()
    (old / "a").write_text("old")
    real_replace = os.replace

    def replace(src, dst):
        if Path(dst) == old and Path(src).name != ".out.old":  # the new folder's rename into place
            raise OSError(28, "No space left on device")
        real_replace(src, dst)

    monkeypatch.setattr(interp.io.os, "replace", replace)
    with pytest.raises(OSError, match="No space"), atomic_directory(old) as tmp:
        (tmp / "a").write_text("new")
    assert _listing(tmp_path) == {"out": None, "out/a": b"old"}


# --- 2. temporary names are unmistakable, and leftovers of dead writers are cleaned up -----------------------
def test_temporary_names_are_hidden_and_carry_the_pid(tmp_path, monkeypatch):
    (tmp_path / "report.html").write_text("old")
    with pytest.raises(RuntimeError), atomic_directory(tmp_path / "out") as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(f".out.interp-tmp-{os.getpid()}-"), tmp.name
        raise RuntimeError("killed mid-write")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html"], "a failed write leaves nothing"
    import interp.io

    seen = []
    real_replace = os.replace
    monkeypatch.setattr(interp.io.os, "replace", lambda src, dst: (seen.append(Path(src).name), real_replace(src, dst)))
    atomic_write_bytes(tmp_path / "report.html", b"new")
    monkeypatch.undo()
    assert len(seen) == 1 and seen[0].startswith(f".report.html.interp-tmp-{os.getpid()}-"), seen
    assert _listing(tmp_path) == {"report.html": b"new"}


def test_killed_folder_write_is_cleaned_up_by_the_next_write(tmp_path):
    out = tmp_path / "out"
    pid = _run_killed(
        f"""
        from interp.io import atomic_directory
        with atomic_directory({str(out)!r}) as tmp:
            (tmp / "big.bin").write_bytes(b"x" * 100_000)
            KILL()
        """
    )
    leftovers = [p.name for p in tmp_path.iterdir()]
    assert len(leftovers) == 1 and leftovers[0].startswith(f".out.interp-tmp-{pid}-"), leftovers
    from interp.io import temp_tag

    live = tmp_path / f".out.interp-tmp-{temp_tag()}"  # a concurrent writer in a live process (this one)
    live.mkdir()
    with atomic_directory(out) as tmp:
        (tmp / "a").write_text("new")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["out", live.name]), "dead removed, live kept"


def test_killed_file_write_is_cleaned_up_by_the_next_write(tmp_path):
    out = tmp_path / "report.html"
    pid = _run_killed(
        f"""
        import interp.io
        interp.io.os.replace = lambda *a: KILL()  # die between writing the temporary file and the rename
        interp.io.atomic_write_bytes({str(out)!r}, b"x" * 100_000)
        """
    )
    leftovers = [p.name for p in tmp_path.iterdir()]
    assert len(leftovers) == 1 and leftovers[0].startswith(f".report.html.interp-tmp-{pid}-"), leftovers
    from interp.io import temp_tag

    live = tmp_path / f".report.html.interp-tmp-{temp_tag()}"
    live.write_bytes(b"")
    _pid, host, rand = temp_tag().split("-")
    dead_other_target = tmp_path / f".other.interp-tmp-{_dead_pid()}-{host}-{rand}"  # another target's: not touched
    dead_other_target.write_bytes(b"")
    atomic_write_bytes(out, b"new")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([out.name, live.name, dead_other_target.name])
    assert out.read_bytes() == b"new"


def test_recover_directory_still_restores_the_aside_folder(tmp_path):
    path = _small_trace().save(tmp_path / "t")
    os.replace(path, tmp_path / ".t.old")  # a process died between the two renames
    recover_directory(path)
    _assert_same(Trace.load(path), _small_trace())


# --- 3. every shard is checked against the index -------------------------------------------------------------
def _saved(tmp_path, name="t", **kwargs) -> Path:
    return _small_trace(**kwargs).save(tmp_path / name)


def _edit_header(path: Path, edit) -> None:
    """Apply ``edit`` (it changes the parsed header in place) to ``path``'s ``trace.json``."""
    header = json.loads((path / "trace.json").read_text())
    edit(header)
    (path / "trace.json").write_text(json.dumps(header))


def _load_and_read(path: Path) -> Trace:
    """Load, then read every tensor (a lazy loader may check a tensor's hash only when it is read)."""
    trace = Trace.load(path)
    for name in trace.names:
        trace.stack(name)
    return trace


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda h: h.pop("shards"), r"trace\.json: missing field 'shards'"),
        (lambda h: h.pop("steps"), r"trace\.json: missing field 'steps'"),
        (lambda h: h.update(format_version="2"), r"format_version '2' is not supported"),
        (lambda h: h.update(format_version=1), r"format_version 1 is not supported"),
        (lambda h: h.update(complete=False), r"marked incomplete"),
        (lambda h: h.update(steps={"step": 0}), r"trace\.json: field 'steps' must be a list"),
        (lambda h: h["steps"][1].pop("step"), r"trace\.json: field 'steps\[1\]' has no integer 'step'"),
        (lambda h: h.update(meta=[]), r"trace\.json: field 'meta' must be an object"),
        (lambda h: h["shards"][0].update(size="12"), r"field 'shards\[0\]\.size' must be an integer"),
        (lambda h: h["shards"][0].update(file="../t2/shard-00000.safetensors"), r"not a file name in the trace"),
        (lambda h: h["shards"][0].pop("tensors"), r"missing field 'shards\[0\]\.tensors'"),
        (lambda h: h["shards"][0]["tensors"].update({"junk": {}}), r"'junk' is not a tensor name"),
        (lambda h: next(iter(h["shards"][0]["tensors"].values())).pop("sha256"), r"missing field .*sha256"),
        (lambda h: h["state"].update(size=1), r"state\.safetensors: .*bytes, the index says 1"),
        (lambda h: h["shards"][0].update(size=h["shards"][0]["size"] + 1), r"shard-00000\.safetensors: .*index says"),
    ],
)
def test_damaged_index_is_refused_with_the_file_and_field(tmp_path, edit, message):
    path = _saved(tmp_path)
    _edit_header(path, edit)
    with pytest.raises(TraceError, match=message):
        Trace.load(path)


def test_non_json_and_missing_folder_are_refused(tmp_path):
    path = _saved(tmp_path)
    (path / "trace.json").write_text(json.dumps([json.loads((path / "trace.json").read_text())]))
    with pytest.raises(TraceError, match=r"trace\.json: expected a JSON object, got a list"):
        Trace.load(path)
    (path / "trace.json").write_bytes(b"\xff\xfe{")
    with pytest.raises(TraceError, match=r"trace\.json: not valid JSON"):
        Trace.load(path)
    (tmp_path / "f").write_text("x")
    with pytest.raises(TraceError, match=r"f is a file, not a trace folder"):
        Trace.load(tmp_path / "f")
    with pytest.raises(TraceError, match=r"nope does not exist"):
        Trace.load(tmp_path / "nope")


def test_truncated_shard_is_refused_with_its_name(tmp_path):
    path = _saved(tmp_path)
    shard = path / "shard-00000.safetensors"
    shard.write_bytes(shard.read_bytes()[:-7])
    with pytest.raises(TraceError, match=r"shard-00000\.safetensors: \d+ bytes, the index says \d+"):
        Trace.load(path)
    shard.write_bytes(b"")
    with pytest.raises(TraceError, match=r"shard-00000\.safetensors"):
        Trace.load(path)


def test_shard_from_another_trace_is_refused(tmp_path):
    path = _saved(tmp_path)
    other_shape = _saved(tmp_path, "other", shape=(7,))
    (path / "shard-00000.safetensors").write_bytes((other_shape / "shard-00000.safetensors").read_bytes())
    with pytest.raises(TraceError, match=r"shard-00000\.safetensors"):
        _load_and_read(path)
    # same names, shapes and size, other values: only a content hash can tell
    path = _saved(tmp_path, "t2")
    same_shape = _saved(tmp_path, "other2", seed=5)
    (path / "shard-00000.safetensors").write_bytes((same_shape / "shard-00000.safetensors").read_bytes())
    with pytest.raises(TraceError, match=r"shard-00000\.safetensors.*sha256"):
        _load_and_read(path)


def test_bit_flip_in_a_shard_or_the_state_is_refused(tmp_path):
    for fname in ("shard-00000.safetensors", "state.safetensors"):
        path = _saved(tmp_path, fname)
        data = bytearray((path / fname).read_bytes())
        data[-3] ^= 0x10  # a byte of the last tensor's data
        (path / fname).write_bytes(bytes(data))
        with pytest.raises(TraceError, match=rf"{fname}.*sha256"):
            _load_and_read(path)


def test_missing_state_tensor_and_missing_shard_are_refused(tmp_path):
    from safetensors.torch import load_file, save_file

    path = _saved(tmp_path)
    state = load_file(path / "state.safetensors")
    state.pop("tokens@1")
    save_file(state, str(path / "state.safetensors"))
    _edit_header(path, lambda h: h["state"].update(size=(path / "state.safetensors").stat().st_size))
    with pytest.raises(TraceError, match=r"state\.safetensors: missing tensors \['tokens@1'\]"):
        Trace.load(path)
    path = _saved(tmp_path, "t2")
    (path / "state.safetensors").unlink()
    with pytest.raises(TraceError, match=r"state\.safetensors is missing"):
        Trace.load(path)


def test_saved_index_records_size_hash_shape_and_dtype(tmp_path):
    path = _saved(tmp_path)
    header = json.loads((path / "trace.json").read_text())
    (shard,) = header["shards"]
    assert shard["size"] == (path / shard["file"]).stat().st_size
    entry = shard["tensors"]["b@2#0"]
    assert entry["shape"] == [2, 3] and entry["dtype"] == "float16" and len(entry["sha256"]) == 64
    assert header["state"]["tensors"]["tokens@0"]["dtype"] == "int64"


# --- 4. tensors that share storage ----------------------------------------------------------------------------
def _shared_trace(**kwargs) -> Trace:
    base = torch.arange(24.0).reshape(4, 6)
    trace = Trace(**kwargs)
    trace.add("out", 0, base)
    trace.add("hook_out", 0, base)  # a hook point's output is also its module's output
    trace.add("row", 0, base[1])  # a contiguous view
    trace.add("col", 0, base[:, 2])  # a strided view
    trace.add_step({"step": 0}, {"tokens": torch.zeros(2, 4, dtype=torch.long)})
    return trace


@pytest.mark.parametrize("spill", [False, True])
def test_tensors_sharing_storage_save_spill_and_load_exactly(tmp_path, spill):
    kwargs = {"ram_budget": 200, "spill_dir": tmp_path / "spill"} if spill else {}  # spills out, hook_out, row together
    trace = _shared_trace(**kwargs)
    loaded = Trace.load(trace.save(tmp_path / "t"))
    base = torch.arange(24.0).reshape(4, 6)
    expected = {"out": base, "hook_out": base, "row": base[1], "col": base[:, 2]}
    for name, value in expected.items():
        assert torch.equal(loaded[name, 0], value) and torch.equal(trace[name, 0], value), name


def test_cli_trace_capture_everything(dlm_checkpoint, tmp_path):
    out = tmp_path / "t"
    run_cli("trace", "-c", str(dlm_checkpoint), "--out", str(out), "--capture", "**", "--steps", "2", "--no-progress",
            check=True)  # fmt: skip
    trace = Trace.load(out)
    assert torch.equal(trace["blocks.0.hook_resid_post", 0], trace["blocks.1.hook_resid_pre", 0])


# --- spill folders -------------------------------------------------------------------------------------------
def test_two_traces_spilling_into_one_folder_keep_their_own_data(lm, tmp_path):
    spill = tmp_path / "spill"
    first = attach(lm).trace(_runner(lm, seed=0), capture="hook_embed", ram_budget=1, spill_dir=str(spill))
    expected = first.stack("hook_embed").clone()
    second = attach(lm).trace(_runner(lm, seed=1), capture="hook_embed", ram_budget=1, spill_dir=str(spill))
    assert not torch.equal(second.stack("hook_embed"), expected)
    assert torch.equal(first.stack("hook_embed"), expected), "the second trace overwrote the first one's shards"


def test_spill_folder_is_left_as_found(tmp_path):
    spill = tmp_path / "spill"
    spill.mkdir()
    (spill / ".write-test").write_text("the user's")
    (spill / "shard-00000.safetensors").write_text("the user's too")
    before = _listing(spill)
    trace = _small_trace(ram_budget=8, spill_dir=spill)
    reference = _small_trace()
    _assert_same(trace, reference)
    trace.close()
    assert _listing(spill) == before, "spilled shards removed on close, the user's files untouched"
    fresh = tmp_path / "fresh"
    _small_trace(ram_budget=8, spill_dir=fresh).close()
    assert not fresh.exists(), "a spill folder the trace created is removed with it"


def test_shards_of_a_killed_trace_are_removed_by_the_next_one(tmp_path):
    spill, tmp = tmp_path / "spill", tmp_path / "tmp"
    tmp.mkdir()
    _run_killed(
        f"""
        import torch
        from interp.hooks import Trace
        traces = [Trace(ram_budget=8, spill_dir={str(spill)!r}), Trace(ram_budget=8)]
        for trace in traces:
            trace.add("a", 0, torch.zeros(100))
        KILL()
        """,
        env={"TMPDIR": str(tmp)},
    )
    assert list(spill.iterdir()) and list(tmp.iterdir()), "the killed trace left its shards behind"
    from interp.io import temp_tag

    live = spill / f"shard-{temp_tag()}-00000.safetensors"  # a live trace's shard (this process)
    live.write_bytes(b"")
    Trace(ram_budget=8, spill_dir=spill).close()
    assert list(spill.iterdir()) == [live]
    import tempfile

    old, tempfile.tempdir = tempfile.tempdir, str(tmp)
    try:
        Trace(ram_budget=8).close()
    finally:
        tempfile.tempdir = old
    assert list(tmp.iterdir()) == []


# --- property-based: a damaged trace folder is read back exactly or refused, never crashes ----------------
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@pytest.fixture(scope="module")
def saved_trace(tmp_path_factory) -> tuple[Path, Trace]:
    trace = _small_trace()
    folder = tmp_path_factory.mktemp("fuzz") / "trace"
    trace.save(folder)
    return folder, trace


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(which=st.integers(0, 10), at=st.floats(0, 1, exclude_max=True), truncate=st.booleans())
def test_fuzz_damaged_trace_files(saved_trace, tmp_path_factory, which, at, truncate):
    import shutil

    source, original = saved_trace
    folder = tmp_path_factory.mktemp("fuzz") / "trace"
    shutil.copytree(source, folder)
    files = sorted(p for p in folder.iterdir() if p.is_file())
    victim = files[which % len(files)]
    data = bytearray(victim.read_bytes())
    cut = int(at * len(data))
    if truncate:
        data = data[:cut]
    else:
        data[cut] ^= 0x20
    victim.write_bytes(bytes(data))
    try:
        loaded = Trace.load(folder)
        for name in loaded.names:  # every tensor read back is the one recorded, or the read is refused
            for step in loaded.step_indices(name):
                assert torch.equal(loaded[name, step], original[name, step])
    except InterpError:
        pass


def test_each_spill_hands_the_freed_memory_back(tmp_path, monkeypatch):
    """glibc keeps the pages of freed activations once its mmap threshold has risen, so a process tracing under
    a RAM budget grew past it (benchmarks/trace_overhead.py's memory probe, budget 16 MB + model 18 MB: 34 to 56 MB
    over six runs before, 22 to 26 MB over six runs with the trim: benchmarks/results/trace_overhead.txt); every
    spill now calls malloc_trim. Here: it is called once per spill, and runs on this machine."""
    from interp.hooks import trace as trace_module

    calls = []
    monkeypatch.setattr(trace_module, "_release_freed_memory", lambda: calls.append(1))
    trace = _small_trace(ram_budget=8, spill_dir=tmp_path / "spill")
    assert len(calls) == len(trace._shards) > 0
    trace.close()
    monkeypatch.undo()
    trace_module._release_freed_memory()  # glibc here: a real malloc_trim; elsewhere nothing, and no error
