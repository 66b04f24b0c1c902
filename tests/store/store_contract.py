"""The `Store` contract: one test suite, written once, run against every backend.

A backend's test module subclasses `StoreContract` and provides the ``store`` fixture (an
opened, empty store, closed after the test) and the ``peer`` fixture (a second instance on
the same data, as another process opens it). This module is not collected by itself: the
class is not named ``Test*``, and the file does not match ``test_*.py``.

The suite speaks only the interface of ``saga/_store/_base.py``. Records and states are
opaque bytes here: a store keeps them, it never decodes them.
"""

from __future__ import annotations

import anyio
import pytest
from store_contract_base import T0, TERMINAL, ContractBase, body, records, row
from store_contract_requests import RequestContract

from saga import StoreError
from saga._store import Append, SagaRow, SendResult, Store

__all__ = ["T0", "TERMINAL", "StoreContract", "body", "records", "row"]


class StoreContract(RequestContract, ContractBase):
    """What every `Store` backend must do. Subclasses provide the ``store`` and ``peer``
    fixtures (see `ContractBase`); the operator requests part is `RequestContract`."""

    # -- start --------------------------------------------------------------------------------

    async def test_start_creates_the_saga_with_its_first_record_as_seq_1(
        self, store: Store
    ) -> None:
        first = row("s1", wake_at=T0 + 60, error=b"why")
        assert await store.start(first, [(1, b"first record")]) is None
        assert await store.saga("s1") == first
        assert await store.log("s1") == [b"first record"]
        with pytest.raises(StoreError):  # seq 1 is taken by the first record
            await store.append(Append("s1", [(1, b"clash")], row("s1", seq=1)))
        await store.append(Append("s1", [(2, b"second")], row("s1", seq=2)))
        assert await store.log("s1") == [b"first record", b"second"]

    async def test_start_writes_several_first_records_atomically(self, store: Store) -> None:
        first = row("s1", seq=2)
        assert await store.start(first, [(1, b"started"), (2, b"step started")]) is None
        assert await store.log("s1") == [b"started", b"step started"]
        assert (await store.saga("s1")) == first
        # A repeated start writes none of its records.
        assert await store.start(row("s1"), [(1, b"again"), (2, b"again 2")]) == first
        assert await store.log("s1") == [b"started", b"step started"]

    async def test_start_of_an_existing_id_returns_the_existing_row_and_stores_nothing(
        self, store: Store
    ) -> None:
        first = await self.started(store, "s1")
        other = row("s1", name="other", version=7, created_at=T0 + 5)
        assert await store.start(other, [(1, b"another first")]) == first
        assert await store.saga("s1") == first
        assert await store.log("s1") == [body("s1", 1)]

    # -- send ---------------------------------------------------------------------------------

    async def test_send_stores_an_event_in_the_inbox(self, store: Store) -> None:
        await self.started(store, "s1")
        result = await store.send(
            "s1", "e1", kind="event", name="paid", key="k", payload=b"\x81\xa2ok\xc3",
            sent_at=T0 + 1,
        )  # fmt: skip
        assert result is SendResult.STORED
        [item] = await store.inbox("s1")
        assert (item.saga_id, item.event_id, item.kind, item.name, item.key) == (
            "s1", "e1", "event", "paid", "k",
        )  # fmt: skip
        assert (item.payload, item.sent_at) == (b"\x81\xa2ok\xc3", T0 + 1)

    async def test_send_of_a_known_event_id_is_a_duplicate_stored_once(self, store: Store) -> None:
        await self.started(store, "s1")
        assert await self.send(store, "s1", "e1") is SendResult.STORED
        assert await self.send(store, "s1", "e1", name="other") is SendResult.DUPLICATE
        assert [(i.event_id, i.name) for i in await store.inbox("s1")] == [("e1", "paid")]

    async def test_event_ids_are_deduplicated_per_saga(self, store: Store) -> None:
        await self.started(store, "s1")
        await self.started(store, "s2")
        assert await self.send(store, "s1", "e1") is SendResult.STORED
        assert await self.send(store, "s2", "e1") is SendResult.STORED
        assert [i.event_id for i in await store.inbox("s2")] == ["e1"]

    async def test_send_to_an_unknown_saga(self, store: Store) -> None:
        assert await self.send(store, "nobody", "e1") is SendResult.UNKNOWN
        assert await store.inbox("nobody") == []

    async def test_send_to_a_terminal_saga_is_closed(self, store: Store) -> None:
        await self.started(store, "s1")
        await self.close_saga(store, "s1", 1, "saga completed")
        assert await self.send(store, "s1", "e1") is SendResult.CLOSED
        assert await self.send(store, "s1", "abort-1", kind="abort") is SendResult.CLOSED
        assert await store.inbox("s1") == []
        assert await store.dead_letters("s1", 10) == []

    async def test_dedupe_is_checked_before_closed(self, store: Store) -> None:
        await self.started(store, "s1")
        await self.send(store, "s1", "consumed")
        await self.send(store, "s1", "pending")
        await store.append(Append("s1", records("s1", 2, 2), row("s1", seq=2), ["consumed"]))
        await self.close_saga(store, "s1", 2, "saga completed")
        assert await self.send(store, "s1", "consumed") is SendResult.DUPLICATE
        assert await self.send(store, "s1", "pending") is SendResult.DUPLICATE
        assert await self.send(store, "s1", "new") is SendResult.CLOSED

    # -- append -------------------------------------------------------------------------------

    async def test_append_keeps_records_in_seq_order_and_updates_the_row(
        self, store: Store
    ) -> None:
        await self.started(store, "s1")
        await store.append(Append("s1", records("s1", 2, 4), row("s1", seq=4, status="WAITING")))
        second = row("s1", seq=6, status="COMPENSATING", step="Pay", wake_at=T0 + 9, error=b"e")
        await store.append(Append("s1", records("s1", 5, 6), second))
        assert await store.log("s1") == [body("s1", seq) for seq in range(1, 7)]
        assert await store.saga("s1") == second

    async def test_consumed_events_leave_the_inbox(self, store: Store) -> None:
        await self.started(store, "s1")
        for event_id in ("e1", "e2", "e3"):
            await self.send(store, "s1", event_id)
        await self.send(store, "s1", "abort-1", kind="abort", name="abort")
        append = Append("s1", records("s1", 2, 3), row("s1", seq=3), consumed=["e2", "abort-1"])
        await store.append(append)
        assert [i.event_id for i in await store.inbox("s1")] == ["e1", "e3"]
        assert await store.dead_letters("s1", 10) == []

    async def test_closing_turns_pending_events_into_dead_letters(self, store: Store) -> None:
        await self.started(store, "s1")
        await self.send(store, "s1", "e1", name="paid", key="k1", sent_at=T0 + 1)
        await self.send(store, "s1", "e2", name="shipped", sent_at=T0 + 2)
        await self.send(store, "s1", "e3", sent_at=T0 + 3)
        await self.send(store, "s1", "abort-1", kind="abort", name="abort", sent_at=T0 + 4)
        final = row("s1", seq=2, status="COMPENSATED", step=None)
        append = Append("s1", records("s1", 2, 2), final, consumed=["e2"], closed="saga ended")
        await store.append(append)
        assert await store.inbox("s1") == []
        assert await store.saga("s1") == final
        letters = await store.dead_letters("s1", 10)
        assert [(d.event_id, d.reason) for d in letters] == [
            ("e3", "saga ended"),
            ("e1", "saga ended"),
        ]  # an abort request is not an event: it never becomes a dead letter
        e1 = letters[1]
        assert (e1.saga_id, e1.name, e1.key, e1.payload, e1.sent_at) == (
            "s1", "paid", "k1", b"payload:e1", T0 + 1,
        )  # fmt: skip

    async def test_a_duplicate_seq_is_rejected_and_nothing_of_that_append_is_stored(
        self, store: Store
    ) -> None:
        await self.started(store, "s1")
        await self.send(store, "s1", "e1")
        await self.send(store, "s1", "e2")
        before = row("s1", seq=2, status="WAITING")
        await store.append(Append("s1", records("s1", 2, 2), before))
        bad = Append(
            "s1",
            [(2, b"clash"), (3, b"lost")],
            row("s1", seq=3, status="COMPLETED", step=None),
            consumed=["e1"],
            closed="saga completed",
        )
        with pytest.raises(StoreError):
            await store.append(bad)
        assert await store.log("s1") == [body("s1", 1), body("s1", 2)]
        assert await store.saga("s1") == before
        assert [i.event_id for i in await store.inbox("s1")] == ["e1", "e2"]
        assert await store.dead_letters("s1", 10) == []
        # The store is still usable, and the saga still open.
        assert await self.send(store, "s1", "e3") is SendResult.STORED
        await store.append(Append("s1", records("s1", 3, 3), row("s1", seq=3), ["e1"]))
        assert len(await store.log("s1")) == 3

    # -- append_if ----------------------------------------------------------------------------

    async def test_append_if_appends_when_status_and_seq_match(self, store: Store) -> None:
        await self.started(store, "s1")
        await store.append(Append("s1", records("s1", 2, 3), row("s1", seq=3, status="FAILED")))
        resumed = row("s1", seq=4, status="COMPENSATING")
        assert await store.append_if(Append("s1", records("s1", 4, 4), resumed), status="FAILED")
        assert await store.saga("s1") == resumed
        assert await store.log("s1") == [body("s1", seq) for seq in range(1, 5)]

    async def test_append_if_refuses_another_status(self, store: Store) -> None:
        await self.started(store, "s1")
        append = Append("s1", records("s1", 2, 2), row("s1", seq=2, status="COMPENSATING"))
        assert not await store.append_if(append, status="FAILED")
        assert await store.saga("s1") == row("s1")
        assert await store.log("s1") == [body("s1", 1)]

    async def test_append_if_refuses_records_that_do_not_follow_the_last_seq(
        self, store: Store
    ) -> None:
        await self.started(store, "s1")
        await store.append(Append("s1", records("s1", 2, 3), row("s1", seq=3, status="FAILED")))
        for first in (2, 3, 5):  # behind, taken, a gap
            append = Append("s1", [(first, b"x")], row("s1", seq=first, status="COMPENSATING"))
            assert not await store.append_if(append, status="FAILED")
        assert (await store.saga("s1")) == row("s1", seq=3, status="FAILED")
        assert len(await store.log("s1")) == 3

    async def test_append_if_on_an_unknown_saga_is_refused(self, store: Store) -> None:
        append = Append("ghost", records("ghost", 2, 2), row("ghost", seq=2))
        assert not await store.append_if(append, status="RUNNING")
        assert await store.saga("ghost") is None
        assert await store.log("ghost") == []

    async def test_only_one_of_two_racing_append_ifs_wins(self, store: Store) -> None:
        await self.started(store, "s1", status="FAILED")
        results: list[bool] = []

        async def resume(tag: bytes) -> None:
            append = Append("s1", [(2, tag)], row("s1", seq=2, status="COMPENSATING"))
            results.append(await store.append_if(append, status="FAILED"))

        async with anyio.create_task_group() as tg:
            tg.start_soon(resume, b"a")
            tg.start_soon(resume, b"b")
        assert sorted(results) == [False, True]
        assert len(await store.log("s1")) == 2

    # -- reads --------------------------------------------------------------------------------

    async def test_reads_of_an_unknown_saga_are_empty(self, store: Store) -> None:
        assert await store.saga("nobody") is None
        assert await store.log("nobody") == []
        assert await store.inbox("nobody") == []
        assert await store.dead_letters("nobody", 10) == []
        assert await store.sagas(status=None, name=None, limit=10) == []

    async def test_sagas_are_newest_first_filtered_and_limited(self, store: Store) -> None:
        await self.started(store, "old", name="trip", created_at=T0 + 1)
        await self.started(store, "mid", name="order", created_at=T0 + 2)
        await self.started(store, "new", name="trip", created_at=T0 + 3, status="WAITING")
        await self.started(store, "done", name="trip", created_at=T0 + 4)
        await self.close_saga(store, "done", 1, "saga completed")

        async def ids(
            status: str | None = None, name: str | None = None, limit: int = 10
        ) -> list[str]:
            return [r.saga_id for r in await store.sagas(status=status, name=name, limit=limit)]

        assert await ids() == ["done", "new", "mid", "old"]
        assert await ids(limit=2) == ["done", "new"]
        assert await ids(name="trip") == ["done", "new", "old"]
        assert await ids(status="RUNNING") == ["mid", "old"]
        assert await ids(status="RUNNING", name="trip") == ["old"]
        assert await ids(status="COMPLETED") == ["done"]
        assert await ids(name="nothing") == []
        [done] = await store.sagas(status="COMPLETED", name=None, limit=1)
        assert done == row("done", seq=2, status="COMPLETED", step=None, created_at=T0 + 4)

    async def test_active_logs_yields_only_open_sagas_with_their_full_logs(
        self, store: Store
    ) -> None:
        for status in ("RUNNING", "WAITING", "COMPENSATING", *TERMINAL):
            saga_id = status.lower()
            await self.started(store, saga_id)
            last = row(saga_id, seq=3, status=status)
            await store.append(Append(saga_id, records(saga_id, 2, 3), last))
        found = {saga_id: log async for saga_id, log in store.active_logs()}
        assert found == {
            saga_id: [body(saga_id, seq) for seq in (1, 2, 3)]
            for saga_id in ("running", "waiting", "compensating")
        }

    async def test_active_logs_of_many_sagas_are_complete(self, store: Store) -> None:
        for n in range(60):
            await self.started(store, f"s{n:02}")
            last = 2 + n % 7
            await store.append(Append(f"s{n:02}", records(f"s{n:02}", 2, last),
                                      row(f"s{n:02}", seq=last)))  # fmt: skip
        found = {saga_id: log async for saga_id, log in store.active_logs()}
        assert len(found) == 60
        for n in range(60):
            assert found[f"s{n:02}"] == [body(f"s{n:02}", s) for s in range(1, 3 + n % 7)]

    async def test_inbox_is_pending_items_oldest_first(self, store: Store) -> None:
        await self.started(store, "s1")
        await self.started(store, "s2")
        for event_id in ("c", "a", "d", "b"):  # arrival order, not id order
            await self.send(store, "s1", event_id, sent_at=T0)
        await self.send(store, "s2", "other")
        await store.append(Append("s1", records("s1", 2, 2), row("s1", seq=2), consumed=["d"]))
        assert [i.event_id for i in await store.inbox("s1")] == ["c", "a", "b"]
        assert [i.event_id for i in await store.inbox("s2")] == ["other"]

    async def test_due_is_open_sagas_with_a_deadline_until_the_given_time(
        self, store: Store
    ) -> None:
        await self.started(store, "early", status="WAITING", wake_at=T0 + 10)
        await self.started(store, "exact", status="RUNNING", wake_at=T0 + 20)
        await self.started(store, "later", status="WAITING", wake_at=T0 + 21)
        await self.started(store, "never", status="WAITING")
        await self.started(store, "compensating", status="COMPENSATING", wake_at=T0 + 5)
        for n, status in enumerate(TERMINAL):
            await self.started(store, status, status=status, wake_at=T0 + n)
        assert sorted(await store.due(T0 + 20)) == [
            ("compensating", T0 + 5),
            ("early", T0 + 10),
            ("exact", T0 + 20),
        ]
        assert await store.due(T0 + 4) == []
        # A deadline moves (or goes) with the row an append writes.
        later = row("early", seq=2, status="WAITING", wake_at=T0 + 100)
        await store.append(Append("early", records("early", 2, 2), later))
        await self.close_saga(store, "exact", 1, "saga completed")
        assert sorted(await store.due(T0 + 100)) == [
            ("compensating", T0 + 5),
            ("early", T0 + 100),
            ("later", T0 + 21),
        ]

    async def test_dead_letters_are_newest_first_and_filtered_by_saga(self, store: Store) -> None:
        await self.started(store, "s1")
        await self.started(store, "s2")
        await self.send(store, "s1", "a1")
        await self.send(store, "s2", "b1")
        await self.send(store, "s1", "a2")
        await self.send(store, "s2", "b2")
        await self.close_saga(store, "s1", 1, "saga completed")
        await self.close_saga(store, "s2", 1, "saga compensated")
        # Newest first means the latest sent, whenever its saga ended.
        assert [(d.saga_id, d.event_id, d.reason) for d in await store.dead_letters(None, 10)] == [
            ("s2", "b2", "saga compensated"),
            ("s1", "a2", "saga completed"),
            ("s2", "b1", "saga compensated"),
            ("s1", "a1", "saga completed"),
        ]
        assert [d.event_id for d in await store.dead_letters("s1", 10)] == ["a2", "a1"]
        assert [d.event_id for d in await store.dead_letters(None, 3)] == ["b2", "a2", "b1"]
        assert [d.event_id for d in await store.dead_letters("s2", 1)] == ["b2"]

    # -- group commit -------------------------------------------------------------------------

    async def test_many_concurrent_starts_and_sends_all_commit(self, store: Store) -> None:
        n = 200
        started: dict[str, SagaRow | None] = {}
        sent: dict[str, SendResult] = {}

        async def start(i: int) -> None:
            started[f"s{i:03}"] = await store.start(
                row(f"s{i:03}", created_at=T0 + i), [(1, body(f"s{i:03}", 1))]
            )

        async def send(i: int) -> None:
            sent[f"e{i:03}"] = await self.send(store, "target", f"e{i:03}")

        await self.started(store, "target", created_at=T0 - 1)
        async with anyio.create_task_group() as tg:
            for i in range(n):
                tg.start_soon(start, i)
                tg.start_soon(send, i)
        assert started == {f"s{i:03}": None for i in range(n)}
        assert sent == {f"e{i:03}": SendResult.STORED for i in range(n)}
        rows = await store.sagas(status=None, name=None, limit=10 * n)
        assert [r.saga_id for r in rows] == [f"s{i:03}" for i in reversed(range(n))] + ["target"]
        for i in range(n):
            assert await store.log(f"s{i:03}") == [body(f"s{i:03}", 1)]
        assert sorted(i.event_id for i in await store.inbox("target")) == sorted(sent)

    async def test_a_committed_write_is_visible_to_the_very_next_read(self, store: Store) -> None:
        # Reads interleave with commits from many tasks: none may see a stale snapshot.
        # (1,500 writes span more than one batch of the default size.)
        missing: list[str] = []

        async def start_then_read(i: int) -> None:
            saga_id = f"v{i:04}"
            await store.start(row(saga_id), [(1, body(saga_id, 1))])
            if await store.saga(saga_id) is None or await store.log(saga_id) == []:
                missing.append(saga_id)

        async with anyio.create_task_group() as tg:
            for i in range(1500):
                tg.start_soon(start_then_read, i)
        assert missing == []

    async def test_concurrent_writes_to_one_saga_are_decided_once(self, store: Store) -> None:
        starts: list[SagaRow | None] = []
        sends: list[SendResult] = []

        async def start() -> None:
            starts.append(await store.start(row("s1"), [(1, body("s1", 1))]))

        async def send() -> None:
            sends.append(await self.send(store, "s1", "same"))

        await start()
        async with anyio.create_task_group() as tg:
            for _ in range(20):
                tg.start_soon(start)
                tg.start_soon(send)
        assert starts == [None] + [row("s1")] * 20
        assert sorted(s.value for s in sends) == ["duplicate"] * 19 + ["stored"]
        assert [i.event_id for i in await store.inbox("s1")] == ["same"]
        assert await store.log("s1") == [body("s1", 1)]

    async def test_one_failing_write_in_a_concurrent_batch_fails_alone(self, store: Store) -> None:
        for i in range(50):
            await self.started(store, f"s{i:02}")
        outcomes: dict[str, object] = {}

        async def append(saga_id: str, first: int) -> None:
            try:
                await store.append(Append(saga_id, records(saga_id, first, 2),
                                          row(saga_id, seq=2, status="WAITING")))  # fmt: skip
                outcomes[saga_id] = "ok"
            except StoreError as error:
                outcomes[saga_id] = error

        async def start_and_send(i: int) -> None:
            outcomes[f"new{i:02}"] = await store.start(
                row(f"new{i:02}"), [(1, body(f"new{i:02}", 1))]
            )
            outcomes[f"e{i:02}"] = await self.send(store, f"s{i:02}", f"e{i:02}")

        async with anyio.create_task_group() as tg:
            for i in range(50):
                # s13 re-uses seq 1 (taken by its first record): that write, and only it, fails.
                tg.start_soon(append, f"s{i:02}", 1 if i == 13 else 2)
                tg.start_soon(start_and_send, i)
        assert isinstance(outcomes.pop("s13"), StoreError)
        assert outcomes == {
            **{f"s{i:02}": "ok" for i in range(50) if i != 13},
            **{f"new{i:02}": None for i in range(50)},
            **{f"e{i:02}": SendResult.STORED for i in range(50)},
        }
        for i in range(50):
            saga_id = f"s{i:02}"
            if i == 13:
                assert await store.log(saga_id) == [body(saga_id, 1)]
                assert await store.saga(saga_id) == row(saga_id)
            else:
                assert await store.log(saga_id) == [body(saga_id, 1), body(saga_id, 2)]
                assert await store.saga(saga_id) == row(saga_id, seq=2, status="WAITING")
            assert [e.event_id for e in await store.inbox(saga_id)] == [f"e{i:02}"]
            assert await store.log(f"new{i:02}") == [body(f"new{i:02}", 1)]
