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
``_cli.py``, ``_processes.py`` and ``_wait.py`` (`wait_until`, the one way to wait for a
saga's status). A script run as a child process finds them through
``_processes.child_env()``.

A behaviour test runs on every store backend by taking the ``store_url`` fixture (one run
on SQLite, one on PostgreSQL); a test that names no backend runs on what it opens itself.
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


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """An empty store's URL, once per backend: a test that takes it runs on each.

    ``sqlite``: an in-memory SQLite store (each `Runtime` opened on it starts empty).
    ``postgres``: a fresh schema on the test server with ``lease_seconds=2``, dropped with
    all it holds after the test; it skips without a server, and fails under ``CI=true``.
    """
    if request.param == "sqlite":
        yield "sqlite:///:memory:"
        return
    with temporary_schema() as schema:
        yield url_for(schema, lease_seconds=2)


@pytest.fixture
def schema() -> Iterator[str]:
    """A fresh PostgreSQL schema on the test server, dropped with all it holds afterwards."""
    with temporary_schema() as name:
        yield name
