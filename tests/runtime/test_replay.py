"""`replay` and the read side of the runtime: get, list, history, and the records themselves."""

from __future__ import annotations

from collections import Counter
from typing import Any

import msgspec
import pytest
from _wait import wait_until

import saga
from saga.testing import FakeClock

pytestmark = pytest.mark.anyio

STEP_KINDS = {
    "step_started",
    "step_waiting",
    "event_delivered",
    "wait_timed_out",
    "step_completed",
    "step_failed",
}


class Order(msgspec.Struct):
    order_id: str
    reserved: bool = False
    paid: bool = False
    log: list[str] = []


calls: Counter[str] = Counter()


class Reserve(saga.Step):
    async def run(self, ctx: saga.StepContext[Order]) -> None:
        calls["Reserve.run"] += 1
        ctx.state.reserved = True
        ctx.state.log.append("reserve")

    async def compensate(self, ctx: saga.StepContext[Order]) -> None:
        calls["Reserve.compensate"] += 1
        ctx.state.reserved = False
        ctx.state.log.append("unreserve")


class Pay(saga.Step):
    async def run(self, ctx: saga.StepContext[Order]) -> saga.Wait:
        calls["Pay.run"] += 1
        ctx.state.log.append("asked")
        return saga.wait_for("paid", key=ctx.state.order_id, timeout=60)

    async def on_event(self, ctx: saga.StepContext[Order], event: saga.Event) -> None:
        calls["Pay.on_event"] += 1
        if not event.payload["ok"]:
            raise RuntimeError(f"declined: {event.payload['why']}")
        ctx.state.paid = True

    async def compensate(self, ctx: saga.StepContext[Order]) -> None:
        calls["Pay.compensate"] += 1
        ctx.state.log.append("refund")


order_saga = saga.Saga("order", state=Order, steps=[Reserve(), Pay()])


@pytest.fixture(autouse=True)
def _reset_calls() -> None:
    calls.clear()


def runtime(url: str, clock: FakeClock, *sagas: saga.Saga[Any]) -> saga.Runtime:
    return saga.Runtime(url, sagas=list(sagas) or [order_saga], clock=clock)


async def run_declined(rt: saga.Runtime, clock: FakeClock, saga_id: str) -> saga.SagaInfo:
    """Start an order, decline its payment: Reserve, Pay waits, fails, both compensate."""
    handle = await rt.start(order_saga, Order(order_id=saga_id), saga_id=saga_id)
    await wait_until(rt, saga_id, saga.Status.WAITING)
    clock.advance(1)
    await rt.send(saga_id, "paid", {"ok": False, "why": "card"}, key=saga_id)
    return await handle.result(timeout=5)


# -- replay ---------------------------------------------------------------------------------


async def test_replay_agrees_with_get_at_the_end(store_url: str, clock: FakeClock) -> None:
    async with runtime(store_url, clock) as rt:
        info = await run_declined(rt, clock, "o-1")
        history = await rt.history("o-1")
        assert await rt.get("o-1") == info

    steps = list(saga.replay(history, order_saga))
    assert [record for record, _ in steps] == history
    last = steps[-1][1]
    assert last == info
    assert last.status is saga.Status.COMPENSATED
    assert last.step is None
    assert isinstance(last.state, Order)
    assert last.state == Order(
        order_id="o-1", reserved=False, log=["reserve", "asked", "refund", "unreserve"]
    )
    assert last.error == saga.ErrorInfo(type="RuntimeError", message="declined: card", step="Pay")


async def test_replay_yields_info_after_each_record(store_url: str, clock: FakeClock) -> None:
    async with runtime(store_url, clock) as rt:
        await run_declined(rt, clock, "o-1")
        history = await rt.history("o-1")

    pairs = list(saga.replay(history, order_saga))
    assert [info.seq for _, info in pairs] == [r.seq for r in history]
    assert [r.kind for r, _ in pairs] == [
        "saga_started",
        "step_started",
        "step_completed",
        "step_started",
        "step_waiting",
        "event_delivered",
        "step_started",
        "step_failed",
        "compensation_started",
        "step_started",
        "step_completed",
        "step_started",
        "step_completed",
        "saga_compensated",
    ]
    statuses = [info.status.value for _, info in pairs]
    assert statuses == [
        "RUNNING", "RUNNING", "RUNNING", "RUNNING", "WAITING", "RUNNING", "RUNNING",
        "RUNNING", "COMPENSATING", "COMPENSATING", "COMPENSATING", "COMPENSATING",
        "COMPENSATING", "COMPENSATED",
    ]  # fmt: skip
    assert [info.step for _, info in pairs] == [
        "Reserve", "Reserve", "Pay", "Pay", "Pay", "Pay", "Pay", "Pay",
        "Pay", "Pay", "Reserve", "Reserve", None, None,
    ]  # fmt: skip
    # The state is the one saved by the record that ended each handler.
    assert [info.state.log for _, info in pairs][:6] == [
        [], [], ["reserve"], ["reserve"], ["reserve", "asked"], ["reserve", "asked"]
    ]  # fmt: skip
    assert all(isinstance(info.state, Order) for _, info in pairs)
    assert all(info.error is None for _, info in pairs[:7])
    assert all(info.error is not None for _, info in pairs[7:])
    assert {info.created_at for _, info in pairs} == {history[0].at}
    assert [info.updated_at for _, info in pairs] == [r.at for r in history]


