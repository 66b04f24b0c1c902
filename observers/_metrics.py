"""`MetricsObserver`: saga and step metrics on the OpenTelemetry metrics API.

Counts come from committed records (``step_started``, ``step_failed``, the terminal
records, ...), which observers see once, live, and never during recovery or replay. So a
restart counts nothing twice; the process that appends a record is the one that counts it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from opentelemetry import metrics
from opentelemetry.metrics import MeterProvider
from opentelemetry.util.types import AttributeValue

from observers._context import SCOPE
from saga import (
    AbortRequested,
    EventDelivered,
    Observer,
    Record,
    SagaCompensated,
    SagaCompleted,
    SagaFailed,
    SagaInfo,
    SagaStarted,
    Status,
    StepContext,
    StepFailed,
    StepOutcome,
    StepStarted,
    StepWaiting,
    WaitTimedOut,
)

__all__ = ["MetricsObserver"]

_ENDED = {SagaCompleted: Status.COMPLETED, SagaCompensated: Status.COMPENSATED,
          SagaFailed: Status.FAILED}  # fmt: skip


@dataclass(slots=True)
class _Timing:
    ctx: StepContext[Any]
    started: float


class MetricsObserver(Observer):
    """Records saga metrics with OpenTelemetry instruments.

    Instruments (all with the attribute ``saga.name``; step instruments add ``saga.step``
    and ``saga.compensating``):

    * ``saga.sagas.started``, ``saga.sagas.completed``, ``saga.sagas.compensated``,
      ``saga.sagas.failed``: counters of sagas.
    * ``saga.step.attempts``: counter of handler invocations (retries and re-runs after a
      crash included); ``saga.step.failures``: counter of failed attempts (``error.type``).
    * ``saga.step.duration``: histogram of handler durations in seconds
      (``saga.outcome``: ``completed``, ``waiting`` or ``failed``).
    * ``saga.events.delivered``: counter of events handed to a waiting step;
      ``saga.events.dead_lettered``: counter of events left unconsumed when a saga ended.
    * ``saga.sagas.waiting``: up-down counter of sagas waiting for an event (a forward or a
      compensation wait). Each process adds the waits it records and subtracts the ones it
      ends; sum it across processes (a saga may wait in one and resume in another). A
      process that crashes takes its share with it.

    Memory is bounded by the handlers in flight.

    Args:
        meter_provider: where metrics go; the global provider when ``None``. The global
            provider is never replaced.
    """

    def __init__(self, meter_provider: MeterProvider | None = None) -> None:
        meter = metrics.get_meter(SCOPE, meter_provider=meter_provider)
        self._started = meter.create_counter(
            "saga.sagas.started", unit="{saga}", description="Sagas started."
        )
        self._ended = {
            Status.COMPLETED: meter.create_counter(
                "saga.sagas.completed", unit="{saga}", description="Sagas that completed."
            ),
            Status.COMPENSATED: meter.create_counter(
                "saga.sagas.compensated",
                unit="{saga}",
                description="Sagas whose compensations all ran.",
            ),
            Status.FAILED: meter.create_counter(
                "saga.sagas.failed",
                unit="{saga}",
                description="Sagas whose compensation failed for good (an operator is needed).",
            ),
        }
        self._attempts = meter.create_counter(
            "saga.step.attempts", unit="{attempt}", description="Step handler invocations."
        )
        self._failures = meter.create_counter(
            "saga.step.failures", unit="{attempt}", description="Failed step handler attempts."
        )
        self._duration = meter.create_histogram(
            "saga.step.duration", unit="s", description="Duration of step handler invocations."
        )
        self._delivered = meter.create_counter(
            "saga.events.delivered", unit="{event}", description="Events delivered to steps."
        )
        self._dead = meter.create_counter(
            "saga.events.dead_lettered",
            unit="{event}",
            description="Events no step consumed before their saga ended.",
        )
        self._waiting = meter.create_up_down_counter(
            "saga.sagas.waiting", unit="{saga}", description="Sagas waiting for an event."
        )
        self._timings: dict[str, _Timing] = {}  # saga id -> its running handler's start

    async def before_step(self, ctx: StepContext[Any]) -> None:
        """Note when the handler starts."""
        self._timings[ctx.saga_id] = _Timing(ctx, time.perf_counter())

    async def after_step(self, ctx: StepContext[Any], outcome: StepOutcome) -> None:
        """Record the handler's duration."""
        timing = self._timings.get(ctx.saga_id)
        if timing is None or timing.ctx is not ctx:
            return
        del self._timings[ctx.saga_id]
        attributes = _step(ctx.saga_name, ctx.step, ctx.compensating)
        attributes["saga.outcome"] = outcome.kind
        self._duration.record(time.perf_counter() - timing.started, attributes)

    async def on_transition(self, record: Record, info: SagaInfo) -> None:
        """Count what the record says happened."""
        body = record.body
        name = {"saga.name": info.name}
        match body:
            case SagaStarted():
                self._started.add(1, name)
            case StepStarted():
                self._attempts.add(1, _step(info.name, record.step, body.compensating))
            case StepFailed():
                attributes = _step(info.name, record.step, body.compensating)
                if body.error.type:
                    attributes["error.type"] = body.error.type
                self._failures.add(1, attributes)
            case StepWaiting():
                self._waiting.add(1, name)
            case EventDelivered():
                self._waiting.add(-1, name)
                self._delivered.add(1, name)
            case WaitTimedOut():
                self._waiting.add(-1, name)
            case AbortRequested():
                # An effective abort leaves the status as it was until compensation starts:
                # still WAITING here means the abort ended a wait.
                if body.effective and info.status is Status.WAITING:
                    self._waiting.add(-1, name)
            case SagaCompleted() | SagaCompensated() | SagaFailed():
                self._timings.pop(info.saga_id, None)
                self._ended[_ENDED[type(body)]].add(1, name)
                if body.dead_letters:
                    self._dead.add(body.dead_letters, name)


def _step(saga_name: str, step: str | None, compensating: bool) -> dict[str, AttributeValue]:
    return {
        "saga.name": saga_name,
        "saga.step": step or "",
        "saga.compensating": bool(compensating),
    }
