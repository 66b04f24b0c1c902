"""The public surface of `saga`: the export list, the value types, construction checks."""

from __future__ import annotations

import builtins
import importlib
import math
import pkgutil
from datetime import timedelta
from typing import Any

import msgspec
import pytest

import saga

EXPECTED_ALL = [
    "AbortRequested", "CompensationStarted", "CorruptLog", "DeadLetter", "DefinitionMismatch",
    "ErrorInfo", "Event", "EventDelivered", "InvalidTransition", "LeaseLost", "NotASagaStore",
    "Observer", "PayloadTooLarge", "PoisonStep", "Record", "RecordBody", "RecordKind",
    "RetryPolicy", "Runtime", "Saga", "SagaClosed", "SagaCompensated", "SagaCompleted",
    "SagaError", "SagaExists", "SagaExport", "SagaFailed", "SagaHandle", "SagaInfo",
    "SagaResumed", "SagaRetried", "SagaReverted", "SagaStarted", "SagaSuspended", "Status",
    "Step", "StepBody", "StepCompleted", "StepContext", "StepFailed", "StepOutcome",
    "StepSkipped", "StepStarted", "StepTimeout", "StepWaiting", "StoreError",
    "UnknownDefinition", "UnknownSaga", "Wait", "WaitTimedOut", "replay", "wait_for",
]  # fmt: skip

# Every name SPEC.md section 2 promises, errors included.
SPEC_NAMES = {
    "Saga", "Step", "wait_for", "Wait", "StepContext", "Event", "RetryPolicy", "Runtime",
    "SagaHandle", "SagaInfo", "Status", "Record", "replay", "Observer", "StepOutcome",
    "ErrorInfo", "SagaError", "UnknownSaga", "SagaExists", "SagaClosed", "StepTimeout",
    "PayloadTooLarge", "DefinitionMismatch",
}  # fmt: skip

ERRORS = [
    saga.CorruptLog,
    saga.DefinitionMismatch,
    saga.InvalidTransition,
    saga.LeaseLost,
    saga.NotASagaStore,
    saga.PayloadTooLarge,
    saga.PoisonStep,
    saga.SagaClosed,
    saga.SagaExists,
    saga.StepTimeout,
    saga.StoreError,
    saga.UnknownDefinition,
    saga.UnknownSaga,
]


class State(msgspec.Struct):
    n: int = 0


class One(saga.Step):
    async def run(self, ctx: saga.StepContext[State]) -> None:
        return None


class Two(saga.Step):
    async def run(self, ctx: saga.StepContext[State]) -> None:
        return None


class Named(saga.Step):
    name = "custom-name"

    async def run(self, ctx: saga.StepContext[State]) -> None:
        return None


# -- the export list ------------------------------------------------------------------------


def test_all_is_pinned() -> None:
    assert saga.__all__ == EXPECTED_ALL


def test_all_is_sorted_and_unique() -> None:
    assert sorted(set(saga.__all__)) == saga.__all__


def test_every_exported_name_is_importable() -> None:
    namespace: dict[str, Any] = {}
    exec("from saga import *", namespace)
    for name in EXPECTED_ALL:
        assert namespace[name] is getattr(saga, name)


def test_every_spec_name_is_exported() -> None:
    assert SPEC_NAMES - set(saga.__all__) == set()


def test_no_public_name_is_defined_outside_all() -> None:
    public = {n for n in vars(saga) if not n.startswith("_")}
    # Subpackages and modules imported as a side effect are not API names.
    modules = {n for n in public if type(getattr(saga, n)).__name__ == "module"}
    assert public - modules == set(EXPECTED_ALL)


def test_exported_objects_live_in_private_modules() -> None:
    for name in EXPECTED_ALL:
        module = getattr(saga, name).__module__
        assert module.startswith("saga._"), (name, module)


# -- Status -------------------------------------------------------------------------------


def test_status_members() -> None:
    names = [
        "RUNNING", "WAITING", "COMPENSATING", "COMPLETED", "COMPENSATED", "FAILED", "SUSPENDED"
    ]  # fmt: skip
    assert [s.name for s in saga.Status] == names
    assert saga.Status("WAITING") is saga.Status.WAITING
    assert saga.Status.COMPLETED == "COMPLETED"


def test_status_terminal() -> None:
    terminal = {s for s in saga.Status if s.terminal}
    assert terminal == {saga.Status.COMPLETED, saga.Status.COMPENSATED, saga.Status.FAILED}


# -- ErrorInfo ------------------------------------------------------------------------------


def test_error_info_str() -> None:
    info = saga.ErrorInfo(type="ValueError", message="card declined", step="Pay")
    assert str(info) == "ValueError: card declined"
    assert (info.type, info.message, info.step) == ("ValueError", "card declined", "Pay")


