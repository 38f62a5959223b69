"""What the diffusion LM and the autoregressive baseline share: config fields, data, tokenizer."""

from __future__ import annotations

from dataclasses import dataclass, field

import datasets
import torch

from interp.config import Config, check
from interp.data import SHAKESPEARE_ALPHABET, SPECIALS, TASKS, CharTokenizer, TaskConfig, task_dataset, text_dataset
from interp.errors import DataError
from interp.models import TokenTransformer, TransformerConfig

LM_TASKS = (*TASKS, "shakespeare")


@dataclass
class LMConfig(Config):
    """Task and backbone shape, common to every language model we train.

    ``digits``: task size (see :class:`interp.data.TaskConfig`); ``seq_len``: block length for
    ``shakespeare`` (ignored by the synthetic tasks, whose length follows from ``digits``).
    ``train_size``: number of training problems generated from the seed.
    """

    task: str = field(default="addition", metadata={"help": " | ".join(LM_TASKS)})
    digits: int = 3
    seq_len: int = field(default=64, metadata={"help": "Block length for shakespeare."})
    train_size: int = 50_000
    d_model: int = 128
    n_layers: int = 4
    n_heads: int = 4
    d_mlp: int = 512

    def validate(self) -> None:
        if self.task not in LM_TASKS:
            raise DataError(f"unknown task {self.task!r}; known tasks: {', '.join(LM_TASKS)}")
        if self.task != "shakespeare":
            TaskConfig(self.task, self.digits)
        check(isinstance(self.seq_len, int) and self.seq_len >= 2, f"seq_len must be >= 2, got {self.seq_len!r}")
        check(
            isinstance(self.train_size, int) and self.train_size >= 1,
            f"train_size must be >= 1, got {self.train_size!r}",
        )

    @property
    def task_config(self) -> TaskConfig:
        if self.task == "shakespeare":
            raise DataError("shakespeare is free text: it has no problems to solve or score")
        return TaskConfig(self.task, self.digits)

    @property
    def alphabet(self) -> str:
        return SHAKESPEARE_ALPHABET if self.task == "shakespeare" else self.task_config.alphabet

    @property
    def n_ctx(self) -> int:
        if self.task == "shakespeare":
            return self.seq_len
        return self.task_config.prompt_len + self.task_config.answer_len

    def transformer_config(self, **extra: bool) -> TransformerConfig:
        return TransformerConfig(
            vocab_size=CharTokenizer(self.alphabet).vocab_size,
            n_ctx=self.n_ctx,
            d_model=self.d_model,
            n_layers=self.n_layers,
            n_heads=self.n_heads,
            d_mlp=self.d_mlp,
            **extra,
        )


