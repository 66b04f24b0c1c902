"""SPEC 3.1 and 3.3 on a fake clock: wait timeouts, retry policies and durable backoffs."""

from __future__ import annotations

from datetime import timedelta

import pytest
from _behaviour import (
    Boom,
    Trip,
    of_kind,
    settle,
    simple_step,
    trail,
    wait_records,
)
from _wait import wait_until

import saga
from saga.testing import FakeClock

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("timeout", [30, 30.0, timedelta(seconds=30), timedelta(hours=2)])
async def test_a_wait_times_out_and_on_timeout_runs(
    store_url: str, clock: FakeClock, timeout: float | timedelta
) -> None:
    seconds = timeout.total_seconds() if isinstance(timeout, timedelta) else float(timeout)
    seen: list[tuple[int, bool]] = []

    class Hold(saga.Step):
        async def run(self, ctx: saga.StepContext[Trip]) -> saga.Wait:
            return saga.wait_for("never", timeout=timeout)

        async def on_timeout(self, ctx: saga.StepContext[Trip]) -> None:
            seen.append((ctx.attempt, ctx.compensating))
            ctx.state.log.append("timed out")

    t0 = clock.now()
    definition = saga.Saga("hold", state=Trip, steps=[Hold()])
    async with saga.Runtime(store_url, sagas=[definition], clock=clock) as runtime:
        handle = await runtime.start(definition, Trip(), saga_id="s")
        await wait_until(runtime, "s", saga.Status.WAITING)
        clock.advance(seconds - 1)
        await settle()
        assert (await runtime.get("s")).status is saga.Status.WAITING
        assert seen == []
        clock.advance(1)
        info = await handle.result(timeout=5)
        records = await runtime.history("s")

    assert seen == [(1, False)]
    assert info.state.log == ["timed out"]
    waiting = of_kind(records, "step_waiting")[0]
    assert (waiting.data["timeout"], waiting.data["deadline"]) == (seconds, t0 + seconds)
    assert trail(records)[2:] == [
        ("step_waiting", "Hold"),
        ("wait_timed_out", "Hold"),
        ("step_started:on_timeout", "Hold"),
        ("step_completed", "Hold"),
        ("saga_completed", None),
    ]
    assert of_kind(records, "wait_timed_out")[0].at == t0 + seconds


async def test_default_on_timeout_raises_step_timeout_and_compensates(
    store_url: str, clock: FakeClock
) -> None:
    calls: list[str] = []

    class Hold(saga.Step):
        async def run(self, ctx: saga.StepContext[Trip]) -> saga.Wait:
            return saga.wait_for("never", timeout=5)

        async def compensate(self, ctx: saga.StepContext[Trip]) -> None:
            calls.append("Hold.compensate")

    definition = saga.Saga("hold", state=Trip, steps=[simple_step("a", calls), Hold()])
    async with saga.Runtime(store_url, sagas=[definition], clock=clock) as runtime:
        handle = await runtime.start(definition, Trip(), saga_id="s")
        await wait_until(runtime, "s", saga.Status.WAITING)
        clock.advance(5)
        info = await handle.result(timeout=5)
        records = await runtime.history("s")

    assert info.status is saga.Status.COMPENSATED
    assert calls == ["a.run", "Hold.compensate", "a.compensate"]
    failed = of_kind(records, "step_failed")
    assert len(failed) == 1
    assert failed[0].step == "Hold"
    assert failed[0].data["handler"] == "on_timeout"
    assert failed[0].data["error"]["type"] == "StepTimeout"
    assert (failed[0].data["final"], failed[0].data["retry_at"]) == (True, None)
    started = of_kind(records, "compensation_started")[0]
    assert (started.data["failed_step"], started.data["steps"]) == ("Hold", ["Hold", "a"])
    assert info.error is not None
    assert (info.error.type, info.error.step) == ("StepTimeout", "Hold")


async def test_on_timeout_may_return_another_wait(store_url: str, clock: FakeClock) -> None:
    seen: list[str] = []

    class Patient(saga.Step):
        async def run(self, ctx: saga.StepContext[Trip]) -> saga.Wait:
            return saga.wait_for("reply", timeout=10)

        async def on_timeout(self, ctx: saga.StepContext[Trip]) -> saga.Wait:
            seen.append("on_timeout")
            return saga.wait_for("reply", timeout=20)

        async def on_event(self, ctx: saga.StepContext[Trip], event: saga.Event) -> None:
            seen.append(f"on_event:{event.payload}")

    t0 = clock.now()
    definition = saga.Saga("patient", state=Trip, steps=[Patient()])
    async with saga.Runtime(store_url, sagas=[definition], clock=clock) as runtime:
        handle = await runtime.start(definition, Trip(), saga_id="s")
        await wait_until(runtime, "s", saga.Status.WAITING)
        clock.advance(10)
        await wait_records(runtime, "s", "step_waiting", 2)
        assert (await runtime.get("s")).status is saga.Status.WAITING
        clock.advance(20)
        await wait_records(runtime, "s", "step_waiting", 3)
        await runtime.send("s", "reply", "late")
        info = await handle.result(timeout=5)
        records = await runtime.history("s")

    assert info.status is saga.Status.COMPLETED
    assert seen == ["on_timeout", "on_timeout", "on_event:late"]
    deadlines = [w.data["deadline"] for w in of_kind(records, "step_waiting")]
    assert deadlines == [t0 + 10, t0 + 30, t0 + 50]
    assert [r.data["handler"] for r in of_kind(records, "step_started")] == [
        "run",
        "on_timeout",
        "on_timeout",
        "on_event",
    ]


