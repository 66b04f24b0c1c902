"""Fixtures every test folder shares.

The tests are grouped by layer: ``store/`` (the SQLite and PostgreSQL stores, the on-disk
format), ``runtime/`` (the engine through the public `Runtime`), ``workers/`` (several
runtimes and processes on one PostgreSQL database), ``observability/`` (observers and the
``observers`` package), ``cli/`` (the ``saga`` command line) and ``api/`` (the public
surface, the examples, the benchmarks). No folder is a package: pytest imports each test
file by its base name with its own folder first on ``sys.path``, so base names are unique
across folders, and a helper module beside its tests (``store/store_contract.py``) is
imported by name. This folder is on ``sys.path`` too (pytest puts the conftest's folder
there), so the helpers shared by several folders live here: ``_pg.py``, ``_behaviour.py``,
``_cli.py``, ``_processes.py``. A script run as a child process finds them through
``_processes.child_env()``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from _pg import temporary_schema, url_for

from saga.testing import FakeClock

# Shared suites live outside test_*.py files; give their asserts pytest's detailed messages.
pytest.register_assert_rewrite("store_contract", "store_contract_base", "store_contract_requests")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


# The SPEC behaviour suites run on every backend: on PostgreSQL, their module-level store
# URL (the global named here) points at a fresh schema for each test that uses it
# (directly, or through the named helper).
_ON_EVERY_BACKEND = {
    "test_abort": ("URL",),
    "test_compensation": ("URL",),
    "test_events": ("URL",),
    "test_forward": ("URL",),
    "test_operator_api": ("URL",),
    "test_timeouts_retries": ("URL",),
    "test_inputs": ("MEMORY",),
    "test_observers": ("MEMORY",),
    "test_replay": ("MEMORY", "runtime"),
}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    names = _ON_EVERY_BACKEND.get(metafunc.module.__name__)
    if names and set(names) & set(metafunc.function.__code__.co_names):
        metafunc.parametrize("backend", ["sqlite", "postgresql"], indirect=True)


@pytest.fixture(autouse=True)
def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The store backend of this test run (``URL`` of a behaviour module is set to it)."""
    name = getattr(request, "param", "sqlite")
    if name != "postgresql":
        yield name
        return
    with temporary_schema() as schema:
        attribute = _ON_EVERY_BACKEND[request.module.__name__][0]
        monkeypatch.setattr(request.module, attribute, url_for(schema, lease_seconds=2))
        yield name


@pytest.fixture
def schema() -> Iterator[str]:
    """A fresh PostgreSQL schema on the test server, dropped with all it holds afterwards."""
    with temporary_schema() as name:
        yield name
