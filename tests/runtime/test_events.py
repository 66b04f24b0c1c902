"""SPEC 3.2: events, the durable inbox, key matching, dedupe and dead letters."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest
from _behaviour import (
    Gate,
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

pytestmark = pytest.mark.anyio


class Collect(saga.Step):
    """Waits for ``event`` (with ``key``) until it has received ``count`` events."""

    event = "x"
    key: str | None = None
    count = 1
    got: list[saga.Event]

    def __init__(self) -> None:
        self.got = []

    async def run(self, ctx: saga.StepContext[Trip]) -> saga.Wait:
        return saga.wait_for(self.event, key=self.key)

    async def on_event(self, ctx: saga.StepContext[Trip], event: saga.Event) -> saga.Wait | None:
        self.got.append(event)
        ctx.state.log.append(f"{self.name}:{event.payload}")
        if len(self.got) < self.count:
            return saga.wait_for(self.event, key=self.key)
        return None


async def test_wait_for_and_send_deliver_the_event(store_url: str) -> None:
    class Pay(Collect):
        event, key = "paid", "t-1"

    pay = Pay()
    definition = saga.Saga("pay", state=Trip, steps=[pay])
    async with saga.Runtime(store_url, sagas=[definition]) as runtime:
        handle = await runtime.start(definition, Trip(), saga_id="s")
        waiting = await wait_until(runtime, "s", saga.Status.WAITING)
        event_id = await runtime.send("s", "paid", {"ok": True}, key="t-1", event_id="e-1")
        info = await handle.result(timeout=5)
        records = await runtime.history("s")
        assert await runtime.dead_letters("s") == []

    assert event_id == "e-1"
    assert waiting.step == "Pay"
    assert pay.got == [saga.Event(name="paid", payload={"ok": True}, key="t-1", event_id="e-1")]
    assert info.status is saga.Status.COMPLETED
    assert info.state == Trip(log=["Pay:{'ok': True}"])
    assert trail(records) == [
        ("saga_started", None),
        ("step_started:run", "Pay"),
        ("step_waiting", "Pay"),
        ("event_delivered", "Pay"),
        ("step_started:on_event", "Pay"),
        ("step_completed", "Pay"),
        ("saga_completed", None),
    ]
    assert records[2].data == {
        "compensating": False,
        "event": "paid",
        "key": "t-1",
        "timeout": None,
        "deadline": None,
        "state": {"log": [], "n": 0},
    }
    delivered = {"event_id": "e-1", "name": "paid", "key": "t-1", "payload": {"ok": True}}
    assert records[3].data == {"compensating": False, "event": delivered}


async def test_a_wait_with_a_key_only_accepts_that_key(store_url: str) -> None:
    class Keyed(Collect):
        key = "a"

    step = Keyed()
    definition = saga.Saga("keyed", state=Trip, steps=[step])
    async with saga.Runtime(store_url, sagas=[definition]) as runtime:
        handle = await runtime.start(definition, Trip(), saga_id="s")
        await wait_until(runtime, "s", saga.Status.WAITING)
        await runtime.send("s", "x", 1, key="b")
        await runtime.send("s", "x", 2)  # no key
        await runtime.send("s", "y", 3, key="a")  # another name
        await settle()
        assert (await runtime.get("s")).status is saga.Status.WAITING
        assert step.got == []
        await runtime.send("s", "x", 4, key="a")
        info = await handle.result(timeout=5)
        dead = await runtime.dead_letters("s")

    assert [e.payload for e in step.got] == [4]
    assert info.state.log == ["Keyed:4"]
    assert sorted((d.payload, d.name, d.key) for d in dead) == [
        (1, "x", "b"),
        (2, "x", None),
        (3, "y", "a"),
    ]


async def test_a_wait_without_a_key_accepts_any_key(store_url: str) -> None:
    class Any3(Collect):
        count = 3

    step = Any3()
    definition = saga.Saga("any", state=Trip, steps=[step])
    async with saga.Runtime(store_url, sagas=[definition]) as runtime:
        handle = await runtime.start(definition, Trip(), saga_id="s")
        await runtime.send("s", "x", 1, key="a")
        await runtime.send("s", "x", 2)
        await runtime.send("s", "x", 3, key="zzz")
        await handle.result(timeout=5)
    assert [(e.payload, e.key) for e in step.got] == [(1, "a"), (2, None), (3, "zzz")]


async def test_early_events_are_buffered_and_delivered_oldest_first(store_url: str) -> None:
    class Later(Collect):
        count = 3

    later = Later()
    definition = saga.Saga("early", state=Trip, steps=[Gate(), later])
    async with saga.Runtime(store_url, sagas=[definition]) as runtime:
        handle = await runtime.start(definition, Trip(), saga_id="s")
        await wait_until(runtime, "s", saga.Status.WAITING)
        for n in (1, 2, 3):
            await runtime.send("s", "x", n, event_id=f"x-{n}")
        await settle()
        assert (await runtime.get("s")).step == "Gate"
        await runtime.send("s", "go")
        info = await handle.result(timeout=5)
        records = await runtime.history("s")

    assert [e.payload for e in later.got] == [1, 2, 3]
    assert [e.event_id for e in later.got] == ["x-1", "x-2", "x-3"]
    assert info.state.log == ["Later:1", "Later:2", "Later:3"]
    # every wait_for is recorded, even when a matching event was already in the inbox
    tail = records[[r.step for r in records].index("Later") :]
    assert kinds(tail) == [
        "step_started",
        "step_waiting",
        "event_delivered",
        "step_started",
        "step_waiting",
        "event_delivered",
        "step_started",
        "step_waiting",
        "event_delivered",
        "step_started",
        "step_completed",
        "saga_completed",
    ]
    assert [r.data["event"]["payload"] for r in of_kind(tail, "event_delivered")] == [1, 2, 3]


async def test_events_are_never_handed_to_the_wrong_step(store_url: str) -> None:
    class First(Collect):
        key = "first"

    class Second(Collect):
        key = "second"

    class Other(Collect):
        event = "y"

    first, second, other = First(), Second(), Other()
    definition = saga.Saga("route", state=Trip, steps=[first, second, other])
    async with saga.Runtime(store_url, sagas=[definition]) as runtime:
        handle = await runtime.start(definition, Trip(), saga_id="s")
        await wait_until(runtime, "s", saga.Status.WAITING)
        await runtime.send("s", "x", "for second", key="second")
        await runtime.send("s", "y", "for other")
        await runtime.send("s", "x", "for first", key="first")
        info = await handle.result(timeout=5)
        records = await runtime.history("s")

    assert [e.payload for e in first.got] == ["for first"]
    assert [e.payload for e in second.got] == ["for second"]
    assert [e.payload for e in other.got] == ["for other"]
    assert info.state.log == ["First:for first", "Second:for second", "Other:for other"]
    delivered = [(r.step, r.data["event"]["payload"]) for r in of_kind(records, "event_delivered")]
    assert delivered == [("First", "for first"), ("Second", "for second"), ("Other", "for other")]


async def test_on_event_may_return_another_wait(store_url: str) -> None:
    seen: list[tuple[str, Any]] = []

    class TwoPhase(saga.Step):
        async def run(self, ctx: saga.StepContext[Trip]) -> saga.Wait:
            return saga.wait_for("authorized")

        async def on_event(
            self, ctx: saga.StepContext[Trip], event: saga.Event
        ) -> saga.Wait | None:
            seen.append((event.name, event.payload))
            if event.name == "authorized":
                return saga.wait_for("captured", key=event.payload)
            return None

    definition = saga.Saga("phases", state=Trip, steps=[TwoPhase()])
    async with saga.Runtime(store_url, sagas=[definition]) as runtime:
        handle = await runtime.start(definition, Trip(), saga_id="s")
        await runtime.send("s", "captured", "wrong key", key="nope")
        await runtime.send("s", "authorized", "k")
        await wait_records(runtime, "s", "step_waiting", 2)
        assert (await runtime.get("s")).status is saga.Status.WAITING
        await runtime.send("s", "captured", "right key", key="k")
        await handle.result(timeout=5)
        records = await runtime.history("s")

    assert seen == [("authorized", "k"), ("captured", "right key")]
    waits = of_kind(records, "step_waiting")
    assert [(w.data["event"], w.data["key"]) for w in waits] == [
        ("authorized", None),
        ("captured", "k"),
    ]
    assert [r.data["handler"] for r in of_kind(records, "step_started")] == [
        "run",
        "on_event",
        "on_event",
    ]


async def test_same_event_id_is_stored_once(store_url: str) -> None:
    class Two(Collect):
        count = 2

    step = Two()
    definition = saga.Saga("dedupe", state=Trip, steps=[Gate(), step])
    async with saga.Runtime(store_url, sagas=[definition]) as runtime:
        handle = await runtime.start(definition, Trip(), saga_id="s")
        await wait_until(runtime, "s", saga.Status.WAITING)
        assert await runtime.send("s", "x", 1, event_id="e-1") == "e-1"
        assert await runtime.send("s", "x", 999, event_id="e-1") == "e-1"  # a no-op
        await runtime.send("s", "go")
        await runtime.send("s", "x", 2, event_id="e-2")
        info = await handle.result(timeout=5)
        records = await runtime.history("s")
        # even to a finished saga, a known event_id is a no-op rather than SagaClosed
        assert await runtime.send("s", "x", 3, event_id="e-2") == "e-2"
        with pytest.raises(saga.SagaClosed):
            await runtime.send("s", "x", 3, event_id="e-3")
        assert await runtime.history("s") == records
        dead = await runtime.dead_letters("s")

    assert [(e.event_id, e.payload) for e in step.got] == [("e-1", 1), ("e-2", 2)]
    assert info.state.log == ["Two:1", "Two:2"]
    assert dead == []


async def test_send_to_unknown_or_terminal_saga(store_url: str) -> None:
    calls: list[str] = []
    definition = saga.Saga("short", state=Trip, steps=[simple_step("a", calls)])
    async with saga.Runtime(store_url, sagas=[definition]) as runtime:
        with pytest.raises(saga.UnknownSaga):
            await runtime.send("nope", "x")
        await (await runtime.start(definition, Trip(), saga_id="s")).result(timeout=5)
        before = await runtime.history("s")
        with pytest.raises(saga.SagaClosed):
            await runtime.send("s", "x", {"late": True})
        assert await runtime.history("s") == before
        assert await runtime.dead_letters("s") == []
        with pytest.raises(saga.UnknownSaga):
            await runtime.history("nope")


@pytest.mark.parametrize("fail", [False, True])
async def test_unconsumed_events_become_dead_letters_when_the_saga_ends(
    store_url: str, fail: bool
) -> None:
    calls: list[str] = []
    definition = saga.Saga("dl", state=Trip, steps=[Gate(), simple_step("b", calls, fail=fail)])
    async with saga.Runtime(store_url, sagas=[definition]) as runtime:
        handle = await runtime.start(definition, Trip(), saga_id="s")
        other = await runtime.start(definition, Trip(), saga_id="other")
        await wait_until(runtime, "s", saga.Status.WAITING)
        await runtime.send("s", "stray", [1, "two"], key="k", event_id="d-1")
        await runtime.send("s", "go", "consumed", event_id="go-1")
        await runtime.send("s", "go", "second go", event_id="go-2")
        info = await handle.result(timeout=5)
        dead = await runtime.dead_letters("s")
        everywhere = await runtime.dead_letters()
        await runtime.send("other", "go")
        await other.result(timeout=5)

    assert info.status is (saga.Status.COMPENSATED if fail else saga.Status.COMPLETED)
    assert [
        (d.event_id, d.name, d.key, d.payload) for d in sorted(dead, key=lambda d: d.event_id)
    ] == [
        ("d-1", "stray", "k", [1, "two"]),
        ("go-2", "go", None, "second go"),
    ]
    for letter in dead:
        assert isinstance(letter, saga.DeadLetter)
        assert letter.saga_id == "s"
        assert ("compensated" if fail else "completed") in letter.reason
    assert sorted(d.event_id for d in everywhere) == ["d-1", "go-2"]


class Money(msgspec.Struct):
    amount: int
    currency: str


async def test_payloads_arrive_as_plain_values(store_url: str) -> None:
    class Five(Collect):
        count = 6

    step = Five()
    definition = saga.Saga("plain", state=Trip, steps=[step])
    async with saga.Runtime(store_url, sagas=[definition]) as runtime:
        handle = await runtime.start(definition, Trip(), saga_id="s")
        await runtime.send("s", "x", Money(amount=5, currency="EUR"))
        await runtime.send("s", "x", (1, 2.5, True))
        await runtime.send("s", "x", b"\x00raw")
        await runtime.send("s", "x")
        await runtime.send("s", "x", {"nested": [{"a": None}]})
        await runtime.send("s", "x", "text")
        await handle.result(timeout=5)

    payloads = [e.payload for e in step.got]
    assert payloads == [
        {"amount": 5, "currency": "EUR"},
        [1, 2.5, True],
        b"\x00raw",
        None,
        {"nested": [{"a": None}]},
        "text",
    ]
    assert [type(p) for p in payloads] == [dict, list, bytes, type(None), dict, str]


async def test_recovery_hands_buffered_inbox_entries_to_the_actors(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'trips.db'}"
    hold = True

    class Slow(saga.Step):
        async def run(self, ctx: saga.StepContext[Trip]) -> None:
            ctx.state.log.append("slow")
            if hold:
                await anyio.sleep_forever()  # cancelled at shutdown: runs again after it

    class Await(saga.Step):
        async def run(self, ctx: saga.StepContext[Trip]) -> saga.Wait:
            return saga.wait_for("go")

        async def on_event(self, ctx: saga.StepContext[Trip], event: saga.Event) -> None:
            ctx.state.log.append(f"got {event.payload}")

    definition = saga.Saga("buffered", state=Trip, steps=[Slow(), Await()])
    async with saga.Runtime(url, sagas=[definition], shutdown_grace=0.05) as runtime:
        for saga_id in ("mail", "abort", "quiet"):
            await runtime.start(definition, Trip(), saga_id=saga_id)
        await runtime.send("mail", "go", 1, event_id="ev-1")  # buffered: Slow still runs
        await runtime.send("mail", "go", 2, event_id="ev-2")
        await runtime.abort("abort", "stop it")  # taken when Slow returns

    hold = False
    inbox_reads: list[str] = []
    runtime = saga.Runtime(url, sagas=[definition])
    read = runtime.store.inbox

    async def counted(saga_id: str) -> list[Any]:
        inbox_reads.append(saga_id)
        return await read(saga_id)

    runtime.store.inbox = counted  # type: ignore[method-assign]
    async with runtime:
        mail = await runtime.handle("mail").result(timeout=5)
        aborted = await runtime.handle("abort").result(timeout=5)
        quiet = await wait_until(runtime, "quiet", saga.Status.WAITING)
        history = await runtime.history("mail")

    assert inbox_reads == []  # recovery read every pending entry in one go
    assert mail.state.log == ["slow", "got 1"]  # the interrupted run saved nothing
    assert [r.data["event"]["event_id"] for r in of_kind(history, "event_delivered")] == ["ev-1"]
    assert aborted.status is saga.Status.COMPENSATED
    assert aborted.error is not None
    assert aborted.error.message == "stop it"
    assert quiet.state.log == ["slow"]
