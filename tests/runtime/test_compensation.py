"""SPEC 3.4: compensation order, compensation waits, FAILED sagas and operator resume."""

from __future__ import annotations

import pytest
from _behaviour import (
    Boom,
    Trip,
    kinds,
    of_kind,
    simple_step,
    trail,
    wait_records,
)
from _wait import wait_until

import saga

pytestmark = pytest.mark.anyio


async def test_compensations_run_for_the_failing_step_then_completed_steps_in_reverse(
    store_url: str,
) -> None:
    calls: list[str] = []
    steps = [
        simple_step("a", calls),
        simple_step("b", calls),
        simple_step("c", calls, fail=True),
        simple_step("d", calls),
    ]
    definition = saga.Saga("order", state=Trip, steps=steps)
    async with saga.Runtime(store_url, sagas=[definition]) as runtime:
        info = await (await runtime.start(definition, Trip(), saga_id="s")).result(timeout=5)
        records = await runtime.history("s")

    assert calls == ["a.run", "b.run", "c.run", "c.compensate", "b.compensate", "a.compensate"]
    assert trail(records) == [
        ("saga_started", None),
        ("step_started:run", "a"),
        ("step_completed", "a"),
        ("step_started:run", "b"),
        ("step_completed", "b"),
        ("step_started:run", "c"),
        ("step_failed", "c"),
        ("compensation_started", None),
        ("step_started:compensate", "c"),
        ("step_completed", "c"),
        ("step_started:compensate", "b"),
        ("step_completed", "b"),
        ("step_started:compensate", "a"),
        ("step_completed", "a"),
        ("saga_compensated", None),
    ]
    assert records[6].data == {
        "compensating": False,
        "handler": "run",
        "attempt": 1,
        "error": {"type": "Boom", "message": "c broke"},
        "retry_at": None,
        "final": True,
    }
    assert records[7].data == {
        "error": {"type": "Boom", "message": "c broke", "step": "c"},
        "failed_step": "c",
        "steps": ["c", "b", "a"],
    }
    for record in records[8:14]:
        assert record.data["compensating"] is True
    # the failed run's state change (appending "c") was discarded
    assert info.state == Trip(log=["a", "b"])
    assert info.status is saga.Status.COMPENSATED
    assert info.step is None
    assert info.error == saga.ErrorInfo(type="Boom", message="c broke", step="c")
    assert str(info.error) == "Boom: c broke"


async def test_compensate_on_failure_false_skips_the_failing_step(store_url: str) -> None:
    calls: list[str] = []
    steps = [
        simple_step("a", calls),
        simple_step("b", calls, fail=True, compensate_on_failure=False),
        simple_step("c", calls),
    ]
    definition = saga.Saga("skip", state=Trip, steps=steps)
    async with saga.Runtime(store_url, sagas=[definition]) as runtime:
        info = await (await runtime.start(definition, Trip(), saga_id="s")).result(timeout=5)
        records = await runtime.history("s")

    assert calls == ["a.run", "b.run", "a.compensate"]
    assert of_kind(records, "compensation_started")[0].data["steps"] == ["a"]
    assert info.status is saga.Status.COMPENSATED


@pytest.mark.parametrize(("compensate_on_failure", "queue"), [(True, ["a"]), (False, [])])
async def test_no_compensation_for_steps_that_never_started(
    store_url: str, compensate_on_failure: bool, queue: list[str]
) -> None:
    calls: list[str] = []
    steps = [
        simple_step("a", calls, fail=True, compensate_on_failure=compensate_on_failure),
        simple_step("b", calls),
        simple_step("c", calls),
    ]
    definition = saga.Saga("first", state=Trip, steps=steps)
    async with saga.Runtime(store_url, sagas=[definition]) as runtime:
        info = await (await runtime.start(definition, Trip(), saga_id="s")).result(timeout=5)
        records = await runtime.history("s")

    assert calls == ["a.run"] + [f"{s}.compensate" for s in queue]
    assert of_kind(records, "compensation_started")[0].data["steps"] == queue
    assert kinds(records)[-2:] == [
        "step_completed" if queue else "compensation_started",
        "saga_compensated",
    ]
    assert {r.step for r in records} == {None, "a"}
    assert info.status is saga.Status.COMPENSATED


async def test_a_compensation_may_wait_for_an_event(store_url: str) -> None:
    calls: list[str] = []
    seen: list[tuple[bool, str | None, object]] = []

    class Refund(saga.Step):
        async def run(self, ctx: saga.StepContext[Trip]) -> None:
            calls.append("Refund.run")

        async def compensate(self, ctx: saga.StepContext[Trip]) -> saga.Wait:
            calls.append("Refund.compensate")
            ctx.state.n = 1
            return saga.wait_for("refunded", key=ctx.saga_id)

        async def on_compensation_event(
            self, ctx: saga.StepContext[Trip], event: saga.Event
        ) -> None:
            calls.append("Refund.on_compensation_event")
            seen.append((ctx.compensating, event.key, event.payload))
            ctx.state.n += 1

    steps = [simple_step("a", calls), Refund(), simple_step("c", calls, fail=True)]
    definition = saga.Saga("refund", state=Trip, steps=steps)
    async with saga.Runtime(store_url, sagas=[definition]) as runtime:
        handle = await runtime.start(definition, Trip(), saga_id="s")
        records = await wait_records(runtime, "s", "step_waiting")
        info = await runtime.get("s")
        assert (info.status, info.step, info.state.n) == (saga.Status.COMPENSATING, "Refund", 1)
        await runtime.send("s", "refunded", "wrong saga", key="other")
        await runtime.send("s", "refunded", {"ok": True}, key="s")
        done = await handle.result(timeout=5)
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
    assert seen == [(True, "s", {"ok": True})]
    waiting = of_kind(records, "step_waiting")[0]
    assert (waiting.step, waiting.data["compensating"], waiting.data["event"]) == (
        "Refund",
        True,
        "refunded",
    )
    delivered = of_kind(records, "event_delivered")[0]
    assert delivered.data["compensating"] is True
    assert [r.data["handler"] for r in of_kind(records, "step_started") if r.step == "Refund"] == [
        "run",
        "compensate",
        "on_compensation_event",
    ]
    assert done.status is saga.Status.COMPENSATED
    assert done.state.n == 2


