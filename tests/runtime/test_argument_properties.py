"""Every argument that reaches the store is stored and read back as given, or refused with
a plain `ValueError` / `TypeError` before anything is stored (issue 11, items 3 and 5).

Hypothesis properties run on SQLite and on PostgreSQL: odd text (lone surrogates, NUL,
control characters, emoji, right-to-left text, noncharacters, names around the length
limit) in saga ids, event names, keys, event ids, the ``list`` name filter, an abort's or a
resume's reason and ``by``, definition and step names, payloads and states (in values and in
dict keys). Each property test opens ONE runtime and runs every example against it, through
an anyio blocking portal (the runtime's event loop runs beside the test). Then plain tests
of every numeric bound, and of the command line's numeric options.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import sys
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest
from _wait import wait_until
from anyio.from_thread import BlockingPortal, start_blocking_portal
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import saga
from saga._cli import main
from saga._records import encode_payload
from saga._store import InboxKind, open_store
from saga._store._postgres import PostgresStore
from saga._validate import (
    MAX_ATTEMPTS,
    MAX_BATCH,
    MAX_LIMIT,
    MAX_PAYLOAD_BYTES,
    MAX_SECONDS,
    MAX_VERSION,
)

# Deterministic for CI: the same examples on every run, no example database.
PROPERTY = settings(
    max_examples=30,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
FEW = settings(PROPERTY, max_examples=12)
MANY = settings(PROPERTY, max_examples=150)
WAIT = 10.0  # seconds a saga gets to reach the status an example expects

# -- strategies -----------------------------------------------------------------------------

PIECES = [
    "\ud800", "\udfff", "\udc80",  # lone surrogates: not encodable as UTF-8
    "\x00", "\x01", "\x1f", "\x7f", "\n", "\t",  # NUL and control characters
    "\x85", "\u2028", "\u200b", "\ufeff", "\ufffe", "\uffff", "\U0010ffff",  # odd but valid
    "😀", "👩\u200d👩\u200d👧", "\u202e", "\u200f", "שלום", "مرحبا", "e\u0301", "中文",
    "\U0001d518",
    " ", "'", '"', "\\", "%", "_", "--", "/*", ";", "a", "Z", "0",
]  # fmt: skip

odd_text = st.one_of(
    st.text(st.characters(exclude_categories=()), max_size=12),  # surrogates included
    st.lists(st.sampled_from(PIECES), min_size=1, max_size=8).map("".join),
    st.integers(250, 260).map(lambda n: "é" * n),  # around the 255-character limit
    st.sampled_from(["", "x" * 255, "x" * 256, "😀" * 255, "a\x00", "\ud800"]),
)
wrong_type = st.sampled_from([5, 1.5, b"bytes", ["a"], True, object()])
text_or_wrong = st.one_of(odd_text, wrong_type)

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**64 - 1),
    st.sampled_from([2**64, -(2**63) - 1, 10**30]),  # outside msgpack's range
    st.floats(),  # NaN and infinities included
    odd_text,
    st.binary(max_size=16),
)
payloads = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(odd_text, inner, max_size=4),
    max_leaves=12,
)


def same(a: Any, b: Any) -> bool:
    """Equal as stored: NaN equals itself, a tuple its list."""
    return msgspec.msgpack.encode(a) == msgspec.msgpack.encode(b)


def refused(error: BaseException) -> None:
    """A refusal is a plain ValueError or TypeError: not a UnicodeEncodeError from a driver,
    not a StoreError, not PayloadTooLarge."""
    assert type(error) in (ValueError, TypeError), repr(error)


# -- the sagas --------------------------------------------------------------------------------


class Holder(msgspec.Struct):
    text: str = ""
    data: Any = None


class Hold(saga.Step):
    async def run(self, ctx: saga.StepContext[Holder]) -> saga.Wait:
        return saga.wait_for("never-sent")


class Expect(msgspec.Struct):
    event: str
    key: str | None = None
    got: list[Any] = []


class Receive(saga.Step):
    async def run(self, ctx: saga.StepContext[Expect]) -> saga.Wait:
        return saga.wait_for(ctx.state.event, key=ctx.state.key)

    async def on_event(self, ctx: saga.StepContext[Expect], event: saga.Event) -> None:
        ctx.state.got = [event.name, event.key, event.event_id, event.payload]


class Done(saga.Step):
    compensation_retry = saga.RetryPolicy(max_attempts=1)

    async def run(self, ctx: saga.StepContext[Holder]) -> None:
        return None

    async def compensate(self, ctx: saga.StepContext[Holder]) -> None:
        raise RuntimeError("the refund service is down")


class Broken(saga.Step):
    async def run(self, ctx: saga.StepContext[Holder]) -> None:
        raise RuntimeError("declined")


holder = saga.Saga("holder", state=Holder, steps=[Hold()])
receiver = saga.Saga("receiver", state=Expect, steps=[Receive()])
fragile = saga.Saga("fragile", state=Holder, steps=[Done(), Broken()])
DEFINITIONS: list[saga.Saga[Any]] = [holder, receiver, fragile]
HOLD = "hold"  # a saga that waits forever: the target of refused sends and aborts

# -- running one runtime across examples ----------------------------------------------------


@pytest.fixture(autouse=True)
def _no_failed_batches(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Nothing bad reached a write batch: the runtime logged no warning (a failed batch of
    several writes is one; a saga stopped on a store error is an error)."""
    with caplog.at_level(logging.WARNING):
        yield
    logged = [
        r for r in caplog.records if r.levelno >= logging.WARNING and r.name.startswith("saga")
    ]
    assert logged == [], [r.getMessage() for r in logged]