async def test_replay_of_a_waiting_saga_agrees_with_get(store_url: str, clock: FakeClock) -> None:
    async with runtime(store_url, clock) as rt:
        await rt.start(order_saga, Order(order_id="o-2"), saga_id="o-2")
        info = await wait_until(rt, "o-2", saga.Status.WAITING)
        history = await rt.history("o-2")
        *_, (_, last) = saga.replay(history, order_saga)
        assert last == info == await rt.get("o-2")
        assert last.step == "Pay"
        assert last.state == Order(order_id="o-2", reserved=True, log=["reserve", "asked"])


async def test_replay_runs_no_step_code(store_url: str, clock: FakeClock) -> None:
    async with runtime(store_url, clock) as rt:
        await run_declined(rt, clock, "o-1")
        history = await rt.history("o-1")
    before = dict(calls)
    assert before == {
        "Reserve.run": 1,
        "Pay.run": 1,
        "Pay.on_event": 1,
        "Pay.compensate": 1,
        "Reserve.compensate": 1,
    }
    for _ in range(3):
        assert len(list(saga.replay(history, order_saga))) == len(history)
    assert dict(calls) == before


async def test_replay_partial_log_is_a_prefix(store_url: str, clock: FakeClock) -> None:
    async with runtime(store_url, clock) as rt:
        await run_declined(rt, clock, "o-1")
        history = await rt.history("o-1")
    full = list(saga.replay(history, order_saga))
    for n in (1, 5, 9):
        assert list(saga.replay(history[:n], order_saga)) == full[:n]


class Other(saga.Step):
    async def run(self, ctx: saga.StepContext[Order]) -> None:
        return None


@pytest.mark.parametrize(
    "definition",
    [
        saga.Saga("order", state=Order, steps=[Reserve(), Pay()], version=2),
        saga.Saga("other-order", state=Order, steps=[Reserve(), Pay()]),
        saga.Saga("order", state=Order, steps=[Reserve(), Other()]),
        saga.Saga("order", state=Order, steps=[Pay(), Reserve()]),
        saga.Saga("order", state=Order, steps=[Reserve()]),
    ],
    ids=["version", "name", "step-renamed", "step-order", "step-missing"],
)
async def test_replay_with_another_definition_raises(
    store_url: str, clock: FakeClock, definition: saga.Saga[Any]
) -> None:
    async with runtime(store_url, clock) as rt:
        await run_declined(rt, clock, "o-1")
        history = await rt.history("o-1")
    with pytest.raises(saga.DefinitionMismatch):
        list(saga.replay(history, definition))
    assert calls["Reserve.run"] == 1


def test_replay_of_nothing_yields_nothing() -> None:
    assert list(saga.replay([], order_saga)) == []


# -- records --------------------------------------------------------------------------------


async def test_record_fields(store_url: str, clock: FakeClock) -> None:
    start = clock.now()
    async with runtime(store_url, clock) as rt:
        await run_declined(rt, clock, "o-1")
        history = await rt.history("o-1")

    assert [r.seq for r in history] == list(range(1, len(history) + 1))
    assert all(isinstance(r, saga.Record) for r in history)
    assert all(isinstance(r.kind, str) and isinstance(r.data, dict) for r in history)
    # FakeClock time: everything up to the wait at start, the rest one second later.
    waiting = next(i for i, r in enumerate(history) if r.kind == "step_waiting")
    assert {r.at for r in history[: waiting + 1]} == {start}
    assert {r.at for r in history[waiting + 1 :]} == {start + 1}

    first = history[0]
    assert (first.kind, first.step) == ("saga_started", None)
    assert first.data["name"] == "order"
    assert first.data["version"] == 1
    assert first.data["steps"] == ["Reserve", "Pay"]
    assert first.data["state"] == {"order_id": "o-1", "reserved": False, "paid": False, "log": []}

    boundary = next(i for i, r in enumerate(history) if r.kind == "compensation_started")
    for i, record in enumerate(history):
        if record.kind in STEP_KINDS:
            assert record.step in ("Reserve", "Pay")
            assert record.data["compensating"] is (i > boundary), record
        else:
            assert record.step is None, record

    waiting_record = history[waiting]
    assert waiting_record.step == "Pay"
    assert waiting_record.data["event"] == "paid"
    assert waiting_record.data["key"] == "o-1"
    assert waiting_record.data["timeout"] == 60
    assert waiting_record.data["deadline"] == start + 60

    delivered = history[waiting + 1]
    assert delivered.kind == "event_delivered"
    assert delivered.data["event"]["payload"] == {"ok": False, "why": "card"}
    assert delivered.data["event"]["key"] == "o-1"

    failed = next(r for r in history if r.kind == "step_failed")
    assert failed.step == "Pay"
    assert failed.data["error"] == {"type": "RuntimeError", "message": "declined: card"}
    assert failed.data["final"] is True
    assert failed.data["handler"] == "on_event"

    comp = history[boundary]
    assert comp.data["failed_step"] == "Pay"
    assert comp.data["steps"] == ["Pay", "Reserve"]
    assert history[-1].kind == "saga_compensated"


