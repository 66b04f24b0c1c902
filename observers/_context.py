"""Where a saga's trace lives: its saga span's context, recorded in the log as annotations.

`TracingObserver.on_start` stores the W3C ``traceparent`` (and ``tracestate``, if any) of
the saga span under `SPAN_KEY` (and `TRACESTATE_KEY`). Every later span of the saga is
parented on a non-recording span rebuilt from them, in whatever process runs it, so one
saga is one trace however many restarts it lives through.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Final

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

__all__ = ["SCOPE", "SPAN_KEY", "TRACESTATE_KEY", "inject", "saga_context", "sender_context"]

SCOPE: Final = "saga.observers"
"""The instrumentation scope name of every span and instrument this package creates."""

SPAN_KEY: Final = "otel.saga_span"
TRACESTATE_KEY: Final = "otel.saga_tracestate"

_propagator = TraceContextTextMapPropagator()


def inject(span: trace.Span) -> dict[str, str]:
    """The annotations that locate ``span``: empty if its context is invalid (no SDK)."""
    carrier: dict[str, str] = {}
    _propagator.inject(carrier, context=trace.set_span_in_context(span, Context()))
    annotations: dict[str, str] = {}
    if carrier.get("traceparent"):
        annotations[SPAN_KEY] = carrier["traceparent"]
        if carrier.get("tracestate"):
            annotations[TRACESTATE_KEY] = carrier["tracestate"]
    return annotations


def saga_context(annotations: Mapping[str, str], saga_id: str) -> Context:
    """A context whose current span is the saga span, for parenting any span of the saga.

    A saga started without a `TracingObserver` has no recorded saga span: its spans then
    share a trace id derived from the saga id (under a parent span that was never
    exported), so they still form one trace.
    """
    traceparent = annotations.get(SPAN_KEY)
    if traceparent:
        carrier = {"traceparent": traceparent}
        tracestate = annotations.get(TRACESTATE_KEY)
        if tracestate:
            carrier["tracestate"] = tracestate
        # An empty base context: a bad traceparent must not fall back on the caller's span.
        context = _propagator.extract(carrier, context=Context())
        if trace.get_current_span(context).get_span_context().is_valid:
            return context
    return trace.set_span_in_context(NonRecordingSpan(_derived(saga_id)), Context())


def sender_context(headers: Mapping[str, str]) -> SpanContext | None:
    """The span context an event's sender had (from ``Event.headers``), if valid."""
    if not headers.get("traceparent"):
        return None
    context = _propagator.extract(dict(headers), context=Context())
    span_context = trace.get_current_span(context).get_span_context()
    return span_context if span_context.is_valid else None


def _derived(saga_id: str) -> SpanContext:
    digest = hashlib.sha256(b"saga-trace\x00" + saga_id.encode("utf-8")).digest()
    trace_id = int.from_bytes(digest[:16], "big") or 1
    span_id = int.from_bytes(digest[16:24], "big") or 1
    return SpanContext(
        trace_id, span_id, is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED)
    )
