"""Factory for `python -m bytewax.run "flows.entry:from_environment()"` (the container's command).

A function, not a module-level flow, so nothing connects or listens at import.
"""

from __future__ import annotations

from bytewax.dataflow import Dataflow

from adapters import metrics
from adapters.settings import from_env
from flows.pipeline import build


def from_environment() -> Dataflow:
    settings = from_env()
    if settings.metrics_port is not None:
        metrics.serve(settings.metrics_port)
    return build(settings)
