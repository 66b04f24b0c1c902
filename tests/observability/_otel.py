"""Helpers for the observer tests: local OpenTelemetry SDK providers, waiting on a saga.

Not a test module: pytest collects only ``test_*.py``. Every provider here is local to
the test; the global providers are never set.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import anyio
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import saga


def tracing() -> tuple[TracerProvider, InMemorySpanExporter]:
    """A local tracer provider exporting every span, as it ends, to memory."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def metering() -> tuple[MeterProvider, InMemoryMetricReader]:
    """A local meter provider read on demand."""
    reader = InMemoryMetricReader()
    return MeterProvider(metric_readers=[reader]), reader


Points = dict[tuple[str, frozenset[tuple[str, Any]]], Any]


def points(reader: InMemoryMetricReader) -> Points:
    """Every data point as ``{(metric name, attributes): value}``.

    A sum's value is its number; a histogram's is ``(count, sum)``.
    """
    found: Points = {}
    data = reader.get_metrics_data()
    if data is None:
        return found
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    attributes = frozenset((point.attributes or {}).items())
                    value = getattr(point, "value", None)
                    if value is None:
                        value = (point.count, point.sum)  # type: ignore[union-attr]
                    found[(metric.name, attributes)] = value
    return found


def named(spans: Sequence[ReadableSpan], name: str) -> list[ReadableSpan]:
    """The spans called ``name``, in the order they started."""
    return sorted((s for s in spans if s.name == name), key=lambda s: s.start_time or 0)


async def until_record(runtime: saga.Runtime, saga_id: str, kind: str, count: int = 1) -> None:
    """Wait (up to 10 s) until the saga's log has ``count`` records of ``kind``."""
    with anyio.fail_after(10):
        while sum(r.kind == kind for r in await runtime.history(saga_id)) < count:  # noqa: ASYNC110
            await anyio.sleep(0.005)