@contextlib.contextmanager
def running(
    url: str, sagas: list[saga.Saga[Any]] = DEFINITIONS
) -> Iterator[tuple[BlockingPortal, saga.Runtime]]:
    """One runtime, open on its own event loop, for every example of a test."""
    with start_blocking_portal("asyncio") as portal:
        runtime = saga.Runtime(url, sagas=sagas)
        with portal.wrap_async_context_manager(runtime):
            portal.call(_start_hold, runtime)
            yield portal, runtime


async def _start_hold(rt: saga.Runtime) -> None:
    await rt.start(holder, Holder(), saga_id=HOLD)
    await wait_until(rt, HOLD, saga.Status.WAITING, timeout=WAIT)


async def snapshot(rt: saga.Runtime, *saga_ids: str) -> Any:
    """What the store holds, in counts: sagas by name and status, pending inbox entries of
    every kind, dead letters, and the log length of each of ``saga_ids``."""
    store = rt.store
    counts = sorted((await store.stats()).counts)
    pending = [
        sorted((i.saga_id, i.event_id) for i in await store.pending_inbox(kind))
        for kind in (InboxKind.EVENT, InboxKind.ABORT, InboxKind.RESUME)
    ]
    dead = len(await store.dead_letters(None, MAX_LIMIT))
    logs = [len(await store.log(saga_id)) for saga_id in saga_ids]
    return counts, pending, dead, logs


async def refuses(rt: saga.Runtime, call: Awaitable[Any], *saga_ids: str) -> bool:
    """Await ``call``: ``True`` if it was refused with nothing stored, ``False`` if it did."""
    before = await snapshot(rt, HOLD, *saga_ids)
    try:
        await call
    except (ValueError, TypeError) as error:
        refused(error)
        assert await snapshot(rt, HOLD, *saga_ids) == before
        return True
    return False


def ids(prefix: str) -> Callable[[], str]:
    numbers = itertools.count()
    return lambda: f"{prefix}-{next(numbers)}"


def outcomes_of(
    store_url: str,
    example: Callable[..., Awaitable[str]],
    how: settings = PROPERTY,
    **strategies: st.SearchStrategy[Any],
) -> Counter[str]:
    """Run ``example(rt, **drawn)`` on one runtime for every example hypothesis draws from
    ``strategies``; count what each answered ("stored", "refused", ...)."""
    outcomes: Counter[str] = Counter()
    with running(store_url) as (portal, rt):

        @how
        @given(**strategies)
        def check(**drawn: Any) -> None:
            outcomes[portal.call(lambda: example(rt, **drawn))] += 1

        check()
    return outcomes


# -- saga ids ---------------------------------------------------------------------------------


