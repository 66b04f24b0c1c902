"""`wait_until`: the one way the tests wait for a saga to reach a status.

It becomes the public ``saga.testing.wait_until``; keep its signature. Imported by the
tests (``tests/`` is on ``sys.path``) and by the scripts they run as child processes
(``_processes.child_env``), so it needs nothing but `saga` and `anyio`.
"""

from __future__ import annotations

import anyio

import saga

__all__ = ["wait_until"]

POLL = 0.005  # seconds between reads


async def wait_until(
    runtime: saga.Runtime, saga_id: str, *statuses: saga.Status, timeout: float = 5
) -> saga.SagaInfo:
    """Poll ``runtime.get(saga_id)`` until the saga's status is one of ``statuses``, and
    return that `SagaInfo`. Raises `TimeoutError`, saying where the saga is, if it is not
    there after ``timeout`` seconds; errors of ``get`` (`UnknownSaga`, ...) propagate."""
    if not statuses:
        raise TypeError("wait_until needs at least one status")
    info: saga.SagaInfo | None = None
    with anyio.move_on_after(timeout):
        while True:
            info = await runtime.get(saga_id)
            if info.status in statuses:
                return info
            await anyio.sleep(POLL)
    wanted = " or ".join(status.name for status in statuses)
    where = "never read" if info is None else f"{info.status.name} at step {info.step!r}"
    raise TimeoutError(f"saga {saga_id!r} is not {wanted} after {timeout} s: {where}")