async def test_retry_backoff_is_exponential_capped_and_durable(
    store_url: str, clock: FakeClock
) -> None:
    attempts: list[tuple[int, float]] = []

    class Flaky(saga.Step):
        retry = saga.RetryPolicy(max_attempts=4, initial_interval=2, backoff=3, max_interval=10)

        async def run(self, ctx: saga.StepContext[Trip]) -> None:
            attempts.append((ctx.attempt, clock.now()))
            if ctx.attempt < 4:
                raise Boom(f"attempt {ctx.attempt}")

    t0 = clock.now()
    definition = saga.Saga("flaky", state=Trip, steps=[Flaky()])
    async with saga.Runtime(store_url, sagas=[definition], clock=clock) as runtime:
        handle = await runtime.start(definition, Trip(), saga_id="s")
        for n, (wait, retry_at) in enumerate([(2, t0 + 2), (6, t0 + 8), (10, t0 + 18)], 1):
            records = await wait_records(runtime, "s", "step_failed", n)
            failed = of_kind(records, "step_failed")[-1]
            assert failed.data == {
                "compensating": False,
                "handler": "run",
                "attempt": n,
                "error": {"type": "Boom", "message": f"attempt {n}"},
                "retry_at": retry_at,
                "final": False,
            }
            info = await runtime.get("s")
            assert (info.status, info.step) == (saga.Status.RUNNING, "Flaky")
            clock.advance(wait - 0.5)
            await settle()
            assert len(attempts) == n
            clock.advance(0.5)
        info = await handle.result(timeout=5)
        records = await runtime.history("s")

    assert attempts == [(1, t0), (2, t0 + 2), (3, t0 + 8), (4, t0 + 18)]
    assert info.status is saga.Status.COMPLETED
    started = of_kind(records, "step_started")
    assert [(r.data["handler"], r.data["attempt"], r.at) for r in started] == [
        ("run", 1, t0),
        ("run", 2, t0 + 2),
        ("run", 3, t0 + 8),
        ("run", 4, t0 + 18),
    ]


async def test_retries_exhausted_start_compensation(store_url: str, clock: FakeClock) -> None:
    calls: list[str] = []
    policy = saga.RetryPolicy(max_attempts=3, initial_interval=1, backoff=1)
    definition = saga.Saga(
        "exhaust",
        state=Trip,
        steps=[simple_step("a", calls), simple_step("b", calls, fail=True, retry=policy)],
    )
    async with saga.Runtime(store_url, sagas=[definition], clock=clock) as runtime:
        handle = await runtime.start(definition, Trip(), saga_id="s")
        for n in (1, 2):
            await wait_records(runtime, "s", "step_failed", n)
            assert (await runtime.get("s")).status is saga.Status.RUNNING
            clock.advance(1)
        info = await handle.result(timeout=5)
        records = await runtime.history("s")

    assert calls == ["a.run", "b.run", "b.run", "b.run", "b.compensate", "a.compensate"]
    failed = of_kind(records, "step_failed")
    assert [(f.data["attempt"], f.data["final"]) for f in failed] == [
        (1, False),
        (2, False),
        (3, True),
    ]
    assert failed[-1].data["retry_at"] is None
    assert records[records.index(failed[-1]) + 1].kind == "compensation_started"
    assert info.status is saga.Status.COMPENSATED
    assert info.error == saga.ErrorInfo(type="Boom", message="b broke", step="b")


@pytest.mark.parametrize("raised", [KeyError, IndexError])
async def test_non_retryable_errors_fail_at_once(
    store_url: str, clock: FakeClock, raised: type[Exception]
) -> None:
    calls: list[str] = []

    class Picky(saga.Step):
        retry = saga.RetryPolicy(max_attempts=5, non_retryable=(LookupError,))

        async def run(self, ctx: saga.StepContext[Trip]) -> None:
            calls.append("run")
            raise raised("missing")

    definition = saga.Saga("picky", state=Trip, steps=[Picky()])
    async with saga.Runtime(store_url, sagas=[definition], clock=clock) as runtime:
        info = await (await runtime.start(definition, Trip(), saga_id="s")).result(timeout=5)
        records = await runtime.history("s")

    assert calls == ["run"]
    failed = of_kind(records, "step_failed")
    assert len(failed) == 1
    assert failed[0].data["error"]["type"] == raised.__name__
    assert (failed[0].data["final"], failed[0].data["retry_at"]) == (True, None)
    assert info.status is saga.Status.COMPENSATED


