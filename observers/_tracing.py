"""`TracingObserver`: OpenTelemetry spans for sagas, one trace per saga across restarts.

The span tree of one saga::

    <the caller's span, e.g. POST /trips>      (if runtime.start ran inside one)
      saga <name>                              short anchor, emitted by runtime.start
        step <step>                            one per forward handler invocation
        compensate <step>                      one per compensation handler invocation
        saga <name> compensating               short, when compensation starts
        saga <name> <completed|compensated|failed>   short, the terminal status

The anchor's span context is recorded in the saga's log (``saga_started`` annotations), so
a step that runs days later in another process is still its child. Each span is ended when
its handler returns, so nothing stays open while a saga waits; a wait is a span event on
the span of the handler that asked for it. Observers are never called while a runtime
recovers or replays, so a restart emits no span twice.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextvars import Token
from dataclasses import dataclass
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, Span, SpanKind, StatusCode, TracerProvider
from opentelemetry.util.types import AttributeValue

from observers._context import SCOPE, inject, saga_context, sender_context
from saga import (
    CompensationStarted,
    Observer,
    Record,
    SagaCompensated,
    SagaCompleted,
    SagaFailed,
    SagaInfo,
    SagaResumed,
    SagaRetried,
    SagaReverted,
    SagaSuspended,
    Status,
    StepContext,
    StepOutcome,
    StepStarted,
)

__all__ = ["TracingObserver"]


@dataclass(slots=True)
class _Next:
    """What the ``step_started`` record says about the handler about to run."""

    step: str | None
    handler: str
    recovery: int
    version: int


@dataclass(slots=True)
class _InFlight:
    ctx: StepContext[Any]
    span: Span
    token: Token[Context]


class TracingObserver(Observer):
    """Emits OpenTelemetry spans for every saga it observes.

    Spans: ``saga <name>`` (a short anchor, a child of the span current when
    ``runtime.start`` is called), then one ``step <step>`` or ``compensate <step>`` span per
    handler invocation, children of the anchor in whatever process and after whatever
    restart they run, and a short final span carrying the terminal status. Attributes:
    ``saga.id``, ``saga.name``, ``saga.version``, ``saga.step``, ``saga.attempt``,
    ``saga.compensating``, ``saga.status`` (plus ``saga.handler``, and ``saga.recovery``
    on a run repeated after a crash). A failed attempt has status ERROR and the exception
    recorded; a wait is a ``saga.wait`` span event; the handler that receives an event
    links to the span that was current when it was sent. While a handler runs, its span
    is the current span, so spans the handler creates are its children.

    Memory is bounded by the handlers in flight: nothing is kept for a waiting saga. One
    instance may serve several runtimes, as long as saga ids do not repeat across them.

    Args:
        tracer_provider: where spans go; the global provider (as it is when spans are
            created) when ``None``. The global provider is never replaced.
    """

    def __init__(self, tracer_provider: TracerProvider | None = None) -> None:
        self._tracer = trace.get_tracer(SCOPE, tracer_provider=tracer_provider)
        self._next: dict[str, _Next] = {}  # saga id -> the handler its step_started announced
        self._in_flight: dict[str, _InFlight] = {}  # saga id -> its running handler's span

    async def on_start(
        self, saga_id: str, saga_name: str, version: int
    ) -> Mapping[str, str] | None:
        """Emit the saga's anchor span and return its context, to be recorded in the log."""
        span = self._tracer.start_span(
            f"saga {saga_name}",
            kind=SpanKind.INTERNAL,
            attributes={
                "saga.id": saga_id,
                "saga.name": saga_name,
                "saga.version": version,
                "saga.status": Status.RUNNING.value,
            },
        )
        span.end()
        return inject(span) or None

    async def before_step(self, ctx: StepContext[Any]) -> None:
        """Start the handler's span and make it current for the handler."""
        announced = self._next.pop(ctx.saga_id, None)
        if announced is not None and announced.step != ctx.step:
            announced = None
        attributes: dict[str, AttributeValue] = {
            "saga.id": ctx.saga_id,
            "saga.name": ctx.saga_name,
            "saga.step": ctx.step,
            "saga.attempt": ctx.attempt,
            "saga.compensating": ctx.compensating,
            "saga.status": (Status.COMPENSATING if ctx.compensating else Status.RUNNING).value,
        }
        if announced is not None:
            attributes["saga.version"] = announced.version
            attributes["saga.handler"] = announced.handler
            if announced.recovery:
                attributes["saga.recovery"] = announced.recovery
        links = []
        event = ctx.event
        if event is not None:
            attributes["saga.event.name"] = event.name
            attributes["saga.event.id"] = event.event_id
            sender = sender_context(event.headers)
            if sender is not None:
                links.append(Link(sender, {"saga.event.name": event.name}))
        verb = "compensate" if ctx.compensating else "step"
        span = self._tracer.start_span(
            f"{verb} {ctx.step}",
            context=saga_context(ctx.annotations, ctx.saga_id),
            kind=SpanKind.INTERNAL,
            attributes=attributes,
            links=links,
        )
        if event is not None:
            span.add_event("saga.event", _event_attributes(event.name, event.key, event.event_id))
        elif announced is not None and announced.handler == "on_timeout":
            span.add_event("saga.wait_timed_out")
        token = otel_context.attach(trace.set_span_in_context(span))
        # A saga runs one handler at a time: anything left here was interrupted (the runtime
        # was cancelled mid-handler) and is dropped unexported, as a crash would drop it.
        self._in_flight[ctx.saga_id] = _InFlight(ctx, span, token)

    async def after_step(self, ctx: StepContext[Any], outcome: StepOutcome) -> None:
        """End the handler's span with its outcome."""
        flight = self._in_flight.get(ctx.saga_id)
        if flight is None or flight.ctx is not ctx:
            return
        del self._in_flight[ctx.saga_id]
        otel_context.detach(flight.token)
        span = flight.span
        span.set_attribute("saga.outcome", outcome.kind)
        if outcome.kind == "failed" and outcome.error is not None:
            error = outcome.error
            span.record_exception(error)
            span.set_status(StatusCode.ERROR, f"{type(error).__name__}: {error}")
        elif outcome.wait is not None:
            wait = outcome.wait
            attributes: dict[str, AttributeValue] = {"saga.wait.event": wait.name}
            if wait.key is not None:
                attributes["saga.wait.key"] = wait.key
            if wait.timeout is not None:
                attributes["saga.wait.timeout"] = wait.timeout
            span.add_event("saga.wait", attributes)
        span.end()

    async def on_transition(self, record: Record, info: SagaInfo) -> None:
        """Note the handler about to run; emit the compensation and terminal spans."""
        body = record.body
        match body:
            case StepStarted():
                self._next[info.saga_id] = _Next(
                    record.step, body.handler, body.recovery, info.version
                )
            case CompensationStarted():
                attributes = _saga_attributes(info)
                if body.failed_step is not None:
                    attributes["saga.failed_step"] = body.failed_step
                attributes["saga.compensations"] = list(body.steps)
                self._short(f"saga {info.name} compensating", info, attributes)
            case SagaResumed() | SagaRetried() | SagaReverted():
                verb = body.kind.removeprefix("saga_")
                attributes = _saga_attributes(info)
                attributes["saga.operator.reason"] = body.reason
                if body.by is not None:
                    attributes["saga.operator.by"] = body.by
                self._short(f"saga {info.name} {verb}", info, attributes)
            case SagaSuspended():
                span = self._short(f"saga {info.name} suspended", info,
                                   _saga_attributes(info), end=False)  # fmt: skip
                span.set_status(StatusCode.ERROR, str(info.error) if info.error else "SUSPENDED")
                span.end()
            case SagaCompleted() | SagaCompensated() | SagaFailed():
                self._next.pop(info.saga_id, None)
                self._in_flight.pop(info.saga_id, None)
                attributes = _saga_attributes(info)
                if body.dead_letters:
                    attributes["saga.dead_letters"] = body.dead_letters
                if isinstance(body, SagaFailed):
                    attributes["saga.compensations.remaining"] = list(body.remaining)
                span = self._short(
                    f"saga {info.name} {info.status.value.lower()}", info, attributes, end=False
                )
                if info.status is Status.FAILED:
                    span.set_status(StatusCode.ERROR, str(info.error) if info.error else "FAILED")
                span.end()

    def _short(
        self,
        name: str,
        info: SagaInfo,
        attributes: dict[str, AttributeValue],
        *,
        end: bool = True,
    ) -> Span:
        span = self._tracer.start_span(
            name,
            context=saga_context(info.annotations, info.saga_id),
            kind=SpanKind.INTERNAL,
            attributes=attributes,
        )
        if end:
            span.end()
        return span


def _saga_attributes(info: SagaInfo) -> dict[str, AttributeValue]:
    attributes: dict[str, AttributeValue] = {
        "saga.id": info.saga_id,
        "saga.name": info.name,
        "saga.version": info.version,
        "saga.status": info.status.value,
    }
    if info.step is not None:
        attributes["saga.step"] = info.step
    if info.error is not None:
        attributes["saga.error.type"] = info.error.type
        attributes["saga.error.message"] = info.error.message
        if info.error.step is not None:
            attributes["saga.error.step"] = info.error.step
    return attributes


def _event_attributes(name: str, key: str | None, event_id: str) -> dict[str, AttributeValue]:
    attributes: dict[str, AttributeValue] = {"saga.event.name": name, "saga.event.id": event_id}
    if key is not None:
        attributes["saga.event.key"] = key
    return attributes
