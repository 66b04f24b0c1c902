"""MetricsObserver: counter, up-down counter and histogram values, read in memory."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest
from _otel import Points, metering, points, until_record
from _wait import wait_until

import saga
from observers import MetricsObserver
from saga.testing import FakeClock

pytestmark = pytest.mark.anyio

MEMORY = "sqlite:///:memory:"


class State(msgspec.Struct):
    ok: bool = True


class Boom(Exception):
    pass


class Reserve(saga.Step):
    retry = saga.RetryPolicy(max_attempts=2, initial_interval=0.0)

    async def run(self, ctx: saga.StepContext[State]) -> None:
        if ctx.attempt == 1:
            raise Boom("flaky")


class Pay(saga.Step):
    async def run(self, ctx: saga.StepContext[State]) -> saga.Wait:
        return saga.wait_for("paid", key=ctx.saga_id, timeout=100)

    async def on_event(self, ctx: saga.StepContext[State], event: saga.Event) -> None:
        if not event.payload:
            raise Boom("declined")

    async def compensate(self, ctx: saga.StepContext[State]) -> None:
        if not ctx.state.ok:
            raise Boom("cannot refund")


TRIP = saga.Saga("trip", state=State, steps=[Reserve(), Pay()])


def value(found: Points, name: str, **attributes: object) -> object:
    key = (name, frozenset({("saga.name", "trip"), *attributes.items()}))
    return found.get(key, 0)


def step(
    found: Points, name: str, step: str, compensating: bool = False, error: str | None = None
) -> object:
    more = {} if error is None else {"error.type": error}
    return value(found, name, **{"saga.step": step, "saga.compensating": compensating, **more})


async def test_sagas_steps_and_events_are_counted(clock: FakeClock) -> None:
    provider, reader = metering()
    observer = MetricsObserver(meter_provider=provider)
    async with saga.Runtime(MEMORY, sagas=[TRIP], observers=[observer], clock=clock) as rt:
        for saga_id in ("ok", "declined", "aborted", "stuck"):
            await rt.start(TRIP, State(ok=saga_id != "stuck"), saga_id=saga_id)
        for saga_id in ("ok", "declined", "aborted", "stuck"):
            await wait_until(rt, saga_id, saga.Status.WAITING, timeout=10)
        waiting = points(reader)
        await rt.send("ok", "stray", "never consumed", key="ok")  # a dead letter, later
        await rt.send("ok", "paid", True, key="ok")
        await rt.send("declined", "paid", False, key="declined")
        await rt.abort("aborted", "customer cancelled")
        await rt.send("stuck", "paid", False, key="stuck")
        infos = {sid: await rt.handle(sid).result(timeout=5) for sid in ("ok", "declined",
                                                                         "aborted")}  # fmt: skip
        # stuck's refund fails and is retried on a durable backoff: move the clock along.
        for failures in range(2, 7):  # on_event, then the refund's five attempts
            await until_record(rt, "stuck", "step_failed", failures)
            clock.advance(60)
        assert (await rt.handle("stuck").result(timeout=5)).status is saga.Status.FAILED
        ended = points(reader)
        ends = {sid: (await rt.history(sid))[-1] for sid in ("ok", "declined")}

    # The terminal record counts the events it dead-letters (the store keeps them).
    assert (ends["ok"].kind, ends["ok"].data) == ("saga_completed", {"dead_letters": 1})
    assert (ends["declined"].kind, ends["declined"].data) == ("saga_compensated", {})
    assert [i.status.value for i in infos.values()] == ["COMPLETED", "COMPENSATED", "COMPENSATED"]
    assert value(waiting, "saga.sagas.waiting") == 4
    assert value(waiting, "saga.sagas.started") == 4

    assert value(ended, "saga.sagas.started") == 4
    assert value(ended, "saga.sagas.completed") == 1
    assert value(ended, "saga.sagas.compensated") == 2
    assert value(ended, "saga.sagas.failed") == 1
    assert value(ended, "saga.sagas.waiting") == 0  # delivered (3) and aborted (1)
    assert value(ended, "saga.events.delivered") == 3
    assert value(ended, "saga.events.dead_lettered") == 1

    # Reserve fails once in each saga and succeeds on its second attempt.
    assert step(ended, "saga.step.attempts", "Reserve") == 8
    assert step(ended, "saga.step.failures", "Reserve", error="Boom") == 4
    # Pay: run x4, on_event x3 (two of which fail), compensate: declined 1, aborted 1,
    # stuck 5 (its default compensation_retry), all failing.
    assert step(ended, "saga.step.attempts", "Pay") == 7
    assert step(ended, "saga.step.failures", "Pay", error="Boom") == 2
    assert step(ended, "saga.step.attempts", "Pay", True) == 7
    assert step(ended, "saga.step.failures", "Pay", True, error="Boom") == 5
    assert step(ended, "saga.step.attempts", "Reserve", True) == 2

    # Durations: one per handler invocation, by outcome.
    durations = {
        (dict(attrs)["saga.step"], dict(attrs)["saga.compensating"], dict(attrs)["saga.outcome"]):
        count_sum[0]
        for (name, attrs), count_sum in ended.items()
        if name == "saga.step.duration"
    }  # fmt: skip
    assert durations == {
        ("Reserve", False, "failed"): 4, ("Reserve", False, "completed"): 4,
        ("Pay", False, "waiting"): 4, ("Pay", False, "completed"): 1,
        ("Pay", False, "failed"): 2, ("Pay", True, "completed"): 2, ("Pay", True, "failed"): 5,
        ("Reserve", True, "completed"): 2,
    }  # fmt: skip


async def test_a_timeout_ends_a_wait_and_a_restart_counts_nothing_twice(
    tmp_path: Path, clock: FakeClock
) -> None:
    url = f"sqlite:///{tmp_path / 'm.db'}"
    provider, reader = metering()
    async with saga.Runtime(url, sagas=[TRIP], observers=[MetricsObserver(provider)],
                            clock=clock) as rt:  # fmt: skip
        await rt.start(TRIP, State(), saga_id="t")
        await wait_until(rt, "t", saga.Status.WAITING, timeout=10)
    before = points(reader)
    assert value(before, "saga.sagas.waiting") == 1

    provider, reader = metering()  # a new process, in effect
    async with saga.Runtime(url, sagas=[TRIP], observers=[MetricsObserver(provider)],
                            clock=clock) as rt:  # fmt: skip
        await until_record(rt, "t", "step_waiting")
        clock.advance(101)
        info = await rt.handle("t").result(timeout=5)
        after = points(reader)
    assert info.status is saga.Status.COMPENSATED
    # Recovery counted nothing: no start, no attempt of the steps that ran before.
    assert value(after, "saga.sagas.started") == 0
    assert step(after, "saga.step.attempts", "Reserve") == 0
    assert step(after, "saga.step.attempts", "Pay") == 1  # on_timeout
    assert step(after, "saga.step.failures", "Pay", error="StepTimeout") == 1
    # This process ended a wait it did not see begin: its share is -1, the sum is 0.
    assert value(before, "saga.sagas.waiting") + value(after, "saga.sagas.waiting") == 0  # type: ignore[operator]
    assert value(after, "saga.events.delivered") == 0
    assert value(after, "saga.sagas.compensated") == 1
