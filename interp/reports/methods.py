"""What ``interp report`` shows for each built-in method: the glue from a method's spec
(``report="interp.reports.methods:..."``) to the section builders of :mod:`interp.reports.dlm` and
:mod:`interp.reports.time_agnostic`. Each returns ``(sections, numbers, title)``; ``numbers`` go to the
report's run configuration."""

from __future__ import annotations

from typing import Any

from interp.errors import DataError
from interp.reports.html import Section


def dlm_report(method, options) -> tuple[list[Section], dict[str, Any], str]:
    """A diffusion LM's sampling behaviour on ``--n`` (default 100) held-out problems per sampler."""
    from interp.reports.dlm import dlm_sections

    n = options.get("n", 100)
    options.done()
    if n < 1:
        raise DataError(f"--n must be >= 1, got {n}")
    sections, numbers = dlm_sections(method, n=n, seed=options.seed)
    return sections, numbers, f"interp report: {method.checkpoint_path}"


def image_report(method, options) -> tuple[list[Section], dict[str, Any], str]:
    """An image model's denoising error, sample quality (``--n`` images per sampler, default 500) and
    noise probes; with ``--compare``, its time-agnostic twin beside it (the conditioned model leads)."""
    from interp.checkpoints import load_checkpoint
    from interp.reports.time_agnostic import image_sections

    n = options.get("n", 500)
    compare = options.get("compare")
    options.done()
    if n < 2:
        raise DataError(f"--n must be >= 2 for image sample quality, got {n}")
    blind = load_checkpoint(compare, expected_kind=method.kind) if compare is not None else None
    if blind is not None and not method.cfg.time_conditioning:
        method, blind = blind, method
    sections, numbers = image_sections(method, blind, n=n, seed=options.seed)
    title = f"interp report: {method.checkpoint_path}"
    if blind is not None:
        title += f" vs {blind.checkpoint_path}"
        numbers = {
            "checkpoint": str(method.checkpoint_path),
            "config": method.config_dict(),
            "meta": method.meta,
            "compare": {"checkpoint": str(blind.checkpoint_path), "config": blind.config_dict(), "meta": blind.meta},
            **numbers,
        }
    return sections, numbers, title


def diffusion_gemma_report(method, options) -> tuple[list[Section], dict[str, Any], str]:
    """A DiffusionGemma (a transformers folder, or one trained here) sampled by its own sampler on ``--n``
    (default 32) held-out prompts: decode order, revisions, smearing, entropy per step, the token bottleneck."""
    from interp.reports.diffusion_gemma import diffusion_gemma_sections

    n = options.get("n", 32)
    options.done()
    if n < 1:
        raise DataError(f"--n must be >= 1, got {n}")
    sections, numbers = diffusion_gemma_sections(method, n=n, seed=options.seed)
    return sections, numbers, f"interp report: {method.checkpoint_path}"
