from __future__ import annotations

import pytest

from saga.testing import FakeClock

# Shared suites live outside test_*.py files; give their asserts pytest's detailed messages.
pytest.register_assert_rewrite("store_contract", "store_contract_base", "store_contract_requests")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()