async def test_the_failed_on_event_is_retried_with_the_same_event(
    store_url: str, clock: FakeClock
) -> None:
    runs: list[int] = []
    seen: list[tuple[int, saga.Event, int]] = []

    class Settle(saga.Step):
        retry = saga.RetryPolicy(max_attempts=3, initial_interval=5)

        async def run(self, ctx: saga.StepContext[Trip]) -> saga.Wait:
            runs.append(ctx.attempt)
            ctx.state.n = 1
            return saga.wait_for("settled")

        async def on_event(self, ctx: saga.StepContext[Trip], event: saga.Event) -> None:
            seen.append((ctx.attempt, event, ctx.state.n))
            ctx.state.n += 10
            if ctx.attempt < 3:
                raise Boom("not yet")

    definition = saga.Saga("settle", state=Trip, steps=[Settle()])
    async with saga.Runtime(store_url, sagas=[definition], clock=clock) as runtime:
        handle = await runtime.start(definition, Trip(), saga_id="s")
        await wait_until(runtime, "s", saga.Status.WAITING)
        await runtime.send("s", "settled", {"amount": 3}, key="k", event_id="ev")
        await runtime.send("s", "settled", {"amount": 4}, event_id="ev-other")
        for n in (1, 2):
            await wait_records(runtime, "s", "step_failed", n)
            assert (await runtime.get("s")).status is saga.Status.RUNNING
            clock.advance(5 * 2 ** (n - 1))
        info = await handle.result(timeout=5)
        records = await runtime.history("s")
        dead = await runtime.dead_letters("s")

    event = saga.Event(name="settled", payload={"amount": 3}, key="k", event_id="ev")
    assert runs == [1]
    assert seen == [(1, event, 1), (2, event, 1), (3, event, 1)]
    assert info.state == Trip(n=11)
    assert [(r.data["handler"], r.data["attempt"]) for r in of_kind(records, "step_started")] == [
        ("run", 1),
        ("on_event", 1),
        ("on_event", 2),
        ("on_event", 3),
    ]
    assert len(of_kind(records, "event_delivered")) == 1
    assert [d.event_id for d in dead] == ["ev-other"]


async def test_the_failed_on_timeout_is_retried(store_url: str, clock: FakeClock) -> None:
    seen: list[str] = []

    class Hold(saga.Step):
        retry = saga.RetryPolicy(max_attempts=2, initial_interval=3)

        async def run(self, ctx: saga.StepContext[Trip]) -> saga.Wait:
            seen.append(f"run:{ctx.attempt}")
            return saga.wait_for("never", timeout=1)

        async def on_timeout(self, ctx: saga.StepContext[Trip]) -> None:
            seen.append(f"on_timeout:{ctx.attempt}")
            if ctx.attempt == 1:
                raise Boom("once")

    definition = saga.Saga("hold", state=Trip, steps=[Hold()])
    async with saga.Runtime(store_url, sagas=[definition], clock=clock) as runtime:
        handle = await runtime.start(definition, Trip(), saga_id="s")
        await wait_until(runtime, "s", saga.Status.WAITING)
        clock.advance(1)
        await wait_records(runtime, "s", "step_failed")
        clock.advance(3)
        info = await handle.result(timeout=5)
    assert seen == ["run:1", "on_timeout:1", "on_timeout:2"]
    assert info.status is saga.Status.COMPLETED


async def test_compensation_backoff_keeps_the_saga_compensating(
    store_url: str, clock: FakeClock
) -> None:
    calls: list[str] = []

    class Undo(saga.Step):
        compensation_retry = saga.RetryPolicy(max_attempts=3, initial_interval=7, backoff=2)

        async def run(self, ctx: saga.StepContext[Trip]) -> None:
            calls.append("run")

        async def compensate(self, ctx: saga.StepContext[Trip]) -> None:
            calls.append(f"compensate:{ctx.attempt}")
            if ctx.attempt < 3:
                raise Boom(f"undo {ctx.attempt}")

    t0 = clock.now()
    definition = saga.Saga("undo", state=Trip, steps=[Undo(), simple_step("b", [], fail=True)])
    async with saga.Runtime(store_url, sagas=[definition], clock=clock) as runtime:
        handle = await runtime.start(definition, Trip(), saga_id="s")
        for n, (wait, retry_at) in enumerate([(7, t0 + 7), (14, t0 + 21)], 1):
            records = await wait_records(runtime, "s", "step_failed", n + 1)
            failed = of_kind(records, "step_failed")[-1]
            assert (failed.step, failed.data["compensating"]) == ("Undo", True)
            assert (failed.data["handler"], failed.data["attempt"]) == ("compensate", n)
            assert (failed.data["retry_at"], failed.data["final"]) == (retry_at, False)
            info = await runtime.get("s")
            assert (info.status, info.step) == (saga.Status.COMPENSATING, "Undo")
            clock.advance(wait)
        info = await handle.result(timeout=5)

    assert calls == ["run", "compensate:1", "compensate:2", "compensate:3"]
    assert info.status is saga.Status.COMPENSATED