def _failing_saga(calls: list[str], fail_times: list[int]) -> saga.Saga[Trip]:
    """a, b, c: c fails (not compensated), b's compensation fails ``fail_times[0]`` times."""

    class B(saga.Step):
        name = "b"
        compensation_retry = saga.RetryPolicy(max_attempts=2, initial_interval=0)

        async def run(self, ctx: saga.StepContext[Trip]) -> None:
            calls.append("b.run")

        async def compensate(self, ctx: saga.StepContext[Trip]) -> None:
            calls.append(f"b.compensate:{ctx.attempt}")
            if fail_times[0] > 0:
                fail_times[0] -= 1
                raise Boom("refund service down")

    steps = [
        simple_step("a", calls),
        B(),
        simple_step("c", calls, fail=True, compensate_on_failure=False),
    ]
    return saga.Saga("fails", state=Trip, steps=steps)


async def test_a_compensation_failing_for_good_ends_the_saga_failed(store_url: str) -> None:
    calls: list[str] = []
    definition = _failing_saga(calls, [100])
    async with saga.Runtime(store_url, sagas=[definition]) as runtime:
        info = await (await runtime.start(definition, Trip(), saga_id="s")).result(timeout=5)
        records = await runtime.history("s")

    assert calls == ["a.run", "b.run", "c.run", "b.compensate:1", "b.compensate:2"]
    assert kinds(records)[-6:] == [
        "compensation_started",
        "step_started",
        "step_failed",
        "step_started",
        "step_failed",
        "saga_failed",
    ]
    last_failure = records[-2]
    assert (last_failure.step, last_failure.data["compensating"]) == ("b", True)
    assert (last_failure.data["attempt"], last_failure.data["final"]) == (2, True)
    failed = records[-1]
    assert failed.step == "b"
    assert failed.data == {
        "error": {"type": "Boom", "message": "refund service down", "step": "b"},
        "remaining": ["b", "a"],
    }
    assert info.status is saga.Status.FAILED
    assert info.step == "b"
    assert info.error == saga.ErrorInfo(type="Boom", message="refund service down", step="b")


async def test_resume_runs_the_remaining_compensations_with_a_fresh_budget(store_url: str) -> None:
    calls: list[str] = []
    fail_times = [2]  # both attempts before FAILED, then none
    definition = _failing_saga(calls, fail_times)
    async with saga.Runtime(store_url, sagas=[definition]) as runtime:
        handle = await runtime.start(definition, Trip(), saga_id="s")
        assert (await handle.result(timeout=5)).status is saga.Status.FAILED
        before = await runtime.history("s")
        fail_times[0] = 1  # fails once more after resume: only a fresh budget gets past it
        assert await runtime.resume("s") is True
        info = await handle.result(timeout=5)
        records = await runtime.history("s")
        assert await runtime.resume("s") is False

    assert records[: len(before)] == before
    after = records[len(before) :]
    assert trail(after) == [
        ("saga_resumed", "b"),
        ("step_started:compensate", "b"),
        ("step_failed", "b"),
        ("step_started:compensate", "b"),
        ("step_completed", "b"),
        ("step_started:compensate", "a"),
        ("step_completed", "a"),
        ("saga_compensated", None),
    ]
    assert [r.data["attempt"] for r in of_kind(after, "step_started")] == [1, 2, 1]
    assert of_kind(after, "step_failed")[0].data["final"] is False
    statuses = [i.status for _, i in saga.replay(records, definition)]
    assert statuses[len(before) - 1 : len(before) + 1] == [
        saga.Status.FAILED,
        saga.Status.COMPENSATING,
    ]
    assert calls[5:] == ["b.compensate:1", "b.compensate:2", "a.compensate"]
    assert info.status is saga.Status.COMPENSATED
    assert info.error is not None
    assert (info.error.type, info.error.step) == ("Boom", "c")


async def test_resume_on_a_saga_that_is_not_failed_returns_false(store_url: str) -> None:
    calls: list[str] = []

    class Hold(saga.Step):
        async def run(self, ctx: saga.StepContext[Trip]) -> saga.Wait:
            return saga.wait_for("go")

    ok = saga.Saga("ok", state=Trip, steps=[simple_step("a", calls)])
    bad = saga.Saga("bad", state=Trip, steps=[simple_step("a", calls, fail=True)])
    held = saga.Saga("held", state=Trip, steps=[Hold()])
    async with saga.Runtime(store_url, sagas=[ok, bad, held]) as runtime:
        await (await runtime.start(ok, Trip(), saga_id="done")).result(timeout=5)
        await (await runtime.start(bad, Trip(), saga_id="undone")).result(timeout=5)
        await runtime.start(held, Trip(), saga_id="waiting")
        await wait_until(runtime, "waiting", saga.Status.WAITING)
        for saga_id in ("done", "undone", "waiting"):
            before = await runtime.history(saga_id)
            assert await runtime.resume(saga_id) is False
            assert await runtime.history(saga_id) == before
        with pytest.raises(saga.UnknownSaga):
            await runtime.resume("nope")
        assert (await runtime.get("waiting")).status is saga.Status.WAITING
