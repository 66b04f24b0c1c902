"""The operator API: who/why on abort and resume, `Runtime.export` and `SagaExport`, and
requests that other processes leave in the store (what the ``saga`` command line does),
acted on by the running runtime, or by the next one to start."""

from __future__ import annotations

import logging
import uuid
from pathlib import Path

import msgspec
import pytest
from _behaviour import Boom, Gate, Trip, of_kind, simple_step, wait_records
from _wait import wait_until

import saga
from saga._requests import encode_request
from saga._store import SendResult
from saga._store._sqlite import SQLiteStore

pytestmark = pytest.mark.anyio


class Undo(saga.Step):
    """Its compensation fails while ``broken`` holds: the saga ends FAILED."""

    compensation_retry = saga.RetryPolicy(max_attempts=1)

    def __init__(self) -> None:
        self.broken = True
        self.undone = 0

    async def run(self, ctx: saga.StepContext[Trip]) -> None:
        ctx.state.log.append("undo-able")

    async def compensate(self, ctx: saga.StepContext[Trip]) -> None:
        if self.broken:
            raise Boom("refund service down")
        self.undone += 1


def failing(undo: Undo) -> saga.Saga[Trip]:
    return saga.Saga("refund", state=Trip, steps=[undo, simple_step("pay", [], fail=True)])


async def request(path: Path, saga_id: str, kind: str, *, by: str = "cli:ops@host",
                  reason: str = "because") -> SendResult:  # fmt: skip
    """What ``saga abort`` / ``saga resume`` do: a request from another store instance."""
    client = SQLiteStore(str(path), access="client")
    await client.open()
    try:
        payload = encode_request(reason, by, 1 << 20)
        request_id = f"{kind}-{uuid.uuid4().hex}"
        return await client.send(saga_id, request_id, kind=kind, name=kind, key=None,
                                 payload=payload, sent_at=0.0)  # fmt: skip
    finally:
        await client.close()


# -- who and why ------------------------------------------------------------------------------


async def test_abort_and_resume_record_who_and_why(store_url: str) -> None:
    undo = Undo()
    definition = failing(undo)
    gate = saga.Saga("gate", state=Trip, steps=[Gate()])
    async with saga.Runtime(store_url, sagas=[definition, gate]) as runtime:
        await runtime.start(gate, Trip(), saga_id="g")
        await wait_until(runtime, "g", saga.Status.WAITING)
        await runtime.abort("g", "customer cancelled", by="support:ana")
        aborted = await runtime.handle("g").result(timeout=5)
        gate_log = await runtime.history("g")

        await (await runtime.start(definition, Trip(), saga_id="r")).result(timeout=5)
        undo.broken = False
        assert await runtime.resume("r", "refunds are back", by="ops:bob") is True
        resumed = await runtime.handle("r").result(timeout=5)
        refund_log = await runtime.history("r")

        with pytest.raises(ValueError, match="by"):
            await runtime.abort("g", "x", by="")
        with pytest.raises(TypeError):
            await runtime.resume("r", 42)  # type: ignore[arg-type]

    [abort] = of_kind(gate_log, "abort_requested")
    assert abort.data == {"reason": "customer cancelled", "by": "support:ana", "effective": True}
    assert aborted.status is saga.Status.COMPENSATED
    assert aborted.error == saga.ErrorInfo(type="Aborted", message="customer cancelled",
                                           step="Gate")  # fmt: skip
    [resume] = of_kind(refund_log, "saga_resumed")
    assert resume.data == {"reason": "refunds are back", "by": "ops:bob"}
    assert resumed.status is saga.Status.COMPENSATED
    assert undo.undone == 1


# -- export -----------------------------------------------------------------------------------


class Blob(msgspec.Struct):
    data: bytes = b""
    log: list[str] = msgspec.field(default_factory=list)


class Store(saga.Step):
    async def run(self, ctx: saga.StepContext[Blob]) -> saga.Wait:
        ctx.state.data = b"\x00\xffbinary"
        return saga.wait_for("go", key="k", timeout=60)

    async def on_event(self, ctx: saga.StepContext[Blob], event: saga.Event) -> None:
        ctx.state.log.append(str(event.payload))


