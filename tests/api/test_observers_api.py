"""The `observers` front door: exactly these public names, each documented and importable."""

from __future__ import annotations

import inspect

import pytest

import observers
import saga

PUBLIC = [
    "JsonLinesSink",
    "LoggingObserver",
    "MetricsObserver",
    "StateChange",
    "StateChangeRecorder",
    "StateChangeSink",
    "TracingObserver",
]


def test_all_is_pinned() -> None:
    assert sorted(observers.__all__) == observers.__all__ == PUBLIC


def test_every_public_name_is_exported_and_nothing_else() -> None:
    for name in PUBLIC:
        assert hasattr(observers, name), name
    public = {n for n in vars(observers) if not n.startswith("_")}
    private_modules = {n for n in public if inspect.ismodule(getattr(observers, n))}
    assert public - private_modules == set(PUBLIC)


@pytest.mark.parametrize("name", [n for n in PUBLIC if n != "StateChangeSink"])
def test_public_classes_are_documented(name: str) -> None:
    cls = getattr(observers, name)
    assert inspect.getdoc(cls), name
    for attr, member in vars(cls).items():
        if not attr.startswith("_") and callable(member):
            assert inspect.getdoc(member), f"{name}.{attr}"


@pytest.mark.parametrize(
    "name", ["TracingObserver", "MetricsObserver", "StateChangeRecorder", "LoggingObserver"]
)
def test_observers_are_saga_observers(name: str) -> None:
    assert issubclass(getattr(observers, name), saga.Observer)


def test_the_observers_package_is_typed() -> None:
    from importlib import resources

    assert resources.files("observers").joinpath("py.typed").is_file()
