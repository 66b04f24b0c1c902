"""Group commit: one task owns the write connection and commits queued operations in batches.

Operations queue up while a commit is in flight, and the next transaction takes them all
(up to ``max_batch``), so the batch size follows the load: one fsync serves every saga that
wrote meanwhile. If a batch fails, each operation is retried alone so that one bad
operation fails only its own caller.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, TypeVar

import anyio

from saga._errors import SagaError, StoreError

__all__ = ["GroupCommitWriter", "Op"]

logger = logging.getLogger("saga.store")
T = TypeVar("T")


class Op(Generic[T]):
    """A queued write; the backend's batch function sets its result.

    Its caller waits on a plain asyncio future, set once the batch has committed: a
    future per operation costs a fraction of an event and its cancel scope, and a caller
    cancelled meanwhile simply leaves its result unread.
    """

    __slots__ = ("_future",)

    def __init__(self) -> None:
        self._future: asyncio.Future[T] | None = None

    def resolve(self, result: T) -> None:
        future = self._future
        if future is not None and not future.done():
            future.set_result(result)

    def settle(self, outcome: T | BaseException) -> None:
        """`fail` with ``outcome`` if it is an exception, else `resolve` with it."""
        if isinstance(outcome, BaseException):
            self.fail(outcome)
        else:
            self.resolve(outcome)

    def fail(self, error: BaseException) -> None:
        future = self._future
        if future is not None and not future.done():
            future.set_exception(error)


class GroupCommitWriter:
    """Runs ``commit(batch)`` for queued operations, one batch at a time."""

    def __init__(
        self,
        commit: Callable[[Sequence[Op[Any]]], Awaitable[None]],
        rollback: Callable[[], Awaitable[None]],
        *,
        max_batch: int = 1000,
    ) -> None:
        self._commit = commit
        self._rollback = rollback
        self._max_batch = max_batch
        self._pending: list[Op[Any]] = []
        self._idle: asyncio.Future[None] | None = None  # set while `run` waits for work
        self._closed = False
        self.batches = 0
        self.ops = 0

    async def submit(self, op: Op[T]) -> T:
        """Queue ``op`` and return its result once its transaction has committed."""
        if self._closed:
            raise StoreError("the store is closed")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        op._future = future
        self._pending.append(op)
        self._wake()
        return await future

    def _wake(self) -> None:
        idle = self._idle
        if idle is not None and not idle.done():
            idle.set_result(None)

    async def run(self) -> None:
        """Commit batches until `close` has drained the queue."""
        while True:
            if not self._pending:
                if self._closed:
                    return
                self._idle = asyncio.get_running_loop().create_future()
                try:
                    await self._idle
                finally:
                    self._idle = None
                continue
            batch = self._pending[: self._max_batch]
            del self._pending[: self._max_batch]
            await self._commit_isolating(batch)

    def close(self) -> None:
        """Refuse new operations; `run` returns once the queued ones are committed."""
        self._closed = True
        self._wake()

    async def _commit_isolating(self, batch: Sequence[Op[Any]]) -> None:
        try:
            with anyio.CancelScope(shield=True):
                await self._commit(batch)
            self.batches += 1
            self.ops += len(batch)
        except Exception as error:
            with anyio.CancelScope(shield=True):
                try:
                    await self._rollback()
                except Exception:
                    logger.exception("rollback failed")
            if len(batch) == 1:
                if not isinstance(error, SagaError):  # e.g. CorruptLog stays what it is
                    wrapped = StoreError(f"write failed: {error}")
                    wrapped.__cause__ = error
                    error = wrapped
                batch[0].fail(error)
                return
            logger.warning(
                "a batch of %d writes failed (%s); retrying each alone", len(batch), error
            )
            for op in batch:
                await self._commit_isolating([op])
