"""SPEC 3.1 and the start/handle API: steps run forward, in order, from a durable start."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from _behaviour import (
    TERMINAL_KINDS,
    Boom,
    Gate,
    Trip,
    kinds,
    of_kind,
    simple_step,
    trail,
)
from _wait import wait_until

import saga

pytestmark = pytest.mark.anyio


async def test_steps_run_in_order_and_result_is_completed_info(store_url: str) -> None:
    calls: list[str] = []
    steps = [simple_step(n, calls) for n in ("a", "b", "c")]
    trip = saga.Saga("trip", state=Trip, steps=steps, version=2)
    async with saga.Runtime(store_url, sagas=[trip]) as runtime:
        handle = await runtime.start(trip, Trip(), saga_id="t-1")
        assert handle.saga_id == "t-1"
        info = await handle.result(timeout=5)
        records = await runtime.history("t-1")

    assert isinstance(info, saga.SagaInfo)
    assert info.status is saga.Status.COMPLETED
    assert (info.saga_id, info.name, info.version) == ("t-1", "trip", 2)
    assert (info.step, info.error) == (None, None)
    assert info.state == Trip(log=["a", "b", "c"])
    assert info.created_at <= info.updated_at
    assert calls == ["a.run", "b.run", "c.run"]
    assert trail(records) == [
        ("saga_started", None),
        ("step_started:run", "a"),
        ("step_completed", "a"),
        ("step_started:run", "b"),
        ("step_completed", "b"),
        ("step_started:run", "c"),
        ("step_completed", "c"),
        ("saga_completed", None),
    ]
    assert [r.seq for r in records] == list(range(1, 9))
    assert records[0].data == {
        "saga_id": "t-1",
        "name": "trip",
        "version": 2,
        "steps": ["a", "b", "c"],
        "state": {"log": [], "n": 0},
    }
    for started in of_kind(records, "step_started"):
        assert started.data == {
            "compensating": False,
            "handler": "run",
            "attempt": 1,
            "recovery": 0,
        }


async def test_step_started_is_committed_before_every_handler_invocation(store_url: str) -> None:
    seen: list[tuple[str, str | None, str, int, int]] = []
    runtime_box: list[saga.Runtime] = []

    async def look(ctx: saga.StepContext[Trip], handler: str) -> None:
        last = (await runtime_box[0].history(ctx.saga_id))[-1]
        seen.append((last.kind, last.step, last.data["handler"], last.data["attempt"], ctx.attempt))
        assert last.data["handler"] == handler
        assert last.data["compensating"] is ctx.compensating

    class Waits(saga.Step):
        retry = saga.RetryPolicy(max_attempts=2, initial_interval=0)

        async def run(self, ctx: saga.StepContext[Trip]) -> saga.Wait:
            await look(ctx, "run")
            return saga.wait_for("go")

        async def on_event(self, ctx: saga.StepContext[Trip], event: saga.Event) -> None:
            await look(ctx, "on_event")
            if ctx.attempt == 1:
                raise Boom("first on_event attempt")

        async def compensate(self, ctx: saga.StepContext[Trip]) -> saga.Wait:
            await look(ctx, "compensate")
            return saga.wait_for("undo")

        async def on_compensation_event(
            self, ctx: saga.StepContext[Trip], event: saga.Event
        ) -> None:
            await look(ctx, "on_compensation_event")

    class Fails(saga.Step):
        async def run(self, ctx: saga.StepContext[Trip]) -> None:
            await look(ctx, "run")
            raise Boom("no")

        async def compensate(self, ctx: saga.StepContext[Trip]) -> None:
            await look(ctx, "compensate")

    definition = saga.Saga("look", state=Trip, steps=[Waits(), Fails()])
    async with saga.Runtime(store_url, sagas=[definition]) as runtime:
        runtime_box.append(runtime)
        handle = await runtime.start(definition, Trip(), saga_id="s")
        await wait_until(runtime, "s", saga.Status.WAITING)
        await runtime.send("s", "go")
        await runtime.send("s", "undo")
        info = await handle.result(timeout=5)
        records = await runtime.history("s")

    assert info.status is saga.Status.COMPENSATED
    assert seen == [
        ("step_started", "Waits", "run", 1, 1),
        ("step_started", "Waits", "on_event", 1, 1),
        ("step_started", "Waits", "on_event", 2, 2),
        ("step_started", "Fails", "run", 1, 1),
        ("step_started", "Fails", "compensate", 1, 1),
        ("step_started", "Waits", "compensate", 1, 1),
        ("step_started", "Waits", "on_compensation_event", 1, 1),
    ]
    assert len(of_kind(records, "step_started")) == len(seen)


async def test_state_is_saved_in_the_record_that_ends_the_handler(store_url: str) -> None:
    class Count(saga.Step):
        async def run(self, ctx: saga.StepContext[Trip]) -> saga.Wait:
            ctx.state.n = 1
            return saga.wait_for("more")

        async def on_event(self, ctx: saga.StepContext[Trip], event: saga.Event) -> None:
            assert ctx.state.n == 1
            ctx.state.n = event.payload

    class Tag(saga.Step):
        async def run(self, ctx: saga.StepContext[Trip]) -> None:
            ctx.state.log.append(f"n={ctx.state.n}")

    definition = saga.Saga("state", state=Trip, steps=[Count(), Tag()])
    async with saga.Runtime(store_url, sagas=[definition]) as runtime:
        handle = await runtime.start(definition, Trip(), saga_id="s")
        waiting = await wait_until(runtime, "s", saga.Status.WAITING)
        await runtime.send("s", "more", 7)
        info = await handle.result(timeout=5)
        records = await runtime.history("s")

    assert waiting.state == Trip(n=1)
    assert waiting.step == "Count"
    assert of_kind(records, "step_waiting")[0].data["state"] == {"log": [], "n": 1}
    completed = of_kind(records, "step_completed")
    assert [r.data["state"] for r in completed] == [
        {"log": [], "n": 7},
        {"log": ["n=7"], "n": 7},
    ]
    assert info.state == Trip(log=["n=7"], n=7)


async def test_state_changes_of_a_failing_handler_are_discarded(store_url: str) -> None:
    seen: list[tuple[int, list[str]]] = []

    class Flaky(saga.Step):
        retry = saga.RetryPolicy(max_attempts=3, initial_interval=0)

        async def run(self, ctx: saga.StepContext[Trip]) -> None:
            seen.append((ctx.state.n, list(ctx.state.log)))
            ctx.state.n += 100
            ctx.state.log.append(f"attempt {ctx.attempt}")
            if ctx.attempt < 3:
                raise Boom(f"attempt {ctx.attempt}")

    class Last(saga.Step):
        async def run(self, ctx: saga.StepContext[Trip]) -> None:
            ctx.state.n += 1
            raise Boom("last fails")

        async def compensate(self, ctx: saga.StepContext[Trip]) -> None:
            seen.append((ctx.state.n, list(ctx.state.log)))

    definition = saga.Saga("discard", state=Trip, steps=[Flaky(), Last()])
    async with saga.Runtime(store_url, sagas=[definition]) as runtime:
        info = await (await runtime.start(definition, Trip(n=1), saga_id="s")).result(timeout=5)
        records = await runtime.history("s")

    assert seen == [(1, []), (1, []), (1, []), (101, ["attempt 3"])]
    assert info.status is saga.Status.COMPENSATED
    assert info.state == Trip(log=["attempt 3"], n=101)
    for failed in of_kind(records, "step_failed"):
        assert "state" not in failed.data


async def test_context_fields_and_idempotency_keys(store_url: str) -> None:
    seen: list[dict[str, Any]] = []

    def note(ctx: saga.StepContext[Trip], handler: str) -> None:
        seen.append({"handler": handler, "saga_id": ctx.saga_id, "saga_name": ctx.saga_name,
                     "step": ctx.step, "attempt": ctx.attempt,
                     "compensating": ctx.compensating, "key": ctx.idempotency_key})  # fmt: skip

    class Pay(saga.Step):
        retry = saga.RetryPolicy(max_attempts=2, initial_interval=0)
        compensation_retry = saga.RetryPolicy(max_attempts=2, initial_interval=0)

        async def run(self, ctx: saga.StepContext[Trip]) -> saga.Wait | None:
            note(ctx, "run")
            if ctx.attempt == 1:
                raise Boom("retry me")
            return saga.wait_for("settled")

        async def on_event(self, ctx: saga.StepContext[Trip], event: saga.Event) -> None:
            note(ctx, "on_event")

        async def compensate(self, ctx: saga.StepContext[Trip]) -> None:
            note(ctx, "compensate")
            if ctx.attempt == 1:
                raise Boom("retry me too")

    class Ship(saga.Step):
        retry = saga.RetryPolicy(max_attempts=2, initial_interval=0)

        async def run(self, ctx: saga.StepContext[Trip]) -> None:
            note(ctx, "run")
            raise Boom("cannot ship")

        async def compensate(self, ctx: saga.StepContext[Trip]) -> None:
            note(ctx, "compensate")

    definition = saga.Saga("keys", state=Trip, steps=[Pay(), Ship()])
    async with saga.Runtime(store_url, sagas=[definition]) as runtime:
        for saga_id in ("k-1", "k-2"):
            handle = await runtime.start(definition, Trip(), saga_id=saga_id)
            await wait_until(runtime, saga_id, saga.Status.WAITING)
            await runtime.send(saga_id, "settled")
            assert (await handle.result(timeout=5)).status is saga.Status.COMPENSATED

    first = [s for s in seen if s["saga_id"] == "k-1"]
    assert [(s["step"], s["handler"], s["attempt"], s["compensating"]) for s in first] == [
        ("Pay", "run", 1, False),
        ("Pay", "run", 2, False),
        ("Pay", "on_event", 1, False),
        ("Ship", "run", 1, False),
        ("Ship", "run", 2, False),
        ("Ship", "compensate", 1, True),
        ("Pay", "compensate", 1, True),
        ("Pay", "compensate", 2, True),
    ]
    assert {s["saga_name"] for s in seen} == {"keys"}
    keys: dict[tuple[str, str, bool], set[str]] = {}
    for s in seen:
        assert isinstance(s["key"], str)
        assert s["key"]
        keys.setdefault((s["saga_id"], s["step"], s["compensating"]), set()).add(s["key"])
    # one key per saga + step + direction, the same for every attempt and handler ...
    assert all(len(found) == 1 for found in keys.values())
    # ... and a different one for every other saga, step or direction
    assert len(keys) == 8
    assert len({next(iter(found)) for found in keys.values()}) == 8


def test_idempotency_keys_are_pinned() -> None:
    # Users dedupe on these values: a change of how they are computed breaks every saga
    # in flight. The context computes its key only when a handler asks for it.
    expected = {
        ("s-1", "Pay", False): "d0f52960-f53a-5683-9753-f903773cf3d4",
        ("s-1", "Pay", True): "d649fb5c-d4a3-5751-b848-0857bbf417d2",
        ("a/b:1", "x", False): "818150e5-070c-511f-9e57-ab78b1f69f2d",
    }
    for (saga_id, step, compensating), key in expected.items():
        ctx: saga.StepContext[Trip] = saga.StepContext(
            saga_id=saga_id, saga_name="n", state=Trip(), step=step, attempt=1,
            compensating=compensating,
        )  # fmt: skip
        assert ctx.idempotency_key == key
        assert ctx.idempotency_key == key


async def test_start_is_durable(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'trips.db'}"
    definition = saga.Saga("durable", state=Trip, steps=[Gate()])
    async with saga.Runtime(url, sagas=[definition]) as runtime:
        await runtime.start(definition, Trip(n=5), saga_id="d-1")
        first = (await runtime.history("d-1"))[0]
        assert (await runtime.get("d-1")).state == Trip(n=5)

    assert (first.seq, first.kind, first.step) == (1, "saga_started", None)
    assert first.data["state"] == {"log": [], "n": 5}
    async with saga.Runtime(url, sagas=[definition]) as runtime:
        info = await wait_until(runtime, "d-1", saga.Status.WAITING)
        assert info.state == Trip(n=5)
        await runtime.send("d-1", "go")
        assert (await runtime.handle("d-1").result(timeout=5)).status is saga.Status.COMPLETED


async def test_start_commits_the_first_step_started_with_saga_started(store_url: str) -> None:
    writes: list[tuple[str, list[int]]] = []
    seen: list[str] = []
    runtime_box: list[saga.Runtime] = []

    class Note(saga.Observer):
        async def on_transition(self, record: saga.Record, info: saga.SagaInfo) -> None:
            seen.append(f"{record.kind}@{info.seq}")
            if "state" in record.data:  # observers get plain values, whatever the runtime keeps
                assert record.data["state"] == {"log": [], "n": 0}
                assert info.state == Trip()

        async def before_step(self, ctx: saga.StepContext[Any]) -> None:
            seen.append(f"before {ctx.step}")

    class First(saga.Step):
        async def run(self, ctx: saga.StepContext[Trip]) -> None:
            log = await runtime_box[0].history(ctx.saga_id)
            seen.append("run: " + ",".join(r.kind for r in log))

    definition = saga.Saga("one-commit", state=Trip, steps=[First()], observers=[Note()])
    async with saga.Runtime(store_url, sagas=[definition]) as runtime:
        runtime_box.append(runtime)
        store = runtime.store
        start, append = store.start, store.append

        async def counted_start(row: Any, records: list[tuple[int, bytes]], **kw: Any) -> Any:
            writes.append(("start", [seq for seq, _ in records]))
            return await start(row, records, **kw)

        async def counted_append(a: Any) -> None:
            writes.append(("append", [seq for seq, _ in a.records]))
            await append(a)

        store.start, store.append = counted_start, counted_append  # type: ignore[method-assign]
        handle = await runtime.start(definition, Trip(), saga_id="s")
        assert writes == [("start", [1, 2])]  # durable when start returns, in one commit
        info = await handle.result(timeout=5)

    assert info.status is saga.Status.COMPLETED
    assert writes == [("start", [1, 2]), ("append", [3, 4])]
    assert seen == [
        "saga_started@1",
        "step_started@2",
        "before First",
        "run: saga_started,step_started",
        "step_completed@3",
        "saga_completed@4",
    ]


async def test_result_of_a_saga_running_here_needs_no_read(store_url: str) -> None:
    calls: list[str] = []
    steps = [simple_step(n, calls) for n in ("a", "b")]
    definition = saga.Saga("no-read", state=Trip, steps=steps)
    async with saga.Runtime(store_url, sagas=[definition]) as runtime:
        store = runtime.store
        read = store.saga
        reads: list[str] = []

        async def counted(saga_id: str) -> Any:
            reads.append(saga_id)
            return await read(saga_id)

        store.saga = counted  # type: ignore[method-assign]
        handle = await runtime.start(definition, Trip(n=7), saga_id="s")
        info = await handle.result(timeout=5)
        assert reads == []  # the actor handed its final SagaInfo over
        assert info == await runtime.get("s")  # the same as the store says
        assert await runtime.handle("s").result(timeout=5) == info  # not running: read
        assert reads == ["s", "s"]
    assert info.status is saga.Status.COMPLETED
    assert info.state == Trip(n=7, log=["a", "b"])


async def test_start_existing_id_with_same_definition_starts_nothing(store_url: str) -> None:
    gate = Gate()
    definition = saga.Saga("once", state=Trip, steps=[gate])
    async with saga.Runtime(store_url, sagas=[definition]) as runtime:
        await runtime.start(definition, Trip(n=1), saga_id="s")
        await wait_until(runtime, "s", saga.Status.WAITING)
        before = await runtime.history("s")
        again = await runtime.start(definition, Trip(n=2), saga_id="s")
        by_name = await runtime.start("once", Trip(n=3), saga_id="s")
        assert (again.saga_id, by_name.saga_id) == ("s", "s")
        assert await runtime.history("s") == before
        assert (await runtime.get("s")).state == Trip(n=1)
        await runtime.send("s", "go")
        done = await again.result(timeout=5)
        after = await runtime.history("s")
        third = await runtime.start(definition, Trip(n=4), saga_id="s")
        assert (await third.result(timeout=5)) == done
        assert await runtime.history("s") == after

    assert gate.runs == 1
    assert done.state == Trip(n=1)
    assert kinds(after).count("saga_started") == 1


async def test_start_existing_id_with_another_definition_raises_saga_exists(store_url: str) -> None:
    calls: list[str] = []
    v1 = saga.Saga("pay", state=Trip, steps=[simple_step("a", calls)], version=1)
    v2 = saga.Saga("pay", state=Trip, steps=[simple_step("a", calls)], version=2)
    other = saga.Saga("refund", state=Trip, steps=[simple_step("a", calls)])
    async with saga.Runtime(store_url, sagas=[v1, v2, other]) as runtime:
        await (await runtime.start(v1, Trip(), saga_id="s")).result(timeout=5)
        before = await runtime.history("s")
        with pytest.raises(saga.SagaExists):
            await runtime.start(v2, Trip(), saga_id="s")
        with pytest.raises(saga.SagaExists):
            await runtime.start("pay", Trip(), saga_id="s")  # by name: version 2
        with pytest.raises(saga.SagaExists):
            await runtime.start(other, Trip(), saga_id="s")
        assert await runtime.history("s") == before
        info = await runtime.get("s")
    assert (info.name, info.version, info.status) == ("pay", 1, saga.Status.COMPLETED)
    assert calls == ["a.run"]
    assert issubclass(saga.SagaExists, saga.SagaError)


async def test_start_by_name_picks_the_highest_registered_version(store_url: str) -> None:
    calls: list[str] = []
    versions = [
        saga.Saga("pay", state=Trip, steps=[simple_step(f"v{v}", calls)], version=v)
        for v in (1, 3, 2)
    ]
    async with saga.Runtime(store_url, sagas=versions) as runtime:
        info = await (await runtime.start("pay", Trip(), saga_id="s")).result(timeout=5)
        first = (await runtime.history("s"))[0]
    assert (info.name, info.version) == ("pay", 3)
    assert (first.data["version"], first.data["steps"]) == (3, ["v3"])
    assert calls == ["v3.run"]


async def test_generated_ids_when_saga_id_is_none(store_url: str) -> None:
    calls: list[str] = []
    definition = saga.Saga("gen", state=Trip, steps=[simple_step("a", calls)])
    async with saga.Runtime(store_url, sagas=[definition]) as runtime:
        handles = [await runtime.start(definition, Trip()) for _ in range(3)]
        ids = [h.saga_id for h in handles]
        infos = [await h.result(timeout=5) for h in handles]
        starts = [(await runtime.history(i))[0] for i in ids]
    assert all(isinstance(i, str) and i for i in ids)
    assert len(set(ids)) == 3
    assert [info.saga_id for info in infos] == ids
    assert [r.data["saga_id"] for r in starts] == ids
    assert all(info.status is saga.Status.COMPLETED for info in infos)


@pytest.mark.parametrize(
    ("fail", "compensation_fails", "status"),
    [
        (False, False, saga.Status.COMPLETED),
        (True, False, saga.Status.COMPENSATED),
        (True, True, saga.Status.FAILED),
    ],
)
async def test_a_terminal_record_is_always_last(
    store_url: str, fail: bool, compensation_fails: bool, status: saga.Status
) -> None:
    class First(saga.Step):
        compensation_retry = saga.RetryPolicy(max_attempts=1)

        async def run(self, ctx: saga.StepContext[Trip]) -> saga.Wait:
            return saga.wait_for("go")

        async def compensate(self, ctx: saga.StepContext[Trip]) -> None:
            if compensation_fails:
                raise Boom("stuck")

    calls: list[str] = []
    definition = saga.Saga("end", state=Trip, steps=[First(), simple_step("b", calls, fail=fail)])
    async with saga.Runtime(store_url, sagas=[definition]) as runtime:
        handle = await runtime.start(definition, Trip(), saga_id="s")
        await wait_until(runtime, "s", saga.Status.WAITING)
        await runtime.send("s", "go", key="k")
        await runtime.send("s", "extra", key="k")  # never consumed: a dead letter
        info = await handle.result(timeout=5)
        records = await runtime.history("s")
        with pytest.raises(saga.SagaClosed):
            await runtime.send("s", "go")
        await runtime.abort("s", "too late")
        assert await runtime.history("s") == records

    assert info.status is status
    assert records[-1].kind in TERMINAL_KINDS
    assert [r.kind in TERMINAL_KINDS for r in records].count(True) == 1
    assert records[-1].seq == info.seq == len(records)