# -- get / list / history -------------------------------------------------------------------


async def test_get_fields(store_url: str, clock: FakeClock) -> None:
    async with runtime(store_url, clock) as rt:
        await rt.start(order_saga, Order(order_id="o-1"), saga_id="o-1")
        info = await wait_until(rt, "o-1", saga.Status.WAITING)
        assert isinstance(info, saga.SagaInfo)
        assert (info.saga_id, info.name, info.version) == ("o-1", "order", 1)
        assert info.step == "Pay"
        assert info.state == Order(order_id="o-1", reserved=True, log=["reserve", "asked"])
        assert info.error is None
        assert info.created_at == info.updated_at == clock.now()


async def test_list_newest_first_with_filters_and_limit(store_url: str, clock: FakeClock) -> None:
    class Quick(saga.Step):
        async def run(self, ctx: saga.StepContext[Order]) -> None:
            return None

    quick = saga.Saga("quick", state=Order, steps=[Quick()])
    async with runtime(store_url, clock, order_saga, quick) as rt:
        for i in range(3):
            await rt.start(order_saga, Order(order_id=f"o-{i}"), saga_id=f"o-{i}")
            await wait_until(rt, f"o-{i}", saga.Status.WAITING)
            clock.advance(1)
            await (await rt.start(quick, Order(order_id=f"q-{i}"), saga_id=f"q-{i}")).result(5)
            clock.advance(1)
        # Same created_at: the later start is still the newer one.
        await rt.start(order_saga, Order(order_id="o-3"), saga_id="o-3")
        await rt.start(order_saga, Order(order_id="o-4"), saga_id="o-4")
        await wait_until(rt, "o-4", saga.Status.WAITING)

        everything = [i.saga_id for i in await rt.list()]
        assert everything == ["o-4", "o-3", "q-2", "o-2", "q-1", "o-1", "q-0", "o-0"]
        assert [i.saga_id for i in await rt.list(limit=3)] == ["o-4", "o-3", "q-2"]
        assert [i.saga_id for i in await rt.list(name="quick")] == ["q-2", "q-1", "q-0"]
        completed = await rt.list(status=saga.Status.COMPLETED)
        assert [i.saga_id for i in completed] == ["q-2", "q-1", "q-0"]
        assert all(i.status is saga.Status.COMPLETED for i in completed)
        waiting = [i.saga_id for i in await rt.list(status="WAITING", name="order", limit=2)]
        assert waiting == ["o-4", "o-3"]
        assert await rt.list(status=saga.Status.FAILED) == []
        assert await rt.list(name="nope") == []
        listed = {i.saga_id: i for i in await rt.list()}
        assert listed["o-1"] == await rt.get("o-1")
        assert isinstance(listed["q-0"].state, Order)


async def test_list_rejects_bad_arguments(store_url: str, clock: FakeClock) -> None:
    async with runtime(store_url, clock) as rt:
        with pytest.raises(ValueError, match="status"):
            await rt.list(status="DONE")
        with pytest.raises(ValueError, match="limit"):
            await rt.list(limit=0)


async def test_history_grows_as_the_saga_moves(store_url: str, clock: FakeClock) -> None:
    async with runtime(store_url, clock) as rt:
        handle = await rt.start(order_saga, Order(order_id="o-1"), saga_id="o-1")
        await wait_until(rt, "o-1", saga.Status.WAITING)
        early = await rt.history("o-1")
        assert [r.kind for r in early] == [
            "saga_started", "step_started", "step_completed", "step_started", "step_waiting",
        ]  # fmt: skip
        await rt.send("o-1", "paid", {"ok": True}, key="o-1")
        info = await handle.result(timeout=5)
        late = await rt.history("o-1")
        assert late[: len(early)] == early
        assert [r.kind for r in late[len(early) :]] == [
            "event_delivered", "step_started", "step_completed", "saga_completed",
        ]  # fmt: skip
        assert info.status is saga.Status.COMPLETED
        assert info.state.paid is True
        assert info.seq == late[-1].seq == len(late)


async def test_unknown_id(store_url: str, clock: FakeClock) -> None:
    async with runtime(store_url, clock) as rt:
        await rt.start(order_saga, Order(order_id="o-1"), saga_id="o-1")
        with pytest.raises(saga.UnknownSaga, match="o-2"):
            await rt.get("o-2")
        with pytest.raises(saga.UnknownSaga, match="o-2"):
            await rt.history("o-2")
        with pytest.raises(LookupError):
            await rt.get("O-1")
