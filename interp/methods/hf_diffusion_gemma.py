"""A transformers DiffusionGemma folder (``config.json`` + safetensors, as ``save_pretrained`` writes it and the
hub ships it) as a method: ``interp sample / trace / analyze / depth`` take the folder where they take our
checkpoints. It loads offline (``from_pretrained(..., local_files_only=True, use_safetensors=True)``) through a
:class:`~interp.checkpoints.ForeignLoader`, every problem one :class:`~interp.errors.CheckpointError`: a
missing shard or tensor, a config of another model type, a canvas length the config cannot hold, pickle-only
weights (never unpickled).

It samples with DiffusionGemma's own sampler, step by step (:class:`~interp.samplers.diffusiongemma.DiffusionGemmaSampler`,
registered here as the token sampler ``diffusiongemma``: ``--steps`` is ``max_denoising_steps`` (default: the
model's generation config), ``--entropy-bound`` the acceptance bound; the answer is one canvas per
``canvas_length`` tokens). Prompts are text where the folder has a tokenizer, else token ids separated by
spaces (``"5 17 9"``); held-out prompts (for ``analyze``) are fixed sentences, or random token ids without a
tokenizer. There are no answers to score.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from interp.checkpoints import CONFIG_FILE, ForeignLoader, register_foreign_loader
from interp.config import Config
from interp.errors import CheckpointError, DataError, InterpError
from interp.methods.lm import sample_cli, trace_cli
from interp.registry import MethodSpec, register, register_sampler
from interp.samplers import SamplerConfig
from interp.samplers.diffusiongemma import DiffusionGemmaSampler

MODEL_TYPE = "diffusion_gemma"
SAMPLER = "diffusiongemma"
INDEX_FILE = "model.safetensors.index.json"
WEIGHTS_FILE = "model.safetensors"
PROMPTS = (
    "The quick brown fox jumps over the lazy dog because",
    "Write a short poem about the sea, the wind and",
    "To add 347 and 485, first add the units digits:",
    "The capital of France is a city known for its",
)
PROMPT_IDS = 8  # tokens of a random held-out prompt when the folder has no tokenizer


@dataclass
class HFDiffusionGemmaConfig(Config):
    """Where the folder was loaded from (the transformers config lives in the folder, not here)."""

    source: str = field(default="", metadata={"cli": False})

    def validate(self) -> None:
        pass


class IdTokenizer:
    """Token ids written as text, for folders without a tokenizer: ``"5 17 9"`` ↔ ``[5, 17, 9]``."""

    def __init__(self, vocab_size: int):
        self.vocab_size = vocab_size
        self.tokens = [str(i) for i in range(vocab_size)]

    def encode(self, text: str) -> list[int]:
        try:
            ids = [int(t) for t in text.split()]
        except ValueError:
            raise DataError(
                f"prompt {text!r}: this DiffusionGemma folder has no tokenizer; give token ids separated by spaces"
            ) from None
        bad = [i for i in ids if not 0 <= i < self.vocab_size]
        if bad:
            raise DataError(f"prompt {text!r}: token ids must be in 0..{self.vocab_size - 1}, got {bad[:5]}")
        return ids

    def decode(self, ids, show_special: bool = False) -> str:
        """Each id preceded by a space, so that a continuation reads after its prompt."""
        return "".join(f" {int(i)}" for i in ids)


class HFTokenizer:
    """A transformers tokenizer with the small interface the CLI and analyses use."""

    def __init__(self, tokenizer: Any):
        self.tk = tokenizer
        self.tokens = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))

    def encode(self, text: str) -> list[int]:
        return list(self.tk.encode(text, add_special_tokens=False))

    def decode(self, ids, show_special: bool = False) -> str:
        return self.tk.decode([int(i) for i in ids], skip_special_tokens=not show_special)


class OwnSamplerOnly:
    """What the token analyses read of a DiffusionGemma (a folder here, or one trained by kind ``dgemma``): it
    samples only with its own sampler, so the masked samplers' per-step interface refuses, naming it
    (``what``); it has no mask token, so a draft is undone as its sampler renoises, by random tokens."""

    what = "a transformers DiffusionGemma"
    undo_mode = "resample"

    def predict(self, canvas: torch.Tensor, t: torch.Tensor, carried: Any) -> torch.Tensor:
        raise DataError(
            f"{self.what} samples only with its own sampler (--sampler {SAMPLER}): its decoder reads a KV cache "
            "of the prompt and denoises one canvas at a time"
        )

    def carry(self, logits: torch.Tensor) -> Any:
        return self.predict(logits, logits, None)

    def empty_carry(self, batch: int, length: int) -> Any:
        return None


class HFDiffusionGemma(OwnSamplerOnly):
    """``model``: a ``DiffusionGemmaForBlockDiffusion`` in eval mode; ``tokenizer``; ``canvas_length``;
    ``hf_config`` (the transformers config). Built by :func:`load_folder`."""

    kind: str  # set by the registry
    cfg: HFDiffusionGemmaConfig
    has_answers = False

    def __init__(self, cfg: HFDiffusionGemmaConfig, model: Any = None, tokenizer: Any = None):
        if model is None:
            raise CheckpointError(
                "a transformers DiffusionGemma is loaded from its folder (config.json + safetensors), not built here"
            )
        self.cfg, self.model = cfg, model
        self.hf_config = model.config
        self.canvas_length = model.config.canvas_length
        self.vocab_size = model.config.get_text_config().vocab_size
        self.tokenizer = tokenizer or IdTokenizer(self.vocab_size)
        self.meta: dict[str, Any] = {}
        self.checkpoint_path: Path | None = None

    # --- what the token analyses read ------------------------------------------------------------
    @property
    def mask_id(self) -> int:
        """DiffusionGemma has no mask token (it renoises with random tokens); positions not written yet hold
        the pad id."""
        pad = self.hf_config.get_text_config().pad_token_id
        return int(pad) if pad is not None else 0

    @property
    def content_ids(self) -> torch.Tensor:
        return torch.arange(self.vocab_size)

    def encode_prompts(self, prompts: list[str]) -> torch.Tensor:
        """Prompts ``-> [B, P]``: token ids (text prompts of unequal token counts keep their last ``P`` tokens, ``P``
        the shortest)."""
        if not prompts:
            raise DataError("no prompts given")
        encoded = [self.tokenizer.encode(p) for p in prompts]
        if any(not e for e in encoded):
            raise DataError("a prompt is empty: give at least one token to continue from")
        n = min(len(e) for e in encoded)
        if isinstance(self.tokenizer, IdTokenizer) and any(len(e) != n for e in encoded):
            raise DataError(
                f"prompts in one batch must have equal length, got lengths {sorted({len(e) for e in encoded})}"
            )
        return torch.tensor([e[len(e) - n :] for e in encoded])

    def heldout(self, n: int, seed: int) -> list[tuple[str, str]]:
        """``n`` prompts (no answers): the fixed sentences in turn, or random token ids without a tokenizer."""
        if isinstance(self.tokenizer, IdTokenizer):
            g = torch.Generator().manual_seed(seed)
            ids = torch.randint(3, self.vocab_size, (n, PROMPT_IDS), generator=g)
            return [(self.tokenizer.decode(row).strip(), "") for row in ids]
        return [(PROMPTS[i % len(PROMPTS)], "") for i in range(n)]

    def answer_len_for(self, prompt_len: int) -> int:
        return self.canvas_length

    def default_steps(self) -> int:
        steps = getattr(self.model.generation_config, "max_denoising_steps", None)
        return int(steps) if steps else 48

    def config_dict(self) -> dict[str, Any]:
        return self.cfg.to_dict()


# --- loading ---------------------------------------------------------------------------------------
def _claims(config: dict[str, Any]) -> bool:
    return config.get("model_type") == MODEL_TYPE


def read_config(path: Path) -> Any:
    """The folder's ``DiffusionGemmaConfig``, checked (model type, canvas length), without reading weights."""
    import transformers

    try:
        config = transformers.AutoConfig.from_pretrained(str(path), local_files_only=True)
    except Exception as exc:  # transformers raises many kinds for a config it cannot read
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(f"{path / CONFIG_FILE}: not a usable DiffusionGemma config ({first})") from exc
    if getattr(config, "model_type", None) != MODEL_TYPE:
        raise CheckpointError(f"{path / CONFIG_FILE}: model_type {config.model_type!r}, not {MODEL_TYPE!r}")
    C = config.canvas_length
    limit = getattr(config.get_text_config(), "max_position_embeddings", None)
    if not isinstance(C, int) or isinstance(C, bool) or C < 1 or (limit is not None and C > limit):
        raise CheckpointError(
            f"{path / CONFIG_FILE}: canvas_length {C!r} is not allowed: it must be an integer in 1..{limit} "
            "(the config's max_position_embeddings)"
        )
    return config


