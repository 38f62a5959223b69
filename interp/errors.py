"""Exceptions raised by interp. Every user-facing failure is an :class:`InterpError` whose message
names what was wrong (which file, which field, what was expected); the CLI prints it on one line."""

from __future__ import annotations


class InterpError(Exception):
    """Base class: a problem with the user's input, files or configuration."""


class ConfigError(InterpError, ValueError):
    """A configuration value is missing, of the wrong type or out of range."""


class CheckpointError(InterpError):
    """A checkpoint folder is missing, incomplete, corrupt or of the wrong kind/version."""


class DataError(InterpError, ValueError):
    """Input data (a prompt, a dataset, a task name) cannot be used."""
