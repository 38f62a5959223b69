"""Atomic file and folder writes: write to a temporary sibling, then rename into place."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; written files are ordinary readable files
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary folder; on success it replaces ``path`` as a whole.

    The old folder (if any) is first renamed aside and deleted only after the new one is in place,
    so at every instant either the complete old or the complete new folder exists (see
    :func:`recover_directory` for the one window where it sits under its aside name).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        tmp.chmod(0o755)
        for child in tmp.rglob("*"):
            child.chmod(0o755 if child.is_dir() else 0o644)
        aside = path.parent / f".{path.name}.old"
        if aside.exists():
            shutil.rmtree(aside)
        if path.exists():
            os.replace(path, aside)
        os.replace(tmp, path)
        if aside.exists():
            shutil.rmtree(aside)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def recover_directory(path: str | os.PathLike[str]) -> None:
    """If a process died between the two renames of :func:`atomic_directory`, restore the old folder."""
    path = Path(path)
    aside = path.parent / f".{path.name}.old"
    if aside.exists() and not path.exists():
        os.replace(aside, path)