async def test_an_export_holds_the_whole_log_and_replays_like_the_history(store_url: str) -> None:
    definition = saga.Saga("blob", state=Blob, steps=[Store()], version=3)
    async with saga.Runtime(store_url, sagas=[definition]) as runtime:
        handle = await runtime.start(definition, Blob(), saga_id="b")
        await wait_until(runtime, "b", saga.Status.WAITING)
        await runtime.send("b", "go", {"n": 1}, key="k")
        await handle.result(timeout=5)
        history = await runtime.history("b")
        export = await runtime.export("b")
        with pytest.raises(saga.UnknownSaga):
            await runtime.export("nope")

    assert (export.format, export.format_version) == ("saga-export", 1)
    assert (export.saga_id, export.name, export.version, export.steps) == (
        "b", "blob", 3, ("Store",),
    )  # fmt: skip
    assert list(export.records) == history
    expected = [info for _, info in saga.replay(history, definition)]
    assert [info for _, info in saga.replay(export, definition)] == expected

    # Through JSON and back: bytes travel as base64 and the state type restores them.
    loaded = saga.SagaExport.from_json(export.to_json())
    assert loaded.records[-1] == history[-1]
    replayed = [info for _, info in saga.replay(loaded, definition)]
    assert replayed[-1].state == Blob(data=b"\x00\xffbinary", log=["{'n': 1}"])
    assert [i.status for i in replayed] == [i.status for i in expected]
    plain = msgspec.json.decode(export.to_json())
    assert plain["format"] == "saga-export"
    assert [r["kind"] for r in plain["records"]] == [r.kind for r in history]

    other = saga.Saga("blob", state=Blob, steps=[Store()], version=4)
    with pytest.raises(saga.DefinitionMismatch):
        list(saga.replay(loaded, other))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"format": "something-else"}, "not a saga export"),
        ({"format_version": 2}, "format version 2"),
        ({"name": "renamed"}, "disagrees"),
        ({"records": []}, "no records"),
    ],
)
async def test_a_bad_export_document_is_refused(
    store_url: str, change: dict[str, object], message: str
) -> None:
    definition = saga.Saga("one", state=Trip, steps=[simple_step("a", [])])
    async with saga.Runtime(store_url, sagas=[definition]) as runtime:
        await (await runtime.start(definition, Trip(), saga_id="s")).result(timeout=5)
        document = msgspec.json.decode((await runtime.export("s")).to_json())
    document.update(change)
    with pytest.raises(ValueError, match=message):
        saga.SagaExport.from_json(msgspec.json.encode(document))


def test_a_document_that_is_not_an_export_is_refused() -> None:
    for data in (b"", b"[1, 2]", b'{"format": "saga-export"}', "not json"):
        with pytest.raises(ValueError, match="not a saga export"):
            saga.SagaExport.from_json(data)


# -- requests from other processes ------------------------------------------------------------


async def test_an_abort_request_from_another_process_stops_a_waiting_saga(
    tmp_path: Path,
) -> None:
    path = tmp_path / "saga.db"
    definition = saga.Saga("gate", state=Trip, steps=[simple_step("a", []), Gate()])
    async with saga.Runtime(f"sqlite:///{path}", sagas=[definition]) as runtime:
        handle = await runtime.start(definition, Trip(), saga_id="g")
        await wait_until(runtime, "g", saga.Status.WAITING)
        assert await request(path, "g", "abort", reason="stop it") is SendResult.STORED
        info = await handle.result(timeout=10)  # the poller takes it within a second
        records = await runtime.history("g")
        assert await request(path, "g", "abort") is SendResult.CLOSED  # ended: a no-op
        assert await request(path, "nope", "abort") is SendResult.UNKNOWN
    assert info.status is saga.Status.COMPENSATED
    [abort] = of_kind(records, "abort_requested")
    assert abort.data == {"reason": "stop it", "by": "cli:ops@host", "effective": True}


async def test_a_resume_request_from_another_process_finishes_the_compensations(
    tmp_path: Path,
) -> None:
    path = tmp_path / "saga.db"
    undo = Undo()
    definition = failing(undo)
    async with saga.Runtime(f"sqlite:///{path}", sagas=[definition]) as runtime:
        failed = await (await runtime.start(definition, Trip(), saga_id="r")).result(timeout=5)
        assert failed.status is saga.Status.FAILED
        assert await request(path, "r", "abort") is SendResult.CLOSED
        undo.broken = False
        assert await request(path, "r", "resume", reason="fixed") is SendResult.STORED
        records = await wait_records(runtime, "r", "saga_compensated")
        assert await request(path, "r", "resume") is SendResult.REFUSED  # not FAILED now
    [resume] = of_kind(records, "saga_resumed")
    assert resume.data == {"reason": "fixed", "by": "cli:ops@host"}
    assert undo.undone == 1