async def _saga_id_example(rt: saga.Runtime, saga_id: Any) -> str:
    if await refuses(rt, rt.start(holder, Holder(), saga_id=saga_id)):
        # Every call that takes a saga id refuses it the same way, storing nothing.
        calls: list[Callable[[], Awaitable[Any]]] = [
            lambda: rt.get(saga_id), lambda: rt.history(saga_id), lambda: rt.export(saga_id),
            lambda: rt.send(saga_id, "e", 1), lambda: rt.abort(saga_id, "why"),
            lambda: rt.resume(saga_id), lambda: rt.dead_letters(saga_id),
        ]  # fmt: skip
        for call in calls:
            assert await refuses(rt, call())
        with pytest.raises((ValueError, TypeError)) as raised:
            rt.handle(saga_id)
        refused(raised.value)
        return "refused"
    info = await wait_until(rt, saga_id, saga.Status.WAITING, timeout=WAIT)
    assert info.saga_id == saga_id
    assert rt.handle(saga_id).saga_id == saga_id
    history = await rt.history(saga_id)
    assert history[0].data["saga_id"] == saga_id
    assert saga_id in [i.saga_id for i in await rt.list(name="holder", limit=MAX_LIMIT)]
    assert (await rt.export(saga_id)).saga_id == saga_id
    assert await rt.dead_letters(saga_id) == []
    return "stored"


def test_saga_ids_round_trip_or_are_refused(store_url: str) -> None:
    outcomes = outcomes_of(store_url, _saga_id_example, saga_id=text_or_wrong)
    assert set(outcomes) == {"stored", "refused"}, outcomes


# -- events: name, key, event id, payload ---------------------------------------------------


async def _event_example(
    rt: saga.Runtime, new_id: Callable[[], str], name: Any, key: Any, event_id: Any, payload: Any
) -> str:
    try:
        saga.wait_for(name, key=key)  # the same checks as send's
    except (ValueError, TypeError) as error:
        refused(error)
        send = rt.send(HOLD, name, payload, key=key, event_id=event_id)
        assert await refuses(rt, send), (name, key)
        return "refused: name or key"
    saga_id = new_id()
    await rt.start(receiver, Expect(event=name, key=key), saga_id=saga_id)
    await wait_until(rt, saga_id, saga.Status.WAITING, timeout=WAIT)
    sent = rt.send(saga_id, name, payload, key=key, event_id=event_id)
    if await refuses(rt, sent, saga_id):
        assert (await rt.get(saga_id)).status is saga.Status.WAITING
        return "refused: event_id or payload"
    info = await wait_until(rt, saga_id, saga.Status.COMPLETED, timeout=WAIT)
    [delivered] = [r for r in await rt.history(saga_id) if r.kind == "event_delivered"]
    event = delivered.data["event"]
    assert (event["name"], event["key"]) == (name, key)
    if event_id is not None:
        assert event["event_id"] == event_id
    assert same(event["payload"], payload)
    assert same(info.state.got, [name, key, event["event_id"], payload])
    return "stored"


def test_events_round_trip_or_are_refused(store_url: str) -> None:
    new_id = ids("event")
    outcomes = outcomes_of(
        store_url,
        lambda rt, **drawn: _event_example(rt, new_id, **drawn),
        name=st.sampled_from(["paid", "order.settled"]) | text_or_wrong,  # both outcomes
        key=st.none() | text_or_wrong,
        event_id=st.none() | text_or_wrong,
        payload=payloads,
    )
    assert set(outcomes) == {"stored", "refused: name or key", "refused: event_id or payload"}, (
        outcomes
    )  # both ways were taken


def test_payloads_round_trip_or_are_refused(store_url: str) -> None:
    """Payloads alone, with a plain name: many odd values and dict keys."""
    new_id = ids("payload")
    outcomes = outcomes_of(
        store_url,
        lambda rt, payload: _event_example(rt, new_id, "paid", "k", None, payload),
        payload=payloads,
    )
    assert set(outcomes) == {"stored", "refused: event_id or payload"}, (
        outcomes
    )  # both ways were taken


# -- states -----------------------------------------------------------------------------------


async def _state_example(rt: saga.Runtime, saga_id: str, text: str, data: Any) -> str:
    state = Holder(text=text, data=data)
    if await refuses(rt, rt.start(holder, state, saga_id=saga_id), saga_id):
        with pytest.raises(saga.UnknownSaga):
            await rt.get(saga_id)
        return "refused"
    info = await wait_until(rt, saga_id, saga.Status.WAITING, timeout=WAIT)
    assert same(info.state, state)
    [listed] = [i for i in await rt.list(name="holder", limit=MAX_LIMIT) if i.saga_id == saga_id]
    assert same(listed.state, state)
    return "stored"


