"""`Step.on_exhausted = "suspend"`, the `SUSPENDED` status and the operator actions on it
(`retry`, `skip`, `abort`), and `revert` of a `COMPLETED` saga (SPEC section 6)."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import msgspec
import pytest
from _wait import wait_until

import saga
from saga._requests import encode_request
from saga._store import InboxKind, SendResult, open_store

pytestmark = pytest.mark.anyio

Status = saga.Status


class Order(msgspec.Struct):
    ran: list[str] = msgspec.field(default_factory=list)


class Tracked(saga.Step):
    """Records its runs and compensations; fails while ``failures`` is above 0."""

    def __init__(self, name: str, *, failures: int = 0, suspend: bool = False) -> None:
        self.name = name
        self.failures = failures
        self.calls: list[str] = []
        if suspend:
            self.on_exhausted = "suspend"  # type: ignore[misc]

    async def run(self, ctx: saga.StepContext[Order]) -> None:
        self.calls.append(f"run{ctx.attempt}")
        ctx.state.ran.append(self.name)  # lost when the handler fails
        if self.failures > 0:
            self.failures -= 1
            raise RuntimeError(f"{self.name} is down")

    async def compensate(self, ctx: saga.StepContext[Order]) -> None:
        self.calls.append("compensate")
        ctx.state.ran.append(f"undo {self.name}")


class Charge(Tracked):
    retry = saga.RetryPolicy(max_attempts=2, initial_interval=0.01)


def order_saga(failures: int = 2) -> tuple[saga.Saga[Order], Tracked, Charge, Tracked]:
    reserve, charge, ship = Tracked("Reserve"), Charge("Charge", failures=failures), Tracked("Ship")
    charge.on_exhausted = "suspend"  # type: ignore[misc]
    return saga.Saga("order", state=Order, steps=[reserve, charge, ship]), reserve, charge, ship


@pytest.fixture
def durable_url(store_url: str, tmp_path: Path) -> str:
    """A store that outlives one runtime: a file for SQLite, the test schema otherwise."""
    return f"sqlite:///{tmp_path / 'saga.db'}" if store_url.startswith("sqlite") else store_url


def kinds(history: list[saga.Record]) -> list[str]:
    return [r.kind for r in history]


def check_replay(
    history: list[saga.Record], definition: saga.Saga[Order], info: saga.SagaInfo
) -> None:
    """Replay folds the log to exactly what the runtime reports."""
    infos = [info for _, info in saga.replay(history, definition)]
    last = infos[-1]
    assert (last.status, last.step, last.error) == (info.status, info.step, info.error)


async def suspend(rt: saga.Runtime, definition: saga.Saga[Order]) -> saga.SagaInfo:
    await rt.start(definition, Order(), saga_id="o-1")
    return await wait_until(rt, "o-1", Status.SUSPENDED)


def test_on_exhausted_is_checked_at_construction() -> None:
    step = Tracked("Bad")
    step.on_exhausted = "pause"  # type: ignore[misc]
    with pytest.raises(ValueError, match="on_exhausted"):
        saga.Saga("bad", state=Order, steps=[step])


async def test_exhausted_attempts_suspend_the_saga(store_url: str) -> None:
    definition, reserve, charge, ship = order_saga()
    async with saga.Runtime(store_url, sagas=[definition]) as rt:
        info = await suspend(rt, definition)
        assert info.step == "Charge"
        assert info.error is not None
        assert (info.error.type, info.error.message, info.error.step) == (
            "RuntimeError",
            "Charge is down",
            "Charge",
        )
        assert info.state.ran == ["Reserve"]  # the failed handler's changes are lost
        history = await rt.history("o-1")
        assert kinds(history)[-2:] == ["step_failed", "saga_suspended"]
        last = history[-1]
        assert isinstance(last.body, saga.SagaSuspended)
        assert last.step == "Charge"
        assert last.data["handler"] == "run"
        # Nothing runs while it waits: no compensation, no further step, no new record.
        assert (reserve.calls, charge.calls, ship.calls) == (["run1"], ["run1", "run2"], [])
        assert not (await rt.get("o-1")).status.terminal
        assert [i.saga_id for i in await rt.list(status=Status.SUSPENDED)] == ["o-1"]
        check_replay(history, definition, info)
        assert rt.observer_errors == 0


async def test_retry_runs_the_failed_handler_with_a_fresh_budget(store_url: str) -> None:
    definition, _, charge, _ = order_saga(failures=3)  # fails once more after retry
    async with saga.Runtime(store_url, sagas=[definition]) as rt:
        await suspend(rt, definition)
        await rt.retry("o-1", reason="card processor back", by="alice")
        info = await (rt.handle("o-1")).result(timeout=10)
        assert info.status is Status.COMPLETED
        assert info.error is None
        assert charge.calls == ["run1", "run2", "run1", "run2"]  # a fresh budget of 2
        assert info.state.ran == ["Reserve", "Charge", "Ship"]
        history = await rt.history("o-1")
        [retried] = [r for r in history if r.kind == "saga_retried"]
        assert retried.data == {"reason": "card processor back", "by": "alice"}
        assert isinstance(retried.body, saga.SagaRetried)
        check_replay(history, definition, info)


async def test_skip_goes_on_with_the_next_step(store_url: str) -> None:
    definition, _, charge, ship = order_saga(failures=99)
    async with saga.Runtime(store_url, sagas=[definition]) as rt:
        await suspend(rt, definition)
        await rt.skip("o-1", reason="charged by phone", by="bob")
        info = await rt.handle("o-1").result(timeout=10)
        assert info.status is Status.COMPLETED
        assert info.state.ran == ["Reserve", "Ship"]
        history = await rt.history("o-1")
        [skipped] = [r for r in history if r.kind == "step_skipped"]
        assert skipped.step == "Charge"
        assert skipped.data == {"compensating": False, "reason": "charged by phone", "by": "bob"}
        assert ship.calls == ["run1"]
        check_replay(history, definition, info)
        # A skipped step is never compensated, even by a revert.
        await rt.revert("o-1", reason="refund everything")
        reverted = await rt.handle("o-1").result(timeout=10)
        assert reverted.status is Status.COMPENSATED
        assert charge.calls == ["run1", "run2"]
        [plan] = [r for r in await rt.history("o-1") if r.kind == "compensation_started"]
        assert plan.data["steps"] == ["Ship", "Reserve"]


async def test_abort_of_a_suspended_saga_compensates(store_url: str) -> None:
    definition, reserve, charge, ship = order_saga()
    async with saga.Runtime(store_url, sagas=[definition]) as rt:
        await suspend(rt, definition)
        await rt.abort("o-1", "customer gave up", by="carol")
        info = await wait_until(rt, "o-1", Status.COMPENSATED, timeout=10)
        # The failed step counts as the failing step: compensated first, then the rest.
        assert charge.calls == ["run1", "run2", "compensate"]
        assert reserve.calls == ["run1", "compensate"]
        assert ship.calls == []
        history = await rt.history("o-1")
        [aborted] = [r for r in history if r.kind == "abort_requested"]
        assert aborted.data == {"reason": "customer gave up", "by": "carol", "effective": True}
        assert aborted.step == "Charge"
        [plan] = [r for r in history if r.kind == "compensation_started"]
        assert plan.data["failed_step"] == "Charge"
        assert plan.data["steps"] == ["Charge", "Reserve"]
        check_replay(history, definition, info)
        assert rt.observer_errors == 0


async def test_revert_compensates_a_completed_saga_in_reverse(store_url: str) -> None:
    definition, _, _, _ = order_saga(failures=0)
    async with saga.Runtime(store_url, sagas=[definition]) as rt:
        done = await (await rt.start(definition, Order(), saga_id="o-1")).result(timeout=10)
        assert done.status is Status.COMPLETED
        await rt.revert("o-1", reason="order cancelled after delivery", by="dave")
        info = await rt.handle("o-1").result(timeout=10)
        assert info.status is Status.COMPENSATED
        assert info.state.ran[-3:] == ["undo Ship", "undo Charge", "undo Reserve"]
        history = await rt.history("o-1")
        i = kinds(history).index("saga_completed")
        assert kinds(history)[i + 1 : i + 3] == ["saga_reverted", "compensation_started"]
        assert history[i + 1].data == {"reason": "order cancelled after delivery", "by": "dave"}
        assert history[i + 2].data["steps"] == ["Ship", "Charge", "Reserve"]
        assert kinds(history)[-1] == "saga_compensated"
        check_replay(history, definition, info)
        assert rt.observer_errors == 0


async def test_wrong_status_actions_are_refused_and_store_nothing(store_url: str) -> None:
    definition, _, _, _ = order_saga(failures=0)
    waiter = saga.Saga("waiter", state=Order, steps=[Waits()])
    async with saga.Runtime(store_url, sagas=[definition, waiter]) as rt:
        await (await rt.start(definition, Order(), saga_id="done")).result(timeout=10)
        await rt.start(waiter, Order(), saga_id="waits")
        await wait_until(rt, "waits", Status.WAITING)
        for saga_id in ("done", "waits"):
            before = await rt.history(saga_id)
            for action in (rt.retry, rt.skip):
                with pytest.raises(saga.InvalidTransition):
                    await action(saga_id, reason="no")
            if saga_id == "waits":
                with pytest.raises(saga.InvalidTransition):
                    await rt.revert(saga_id, reason="no")
            assert await rt.history(saga_id) == before
        with pytest.raises(saga.UnknownSaga):
            await rt.retry("nope", reason="no")
        # abort stays a no-op on a terminal saga, resume answers False when not FAILED
        before = await rt.history("done")
        await rt.abort("done", "too late")
        assert await rt.resume("done") is False
        assert await rt.history("done") == before
        # a revert of a compensated saga is refused too
        await rt.abort("waits", "stop")
        await wait_until(rt, "waits", Status.COMPENSATED)
        before = await rt.history("waits")
        with pytest.raises(saga.InvalidTransition):
            await rt.revert("waits", reason="again")
        assert await rt.history("waits") == before


class Waits(saga.Step):
    async def run(self, ctx: saga.StepContext[Order]) -> saga.Wait:
        return saga.wait_for("never")


async def send_request(url: str, saga_id: str, kind: str, reason: str) -> SendResult:
    """What another process (the command line) does: a request in the inbox."""
    client = open_store(url, access="client")
    await client.open()
    try:
        payload = encode_request(reason, "ops", 1 << 20)
        return await client.send(saga_id, f"{kind}-{uuid.uuid4().hex}", kind=kind, name=kind,
                                 key=None, payload=payload, sent_at=time.time())  # fmt: skip
    finally:
        await client.close()


async def test_suspended_stays_suspended_across_a_restart(durable_url: str) -> None:
    definition, _, charge, _ = order_saga()
    async with saga.Runtime(durable_url, sagas=[definition]) as rt:
        await suspend(rt, definition)
        before = await rt.history("o-1")
    definition, _, charge, _ = order_saga(failures=0)
    async with saga.Runtime(durable_url, sagas=[definition]) as rt:
        info = await rt.get("o-1")
        assert info.status is Status.SUSPENDED
        assert await rt.history("o-1") == before
        assert charge.calls == []
        await rt.retry("o-1", reason="fixed")
        assert (await rt.handle("o-1").result(timeout=10)).status is Status.COMPLETED


@pytest.mark.parametrize(
    ("kind", "end"),
    [
        (InboxKind.RETRY, Status.COMPLETED),
        (InboxKind.SKIP, Status.COMPLETED),
        (InboxKind.ABORT, Status.COMPENSATED),
    ],
)
async def test_a_request_left_while_no_runtime_ran_is_performed_at_start(
    durable_url: str, kind: str, end: Status
) -> None:
    definition, _, _, _ = order_saga()
    async with saga.Runtime(durable_url, sagas=[definition]) as rt:
        await suspend(rt, definition)
    assert await send_request(durable_url, "o-1", kind, "from outside") is not SendResult.REFUSED
    definition, _, charge, _ = order_saga(failures=0)
    async with saga.Runtime(durable_url, sagas=[definition]) as rt:
        info = await wait_until(rt, "o-1", end, timeout=10)
        history = await rt.history("o-1")
        check_replay(history, definition, info)
        operator = [r for r in history if r.data.get("by") == "ops"]
        assert len(operator) == 1
        assert operator[0].data["reason"] == "from outside"
        assert await rt.store.inbox("o-1") == []  # the request was taken
        if kind == InboxKind.RETRY:
            assert charge.calls == ["run1"]


async def test_a_request_from_another_process_reaches_a_live_runtime(durable_url: str) -> None:
    store_url = durable_url  # a file on SQLite: the requests come through a second instance
    definition, _, _, _ = order_saga(failures=0)
    async with saga.Runtime(store_url, sagas=[definition]) as rt:
        await (await rt.start(definition, Order(), saga_id="o-1")).result(timeout=10)
        assert await send_request(store_url, "o-1", InboxKind.RETRY, "x") is SendResult.REFUSED
        assert await send_request(store_url, "o-1", InboxKind.SKIP, "x") is SendResult.REFUSED
        await send_request(store_url, "o-1", InboxKind.REVERT, "undo it")
        info = await wait_until(rt, "o-1", Status.COMPENSATED, timeout=10)
        assert info.state.ran[-1] == "undo Reserve"
        assert await send_request(store_url, "o-1", InboxKind.REVERT, "x") is SendResult.REFUSED


async def test_requests_are_refused_in_a_wrong_status_by_the_store(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'saga.db'}"
    definition, _, _, _ = order_saga()
    async with saga.Runtime(url, sagas=[definition]) as rt:
        await suspend(rt, definition)
        assert await send_request(url, "o-1", InboxKind.REVERT, "x") is SendResult.REFUSED
        assert await send_request(url, "o-1", InboxKind.RESUME, "x") is SendResult.REFUSED
        await send_request(url, "o-1", InboxKind.RETRY, "from outside")
        assert (await rt.handle("o-1").result(timeout=10)).status is Status.COMPLETED


async def test_observers_follow_suspend_and_every_operator_action(store_url: str) -> None:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    import observers

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    changes: list[observers.StateChange] = []
    watching = [
        observers.TracingObserver(provider),
        observers.MetricsObserver(MeterProvider()),
        observers.LoggingObserver(),
        observers.StateChangeRecorder(changes.append),
    ]
    definition, _, charge, _ = order_saga(failures=4)
    async with saga.Runtime(store_url, sagas=[definition], observers=watching) as rt:
        await suspend(rt, definition)
        await rt.retry("o-1", reason="again")
        await wait_until(rt, "o-1", Status.SUSPENDED, timeout=10)
        assert (await rt.history("o-1"))[-1].kind == "saga_suspended"
        await rt.abort("o-1", "give up")
        await wait_until(rt, "o-1", Status.COMPENSATED, timeout=10)
        charge.failures = 2
        await rt.start(definition, Order(), saga_id="o-2")
        await wait_until(rt, "o-2", Status.SUSPENDED)
        await rt.skip("o-2", reason="done by hand")
        await wait_until(rt, "o-2", Status.COMPLETED, timeout=10)
        await rt.revert("o-2", reason="undo")
        await wait_until(rt, "o-2", Status.COMPENSATED, timeout=10)
        assert rt.observer_errors == 0
    moves = [(c.saga_id, c.from_status, c.to_status) for c in changes if c.kind != "step_completed"]
    assert ("o-1", Status.RUNNING, Status.SUSPENDED) in moves
    assert ("o-1", Status.SUSPENDED, Status.RUNNING) in moves  # the retry, then the abort
    assert ("o-2", Status.SUSPENDED, Status.RUNNING) in moves  # the skip
    assert ("o-2", Status.COMPLETED, Status.COMPENSATING) in moves  # the revert
    names = {span.name for span in exporter.get_finished_spans()}
    assert {"saga order suspended", "saga order retried", "saga order reverted"} <= names


async def test_an_action_committed_while_a_stale_actor_holds_the_saga_still_runs() -> None:
    """An event wakes a short-lived actor for a SUSPENDED saga; it folds the log (nothing
    to do) just before an operator's retry commits. The retry's own actor cannot be
    registered beside it: once the stale one stops, the saga must still go on."""
    from saga._actor import Actor
    from saga._engine import fold_log

    definition, _, charge, _ = order_saga(failures=2)
    async with saga.Runtime("sqlite:///:memory:", sagas=[definition]) as rt:
        await suspend(rt, definition)
        engine = rt._engine
        stale = Actor(engine, "o-1", fold_log("o-1", await engine.store.log("o-1")))
        engine._actors["o-1"] = stale  # registered, its fold taken before the retry
        await rt.retry("o-1", reason="back", by="ops")
        assert engine._actors["o-1"] is stale  # the retry's actor was not registered
        engine.running().start_soon(stale.run)  # it sees SUSPENDED and stops
        info = await rt.handle("o-1").result(timeout=10)
        assert info.status is Status.COMPLETED
        assert charge.calls == ["run1", "run2", "run1"]
