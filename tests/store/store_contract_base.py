"""What the store contract suites share: row and record builders, the backend fixtures
(``store``, ``peer``) and helper methods. Not collected by pytest (no ``test_`` prefix)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from saga._store import Append, SagaRow, SendResult, Store

T0 = 1_800_000_000.0
TERMINAL = ("COMPLETED", "COMPENSATED", "FAILED")


def row(
    saga_id: str,
    *,
    seq: int = 1,
    status: str = "RUNNING",
    name: str = "trip",
    version: int = 1,
    step: str | None = "Reserve",
    created_at: float = T0,
    wake_at: float | None = None,
    error: bytes | None = None,
) -> SagaRow:
    """An index row; ``state`` and ``updated_at`` follow ``seq`` so each row is distinct."""
    return SagaRow(
        saga_id=saga_id,
        name=name,
        version=version,
        status=status,
        step=step,
        created_at=created_at,
        updated_at=created_at + seq,
        seq=seq,
        wake_at=wake_at,
        state=b"state-%d" % seq,
        error=error,
    )


def body(saga_id: str, seq: int) -> bytes:
    """An opaque record body."""
    return f"{saga_id}#{seq}".encode()


def records(saga_id: str, first: int, last: int) -> list[tuple[int, bytes]]:
    return [(seq, body(saga_id, seq)) for seq in range(first, last + 1)]


class ContractBase:
    """The fixtures every backend provides, and the helpers the contract tests share."""

    pytestmark = pytest.mark.anyio

    @pytest.fixture
    async def store(self) -> AsyncIterator[Store]:
        """An opened, empty store, closed after the test. Each backend overrides this."""
        raise NotImplementedError("a backend's test class provides the store fixture")
        yield  # noqa: PT022  # pragma: no cover

    @pytest.fixture
    async def peer(self, store: Store) -> AsyncIterator[Store]:
        """Another opened store instance on the same data, as another process would open
        it to send requests (the command line). Each backend overrides this."""
        raise NotImplementedError("a backend's test class provides the peer fixture")
        yield  # noqa: PT022  # pragma: no cover

    # -- helpers ------------------------------------------------------------------------------

    async def started(self, store: Store, saga_id: str, **fields: Any) -> SagaRow:
        first = row(saga_id, **fields)
        assert await store.start(first, [(1, body(saga_id, 1))]) is None
        return first

    async def send(self, store: Store, saga_id: str, event_id: str, *, name: str = "paid",
                   key: str | None = None, kind: str = "event", sent_at: float = T0,
                   ) -> SendResult:  # fmt: skip
        payload = f"payload:{event_id}".encode()
        return await store.send(saga_id, event_id, kind=kind, name=name, key=key,
                                payload=payload, sent_at=sent_at)  # fmt: skip

    async def close_saga(self, store: Store, saga_id: str, seq: int, reason: str) -> SagaRow:
        """Append a terminal record after ``seq``; returns the new index row."""
        current = await store.saga(saga_id)
        assert current is not None
        final = row(saga_id, seq=seq + 1, status="COMPLETED", step=None,
                    name=current.name, created_at=current.created_at)  # fmt: skip
        await store.append(
            Append(saga_id, records(saga_id, seq + 1, seq + 1), final, closed=reason)
        )
        return final