def test_states_round_trip_or_are_refused(store_url: str) -> None:
    new_id = ids("state")
    outcomes = outcomes_of(
        store_url,
        lambda rt, **drawn: _state_example(rt, new_id(), **drawn),
        text=odd_text,
        data=payloads,
    )
    assert set(outcomes) == {"stored", "refused"}, outcomes


# -- the list filter --------------------------------------------------------------------------


async def _list_example(rt: saga.Runtime, name: Any) -> str:
    try:
        found = await rt.list(name=name)
    except (ValueError, TypeError) as error:
        refused(error)
        return "refused"
    assert all(info.name == name for info in found)
    assert [i.saga_id for i in found] == ([HOLD] if name == "holder" else [])
    return "found" if found else "none"


def test_list_name_filter_finds_or_is_refused(store_url: str) -> None:
    outcomes = outcomes_of(
        store_url, _list_example, MANY, name=st.one_of(text_or_wrong, st.just("holder"))
    )
    assert set(outcomes) == {"found", "none", "refused"}, outcomes


# -- operator requests: reason and by -------------------------------------------------------


async def _abort_example(rt: saga.Runtime, saga_id: str, reason: Any, by: Any) -> str:
    await rt.start(holder, Holder(), saga_id=saga_id)
    await wait_until(rt, saga_id, saga.Status.WAITING, timeout=WAIT)
    if await refuses(rt, rt.abort(saga_id, reason, by=by), saga_id):
        assert (await rt.get(saga_id)).status is saga.Status.WAITING
        return "refused"
    await wait_until(rt, saga_id, saga.Status.COMPENSATED, timeout=WAIT)
    [asked] = [r for r in await rt.history(saga_id) if r.kind == "abort_requested"]
    assert (asked.data["reason"], asked.data["by"]) == (reason, by)
    return "stored"


def test_abort_reason_and_by_round_trip_or_are_refused(store_url: str) -> None:
    new_id = ids("abort")
    outcomes = outcomes_of(
        store_url,
        lambda rt, **drawn: _abort_example(rt, new_id(), **drawn),
        reason=text_or_wrong,
        by=text_or_wrong,
    )
    assert set(outcomes) == {"stored", "refused"}, outcomes


async def _resume_example(rt: saga.Runtime, saga_id: str, reason: Any, by: Any) -> str:
    await rt.start(fragile, Holder(), saga_id=saga_id)
    await wait_until(rt, saga_id, saga.Status.FAILED, timeout=WAIT)
    if await refuses(rt, rt.resume(saga_id, reason, by=by), saga_id):
        assert (await rt.get(saga_id)).status is saga.Status.FAILED
        return "refused"
    with anyio.fail_after(WAIT):
        while True:
            history = await rt.history(saga_id)
            if history[-1].kind == "saga_failed" and history[-2].kind != "saga_failed":
                resumed = [r for r in history if r.kind == "saga_resumed"]
                if resumed:
                    break
            await anyio.sleep(0.005)
    [record] = resumed
    assert (record.data["reason"], record.data["by"]) == (reason, by)
    return "stored"


def test_resume_reason_and_by_round_trip_or_are_refused(store_url: str) -> None:
    new_id = ids("resume")
    outcomes = outcomes_of(
        store_url,
        lambda rt, **drawn: _resume_example(rt, new_id(), **drawn),
        FEW,
        reason=text_or_wrong,
        by=text_or_wrong,
    )
    assert set(outcomes) == {"stored", "refused"}, outcomes


# -- definition and step names --------------------------------------------------------------


class Finish(saga.Step):
    async def run(self, ctx: saga.StepContext[Holder]) -> None:
        return None


def _step(name: Any, base: type[saga.Step] = Hold) -> saga.Step:
    step: saga.Step = type("Named", (base,), {"name": name})()
    return step


