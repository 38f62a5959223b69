"""Analyses: pure functions from a Trace (or a model) to results with ``.frame()`` / ``.figure()``."""

from interp.analyses.logit_lens import LogitLens, answer_logit_lens, default_readout, logit_lens

__all__ = ["LogitLens", "answer_logit_lens", "default_readout", "logit_lens"]
