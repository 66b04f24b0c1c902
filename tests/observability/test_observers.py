"""Observers: once per handler invocation, once per committed record, isolated, live only."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest
from _wait import wait_until

import saga
from saga.testing import FakeClock

pytestmark = pytest.mark.anyio

MEMORY = "sqlite:///:memory:"


class Trip(msgspec.Struct):
    n: int = 0


# One shared timeline: observers and handlers both append to it, so the test sees the order.
Timeline = list[tuple[Any, ...]]


class Recorder(saga.Observer):
    def __init__(self, timeline: Timeline | None = None) -> None:
        self.timeline: Timeline = [] if timeline is None else timeline
        self.contexts: list[saga.StepContext[Any]] = []
        self.outcomes: list[saga.StepOutcome] = []
        self.transitions: list[tuple[saga.Record, saga.SagaInfo]] = []

    async def before_step(self, ctx: saga.StepContext[Any]) -> None:
        self.contexts.append(ctx)
        self.timeline.append(("before", ctx.step, ctx.attempt, ctx.compensating, ctx.state.n))

    async def after_step(self, ctx: saga.StepContext[Any], outcome: saga.StepOutcome) -> None:
        assert ctx is self.contexts[-1]
        self.outcomes.append(outcome)
        self.timeline.append(("after", ctx.step, outcome.kind, ctx.state.n))

    async def on_transition(self, record: saga.Record, info: saga.SagaInfo) -> None:
        self.transitions.append((record, info))


class Hotel(saga.Step):
    timeline: Timeline = []

    async def run(self, ctx: saga.StepContext[Trip]) -> saga.Wait:
        self.timeline.append(("run", ctx.step, ctx.idempotency_key))
        ctx.state.n += 1
        return saga.wait_for("hotel.ok")

    async def on_event(self, ctx: saga.StepContext[Trip], event: saga.Event) -> None:
        self.timeline.append(("on_event", ctx.step, ctx.idempotency_key))
        ctx.state.n += 1

    async def compensate(self, ctx: saga.StepContext[Trip]) -> None:
        self.timeline.append(("compensate", ctx.step, ctx.idempotency_key))
        ctx.state.n += 100


class Flight(saga.Step):
    timeline: Timeline = []

    async def run(self, ctx: saga.StepContext[Trip]) -> saga.Wait:
        self.timeline.append(("run", ctx.step, ctx.idempotency_key))
        return saga.wait_for("flight.ok", timeout=10)

    async def on_timeout(self, ctx: saga.StepContext[Trip]) -> None:
        self.timeline.append(("on_timeout", ctx.step, ctx.idempotency_key))
        ctx.state.n += 1

    async def compensate(self, ctx: saga.StepContext[Trip]) -> saga.Wait:
        self.timeline.append(("compensate", ctx.step, ctx.idempotency_key))
        return saga.wait_for("flight.cancelled")

    async def on_compensation_event(self, ctx: saga.StepContext[Trip], event: saga.Event) -> None:
        self.timeline.append(("on_compensation_event", ctx.step, ctx.idempotency_key))
        ctx.state.n += 100


class Pay(saga.Step):
    retry = saga.RetryPolicy(max_attempts=2, initial_interval=1.0)
    compensate_on_failure = False
    timeline: Timeline = []

    async def run(self, ctx: saga.StepContext[Trip]) -> None:
        self.timeline.append(("run", ctx.step, ctx.idempotency_key))
        ctx.state.n += 1000  # discarded: the handler raises
        raise ValueError(f"declined {ctx.attempt}")


async def until(predicate: Any) -> None:
    with anyio.fail_after(5):
        while not await predicate():  # noqa: ASYNC110 - polling the store is the point
            await anyio.sleep(0.005)


async def run_trip(
    clock: FakeClock, runtime_observers: list[saga.Observer], saga_observers: list[saga.Observer]
) -> tuple[Timeline, list[saga.Record]]:
    """Drive a trip through all five handlers: run, on_event, on_timeout, compensate, and
    on_compensation_event. Returns the handlers' timeline and the saga's history."""
    timeline: Timeline = []
    Hotel.timeline = Flight.timeline = Pay.timeline = timeline
    for observer in [*runtime_observers, *saga_observers]:
        if isinstance(observer, Recorder):
            observer.timeline = timeline
    trip = saga.Saga("trip", state=Trip, steps=[Hotel(), Flight(), Pay()], observers=saga_observers)
    rt = saga.Runtime(MEMORY, sagas=[trip], observers=runtime_observers, clock=clock)
    async with rt:
        handle = await rt.start(trip, Trip(), saga_id="t-1")
        await wait_until(rt, "t-1", saga.Status.WAITING)
        await rt.send("t-1", "hotel.ok")

        async def flight_waiting() -> bool:
            return (await rt.get("t-1")).step == "Flight" and (
                await rt.get("t-1")
            ).status is saga.Status.WAITING

        await until(flight_waiting)
        clock.advance(10)  # Flight times out; Pay fails its first attempt

        async def pay_backing_off() -> bool:
            return any(r.kind == "step_failed" for r in await rt.history("t-1"))

        await until(pay_backing_off)
        clock.advance(1)  # Pay's second attempt fails for good; compensation waits on Flight
        await wait_until(rt, "t-1", saga.Status.COMPENSATING)

        async def compensation_waiting() -> bool:
            return (await rt.history("t-1"))[-1].kind == "step_waiting"

        await until(compensation_waiting)
        await rt.send("t-1", "flight.cancelled")
        info = await handle.result(timeout=5)
        assert info.status is saga.Status.COMPENSATED
        history = await rt.history("t-1")
    # Leaving the runtime waits for the actor, so every observer call has been made.
    return timeline, history


def expected_timeline(timeline: Timeline) -> Timeline:
    keys = {(entry[0], entry[1]): entry[2] for entry in timeline if len(entry) == 3}
    fwd = {step: keys[("run", step)] for step in ("Hotel", "Flight", "Pay")}
    back = {step: keys[("compensate", step)] for step in ("Hotel", "Flight")}
    return [
        ("before", "Hotel", 1, False, 0),
        ("run", "Hotel", fwd["Hotel"]),
        ("after", "Hotel", "waiting", 1),
        ("before", "Hotel", 1, False, 1),
        ("on_event", "Hotel", fwd["Hotel"]),
        ("after", "Hotel", "completed", 2),
        ("before", "Flight", 1, False, 2),
        ("run", "Flight", fwd["Flight"]),
        ("after", "Flight", "waiting", 2),
        ("before", "Flight", 1, False, 2),
        ("on_timeout", "Flight", fwd["Flight"]),
        ("after", "Flight", "completed", 3),
        ("before", "Pay", 1, False, 3),
        ("run", "Pay", fwd["Pay"]),
        ("after", "Pay", "failed", 1003),
        ("before", "Pay", 2, False, 3),
        ("run", "Pay", fwd["Pay"]),
        ("after", "Pay", "failed", 1003),
        ("before", "Flight", 1, True, 3),
        ("compensate", "Flight", back["Flight"]),
        ("after", "Flight", "waiting", 3),
        ("before", "Flight", 1, True, 3),
        ("on_compensation_event", "Flight", back["Flight"]),
        ("after", "Flight", "completed", 103),
        ("before", "Hotel", 1, True, 103),
        ("compensate", "Hotel", back["Hotel"]),
        ("after", "Hotel", "completed", 203),
    ]


async def test_before_and_after_step_once_per_handler_invocation(clock: FakeClock) -> None:
    observer = Recorder()
    timeline, history = await run_trip(clock, [observer], [])
    assert timeline == expected_timeline(timeline)
    # One step_started per invocation, and one before_step per step_started.
    started = [r for r in history if r.kind == "step_started"]
    assert [(r.step, r.data["handler"]) for r in started] == [
        ("Hotel", "run"), ("Hotel", "on_event"), ("Flight", "run"), ("Flight", "on_timeout"),
        ("Pay", "run"), ("Pay", "run"), ("Flight", "compensate"),
        ("Flight", "on_compensation_event"), ("Hotel", "compensate"),
    ]  # fmt: skip
    assert len(observer.contexts) == len(started)


async def test_step_context_seen_by_observers(clock: FakeClock) -> None:
    observer = Recorder()
    timeline, _ = await run_trip(clock, [observer], [])
    handler_keys = [entry[2] for entry in timeline if len(entry) == 3]
    assert [c.idempotency_key for c in observer.contexts] == handler_keys
    for ctx in observer.contexts:
        assert (ctx.saga_id, ctx.saga_name) == ("t-1", "trip")
        assert isinstance(ctx.state, Trip)
    assert [c.compensating for c in observer.contexts] == [False] * 6 + [True] * 3
    assert [c.attempt for c in observer.contexts] == [1, 1, 1, 1, 1, 2, 1, 1, 1]


async def test_step_outcomes(clock: FakeClock) -> None:
    observer = Recorder()
    await run_trip(clock, [observer], [])
    kinds = [o.kind for o in observer.outcomes]
    assert kinds == [
        "waiting", "completed", "waiting", "completed", "failed", "failed",
        "waiting", "completed", "completed",
    ]  # fmt: skip
    for outcome in observer.outcomes:
        if outcome.kind == "completed":
            assert (outcome.error, outcome.wait) == (None, None)
        elif outcome.kind == "waiting":
            assert outcome.error is None
            assert isinstance(outcome.wait, saga.Wait)
        else:
            assert outcome.wait is None
            assert isinstance(outcome.error, ValueError)
    waits = [o.wait for o in observer.outcomes if o.wait is not None]
    assert waits == [
        saga.wait_for("hotel.ok"),
        saga.wait_for("flight.ok", timeout=10),
        saga.wait_for("flight.cancelled"),
    ]
    errors = [str(o.error) for o in observer.outcomes if o.error is not None]
    assert errors == ["declined 1", "declined 2"]


async def test_on_transition_once_per_record_with_info_after_it(clock: FakeClock) -> None:
    observer = Recorder()
    _, history = await run_trip(clock, [observer], [])
    trip = saga.Saga("trip", state=Trip, steps=[Hotel(), Flight(), Pay()])
    assert [record for record, _ in observer.transitions] == history
    assert observer.transitions == list(saga.replay(history, trip))
    assert [info.seq for _, info in observer.transitions] == list(range(1, len(history) + 1))
    last = observer.transitions[-1][1]
    assert last.status is saga.Status.COMPENSATED
    assert last.state == Trip(n=203)


async def test_runtime_and_saga_observers_are_both_called(clock: FakeClock) -> None:
    at_runtime, at_saga = Recorder(), Recorder()
    timeline, history = await run_trip(clock, [at_runtime], [at_saga])
    assert len(at_runtime.contexts) == len(at_saga.contexts) == 9
    assert at_runtime.outcomes == at_saga.outcomes
    assert [r for r, _ in at_runtime.transitions] == [r for r, _ in at_saga.transitions] == history
    # Each hook reaches both observers: every "before" entry appears twice in a row.
    befores = [e for e in timeline if e[0] == "before"]
    assert len(befores) == 18
    assert befores[0::2] == befores[1::2]


async def test_saga_observer_sees_only_its_own_sagas(store_url: str, clock: FakeClock) -> None:
    mine, everyone = Recorder(), Recorder()

    class Quick(saga.Step):
        async def run(self, ctx: saga.StepContext[Trip]) -> None:
            return None

    watched = saga.Saga("watched", state=Trip, steps=[Quick()], observers=[mine])
    other = saga.Saga("other", state=Trip, steps=[Quick()])
    async with saga.Runtime(store_url, sagas=[watched, other], observers=[everyone]) as rt:
        await (await rt.start(other, Trip(), saga_id="o")).result(timeout=5)
        await (await rt.start(watched, Trip(), saga_id="w")).result(timeout=5)
    assert {info.saga_id for _, info in mine.transitions} == {"w"}
    assert len(mine.transitions) == 4
    assert [info.saga_id for _, info in everyone.transitions] == ["o"] * 4 + ["w"] * 4


class Broken(saga.Observer):
    async def before_step(self, ctx: saga.StepContext[Any]) -> None:
        raise RuntimeError("before")

    async def after_step(self, ctx: saga.StepContext[Any], outcome: saga.StepOutcome) -> None:
        raise RuntimeError("after")

    async def on_transition(self, record: saga.Record, info: saga.SagaInfo) -> None:
        raise RuntimeError("transition")


async def test_a_raising_observer_changes_nothing(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    _, plain_history = await run_trip(FakeClock(), [], [])
    healthy = Recorder()
    caplog.set_level(logging.ERROR, logger="saga.observers")
    timeline, history = await run_trip(clock, [Broken(), healthy], [Broken()])
    assert timeline == expected_timeline(timeline)
    assert [(r.kind, r.step, r.data.get("compensating")) for r in history] == [
        (r.kind, r.step, r.data.get("compensating")) for r in plain_history
    ]
    assert [r for r, _ in healthy.transitions] == history
    assert len(healthy.contexts) == 9
    failures = [r for r in caplog.records if r.name == "saga.observers"]
    # Two broken observers, each failing 9 before_step, 9 after_step and every transition.
    assert len(failures) == 2 * (9 + 9 + len(history))
    assert all(r.levelno == logging.ERROR for r in failures)
    assert {"before_step", "after_step", "on_transition"} == {
        hook for r in failures for hook in ("before_step", "after_step", "on_transition")
        if hook in r.getMessage()
    }  # fmt: skip
    assert all("Broken" in r.getMessage() for r in failures)


async def test_observer_errors_are_counted(store_url: str, clock: FakeClock) -> None:
    class Quick(saga.Step):
        async def run(self, ctx: saga.StepContext[Trip]) -> None:
            ctx.state.n = 7

    quick = saga.Saga("quick", state=Trip, steps=[Quick()])
    async with saga.Runtime(store_url, sagas=[quick], observers=[Broken()], clock=clock) as rt:
        assert rt.observer_errors == 0
        info = await (await rt.start(quick, Trip(), saga_id="q")).result(timeout=5)
        assert info.status is saga.Status.COMPLETED
        assert info.state == Trip(n=7)

        async def all_counted() -> bool:
            # saga_started, step_started, step_completed, saga_completed + before + after
            return rt.observer_errors == 6

        await until(all_counted)
    assert rt.observer_errors == 6


async def test_observers_skip_records_folded_during_recovery(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'trips.db'}"

    class Waiter(saga.Step):
        async def run(self, ctx: saga.StepContext[Trip]) -> saga.Wait:
            ctx.state.n = 1
            return saga.wait_for("go")

        async def on_event(self, ctx: saga.StepContext[Trip], event: saga.Event) -> None:
            ctx.state.n = event.payload

    waits = saga.Saga("waits", state=Trip, steps=[Waiter()])
    first = Recorder()
    async with saga.Runtime(url, sagas=[waits], observers=[first]) as rt:
        await rt.start(waits, Trip(), saga_id="w")
        await wait_until(rt, "w", saga.Status.WAITING)
        before = await rt.history("w")
    assert [r.seq for r, _ in first.transitions] == [1, 2, 3]

    second = Recorder()
    async with saga.Runtime(url, sagas=[waits], observers=[second]) as rt:
        await anyio.sleep(0.05)  # give a (wrong) replay to observers a chance to happen
        assert second.transitions == []
        assert second.contexts == []
        await rt.send("w", "go", 42)
        info = await rt.handle("w").result(timeout=5)
        history = await rt.history("w")
    assert info.state == Trip(n=42)
    assert history[:3] == before
    new = history[3:]
    assert [r.kind for r in new] == [
        "event_delivered", "step_started", "step_completed", "saga_completed",
    ]  # fmt: skip
    assert [r for r, _ in second.transitions] == new
    assert [info.seq for _, info in second.transitions] == [4, 5, 6, 7]
    assert [(c.step, c.attempt) for c in second.contexts] == [("Waiter", 1)]
    assert [o.kind for o in second.outcomes] == ["completed"]