async def _definitions_example(url: str, named: list[tuple[Any, Any]], run: int) -> tuple[int, int]:
    """Build the definitions (or see them refused), run each: ``(accepted, given)``."""
    definitions: list[saga.Saga[Any]] = []
    for name, step in named:
        try:
            steps = [_step(step, Finish)]  # ends at once: the next runtime has no work left
            definition = saga.Saga(name, state=Holder, steps=steps, version=run + 1)
        except (ValueError, TypeError) as error:
            refused(error)
            continue
        definitions.append(definition)
    async with saga.Runtime(url, sagas=definitions) as rt:
        for n, definition in enumerate(definitions):
            saga_id = f"def-{run}-{n}"
            handle = await rt.start(definition, Holder(), saga_id=saga_id)
            info = await handle.result(timeout=WAIT)
            assert (info.status, info.name) == (saga.Status.COMPLETED, definition.name)
            assert saga_id in [i.saga_id for i in await rt.list(name=definition.name)]
            history = await rt.history(saga_id)
            first = history[0].data
            assert (first["name"], first["steps"]) == (definition.name, [*definition.step_names])
            assert history[1].step == definition.step_names[0]
            # By name, too.
            handle = await rt.start(definition.name, Holder())
            assert (await handle.result(timeout=WAIT)).name == definition.name
    return len(definitions), len(named)


def test_definition_and_step_names_round_trip_or_are_refused(store_url: str) -> None:
    """Definitions are given when a runtime is built: one runtime per example here, each
    with up to eight definitions, on the same store."""
    runs = itertools.count()
    outcomes: Counter[str] = Counter()
    with start_blocking_portal("asyncio") as portal:

        @FEW
        @given(
            named=st.lists(
                st.tuples(text_or_wrong, text_or_wrong),
                min_size=1,
                max_size=8,
                unique_by=lambda pair: repr(pair[0]),
            )
        )
        def check(named: list[tuple[Any, Any]]) -> None:
            accepted, given_ = portal.call(_definitions_example, store_url, named, next(runs))
            outcomes.update(stored=accepted, refused=given_ - accepted)

        check()
    assert outcomes["stored"] > 0, outcomes
    assert outcomes["refused"] > 0, outcomes


# -- bounds of counts and seconds -----------------------------------------------------------

MEMORY = "sqlite:///:memory:"

BAD_LIMITS: list[tuple[Any, type[Exception]]] = [
    (0, ValueError), (-1, ValueError), (MAX_LIMIT + 1, ValueError), (10**20, ValueError),
    (10**400, ValueError), (True, TypeError), (1.5, TypeError), ("10", TypeError),
    (None, TypeError), (math.nan, TypeError),
]  # fmt: skip


@pytest.mark.parametrize(("limit", "error"), BAD_LIMITS)
def test_list_and_dead_letter_limits(limit: Any, error: type[Exception]) -> None:
    async def check() -> None:
        async with saga.Runtime(MEMORY, sagas=DEFINITIONS) as rt:
            with pytest.raises(error, match="limit") as info:
                await rt.list(limit=limit)
            refused(info.value)
            with pytest.raises(error, match="limit") as info:
                await rt.dead_letters(limit=limit)
            refused(info.value)
            with pytest.raises(error, match="limit"):
                await rt.dead_letters("x", limit=limit)
            assert await rt.list(limit=MAX_LIMIT) == []
            assert await rt.dead_letters(limit=MAX_LIMIT) == []

    anyio.run(check)


@pytest.mark.parametrize(
    "timeout",
    [1e300, MAX_SECONDS + 1, 10**400, sys.float_info.max, timedelta.max, timedelta(days=36526)],
)
def test_wait_for_timeout_at_most_100_years(timeout: Any) -> None:
    with pytest.raises(ValueError, match="timeout") as info:
        saga.wait_for("e", timeout=timeout)
    refused(info.value)


def test_wait_for_longest_timeout() -> None:
    assert saga.wait_for("e", timeout=MAX_SECONDS).timeout == MAX_SECONDS
    assert saga.wait_for("e", timeout=timedelta(days=36525)).timeout == MAX_SECONDS
    assert saga.wait_for("e", timeout=int(MAX_SECONDS)).timeout == MAX_SECONDS


@pytest.mark.parametrize("key", ["", "x" * 256, "a\nb", "nul\x00", "\ud800"])
def test_wait_for_refuses_a_key_send_would_refuse(key: str) -> None:
    with pytest.raises(ValueError, match="key"):
        saga.wait_for("e", key=key)