def test_error_info_step_defaults_to_none() -> None:
    info = saga.ErrorInfo(type="StepTimeout", message="late")
    assert info.step is None
    assert str(info) == "StepTimeout: late"


# -- Saga ---------------------------------------------------------------------------------


def test_saga_definition_attributes() -> None:
    definition = saga.Saga("trip", state=State, steps=[One(), Two()], version=3)
    assert definition.name == "trip"
    assert definition.version == 3
    assert definition.state is State
    assert [s.name for s in definition.steps] == ["One", "Two"]


def test_saga_version_defaults_to_one() -> None:
    assert saga.Saga("trip", state=State, steps=[One()]).version == 1


def test_saga_duplicate_step_names() -> None:
    with pytest.raises(ValueError, match="One"):
        saga.Saga("trip", state=State, steps=[One(), Two(), One()])


def test_saga_duplicate_step_names_via_name_attribute() -> None:
    class AlsoNamed(saga.Step):
        name = "custom-name"

        async def run(self, ctx: saga.StepContext[State]) -> None:
            return None

    with pytest.raises(ValueError, match="custom-name"):
        saga.Saga("trip", state=State, steps=[Named(), AlsoNamed()])


@pytest.mark.parametrize("state", [dict, State(), "State", None, int])
def test_saga_bad_state_type(state: Any) -> None:
    with pytest.raises(TypeError, match=r"msgspec\.Struct"):
        saga.Saga("trip", state=state, steps=[One()])


def test_saga_needs_steps() -> None:
    with pytest.raises(ValueError, match="at least one step"):
        saga.Saga("trip", state=State, steps=[])


def test_saga_steps_must_be_step_instances() -> None:
    with pytest.raises(TypeError):
        saga.Saga("trip", state=State, steps=[One])  # type: ignore[list-item]


@pytest.mark.parametrize("version", [0, -1, 1.5, True])
def test_saga_bad_version(version: Any) -> None:
    with pytest.raises(ValueError, match="version"):
        saga.Saga("trip", state=State, steps=[One()], version=version)


@pytest.mark.parametrize("name", ["", "x" * 256, "a\nb", "tab\there"])
def test_saga_bad_name(name: str) -> None:
    with pytest.raises(ValueError, match="saga name"):
        saga.Saga(name, state=State, steps=[One()])


# -- Step ---------------------------------------------------------------------------------


def test_step_name_defaults_to_class_name() -> None:
    assert One.name == "One"
    assert One().name == "One"
    assert Named.name == "custom-name"


def test_step_name_default_is_per_subclass() -> None:
    class Child(One):
        pass

    assert Child.name == "Child"
    assert One.name == "One"


def test_step_default_retry_is_one_attempt() -> None:
    assert One.retry.max_attempts == 1
    assert One.retry.should_retry(1, RuntimeError("x")) is False


def test_step_default_compensation_retry_is_bounded() -> None:
    policy = One.compensation_retry
    assert 1 < policy.max_attempts < 100
    assert policy.should_retry(policy.max_attempts, RuntimeError("x")) is False
    assert policy.should_retry(1, RuntimeError("x")) is True
    assert math.isfinite(policy.max_interval)


def test_step_compensate_on_failure_defaults_true() -> None:
    assert One.compensate_on_failure is True


@pytest.mark.anyio
async def test_step_default_handlers() -> None:
    ctx: saga.StepContext[State] = saga.StepContext(
        saga_id="s-1",
        saga_name="trip",
        state=State(),
        step="One",
        attempt=1,
        compensating=False,
        idempotency_key="k",
    )
    step = One()
    event = saga.Event(name="e", payload=None, key=None, event_id="id")
    assert await step.compensate(ctx) is None
    assert await step.on_event(ctx, event) is None
    assert await step.on_compensation_event(ctx, event) is None
    with pytest.raises(saga.StepTimeout):
        await step.on_timeout(ctx)

    class NoRun(saga.Step):
        pass

    with pytest.raises(NotImplementedError):
        await NoRun().run(ctx)


# -- RetryPolicy ----------------------------------------------------------------------------


def test_retry_policy_defaults() -> None:
    policy = saga.RetryPolicy()
    assert (policy.max_attempts, policy.initial_interval, policy.backoff) == (1, 1.0, 2.0)
    assert (policy.max_interval, policy.non_retryable) == (60.0, ())


def test_retry_policy_backoff_is_exponential_and_capped() -> None:
    policy = saga.RetryPolicy(max_attempts=10, initial_interval=0.5, backoff=3.0, max_interval=10)
    assert [policy.interval(a) for a in range(1, 5)] == [0.5, 1.5, 4.5, 10]


