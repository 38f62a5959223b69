"""Hooks over whole sampling loops: attach, trace every step, intervene at chosen steps."""

from interp.hooks import adapters, diffusers_adapter, transformers_adapter  # noqa: F401  (they register)
from interp.hooks.attach import (
    Adapter,
    HookNameError,
    Instrumented,
    SchedulerSteps,
    Site,
    StepSource,
    TracingSession,
    attach,
    register_adapter,
)
from interp.hooks.interventions import Intervention, InterventionError, steering
from interp.hooks.trace import Trace, TraceError
from interp.hooks.transformers_adapter import GenerateSteps

__all__ = [
    "Adapter",
    "GenerateSteps",
    "HookNameError",
    "Instrumented",
    "Intervention",
    "InterventionError",
    "SchedulerSteps",
    "Site",
    "StepSource",
    "Trace",
    "TraceError",
    "TracingSession",
    "attach",
    "register_adapter",
    "steering",
]