@pytest.mark.parametrize(
    ("timeout", "error"),
    [(math.nan, ValueError), (-1, ValueError), (-math.inf, ValueError), (True, TypeError),
     ("1", TypeError), (timedelta(seconds=1), TypeError)],
)  # fmt: skip
def test_handle_result_timeout(timeout: Any, error: type[Exception]) -> None:
    async def check() -> None:
        async with saga.Runtime(MEMORY, sagas=DEFINITIONS) as rt:
            handle = await rt.start(fragile, Holder(), saga_id="f")
            with pytest.raises(error, match="timeout") as info:
                await handle.result(timeout=timeout)
            refused(info.value)
            for fine in (None, math.inf, 10**400, 1e300, 5):
                assert (await handle.result(timeout=fine)).status is saga.Status.FAILED

    anyio.run(check)


def _policy_saga(**policy: Any) -> saga.Saga[Any]:
    retry = saga.RetryPolicy(**policy)
    step = type("Retried", (Hold,), {"retry": retry, "compensation_retry": retry})()
    return saga.Saga("retried", state=Holder, steps=[step])


@pytest.mark.parametrize(
    ("policy", "error", "match"),
    [
        ({"max_attempts": MAX_ATTEMPTS + 1}, ValueError, "max_attempts"),
        ({"max_attempts": 10**30}, ValueError, "max_attempts"),
        ({"max_attempts": True}, ValueError, "max_attempts"),
        ({"initial_interval": 1e300}, ValueError, "initial_interval"),
        ({"initial_interval": True}, ValueError, "initial_interval"),
        ({"max_interval": MAX_SECONDS * 2}, ValueError, "max_interval"),
        ({"max_interval": 10**400}, ValueError, "max_interval"),
        ({"backoff": float("nan")}, ValueError, "backoff"),
        ({"backoff": float("inf")}, ValueError, "backoff"),
        ({"backoff": True}, ValueError, "backoff"),
    ],
)
def test_retry_policies_out_of_range_fail_the_definition(
    policy: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match) as info:
        _policy_saga(**policy)
    refused(info.value)


def test_a_retry_that_is_not_a_policy_fails_the_definition() -> None:
    step = type("Retried", (Hold,), {"retry": 3})()
    with pytest.raises(TypeError, match="RetryPolicy"):
        saga.Saga("retried", state=Holder, steps=[step])


@FEW
@given(
    max_attempts=st.integers(1, MAX_ATTEMPTS + 10),
    initial=st.floats(0, MAX_SECONDS * 2),
    backoff=st.floats(1, 1e308),
    cap=st.floats(0, MAX_SECONDS * 2),
)
def test_an_accepted_retry_policy_never_overflows(
    max_attempts: int, initial: float, backoff: float, cap: float
) -> None:
    policy = dict(max_attempts=max_attempts, initial_interval=initial, backoff=backoff,
                  max_interval=cap)  # fmt: skip
    try:
        definition = _policy_saga(**policy)
    except ValueError:
        return
    retry = definition.steps[0].retry
    for attempt in {1, max(1, max_attempts - 1)}:  # the last interval is the largest
        assert 0 <= retry.interval(attempt) <= MAX_SECONDS


def test_largest_accepted_retry_policies() -> None:
    _policy_saga(max_attempts=MAX_ATTEMPTS, backoff=1.0, max_interval=MAX_SECONDS)
    _policy_saga(max_attempts=1000, backoff=2.0, initial_interval=MAX_SECONDS)


@pytest.mark.parametrize(
    ("version", "error"), [(MAX_VERSION + 1, ValueError), (10**30, ValueError)]
)
def test_definition_version_fits_the_stores(version: int, error: type[Exception]) -> None:
    with pytest.raises(error, match="version"):
        saga.Saga("v", state=Holder, steps=[Hold()], version=version)
    assert saga.Saga("v", state=Holder, steps=[Hold()], version=MAX_VERSION).version == MAX_VERSION


@pytest.mark.parametrize("name", ["\ud800", "a\udfffb", "nul\x00", "x" * 256])
def test_definitions_with_unencodable_names_fail_at_construction(name: str) -> None:
    with pytest.raises(ValueError, match="saga name"):
        saga.Saga(name, state=Holder, steps=[Hold()])
    with pytest.raises(ValueError, match="step name"):
        saga.Saga("ok", state=Holder, steps=[_step(name)])


