"""Data as ``datasets.Dataset``: synthetic reasoning tasks, text corpora, a character tokenizer."""

from __future__ import annotations

import datasets
import torch

from interp.data.tasks import SPLITS, TASKS, TaskConfig, problems, split_of
from interp.data.text import SHAKESPEARE_ALPHABET, shakespeare_text
from interp.data.tokenizer import MASK, PAD, SEP, SPECIALS, CharTokenizer

__all__ = [
    "MASK",
    "PAD",
    "SEP",
    "SHAKESPEARE_ALPHABET",
    "SPECIALS",
    "SPLITS",
    "TASKS",
    "CharTokenizer",
    "TaskConfig",
    "problems",
    "shakespeare_text",
    "split_of",
    "task_dataset",
    "text_dataset",
    "tokenizer_for",
]


def tokenizer_for(task: TaskConfig) -> CharTokenizer:
    return CharTokenizer(task.alphabet)


def task_dataset(task: TaskConfig, split: str, n: int, seed: int) -> datasets.Dataset:
    """``n`` problems of ``task`` as a Dataset with columns ``prompt``, ``answer``, ``input_ids``
    (prompt + answer, length ``prompt_len + answer_len``) and ``prompt_len``."""
    tok = tokenizer_for(task)
    rows = problems(task, split, n, seed)
    return datasets.Dataset.from_dict(
        {
            "prompt": [p for p, _ in rows],
            "answer": [a for _, a in rows],
            "input_ids": [tok.encode(p + a) for p, a in rows],
            "prompt_len": [len(p) for p, _ in rows],
        }
    )


def text_dataset(block_len: int, max_chars: int | None = None, split: str = "train") -> datasets.Dataset:
    """Shakespeare cut into non-overlapping blocks of ``block_len`` characters (no prompt: the
    whole block is generated). Every 10th block is held out."""
    text = shakespeare_text(max_chars)
    tok = CharTokenizer(SHAKESPEARE_ALPHABET)
    ids = torch.tensor(tok.encode(text))
    blocks = ids[: len(ids) // block_len * block_len].view(-1, block_len)
    keep = [(i % 10 == 0) == (split == "heldout") for i in range(len(blocks))]
    blocks = blocks[torch.tensor(keep)]
    return datasets.Dataset.from_dict({"input_ids": blocks.tolist(), "prompt_len": [0] * len(blocks)})