class LanguageModelMethod:
    """Base of :class:`DiffusionLM` and :class:`AutoregressiveLM`: a backbone, a tokenizer and data.

    Subclasses define ``prepare`` (all randomness of a training step, for the *global*
    batch, so every process and every world size sees the same) and ``loss`` (deterministic given
    the prepared batch, per-example ``[B]``).
    """

    kind: str  # set by the registry
    cfg: LMConfig

    def __init__(self, cfg: LMConfig, model: TokenTransformer):
        self.cfg = cfg
        self.model = model
        self.tokenizer = CharTokenizer(cfg.alphabet)

    def train_dataset(self, seed: int) -> datasets.Dataset:
        if self.cfg.task == "shakespeare":
            return text_dataset(self.cfg.seq_len, split="train")
        return task_dataset(self.cfg.task_config, "train", self.cfg.train_size, seed)

    def collate(self, rows: dict[str, list]) -> dict[str, torch.Tensor]:
        return {"input_ids": torch.tensor(rows["input_ids"]), "prompt_len": torch.tensor(rows["prompt_len"])}

    def encode_prompts(self, prompts: list[str]) -> torch.Tensor:
        """Prompts ``-> [B, Lp]`` ids, checking alphabet and context length."""
        if not prompts:
            raise DataError("no prompts given")
        if any(not p for p in prompts):
            raise DataError("a prompt is empty: give at least one character to continue from")
        encoded = [self.tokenizer.encode(p) for p in prompts]
        lengths = {len(e) for e in encoded}
        if len(lengths) != 1:
            raise DataError(f"prompts in one batch must have equal length, got lengths {sorted(lengths)}")
        n = lengths.pop()
        if self.answer_len_for(n) < 1:
            raise DataError(self.no_room(n))
        return torch.tensor(encoded)

    def no_room(self, prompt_len: int) -> str:
        """The message for a prompt of ``prompt_len`` tokens that leaves nothing to generate."""
        return (
            f"prompt of {prompt_len} characters leaves no room to generate: the model context is {self.model.cfg.n_ctx}"
        )

    @staticmethod
    def suppress_specials(logits: torch.Tensor) -> torch.Tensor:
        """Special tokens (pad, mask, sep) are never predicted: their logits become -inf (a copy)."""
        logits = logits.clone()
        logits[..., : len(SPECIALS)] = float("-inf")
        return logits

    @property
    def mask_id(self) -> int:
        return self.tokenizer.mask_id

    @property
    def has_answers(self) -> bool:
        """Whether held-out prompts have an answer key (synthetic tasks) or are free text (a corpus)."""
        return self.cfg.task != "shakespeare"

    def heldout(self, n: int, seed: int) -> list[tuple[str, str]]:
        """``n`` held-out (prompt, answer) pairs: problems of a task, or for free text the opening quarter of
        held-out blocks (at least one character) and their true continuation (not scored)."""
        if self.has_answers:
            from interp.data import problems

            return problems(self.cfg.task_config, "heldout", n, seed)
        blocks = text_dataset(self.cfg.seq_len, split="heldout")["input_ids"]
        order = torch.randperm(len(blocks), generator=torch.Generator().manual_seed(seed))[:n].tolist()
        cut = max(1, self.cfg.seq_len // 4)
        texts = [self.tokenizer.decode(blocks[i]) for i in order]
        return [(text[:cut], text[cut:]) for text in texts]

    def answer_len_for(self, prompt_len: int) -> int:
        return self.model.cfg.n_ctx - prompt_len

    def prepare(self, batch: dict[str, torch.Tensor], generator: torch.Generator) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def loss(self, model: torch.nn.Module, prepared: dict[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def config_dict(self) -> dict:
        return self.cfg.to_dict()


def lm_spec(**fields) -> dict:
    """What the diffusion LM's and the AR baseline's specs share."""
    return {
        "inputs": "prompts",
        "capture": "blocks.*.hook_resid_post",
        "sample": sample_cli,
        "trace_run": trace_cli,
        "evaluate": "interp.evaluation:evaluate_lm_cli",
        "train_eval": "interp.evaluation:lm_train_eval",
        **fields,
    }


# --- what `interp sample` / `interp trace` do with a language model -----------------------------------
def sample_cli(method: LanguageModelMethod, options) -> tuple[dict, str]:
    """``interp sample`` on a language model: the continuation of ``--prompt`` (repeatable)."""
    from interp.samplers import run_to_end, sample_steps

    prompts = options.require("prompt", " for language-model checkpoints")
    show_steps = options.get("show_steps", False)
    cfg = options.sampler(method.spec, method)
    options.done()
    ids = method.encode_prompts(prompts)
    tokens, record = run_to_end(sample_steps(method, ids, cfg, torch.Generator().manual_seed(options.seed)))
    outputs = [method.tokenizer.decode(row[ids.shape[1] :], show_special=True) for row in tokens]
    lines = []
    if show_steps:
        for st in record:
            canvas = " | ".join(method.tokenizer.decode(row, show_special=True) for row in st.tokens)
            lines.append(f"step {st.index:3d} t={st.t:.3f}  {canvas}")
    lines += [f"{p}{o}" for p, o in zip(prompts, outputs, strict=True)]
    payload = {"sampler": cfg.name, "steps": len(record), "prompts": prompts, "outputs": outputs}
    return payload, "\n".join(lines)


def trace_cli(method: LanguageModelMethod, options):
    """``interp trace`` on a language model: ``--prompt`` (default: 4 held-out problems of its task)."""
    from interp.samplers import sample_steps

    prompts = options.get("prompt") or [p for p, _ in method.heldout(4, options.seed)]
    cfg = options.sampler(method.spec, method)
    options.done()
    ids = method.encode_prompts(prompts)

    def run():
        return sample_steps(method, ids, cfg, torch.Generator().manual_seed(options.seed))

    return run, {"prompts": prompts, "sampler": cfg.to_dict()}