BAD_OPTIONS: list[tuple[dict[str, Any], type[Exception]]] = [
    ({"max_payload_bytes": 0}, ValueError),
    ({"max_payload_bytes": MAX_PAYLOAD_BYTES + 1}, ValueError),
    ({"max_payload_bytes": 10**20}, ValueError),
    ({"max_payload_bytes": True}, TypeError),
    ({"max_payload_bytes": 1.5}, TypeError),
    ({"max_recoveries": 0}, ValueError),
    ({"max_recoveries": -(10**20)}, ValueError),
    ({"max_recoveries": True}, TypeError),
    ({"max_recoveries": math.inf}, TypeError),
    ({"shutdown_grace": math.nan}, ValueError),
    ({"shutdown_grace": -1}, ValueError),
    ({"shutdown_grace": -math.inf}, ValueError),
    ({"shutdown_grace": True}, TypeError),
    ({"shutdown_grace": "5"}, TypeError),
    ({"max_batch": 0}, ValueError),
    ({"max_batch": -1}, ValueError),
    ({"max_batch": MAX_BATCH + 1}, ValueError),
    ({"max_batch": 10**20}, ValueError),
    ({"max_batch": True}, TypeError),
    ({"max_batch": 1.0}, TypeError),
    ({"durability": "sometimes"}, ValueError),
    ({"durability": 1}, TypeError),
]


@pytest.mark.parametrize(("options", "error"), BAD_OPTIONS, ids=repr)
def test_runtime_options(options: dict[str, Any], error: type[Exception], tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'saga.db'}"
    with pytest.raises(error, match=next(iter(options))) as info:
        saga.Runtime(url, sagas=DEFINITIONS, **options)
    refused(info.value)
    assert list(tmp_path.iterdir()) == []  # nothing was created


def test_largest_runtime_options_work() -> None:
    async def check() -> None:
        options: dict[str, Any] = dict(max_payload_bytes=MAX_PAYLOAD_BYTES,
            max_recoveries=10**30, shutdown_grace=math.inf, max_batch=MAX_BATCH)  # fmt: skip
        async with saga.Runtime(MEMORY, sagas=DEFINITIONS, **options) as rt:
            handle = await rt.start(fragile, Holder(), saga_id="f")
            assert (await handle.result(timeout=WAIT)).status is saga.Status.FAILED

    anyio.run(check)


def test_payloads_that_cannot_be_encoded_are_typed_errors() -> None:
    deep: Any = []
    for _ in range(100_000):
        deep = [deep]
    cases = [
        ("\ud800", ValueError), ({"\udfff": 1}, ValueError), ({"k": ["a\ud800"]}, ValueError),
        (2**64, ValueError), (-(2**63) - 1, ValueError), (deep, ValueError),
        (object(), TypeError), ({"k": {1j}}, TypeError),
    ]  # fmt: skip
    for payload, error in cases:
        with pytest.raises(error, match="payload") as info:
            encode_payload(payload, "payload", 1 << 20)
        refused(info.value)


# -- PostgreSQL URL options -----------------------------------------------------------------

URL_OPTIONS = [
    f"{key}={value}"
    for key in ("lease_seconds", "claim_interval", "pool_size")
    for value in ("nan", "inf", "-inf", "1e400", "-1", "0", "abc", "", "99999999999999999999")
] + ["schema=", "schema=a%00b", "schema=a%0Ab", f"schema={'x' * 64}", f"schema={'é' * 32}"]


@pytest.mark.parametrize("option", URL_OPTIONS)
def test_postgresql_url_options(option: str) -> None:
    key = option.partition("=")[0]
    with pytest.raises(ValueError, match=f"PostgreSQL URL .*bad {key}=") as info:
        open_store(f"postgresql://root:hunter2@127.0.0.1/test?{option}")
    refused(info.value)
    assert "hunter2" not in str(info.value)


def test_postgresql_url_options_in_range() -> None:
    store = open_store(
        "postgresql://root@127.0.0.1/test?lease_seconds=3600&claim_interval=0.05&pool_size=1000"
        "&schema=" + "x" * 63
    )
    assert isinstance(store, PostgresStore)
    assert (store.lease_seconds, store.claim_interval, store.schema) == (3600, 0.05, "x" * 63)


# -- the command line -------------------------------------------------------------------------

