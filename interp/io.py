"""Atomic file and folder writes: write to a temporary sibling, then rename into place.

The target is checked before anything is created or moved: a file where a folder is to go, a folder where a
file is to go, a dangling symbolic link, or a file among its parent folders is refused with :class:`OutputError`
(a symbolic link to an existing target is followed: the target is replaced, the link kept).

Temporary names are hidden and say whose they are, ``.NAME.interp-tmp-<pid>-<host>-<random>``, so nobody
mistakes one for output. A write that is killed before its rename leaves one behind; the next write to the same
``NAME`` removes those of processes on this host that are no longer alive, never those of a live process.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
import shutil
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

from interp.errors import InterpError

TMP_MARK = ".interp-tmp-"
TAG_PATTERN = r"(?P<pid>\d+)-(?P<host>[0-9a-f]{8})-[0-9a-f]{8}"  # what :func:`temp_tag` returns


class OutputError(InterpError, OSError):
    """An output location cannot be written: something that is not ours is in the way."""


def _host() -> str:
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def temp_tag() -> str:
    """``<pid>-<host>-<random>``: names a temporary file as this process's (see :func:`remove_stale`)."""
    return f"{os.getpid()}-{_host()}-{secrets.token_hex(4)}"


def _pid_alive(pid: int) -> bool:
    if os.name != "posix" or pid <= 0:
        return True  # no safe probe (os.kill terminates on Windows): treat as alive, never remove
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # e.g. EPERM: alive, another user's
    return True


def remove_stale(folder: str | os.PathLike[str], pattern: str) -> list[Path]:
    """Remove the entries of ``folder`` whose whole name matches ``pattern`` (a regex with the named groups of
    :data:`TAG_PATTERN`) and whose writing process, on this host, is no longer alive. Best effort: an entry
    that cannot be removed is left. Returns the paths removed."""
    regex, host, removed = re.compile(pattern), _host(), []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        match = regex.fullmatch(entry.name)
        if match is None or match["host"] != host or _pid_alive(int(match["pid"])):
            continue
        try:
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
        except OSError:
            continue
        removed.append(Path(entry.path))
    return removed


def remove_stale_temps(path: str | os.PathLike[str]) -> list[Path]:
    """Remove the temporary siblings of ``path`` left by writes whose process is no longer alive."""
    path = Path(path)
    return remove_stale(path.parent, re.escape(f".{path.name}{TMP_MARK}") + TAG_PATTERN)


def check_parents(path: str | os.PathLike[str]) -> None:
    """Refuse ``path`` if one of its parent folders exists but is not a folder (``notes.txt/x``)."""
    path = Path(path)
    for parent in path.parents:
        if parent.is_dir():
            return
        if os.path.lexists(parent):
            what = (
                "a file"
                if parent.is_file()
                else "a dangling symbolic link"
                if parent.is_symlink()
                else "a special file"
            )
            raise OutputError(f"cannot write {path}: {parent} is {what}, not a folder")


def output_target(path: str | os.PathLike[str]) -> Path:
    """The absolute path a write to ``path`` replaces: a symbolic link to an existing target is followed.
    Refuses (:class:`OutputError`) a dangling link, a path that names nothing (``/``) and a file among the
    parent folders (:func:`check_parents`)."""
    path = Path(os.path.abspath(path))
    if path.is_symlink():
        try:
            target = path.resolve(strict=True)
        except (OSError, RuntimeError) as exc:
            raise OutputError(f"{path} is a symbolic link to nothing that exists; refusing to follow it") from exc
        path = target
    if not path.name:
        raise OutputError(f"cannot write to {path}: it names no file or folder")
    check_parents(path)
    return path


def _temp_sibling(path: Path) -> Path:
    return path.parent / f".{path.name}{TMP_MARK}{temp_tag()}"


def _make_parents(path: Path) -> list[Path]:
    """Create the missing parent folders of ``path``; returns those created, deepest first."""
    missing = [parent for parent in path.parents if not parent.exists()]
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except BaseException:
        _remove_if_empty(missing)
        raise
    return missing


