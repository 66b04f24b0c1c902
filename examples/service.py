"""A traced trip-booking service: an ASGI app (Starlette) that embeds a saga `Runtime`.

    POST /trips                    start a trip saga        body: {"trip_id": "t-1"} (optional)
    POST /trips/{id}/events        send it an event         body: {"name": ..., "payload": ...}
    GET  /trips/{id}               its status and history

A trip reserves a hotel, waits for a ``payment.settled`` event (``{"ok": true}`` books it,
``{"ok": false}`` undoes the hotel) and issues a ticket. The runtime lives as long as the
app: it is opened in the lifespan, so sagas started before a restart resume when the
service starts again.

Tracing: the OpenTelemetry ASGI middleware makes a span per HTTP request, and
`observers.TracingObserver` puts the saga under the request that started it (the step
that receives an event links to the request that sent it). Spans go over OTLP/HTTP when
``OTEL_EXPORTER_OTLP_ENDPOINT`` is set (e.g. ``http://localhost:4318``), else to the
console. Run it with::

    pip install -e '.[service]'
    OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:4318 uvicorn --app-dir examples service:app

Environment: ``SAGA_DB_URL`` (default ``sqlite:///trips-service.db``),
``TRIPS_PAYMENT_TIMEOUT`` (seconds, default 3600), ``OTEL_SERVICE_NAME`` (default
``trips``) and the standard ``OTEL_*`` exporter variables.
"""

from __future__ import annotations

import contextlib
import logging
import os
import uuid
from collections.abc import AsyncIterator
from typing import Any

import msgspec
from opentelemetry import metrics, trace
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

import saga
from observers import LoggingObserver, MetricsObserver, TracingObserver

DB_URL = os.environ.get("SAGA_DB_URL", "sqlite:///trips-service.db")
PAYMENT_TIMEOUT = float(os.environ.get("TRIPS_PAYMENT_TIMEOUT", "3600"))

tracer = trace.get_tracer("trips")  # the global provider, set below


# -- the saga ---------------------------------------------------------------------------------


class Trip(msgspec.Struct):
    trip_id: str
    hotel: str | None = None
    paid: bool = False
    ticket: str | None = None


class PaymentDeclined(Exception):
    pass


class ReserveHotel(saga.Step):
    retry = saga.RetryPolicy(max_attempts=3, initial_interval=0.5)

    async def run(self, ctx: saga.StepContext[Trip]) -> None:
        # The step's span is current here: this span (an HTTP call, in real life) is its child.
        with tracer.start_as_current_span("hotels.reserve"):
            ctx.state.hotel = f"room-{ctx.idempotency_key[:8]}"

    async def compensate(self, ctx: saga.StepContext[Trip]) -> None:
        with tracer.start_as_current_span("hotels.cancel"):
            ctx.state.hotel = None


class AwaitPayment(saga.Step):
    async def run(self, ctx: saga.StepContext[Trip]) -> saga.Wait:
        return saga.wait_for("payment.settled", key=ctx.state.trip_id, timeout=PAYMENT_TIMEOUT)

    async def on_event(self, ctx: saga.StepContext[Trip], event: saga.Event) -> None:
        if not isinstance(event.payload, dict) or event.payload.get("ok") is not True:
            raise PaymentDeclined(f"payment declined: {event.payload!r}")
        ctx.state.paid = True


class IssueTicket(saga.Step):
    async def run(self, ctx: saga.StepContext[Trip]) -> None:
        ctx.state.ticket = f"ticket-{ctx.state.trip_id}"


book_trip = saga.Saga(
    "book-trip", state=Trip, steps=[ReserveHotel(), AwaitPayment(), IssueTicket()]
)


# -- telemetry --------------------------------------------------------------------------------


def _exporting() -> bool:
    return bool(
        os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    )


def telemetry() -> tuple[TracerProvider, MeterProvider]:
    """This process's tracer and meter providers, installed as the global ones.

    OTLP/HTTP when an OTLP endpoint is configured, else spans to the console (and no
    metrics export). The batch delay and the rest come from the standard ``OTEL_*``
    variables.
    """
    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", "trips")})
    span_exporter: SpanExporter
    readers: list[MetricReader] = []
    if _exporting():
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        span_exporter = OTLPSpanExporter()
        readers.append(PeriodicExportingMetricReader(OTLPMetricExporter()))
    else:
        span_exporter = ConsoleSpanExporter()
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(BatchSpanProcessor(span_exporter))
    meter_provider = MeterProvider(resource=resource, metric_readers=readers)
    # The application owns the process, so it installs the global providers; the saga
    # observers never do, and are given them explicitly below.
    trace.set_tracer_provider(tracer_provider)
    metrics.set_meter_provider(meter_provider)
    return tracer_provider, meter_provider


