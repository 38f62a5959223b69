"""Synthetic reasoning tasks, generated from a seed, with disjoint train / held-out splits.

Every task turns a random *problem* into a fixed-length ``prompt`` and ``answer`` string, so all
sequences of one task configuration have the same length (no padding needed). Which split a
problem belongs to is decided by a hash of its prompt, so the splits are disjoint by construction
and stable across seeds.

Tasks
-----
``addition``  ``"123+456="`` → ``"0579"``: operands of exactly ``digits`` digits (zero padded),
              the sum zero-padded to ``digits + 1`` digits, most significant digit first. The last
              answer digit depends only on the operands' last digits; the first on every carry.
``sorting``   ``"3142>"`` → ``"1234"``: ``digits`` single digits, sorted ascending.
``addition_working`` (answer before working) ``"57+68="`` → ``"125;7+8+0=15,5+6+1=12"``:
              the answer first, then the column-by-column working from the least significant
              column, each ``a+b+c=s`` with the incoming carry ``c``. The working is longer than the
              answer and written *after* it: an AR model must commit to the answer before it has
              written the working; a diffusion model may fill the working in first.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from dataclasses import dataclass

from interp.config import Config, check, check_choice
from interp.errors import DataError

TASKS = ("addition", "sorting", "addition_working")
SPLITS = ("train", "heldout")
HELDOUT_FRACTION_PERCENT = 10


@dataclass
class TaskConfig(Config):
    """Which task and its size. ``digits``: operand digits (addition) or list length (sorting)."""

    name: str = "addition"
    digits: int = 3

    def validate(self) -> None:
        if self.name not in TASKS:
            raise DataError(f"unknown task {self.name!r}; known tasks: {', '.join(TASKS)}")
        check(isinstance(self.digits, int) and 1 <= self.digits <= 12, f"digits must be 1..12, got {self.digits!r}")

    @property
    def alphabet(self) -> str:
        return {"addition": "0123456789+=", "sorting": "0123456789>", "addition_working": "0123456789+=;,"}[self.name]

    @property
    def prompt_len(self) -> int:
        return len(self.generate(random.Random(0))[0])

    @property
    def answer_len(self) -> int:
        return len(self.generate(random.Random(0))[1])

    def generate(self, rng: random.Random) -> tuple[str, str]:
        """One random problem as (prompt, answer); either split."""
        return _GENERATORS[self.name](rng, self.digits)

    def solve(self, prompt: str) -> str:
        """The correct answer to ``prompt`` (for checking model output)."""
        return _SOLVERS[self.name](prompt, self.digits)


def split_of(prompt: str) -> str:
    """The split a problem belongs to, from a stable hash of its prompt."""
    h = int.from_bytes(hashlib.sha256(prompt.encode()).digest()[:4], "big")
    return "heldout" if h % 100 < HELDOUT_FRACTION_PERCENT else "train"


def _operands(rng: random.Random, digits: int) -> tuple[int, int]:
    return rng.randrange(10**digits), rng.randrange(10**digits)


def _addition_prompt(a: int, b: int, digits: int) -> str:
    return f"{a:0{digits}d}+{b:0{digits}d}="


def _parse_operands(prompt: str, digits: int) -> tuple[int, int]:
    left, right = prompt.rstrip("=").split("+")
    if len(left) != digits or len(right) != digits:
        raise DataError(f"prompt {prompt!r} does not have two {digits}-digit operands")
    return int(left), int(right)


def _gen_addition(rng: random.Random, digits: int) -> tuple[str, str]:
    a, b = _operands(rng, digits)
    prompt = _addition_prompt(a, b, digits)
    return prompt, _solve_addition(prompt, digits)


def _solve_addition(prompt: str, digits: int) -> str:
    a, b = _parse_operands(prompt, digits)
    return f"{a + b:0{digits + 1}d}"


def _gen_sorting(rng: random.Random, digits: int) -> tuple[str, str]:
    items = "".join(str(rng.randrange(10)) for _ in range(digits))
    prompt = items + ">"
    return prompt, _solve_sorting(prompt, digits)


def _solve_sorting(prompt: str, digits: int) -> str:
    items = prompt.rstrip(">")
    if len(items) != digits:
        raise DataError(f"prompt {prompt!r} does not have {digits} items")
    return "".join(sorted(items))


def _gen_working(rng: random.Random, digits: int) -> tuple[str, str]:
    a, b = _operands(rng, digits)
    prompt = _addition_prompt(a, b, digits)
    return prompt, _solve_working(prompt, digits)


def _solve_working(prompt: str, digits: int) -> str:
    a, b = _parse_operands(prompt, digits)
    columns, carry = [], 0
    for i in range(digits):
        da, db = (a // 10**i) % 10, (b // 10**i) % 10
        s = da + db + carry
        columns.append(f"{da}+{db}+{carry}={s:02d}")
        carry = s // 10
    return f"{a + b:0{digits + 1}d};" + ",".join(columns)


_GENERATORS: dict[str, Callable[[random.Random, int], tuple[str, str]]] = {
    "addition": _gen_addition,
    "sorting": _gen_sorting,
    "addition_working": _gen_working,
}
_SOLVERS: dict[str, Callable[[str, int], str]] = {
    "addition": _solve_addition,
    "sorting": _solve_sorting,
    "addition_working": _solve_working,
}


def problems(task: TaskConfig, split: str, n: int, seed: int) -> list[tuple[str, str]]:
    """``n`` distinct-when-possible problems of ``split``, drawn from ``seed``.

    Problems repeat only when the split is smaller than ``n`` (e.g. 1-digit addition).
    """
    check_choice("split", split, SPLITS)
    if n < 1:
        raise DataError(f"number of problems must be >= 1, got {n}")
    rng = random.Random(f"{task.name}-{task.digits}-{split}-{seed}")
    out: list[tuple[str, str]] = []
    seen: set[str] = set()
    attempts = 0
    while len(out) < n:
        attempts += 1
        prompt, answer = task.generate(rng)
        if split_of(prompt) != split:
            continue
        if prompt in seen and attempts < 50 * n:
            continue
        seen.add(prompt)
        out.append((prompt, answer))
    return out