def _remove_if_empty(folders: list[Path]) -> None:
    for folder in folders:
        with contextlib.suppress(OSError):
            folder.rmdir()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike[str], durable: bool = True) -> Iterator[Path]:
    """Yield a temporary path for the caller to write a file to; on success it replaces ``path``.

    Refuses (:class:`OutputError`, before creating anything) if ``path`` is a folder. On failure the
    temporary file is removed and ``path`` is unchanged. ``durable``: flush the file to disk before the
    rename (not needed for scratch files that do not outlive the process).
    """
    path = output_target(path)
    if path.is_dir():
        raise OutputError(f"{path} is a folder; refusing to replace it with a file")
    made = _make_parents(path)
    remove_stale_temps(path)
    tmp = _temp_sibling(path)
    try:
        yield tmp
        if durable:
            _fsync(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        _remove_if_empty(made)
        raise


def check_file_output(path: str | os.PathLike[str], is_ours: Callable[[Path], bool], what: str) -> Path:
    """Refuse (:class:`OutputError`) to replace what is at ``path`` unless it is absent or a file that
    ``is_ours`` recognises (e.g. a report interp wrote); returns the path to write."""
    target = output_target(path)
    if os.path.lexists(target):
        if target.is_dir():
            raise OutputError(f"{target} is a folder; expected a file name for the {what}")
        try:
            ours = is_ours(target)
        except (OSError, ValueError):
            ours = False
        if not ours:
            raise OutputError(f"{target} exists and is not {what} written by interp; refusing to replace it")
    return target


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    with atomic_file(path) as tmp, open(tmp, "xb") as fh:
        fh.write(data)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def _aside(path: Path) -> Path:
    return path.parent / f".{path.name}.old"


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike[str], check: Callable[[Path], None] | None = None) -> Iterator[Path]:
    """Yield a temporary folder; on success it replaces ``path`` as a whole.

    Before anything is created, ``path`` is checked: a file there, or a file among its parents, is refused
    with :class:`OutputError`; ``check(path)`` (if given) may refuse more, e.g. a folder that is not ours. It is
    called again just before the replacement. The old folder (if any) is first renamed aside and deleted only
    after the new one is in place, so at every instant either the complete old or the complete new folder
    exists (see :func:`recover_directory` for the one window where it sits under its aside name); if the new
    one cannot be put in place, the old one is put back.
    """
    path = output_target(path)
    recover_directory(path)
    aside = _aside(path)

    def refuse_what_is_not_ours() -> None:
        if os.path.lexists(path) and not path.is_dir():
            raise OutputError(f"{path} is a file; refusing to replace it with a folder")
        if os.path.lexists(aside) and (aside.is_symlink() or not aside.is_dir()):
            raise OutputError(f"{aside} is in the way of writing {path.name} (it is not a folder interp set aside)")
        if check is not None:
            check(path)

    refuse_what_is_not_ours()
    made = _make_parents(path)
    remove_stale_temps(path)
    tmp = _temp_sibling(path)
    try:
        tmp.mkdir(mode=0o700)
    except BaseException:
        _remove_if_empty(made)
        raise
    moved_aside = False
    try:
        yield tmp
        for child in [tmp, *tmp.rglob("*")]:
            if child.is_symlink():
                continue
            if child.is_dir():
                child.chmod(0o755)
            elif child.is_file():
                child.chmod(0o644)
                _fsync(child)
        refuse_what_is_not_ours()
        if aside.exists():  # the old folder of an earlier write that died after putting its new one in place
            shutil.rmtree(aside)
        if path.exists():
            os.replace(path, aside)
            moved_aside = True
        os.replace(tmp, path)
        moved_aside = False
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if moved_aside and not os.path.lexists(path):
            os.replace(aside, path)
        _remove_if_empty(made)
        raise
    shutil.rmtree(aside, ignore_errors=True)  # the write succeeded; a leftover is removed by the next one


def recover_directory(path: str | os.PathLike[str]) -> None:
    """If a process died between the two renames of :func:`atomic_directory`, restore the old folder."""
    path = Path(path)
    aside = _aside(path)
    if aside.is_dir() and not aside.is_symlink() and not os.path.lexists(path):
        os.replace(aside, path)