# -- HTTP -------------------------------------------------------------------------------------


class NewTrip(msgspec.Struct, forbid_unknown_fields=True):
    trip_id: str | None = None


class NewEvent(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    payload: Any = None
    key: str | None = None  # defaults to the trip id, which is what AwaitPayment waits on
    event_id: str | None = None


class JSON(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return msgspec.json.encode(content)


def _error(status: int, message: str) -> JSON:
    return JSON({"error": message}, status_code=status)


async def _body(request: Request, kind: type[Any]) -> Any:
    body = await request.body()
    return msgspec.json.decode(body or b"{}", type=kind)


async def start_trip(request: Request) -> Response:
    runtime: saga.Runtime = request.app.state.runtime
    try:
        new = await _body(request, NewTrip)
        trip_id = new.trip_id or uuid.uuid4().hex[:12]
        handle = await runtime.start(book_trip, Trip(trip_id=trip_id), saga_id=trip_id)
    except msgspec.DecodeError as error:
        return _error(400, f"bad request body: {error}")
    except saga.SagaExists as error:
        return _error(409, str(error))
    except (ValueError, TypeError) as error:
        return _error(400, str(error))
    info = await runtime.get(handle.saga_id)
    return JSON({"trip_id": trip_id, "status": info.status}, status_code=201)


async def send_event(request: Request) -> Response:
    runtime: saga.Runtime = request.app.state.runtime
    trip_id = request.path_params["trip_id"]
    try:
        event = await _body(request, NewEvent)
        key = trip_id if event.key is None else event.key
        event_id = await runtime.send(
            trip_id, event.name, event.payload, key=key, event_id=event.event_id
        )
    except msgspec.DecodeError as error:
        return _error(400, f"bad request body: {error}")
    except saga.UnknownSaga as error:
        return _error(404, str(error))
    except saga.SagaClosed as error:
        return _error(409, str(error))
    except saga.PayloadTooLarge as error:
        return _error(413, str(error))
    except (ValueError, TypeError) as error:
        return _error(400, str(error))
    return JSON({"trip_id": trip_id, "event_id": event_id}, status_code=202)


async def get_trip(request: Request) -> Response:
    runtime: saga.Runtime = request.app.state.runtime
    trip_id = request.path_params["trip_id"]
    try:
        info = await runtime.get(trip_id)
        history = await runtime.history(trip_id)
    except saga.UnknownSaga as error:
        return _error(404, str(error))
    except ValueError as error:
        return _error(400, str(error))
    return JSON({
        "trip_id": info.saga_id, "status": info.status, "step": info.step, "state": info.state,
        "error": info.error, "created_at": info.created_at, "updated_at": info.updated_at,
        "history": history,
    })  # fmt: skip


def create_app() -> OpenTelemetryMiddleware:
    """The ASGI app: Starlette routes, the runtime in the lifespan, tracing around it all."""
    tracer_provider, meter_provider = telemetry()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
        observers = [
            TracingObserver(tracer_provider=tracer_provider),
            MetricsObserver(meter_provider=meter_provider),
            LoggingObserver(),
        ]
        try:
            async with saga.Runtime(DB_URL, sagas=[book_trip], observers=observers) as runtime:
                app.state.runtime = runtime
                yield
        finally:
            tracer_provider.shutdown()  # flushes what is still batched
            meter_provider.shutdown()

    routes = [
        Route("/trips", start_trip, methods=["POST"]),
        Route("/trips/{trip_id}/events", send_event, methods=["POST"]),
        Route("/trips/{trip_id}", get_trip, methods=["GET"]),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    return OpenTelemetryMiddleware(
        app,
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
        exclude_spans=["receive", "send"],
    )


app = create_app()


if __name__ == "__main__":
    import uvicorn

    uvicorn.run(app, host="127.0.0.1", port=int(os.environ.get("PORT", "8000")))