async def test_requests_left_while_no_runtime_ran_are_acted_on_at_start(tmp_path: Path) -> None:
    path = tmp_path / "saga.db"
    url = f"sqlite:///{path}"
    undo = Undo()
    definition = failing(undo)
    gate = saga.Saga("gate", state=Trip, steps=[Gate()])
    async with saga.Runtime(url, sagas=[definition, gate]) as runtime:
        await (await runtime.start(definition, Trip(), saga_id="r")).result(timeout=5)
        await runtime.start(gate, Trip(), saga_id="g")
        await wait_until(runtime, "g", saga.Status.WAITING)
    assert await request(path, "r", "resume") is SendResult.STORED
    assert await request(path, "g", "abort") is SendResult.STORED
    undo.broken = False
    async with saga.Runtime(url, sagas=[definition, gate]) as runtime:
        resumed = await runtime.handle("r").result(timeout=5)
        aborted = await runtime.handle("g").result(timeout=5)
    assert (resumed.status, aborted.status) == (saga.Status.COMPENSATED,) * 2


async def test_an_event_from_another_process_reaches_a_waiting_step(tmp_path: Path) -> None:
    path = tmp_path / "saga.db"
    definition = saga.Saga("gate", state=Trip, steps=[Gate()])
    async with saga.Runtime(f"sqlite:///{path}", sagas=[definition]) as runtime:
        handle = await runtime.start(definition, Trip(), saga_id="g")
        await wait_until(runtime, "g", saga.Status.WAITING)
        client = SQLiteStore(str(path), access="client")
        await client.open()
        try:
            result = await client.send("g", "e-1", kind="event", name="go", key=None,
                                       payload=msgspec.msgpack.encode({"ok": 1}),
                                       sent_at=0.0)  # fmt: skip
        finally:
            await client.close()
        assert result is SendResult.STORED
        info = await handle.result(timeout=10)
        records = await runtime.history("g")
    assert info.status is saga.Status.COMPLETED
    [delivered] = of_kind(records, "event_delivered")
    assert delivered.data["event"]["payload"] == {"ok": 1}


async def test_a_resume_request_the_runtime_cannot_serve_is_left_for_another(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "saga.db"
    url = f"sqlite:///{path}"
    definition = failing(Undo())
    async with saga.Runtime(url, sagas=[definition]) as runtime:
        await (await runtime.start(definition, Trip(), saga_id="r")).result(timeout=5)
    assert await request(path, "r", "resume") is SendResult.STORED
    with caplog.at_level(logging.WARNING, logger="saga.runtime"):
        async with saga.Runtime(url, sagas=[]) as runtime:  # it lacks the definition
            assert (await runtime.get("r")).status is saga.Status.FAILED
    assert "cannot resume saga 'r'" in caplog.text
    undo = Undo()
    undo.broken = False
    async with saga.Runtime(url, sagas=[failing(undo)]) as runtime:
        info = await runtime.handle("r").result(timeout=5)
    assert info.status is saga.Status.COMPENSATED
    assert undo.undone == 1


class Gate2(Gate):
    pass


async def test_the_runtime_does_not_take_its_own_events_twice(tmp_path: Path) -> None:
    # The watcher skips what this runtime wrote itself: each event is delivered once.
    definition = saga.Saga("gate", state=Trip, steps=[Gate(), Gate2()])
    async with saga.Runtime(f"sqlite:///{tmp_path / 'saga.db'}", sagas=[definition]) as rt:
        handles = [await rt.start(definition, Trip(), saga_id=f"g{i}") for i in range(20)]
        for i in range(20):
            await rt.send(f"g{i}", "go")
            await rt.send(f"g{i}", "go")
        for handle in handles:
            assert (await handle.result(timeout=10)).status is saga.Status.COMPLETED
        for i in range(20):
            assert len(of_kind(await rt.history(f"g{i}"), "event_delivered")) == 2
