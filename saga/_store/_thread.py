"""A thread that owns one sqlite3 connection: each call is a single hop off the event loop.

The group-commit writer runs a whole batch (``BEGIN IMMEDIATE`` ... ``COMMIT``) as one call
here. Through aiosqlite each statement is its own hop to its thread and back (~60 µs on
the reference machine); a batch takes six or more statements, and those hops were the
largest cost of a commit after the fsync itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sqlite3
import threading
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["ConnectionThread"]

T = TypeVar("T")
_STOP = object()


class ConnectionThread:
    """Runs ``fn(connection, *args)`` calls, one at a time, on a dedicated thread."""

    def __init__(self, connect: Callable[[], sqlite3.Connection], name: str) -> None:
        self._connect = connect
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._conn: sqlite3.Connection | None = None

    async def start(self) -> None:
        """Start the thread and connect on it; raises what connecting raised."""
        self._thread.start()
        await self.call(lambda _conn: None)

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(connection, *args)`` on the thread and return its result."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queue.put((fn, args, future, loop))
        return await future

    async def close(self) -> None:
        """Close the connection and end the thread."""
        if not self._thread.is_alive():
            return
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        self._queue.put((_STOP, (), done, loop))
        await done

    def _serve(self) -> None:
        error: BaseException | None = None
        try:
            self._conn = self._connect()
        except BaseException as failed:
            error = failed
        while True:
            fn, args, future, loop = self._queue.get()
            if fn is _STOP:
                if self._conn is not None:
                    with contextlib.suppress(Exception):  # `close` must not wait forever
                        self._conn.close()
                loop.call_soon_threadsafe(_settle, future, None, None)
                return
            if error is not None:
                loop.call_soon_threadsafe(_settle, future, None, error)
                continue
            try:
                result = fn(self._conn, *args)
            except BaseException as failed:
                loop.call_soon_threadsafe(_settle, future, None, failed)
            else:
                loop.call_soon_threadsafe(_settle, future, result, None)


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():  # the caller was cancelled; nothing waits for this any more
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