CLI_USAGE_ERRORS = [
    (["list", "--limit", "99999999999999999999"], "expected a positive whole number"),
    (["list", "--limit", str(MAX_LIMIT + 1)], f"up to {MAX_LIMIT:,}"),
    (["list", "--limit", "0"], "expected a positive whole number"),
    (["list", "--limit", "-5"], "expected a positive whole number"),
    (["list", "--limit", "nan"], "expected a positive whole number"),
    (["list", "--limit", "1e3"], "expected a positive whole number"),
    (["list", "--limit", "9" * 5000], "expected a positive whole number"),
    (["dead-letters", "--limit", "1e400"], "expected a positive whole number"),
    (["dead-letters", "--limit", "100001"], "expected a positive whole number"),
    (["replay", "x", "--at", "99999999999999999999"], "expected a positive whole number"),
    (["replay", "x", "--at", str(2**31)], "expected a positive whole number"),
    (["replay", "x", "--at", "-1"], "expected a positive whole number"),
    (["abort", "x", "--reason", "r", "--wait", "nan"], "expected seconds from 0 to 3600"),
    (["abort", "x", "--reason", "r", "--wait", "inf"], "expected seconds from 0 to 3600"),
    (["abort", "x", "--reason", "r", "--wait", "1e400"], "expected seconds from 0 to 3600"),
    (["resume", "x", "--wait", "3601"], "expected seconds from 0 to 3600"),
    (["resume", "x", "--wait", "-0.5"], "expected seconds from 0 to 3600"),
    (["show", "a\nb"], "saga_id must not contain control characters"),
    (["show", "\udcff"], "saga_id must be valid Unicode"),  # an undecodable byte in argv
    (["history", "x" * 256], "saga_id is 256 characters long"),
    (["list", "--name", "\udcff"], "name must be valid Unicode"),
    (["abort", "x", "--reason", "a\udcffb"], "reason must be valid Unicode"),
    (["abort", "x", "--reason", "r", "--by", "a\tb"], "by must not contain control"),
]


@pytest.mark.parametrize(("argv", "message"), CLI_USAGE_ERRORS, ids=repr)
def test_cli_usage_errors(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:  # the parser refuses it before any store
        main(argv)
    assert exited.value.code == 2  # a usage error
    captured = capsys.readouterr()
    assert captured.out == ""
    assert message in captured.err
    assert captured.err.count("\n") == 1
    assert "Traceback" not in captured.err


@pytest.mark.parametrize(
    "option", ["pool_size=1e400", "lease_seconds=nan", "claim_interval=-1", "pool_size=99999"]
)
def test_cli_bad_url_options(option: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--db", f"postgresql://root:pw@127.0.0.1:1/test?{option}", "list"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("saga list: error: PostgreSQL URL")
    assert captured.err.count("\n") == 1
    assert "pw@" not in captured.err


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "saga.db"

    async def populate() -> None:
        async with saga.Runtime(f"sqlite:///{path}", sagas=DEFINITIONS) as rt:
            await rt.start(holder, Holder(), saga_id="one")
            await rt.start(holder, Holder(), saga_id="two")
            await wait_until(rt, "two", saga.Status.WAITING, timeout=WAIT)

    anyio.run(populate)
    return path


def test_cli_largest_numbers_work(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{db}"
    for argv in (
        ["list", "--limit", str(MAX_LIMIT)],
        ["dead-letters", "--limit", str(MAX_LIMIT)],
        ["replay", "one", "--at", "2"],
    ):
        assert main(["--db", url, *argv]) == 0, capsys.readouterr().err
    assert capsys.readouterr().err == ""
    assert main(["--db", url, "replay", "one", "--at", str(2**31 - 1)]) == 1
    err = capsys.readouterr().err
    assert "past them" in err
    assert err.count("\n") == 1


def test_cli_list_hint_stays_within_the_limit(
    db: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{db}"
    assert main(["--db", url, "list", "--limit", "1"]) == 0
    assert "more with --limit 2" in capsys.readouterr().out
    monkeypatch.setattr("saga._cli._commands.MAX_LIMIT", 1)  # as if at the largest limit
    assert main(["--db", url, "list", "--limit", "1"]) == 0
    out = capsys.readouterr().out
    assert "more exist: narrow with --status or --name" in out
    assert "--limit 2" not in out


def test_a_backoff_that_outgrows_any_float_stops_at_max_interval() -> None:
    policy = saga.RetryPolicy(max_attempts=5000, initial_interval=1, backoff=1e300, max_interval=7)
    assert policy.interval(1) == 1
    assert [policy.interval(n) for n in (2, 3, 4999)] == [7, 7, 7]
    _policy_saga(max_attempts=5000, backoff=1e300)  # a usable definition
