"""TracingObserver: span names, parents, attributes, status, events, links and trace ids."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pytest
from _otel import named, tracing, until_record
from _wait import wait_until
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import StatusCode

import saga
from observers import TracingObserver
from saga.testing import FakeClock

pytestmark = pytest.mark.anyio

MEMORY = "sqlite:///:memory:"


class State(msgspec.Struct):
    n: int = 0
    inner: list[str] = []


class Glitch(Exception):
    pass


class Declined(Exception):
    pass


class Flaky(saga.Step):
    retry = saga.RetryPolicy(max_attempts=3, initial_interval=0.0)

    async def run(self, ctx: saga.StepContext[State]) -> None:
        if ctx.attempt == 1:
            raise Glitch("first try")
        ctx.state.n += 1

    async def compensate(self, ctx: saga.StepContext[State]) -> None:
        ctx.state.n -= 1


class Pay(saga.Step):
    async def run(self, ctx: saga.StepContext[State]) -> saga.Wait:
        return saga.wait_for("paid", key=ctx.saga_id, timeout=60)

    async def on_event(self, ctx: saga.StepContext[State], event: saga.Event) -> None:
        if not event.payload["ok"]:
            raise Declined("card refused")
        # The step's span is current while the handler runs: spans it creates nest in it.
        ctx.state.inner.append(format(trace.get_current_span().get_span_context().span_id))


class Done(saga.Step):
    async def run(self, ctx: saga.StepContext[State]) -> None:
        ctx.state.n += 10


class Stuck(saga.Step):
    compensation_retry = saga.RetryPolicy(max_attempts=2, initial_interval=0.0)

    async def run(self, ctx: saga.StepContext[State]) -> None:
        pass

    async def compensate(self, ctx: saga.StepContext[State]) -> None:
        raise Glitch("cannot undo")


TRIP = saga.Saga("trip", state=State, steps=[Flaky(), Pay(), Done()], version=3)
STUCK = saga.Saga("stuck", state=State, steps=[Stuck(), Pay()])


def ids(span: ReadableSpan) -> tuple[int, int]:
    assert span.context is not None
    return span.context.trace_id, span.context.span_id


def parent_id(span: ReadableSpan) -> int | None:
    return None if span.parent is None else span.parent.span_id


def attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


async def test_a_saga_is_one_trace_under_the_callers_span() -> None:
    provider, exporter = tracing()
    tracer = provider.get_tracer("test")
    global_provider = trace.get_tracer_provider()
    observer = TracingObserver(tracer_provider=provider)
    async with saga.Runtime(MEMORY, sagas=[TRIP], observers=[observer]) as rt:
        with tracer.start_as_current_span("POST /trips"):
            handle = await rt.start(TRIP, State(), saga_id="t1")
        await wait_until(rt, "t1", saga.Status.WAITING, timeout=10)
        with tracer.start_as_current_span("POST /trips/t1/events"):
            await rt.send("t1", "paid", {"ok": True}, key="t1", event_id="pay-1")
        info = await handle.result(timeout=5)
    assert info.status is saga.Status.COMPLETED
    assert trace.get_tracer_provider() is global_provider  # never replaced

    spans = exporter.get_finished_spans()
    (request,) = named(spans, "POST /trips")
    (sender,) = named(spans, "POST /trips/t1/events")
    (anchor,) = named(spans, "saga trip")
    first, second = named(spans, "step Flaky")
    run, on_event = named(spans, "step Pay")
    (done,) = named(spans, "step Done")
    (end,) = named(spans, "saga trip completed")
    assert len(spans) == 9

    # One trace: the anchor is a child of the caller's span, every other span of the anchor.
    trace_id = ids(request)[0]
    assert {ids(s)[0] for s in (anchor, first, second, run, on_event, done, end)} == {trace_id}
    assert parent_id(anchor) == ids(request)[1]
    anchor_id = ids(anchor)[1]
    assert {parent_id(s) for s in (first, second, run, on_event, done, end)} == {anchor_id}
    assert info.annotations["otel.saga_span"].startswith(f"00-{trace_id:032x}-{anchor_id:016x}-")
    assert info.state.inner == [format(ids(on_event)[1])]  # current in the handler

    assert attrs(anchor) == {"saga.id": "t1", "saga.name": "trip", "saga.version": 3,
                             "saga.status": "RUNNING"}  # fmt: skip
    # The retried step: two spans, the first failed with its exception recorded.
    assert attrs(first) == {
        "saga.id": "t1", "saga.name": "trip", "saga.version": 3, "saga.step": "Flaky",
        "saga.attempt": 1, "saga.compensating": False, "saga.status": "RUNNING",
        "saga.handler": "run", "saga.outcome": "failed",
    }  # fmt: skip
    assert first.status.status_code is StatusCode.ERROR
    assert first.status.description == "Glitch: first try"
    (exception,) = first.events
    assert exception.name == "exception"
    assert str(dict(exception.attributes or {})["exception.type"]).endswith("Glitch")
    assert (attrs(second)["saga.attempt"], attrs(second)["saga.outcome"]) == (2, "completed")
    assert second.status.status_code is StatusCode.UNSET

    # The wait is an event on the span of the handler that asked for it, which then ends.
    assert attrs(run)["saga.outcome"] == "waiting"
    assert [(e.name, dict(e.attributes or {})) for e in run.events] == [
        ("saga.wait", {"saga.wait.event": "paid", "saga.wait.key": "t1", "saga.wait.timeout": 60.0})
    ]
    assert run.end_time is not None
    assert sender.start_time is not None
    assert run.end_time <= sender.start_time  # no span stays open across the wait
    # The handler of the event links to the span that sent it.
    assert (attrs(on_event)["saga.handler"], attrs(on_event)["saga.event.name"]) == (
        "on_event", "paid",
    )  # fmt: skip
    assert [ids_of_link(link) for link in on_event.links] == [ids(sender)]
    assert [e.name for e in on_event.events] == ["saga.event"]
    assert attrs(end)["saga.status"] == "COMPLETED"
    assert end.status.status_code is StatusCode.UNSET


def ids_of_link(link: Any) -> tuple[int, int]:
    return link.context.trace_id, link.context.span_id


async def test_compensation_spans_run_backwards_and_the_end_span_says_compensated() -> None:
    provider, exporter = tracing()
    async with saga.Runtime(
        MEMORY, sagas=[TRIP], observers=[TracingObserver(tracer_provider=provider)]
    ) as rt:
        handle = await rt.start(TRIP, State(), saga_id="t2")
        await wait_until(rt, "t2", saga.Status.WAITING, timeout=10)
        await rt.send("t2", "paid", {"ok": False}, key="t2")
        info = await handle.result(timeout=5)
    assert info.status is saga.Status.COMPENSATED

    spans = sorted(exporter.get_finished_spans(), key=lambda s: s.start_time or 0)
    assert [s.name for s in spans] == [
        "saga trip", "step Flaky", "step Flaky", "step Pay", "step Pay",
        "saga trip compensating", "compensate Pay", "compensate Flaky", "saga trip compensated",
    ]  # fmt: skip
    anchor = spans[0]
    assert {ids(s)[0] for s in spans} == {ids(anchor)[0]}
    assert {parent_id(s) for s in spans[1:]} == {ids(anchor)[1]}
    assert anchor.parent is None  # no span was current at start: the saga's trace is its own
    declined = spans[4]
    assert declined.status.status_code is StatusCode.ERROR
    assert declined.status.description == "Declined: card refused"
    compensating = attrs(spans[5])
    assert compensating["saga.failed_step"] == "Pay"
    assert compensating["saga.compensations"] == ("Pay", "Flaky")
    assert compensating["saga.error.type"] == "Declined"
    for span in spans[6:8]:
        assert attrs(span)["saga.compensating"] is True
        assert attrs(span)["saga.status"] == "COMPENSATING"
        assert attrs(span)["saga.handler"] == "compensate"
    end = attrs(spans[8])
    assert (end["saga.status"], end["saga.error.type"]) == ("COMPENSATED", "Declined")


async def test_a_failed_saga_ends_with_an_error_span(clock: FakeClock) -> None:
    provider, exporter = tracing()
    async with saga.Runtime(
        MEMORY, sagas=[STUCK], observers=[TracingObserver(provider)], clock=clock
    ) as rt:
        handle = await rt.start(STUCK, State(), saga_id="s")
        await wait_until(rt, "s", saga.Status.WAITING, timeout=10)
        clock.advance(61)  # Pay times out: StepTimeout, then Stuck's compensation fails twice
        info = await handle.result(timeout=5)
    assert info.status is saga.Status.FAILED

    spans = exporter.get_finished_spans()
    (timed_out,) = [s for s in named(spans, "step Pay") if attrs(s)["saga.handler"] == "on_timeout"]
    assert [e.name for e in timed_out.events][:1] == ["saga.wait_timed_out"]
    assert timed_out.status.description == "StepTimeout: step 'Pay' timed out waiting"
    undo = named(spans, "compensate Stuck")
    assert [attrs(s)["saga.attempt"] for s in undo] == [1, 2]
    assert all(s.status.status_code is StatusCode.ERROR for s in undo)
    (end,) = named(spans, "saga stuck failed")
    assert end.status.status_code is StatusCode.ERROR
    assert end.status.description == "Glitch: cannot undo"
    assert attrs(end)["saga.compensations.remaining"] == ("Stuck",)
    assert attrs(end)["saga.step"] == "Stuck"


async def test_a_restarted_runtime_continues_the_same_trace(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'trace.db'}"
    before, before_spans = tracing()
    async with saga.Runtime(url, sagas=[TRIP], observers=[TracingObserver(before)]) as rt:
        await rt.start(TRIP, State(), saga_id="r")
        await wait_until(rt, "r", saga.Status.WAITING, timeout=10)
    after, after_spans = tracing()  # a new process, in effect: new provider, new observer
    async with saga.Runtime(url, sagas=[TRIP], observers=[TracingObserver(after)]) as rt:
        await rt.send("r", "paid", {"ok": True}, key="r")
        await rt.handle("r").result(timeout=5)

    (anchor,) = named(before_spans.get_finished_spans(), "saga trip")
    resumed = after_spans.get_finished_spans()
    assert [s.name for s in resumed] == ["step Pay", "step Done", "saga trip completed"]
    assert {ids(s)[0] for s in resumed} == {ids(anchor)[0]}
    assert {parent_id(s) for s in resumed} == {ids(anchor)[1]}
    # Recovery emitted nothing: the first run's spans are not repeated.
    assert not named(resumed, "step Flaky")


async def test_a_saga_started_without_tracing_still_gets_one_trace(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'late.db'}"
    async with saga.Runtime(url, sagas=[TRIP]) as rt:
        await rt.start(TRIP, State(), saga_id="late")
        await wait_until(rt, "late", saga.Status.WAITING, timeout=10)
        assert (await rt.get("late")).annotations == {}
    provider, exporter = tracing()
    async with saga.Runtime(url, sagas=[TRIP], observers=[TracingObserver(provider)]) as rt:
        await rt.send("late", "paid", {"ok": True}, key="late")
        await rt.handle("late").result(timeout=5)
    spans = exporter.get_finished_spans()
    assert len(spans) == 3
    assert len({ids(s)[0] for s in spans}) == 1
    assert len({parent_id(s) for s in spans}) == 1  # one (never exported) saga parent
    assert parent_id(spans[0]) not in {ids(s)[1] for s in spans}


async def test_without_an_sdk_nothing_is_recorded_and_sagas_run() -> None:
    # The global provider is the API's no-op one: no span context, so no annotation.
    observer = TracingObserver()
    async with saga.Runtime(MEMORY, sagas=[TRIP], observers=[observer]) as rt:
        handle = await rt.start(TRIP, State(), saga_id="plain")
        await until_record(rt, "plain", "step_waiting")
        await rt.send("plain", "paid", {"ok": True}, key="plain")
        info = await handle.result(timeout=5)
        assert rt.observer_errors == 0
    assert info.status is saga.Status.COMPLETED
    assert info.annotations == {}


async def test_starting_an_existing_saga_again_emits_no_span() -> None:
    provider, exporter = tracing()
    observer = TracingObserver(tracer_provider=provider)
    async with saga.Runtime(MEMORY, sagas=[TRIP], observers=[observer]) as rt:
        await rt.start(TRIP, State(), saga_id="t1")
        await wait_until(rt, "t1", saga.Status.WAITING, timeout=10)
        before = len(exporter.get_finished_spans())
        again = await rt.start(TRIP, State(n=99), saga_id="t1")  # same id, same definition
        after = len(exporter.get_finished_spans())
        info = await rt.get("t1")
    assert again.saga_id == "t1"
    assert after == before
    assert len(named(exporter.get_finished_spans(), "saga trip")) == 1
    assert info.state.n == 1  # the first start's state, untouched