def test_retry_policy_non_retryable() -> None:
    policy = saga.RetryPolicy(max_attempts=5, non_retryable=(KeyError,))
    assert policy.should_retry(1, KeyError("k")) is False
    assert policy.should_retry(1, ValueError("v")) is True
    assert policy.should_retry(5, ValueError("v")) is False


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_attempts": 0},
        {"max_attempts": -3},
        {"max_attempts": 1.5},
        {"initial_interval": -1.0},
        {"initial_interval": math.inf},
        {"initial_interval": math.nan},
        {"backoff": 0.5},
        {"max_interval": -1},
    ],
)
def test_retry_policy_rejects_bad_numbers(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        saga.RetryPolicy(**kwargs)


@pytest.mark.parametrize("non_retryable", [[KeyError], (KeyError, "x"), (int,)])
def test_retry_policy_rejects_bad_non_retryable(non_retryable: Any) -> None:
    with pytest.raises(TypeError):
        saga.RetryPolicy(non_retryable=non_retryable)


# -- wait_for -------------------------------------------------------------------------------


def test_wait_for_defaults() -> None:
    wait = saga.wait_for("payment.settled")
    assert isinstance(wait, saga.Wait)
    assert (wait.name, wait.key, wait.timeout) == ("payment.settled", None, None)


def test_wait_for_key_and_float_timeout() -> None:
    wait = saga.wait_for("payment.settled", key="t-1", timeout=2.5)
    assert (wait.name, wait.key, wait.timeout) == ("payment.settled", "t-1", 2.5)
    assert saga.wait_for("e", timeout=3).timeout == 3.0


def test_wait_for_accepts_timedelta() -> None:
    assert saga.wait_for("e", timeout=timedelta(minutes=5)).timeout == 300.0
    assert saga.wait_for("e", timeout=timedelta(milliseconds=250)).timeout == 0.25


@pytest.mark.parametrize("name", ["", "x" * 256, "a\x00b"])
def test_wait_for_bad_name(name: str) -> None:
    with pytest.raises(ValueError, match="event name"):
        saga.wait_for(name)


@pytest.mark.parametrize(
    "timeout", [0, 0.0, -1, -0.5, math.inf, math.nan, timedelta(0), timedelta(seconds=-1)]
)
def test_wait_for_bad_timeout(timeout: Any) -> None:
    with pytest.raises(ValueError, match="timeout"):
        saga.wait_for("e", timeout=timeout)


@pytest.mark.parametrize("timeout", ["10", True, [1]])
def test_wait_for_timeout_wrong_type(timeout: Any) -> None:
    with pytest.raises(TypeError):
        saga.wait_for("e", timeout=timeout)


def test_wait_for_wrong_types() -> None:
    with pytest.raises(TypeError):
        saga.wait_for(3)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        saga.wait_for("e", key=7)  # type: ignore[arg-type]


# -- the exception tree ---------------------------------------------------------------------


@pytest.mark.parametrize("error", ERRORS, ids=lambda e: e.__name__)
def test_every_error_is_a_saga_error(error: type[Exception]) -> None:
    assert issubclass(error, saga.SagaError)
    assert issubclass(error, Exception)


def test_saga_error_is_an_exception() -> None:
    assert issubclass(saga.SagaError, Exception)


def test_every_exported_exception_is_listed() -> None:
    exported = {
        getattr(saga, n)
        for n in saga.__all__
        if isinstance(getattr(saga, n), type) and issubclass(getattr(saga, n), BaseException)
    }
    assert exported == {saga.SagaError, *ERRORS}


def test_error_mixins() -> None:
    assert issubclass(saga.UnknownSaga, LookupError)
    assert issubclass(saga.PayloadTooLarge, ValueError)
    assert issubclass(saga.NotASagaStore, saga.StoreError)
    assert issubclass(saga.LeaseLost, saga.StoreError)


def _saga_modules() -> list[str]:
    names = ["saga"]
    for info in pkgutil.walk_packages(saga.__path__, "saga."):
        if info.name != "saga.__main__":
            names.append(info.name)
    return names


@pytest.mark.parametrize("module_name", _saga_modules())
def test_no_name_shadows_a_builtin(module_name: str) -> None:
    module = importlib.import_module(module_name)
    exported = getattr(module, "__all__", [])
    classes = [
        n
        for n, v in vars(module).items()
        if isinstance(v, type) and getattr(v, "__module__", None) == module_name
    ]
    shadowing = {n for n in [*exported, *classes] if hasattr(builtins, n)}
    assert shadowing == set()