def _check_weights(path: Path) -> None:
    """Safetensors weights are all there: the one file, or every shard the index names."""
    index = path / INDEX_FILE
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise CheckpointError(f"{index}: not a valid safetensors index ({exc})") from exc
        missing = [s for s in shards if not (path / s).is_file()]
        if missing:
            raise CheckpointError(f"{path}: missing weight shard(s) {missing} named in {INDEX_FILE}")
        return
    if not (path / WEIGHTS_FILE).is_file():
        pickles = sorted(p.name for p in path.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".pkl", ".ckpt"))
        hint = f"; found {pickles}, which are pickle-based and are never loaded" if pickles else ""
        raise CheckpointError(f"{path}: no {WEIGHTS_FILE} or {INDEX_FILE}{hint}")


def load_folder(path: Path) -> HFDiffusionGemma:
    """``DiffusionGemmaForBlockDiffusion.from_pretrained(path)`` offline, checked; its tokenizer if it has one."""
    import transformers

    config = read_config(path)
    _check_weights(path)
    from transformers.utils import logging as hf_logging

    bar = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # one line of output per command, not a loading bar
    try:
        model, info = transformers.DiffusionGemmaForBlockDiffusion.from_pretrained(
            str(path), config=config, local_files_only=True, use_safetensors=True, output_loading_info=True
        )
    except Exception as exc:  # truncated files, wrong shapes, ...
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(
            f"{path}: transformers cannot load these weights ({type(exc).__name__}: {first})"
        ) from exc
    finally:
        if bar:
            hf_logging.enable_progress_bar()
    missing = sorted(info.get("missing_keys") or [])
    if missing:
        raise CheckpointError(f"{path}: weights missing tensor(s) {missing[:5]}{' …' if len(missing) > 5 else ''}")
    mismatched = info.get("mismatched_keys") or []
    if mismatched:
        raise CheckpointError(f"{path}: tensor(s) of the wrong shape for the config: {list(mismatched)[:5]}")
    tokenizer = None
    if any((path / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")):
        try:
            tokenizer = HFTokenizer(transformers.AutoTokenizer.from_pretrained(str(path), local_files_only=True))
        except Exception as exc:  # a broken tokenizer is refused, not replaced by ids silently
            raise CheckpointError(f"{path}: its tokenizer cannot be loaded ({type(exc).__name__}: {exc})") from exc
    method = HFDiffusionGemma(HFDiffusionGemmaConfig(source=str(path)), model.eval(), tokenizer)
    method.meta = {"model_type": MODEL_TYPE, "transformers_folder": str(path), "canvas_length": method.canvas_length}
    method.checkpoint_path = path
    return method


register_foreign_loader(
    ForeignLoader(what="a transformers DiffusionGemma folder", claims=_claims, load=load_folder, config=read_config)
)


# --- its sampler, as a token sampler ----------------------------------------------------------------------
@register_sampler
class DiffusionGemmaTokenSampler(DiffusionGemmaSampler):
    """DiffusionGemma's own sampler behind the token-sampler interface (``sample_steps``, the analyses):
    ``cfg.steps`` → ``max_denoising_steps`` (default the model's), ``cfg.entropy_bound`` → the acceptance bound,
    ``answer_len`` → ``max_new_tokens`` (default ``method.answer_len_for``: one canvas for a folder, the
    canvases that fit the trained context for a ``dgemma`` checkpoint); the seed is the generator's."""

    name = SAMPLER
    config = SamplerConfig

    def __init__(self, method, prompt, cfg, generator, answer_len=None, edit=None):
        from transformers.models.diffusion_gemma.generation_diffusion_gemma import EntropyBoundSamplerConfig

        model_type = getattr(getattr(getattr(method, "model", None), "config", None), "model_type", None)
        if model_type != MODEL_TYPE or not hasattr(method, "canvas_length"):  # a folder, or a dgemma checkpoint
            kind = getattr(method, "kind", type(method).__name__)
            raise DataError(
                f"sampler {SAMPLER!r} needs a transformers DiffusionGemma; this checkpoint is of kind {kind!r}"
            )
        super().__init__(
            method.model,
            prompt,
            seed=generator.initial_seed(),
            max_new_tokens=answer_len or method.answer_len_for(prompt.shape[1]),
            max_denoising_steps=cfg.steps or method.default_steps(),
            sampler_config=EntropyBoundSamplerConfig(entropy_bound=cfg.entropy_bound),
            edit=edit,
        )


def _not_trained_here(method, out, steps, seed, meta) -> str:
    raise InterpError(
        "a transformers DiffusionGemma is not trained by `interp train`: pass its folder (config.json + "
        "safetensors) to sample / trace / analyze / depth"
    )


register(
    MethodSpec(
        kind="hf_diffusion_gemma",
        method=HFDiffusionGemma,
        config=HFDiffusionGemmaConfig,
        summary="(not trained here) A transformers DiffusionGemma folder, loaded with from_pretrained.",
        sampler_config=SamplerConfig,
        samplers=(SAMPLER,),
        default_sampler=lambda method: SamplerConfig(name=SAMPLER, steps=method.default_steps(), entropy_bound=0.1),
        capture="blocks.*.hook_resid_post",
        inputs="prompts",
        train=_not_trained_here,
        sample=sample_cli,
        trace_run=trace_cli,
        report="interp.reports.methods:diffusion_gemma_report",
    )
)
