"""Aborts (SPEC 2 and the 3 clarifications): where they take effect, and where they do not."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
from _behaviour import (
    Boom,
    Trip,
    kinds,
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


class Hold(saga.Step):
    """Waits for ``go``; logs its handlers into ``calls``."""

    def __init__(self, calls: list[str]) -> None:
        self.calls = calls

    async def run(self, ctx: saga.StepContext[Trip]) -> saga.Wait:
        self.calls.append("Hold.run")
        return saga.wait_for("go")

    async def on_event(self, ctx: saga.StepContext[Trip], event: saga.Event) -> None:
        self.calls.append("Hold.on_event")

    async def compensate(self, ctx: saga.StepContext[Trip]) -> None:
        self.calls.append("Hold.compensate")


async def test_abort_while_waiting_compensates_the_waiting_step_too(store_url: str) -> None:
    calls: list[str] = []
    steps = [simple_step("a", calls), Hold(calls), simple_step("c", calls)]
    definition = saga.Saga("abort", state=Trip, steps=steps)
    async with saga.Runtime(store_url, sagas=[definition]) as runtime:
        handle = await runtime.start(definition, Trip(), saga_id="s")
        await wait_until(runtime, "s", saga.Status.WAITING)
        await runtime.abort("s", "customer cancelled")
        info = await handle.result(timeout=5)
        records = await runtime.history("s")

    assert calls == ["a.run", "Hold.run", "Hold.compensate", "a.compensate"]
    assert trail(records)[3:] == [
        ("step_started:run", "Hold"),
        ("step_waiting", "Hold"),
        ("abort_requested", "Hold"),
        ("compensation_started", None),
        ("step_started:compensate", "Hold"),
        ("step_completed", "Hold"),
        ("step_started:compensate", "a"),
        ("step_completed", "a"),
        ("saga_compensated", None),
    ]
    aborted = of_kind(records, "abort_requested")[0]
    assert aborted.data == {"reason": "customer cancelled", "by": "api", "effective": True}
    started = of_kind(records, "compensation_started")[0]
    assert (started.data["failed_step"], started.data["steps"]) == ("Hold", ["Hold", "a"])
    assert started.data["error"]["message"] == "customer cancelled"
    assert info.status is saga.Status.COMPENSATED
    assert info.error is not None
    assert (info.error.message, info.error.step) == ("customer cancelled", "Hold")


@pytest.mark.parametrize("returns_wait", [False, True])
async def test_abort_while_a_handler_runs_takes_effect_after_it_returns(
    store_url: str,
    returns_wait: bool,
) -> None:
    calls: list[str] = []
    entered, release = anyio.Event(), anyio.Event()

    class Slow(saga.Step):
        async def run(self, ctx: saga.StepContext[Trip]) -> saga.Wait | None:
            calls.append("Slow.run")
            entered.set()
            await release.wait()
            ctx.state.n = 42
            return saga.wait_for("go") if returns_wait else None

        async def on_event(self, ctx: saga.StepContext[Trip], event: saga.Event) -> None:
            calls.append("Slow.on_event")

        async def compensate(self, ctx: saga.StepContext[Trip]) -> None:
            calls.append(f"Slow.compensate:{ctx.state.n}")

    definition = saga.Saga("slow", state=Trip, steps=[Slow(), simple_step("b", calls)])
    async with saga.Runtime(store_url, sagas=[definition]) as runtime:
        handle = await runtime.start(definition, Trip(), saga_id="s")
        await entered.wait()
        await runtime.abort("s", "stop")
        await settle()
        held = await runtime.history("s")
        assert (await runtime.get("s")).status is saga.Status.RUNNING
        await runtime.send("s", "go")
        release.set()
        info = await handle.result(timeout=5)
        records = await runtime.history("s")
        dead = await runtime.dead_letters("s")

    assert kinds(held) == ["saga_started", "step_started"]
    assert calls == ["Slow.run", "Slow.compensate:42"]  # b never runs, no on_event
    ended = "step_waiting" if returns_wait else "step_completed"
    assert kinds(records) == [
        "saga_started",
        "step_started",
        ended,
        "abort_requested",
        "compensation_started",
        "step_started",
        "step_completed",
        "saga_compensated",
    ]
    assert records[2].data["state"]["n"] == 42
    aborted, started = records[3], records[4]
    assert aborted.data == {"reason": "stop", "by": "api", "effective": True}
    # the step running when the abort came is the failing step, whether or not it completed
    assert aborted.step == "Slow"
    assert (started.data["failed_step"], started.data["steps"]) == ("Slow", ["Slow"])
    assert info.error is not None
    assert info.error.step == "Slow"
    assert info.status is saga.Status.COMPENSATED
    assert [d.name for d in dead] == ["go"]  # sent during the abort, never delivered


async def test_abort_during_a_retry_backoff_compensates_the_failing_step(
    store_url: str, clock: FakeClock
) -> None:
    calls: list[str] = []
    policy = saga.RetryPolicy(max_attempts=5, initial_interval=60)
    steps = [simple_step("a", calls), simple_step("b", calls, fail=True, retry=policy)]
    definition = saga.Saga("backoff", state=Trip, steps=steps)
    async with saga.Runtime(store_url, sagas=[definition], clock=clock) as runtime:
        handle = await runtime.start(definition, Trip(), saga_id="s")
        await wait_records(runtime, "s", "step_failed")
        assert (await runtime.get("s")).status is saga.Status.RUNNING
        await runtime.abort("s", "give up")
        info = await handle.result(timeout=5)
        records = await runtime.history("s")
        clock.advance(600)
        await settle()
        assert await runtime.history("s") == records

    assert calls == ["a.run", "b.run", "b.compensate", "a.compensate"]
    assert kinds(records)[4:7] == ["step_failed", "abort_requested", "compensation_started"]
    started = of_kind(records, "compensation_started")[0]
    assert (started.data["failed_step"], started.data["steps"]) == ("b", ["b", "a"])
    assert info.status is saga.Status.COMPENSATED


@pytest.mark.parametrize("outcome", ["completed", "compensated", "failed"])
async def test_abort_is_a_no_op_on_a_terminal_saga(store_url: str, outcome: str) -> None:
    calls: list[str] = []

    class Last(saga.Step):
        compensation_retry = saga.RetryPolicy(max_attempts=1)

        async def run(self, ctx: saga.StepContext[Trip]) -> None:
            if outcome != "completed":
                raise Boom("no")

        async def compensate(self, ctx: saga.StepContext[Trip]) -> None:
            if outcome == "failed":
                raise Boom("stuck")

    definition = saga.Saga("end", state=Trip, steps=[simple_step("a", calls), Last()])
    async with saga.Runtime(store_url, sagas=[definition]) as runtime:
        done = await (await runtime.start(definition, Trip(), saga_id="s")).result(timeout=5)
        before = await runtime.history("s")
        await runtime.abort("s", "too late")
        await settle()
        assert await runtime.history("s") == before
        assert await runtime.get("s") == done
    assert done.status.value == outcome.upper()


async def test_abort_during_compensation_does_nothing(store_url: str) -> None:
    calls: list[str] = []

    class Refund(saga.Step):
        async def run(self, ctx: saga.StepContext[Trip]) -> None:
            calls.append("Refund.run")

        async def compensate(self, ctx: saga.StepContext[Trip]) -> saga.Wait:
            calls.append("Refund.compensate")
            return saga.wait_for("refunded")

        async def on_compensation_event(
            self, ctx: saga.StepContext[Trip], event: saga.Event
        ) -> None:
            calls.append("Refund.on_compensation_event")

    steps = [simple_step("a", calls), Refund(), simple_step("c", calls, fail=True)]
    definition = saga.Saga("late", state=Trip, steps=steps)
    async with saga.Runtime(store_url, sagas=[definition]) as runtime:
        handle = await runtime.start(definition, Trip(), saga_id="s")
        await wait_records(runtime, "s", "step_waiting")
        await runtime.abort("s", "while compensating")
        records = await wait_records(runtime, "s", "abort_requested")
        assert (await runtime.get("s")).status is saga.Status.COMPENSATING
        await runtime.send("s", "refunded")
        info = await handle.result(timeout=5)
        records = await runtime.history("s")

    assert calls == [
        "a.run",
        "Refund.run",
        "c.run",
        "c.compensate",
        "Refund.compensate",
        "Refund.on_compensation_event",
        "a.compensate",
    ]
    assert of_kind(records, "abort_requested")[0].data == {
        "reason": "while compensating",
        "by": "api",
        "effective": False,
    }
    assert kinds(records).count("compensation_started") == 1
    assert info.status is saga.Status.COMPENSATED
    assert info.error is not None
    assert (info.error.message, info.error.step) == ("c broke", "c")


async def test_abort_of_an_unknown_saga_raises(store_url: str) -> None:
    definition = saga.Saga("x", state=Trip, steps=[simple_step("a", [])])
    async with saga.Runtime(store_url, sagas=[definition]) as runtime:
        with pytest.raises(saga.UnknownSaga):
            await runtime.abort("nope", "why")
        assert await runtime.list() == []


async def test_an_abort_is_durable_before_it_returns(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'abort.db'}"
    calls: list[str] = []
    definition = saga.Saga("durable", state=Trip, steps=[Hold(calls)])
    async with saga.Runtime(url, sagas=[definition]) as runtime:
        await runtime.start(definition, Trip(), saga_id="s")
        await wait_until(runtime, "s", saga.Status.WAITING)
        await runtime.abort("s", "shutdown")
    async with saga.Runtime(url, sagas=[definition]) as runtime:
        info = await runtime.handle("s").result(timeout=5)
        records = await runtime.history("s")
    assert info.status is saga.Status.COMPENSATED
    assert of_kind(records, "abort_requested")[0].data == {
        "reason": "shutdown",
        "by": "api",
        "effective": True,
    }
    assert calls == ["Hold.run", "Hold.compensate"]


async def test_abort_while_the_last_step_runs_compensates_even_if_it_completes(
    store_url: str,
) -> None:
    calls: list[str] = []
    entered, release = anyio.Event(), anyio.Event()

    class Last(saga.Step):
        async def run(self, ctx: saga.StepContext[Trip]) -> None:
            calls.append("Last.run")
            entered.set()
            await release.wait()

        async def compensate(self, ctx: saga.StepContext[Trip]) -> None:
            calls.append("Last.compensate")

    definition = saga.Saga("last", state=Trip, steps=[simple_step("a", calls), Last()])
    async with saga.Runtime(store_url, sagas=[definition]) as runtime:
        handle = await runtime.start(definition, Trip(), saga_id="s")
        await entered.wait()
        await runtime.abort("s", "too late?")
        release.set()
        info = await handle.result(timeout=5)
        records = await runtime.history("s")

    # The abort was durable before the last handler returned, so it wins over completion.
    assert calls == ["a.run", "Last.run", "Last.compensate", "a.compensate"]
    assert kinds(records)[2:6] == [
        "step_completed",
        "step_started",
        "step_completed",
        "abort_requested",
    ]
    assert "saga_completed" not in kinds(records)
    assert of_kind(records, "abort_requested")[0].step == "Last"
    assert of_kind(records, "compensation_started")[0].data["steps"] == ["Last", "a"]
    assert info.status is saga.Status.COMPENSATED
