"""Hooks over whole sampling loops: attach, trace every step, intervene at chosen steps."""

from interp.hooks.attach import HookNameError, Instrumented, Site, TracingSession, attach
from interp.hooks.interventions import Intervention, InterventionError, steering
from interp.hooks.trace import Trace, TraceError

__all__ = [
    "HookNameError",
    "Instrumented",
    "Intervention",
    "InterventionError",
    "Site",
    "Trace",
    "TraceError",
    "TracingSession",
    "attach",
    "steering",
]
