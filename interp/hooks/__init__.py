"""Hooks over whole sampling loops: attach, trace every step, intervene at chosen steps."""

from interp.hooks import adapters, diffusers_adapter, transformers_adapter  # noqa: F401  (they register)
from interp.hooks.attach import Adapter, HookNameError, Instrumented, Site, TracingSession, attach, register_adapter
from interp.hooks.interventions import Intervention, InterventionError, steering
from interp.hooks.trace import Trace, TraceError

__all__ = [
    "Adapter",
    "HookNameError",
    "Instrumented",
    "Intervention",
    "InterventionError",
    "Site",
    "Trace",
    "TraceError",
    "TracingSession",
    "attach",
    "register_adapter",
    "steering",
]
