"""Analyses: pure functions from a Trace (or a model) to results with ``.frame()`` / ``.figure()``."""

from interp.analyses.logit_lens import LogitLens, default_readout, logit_lens

__all__ = ["LogitLens", "default_readout", "logit_lens"]
