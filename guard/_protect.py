"""``PayoutGuard.protect``: the guard as a decorator on the function that sends payouts."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, cast

from guard._reservation import ExceptionTypes, Reservation
from guard.errors import ConfigurationError, InvalidPayoutRequest, PayoutDenied

if TYPE_CHECKING:
    from guard._guard import PayoutGuard

__all__ = ["Decorator", "make_decorator"]

P = ParamSpec("P")
R = TypeVar("R")
Spec = str | Callable[[dict[str, Any]], Any] | None
Getter = Callable[[dict[str, Any]], Any]


class Decorator:
    """What ``protect(...)`` returns: call it on a payout function."""

    def __init__(
        self, guard: PayoutGuard, specs: dict[str, Spec], uncertain_on: ExceptionTypes | None
    ) -> None:
        self._guard = guard
        self._specs = specs
        self._uncertain_on = uncertain_on

    def __call__(self, func: Callable[P, R]) -> Callable[P, R]:
        """Return *func* guarded.

        Raises:
            ConfigurationError: an option names a parameter *func* does not have.
        """
        signature = inspect.signature(func)
        getters = {
            option: _getter(option, spec, signature, func)
            for option, spec in self._specs.items()
            if spec is not None
        }
        guard = self._guard
        uncertain_on = self._uncertain_on
        needs_id = "payout_id" in getters

        def ask(args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            arguments = dict(bound.arguments)
            request = {option: get(arguments) for option, get in getters.items()}
            if needs_id and request["payout_id"] in (None, ""):
                name = getattr(func, "__qualname__", "the function")
                raise InvalidPayoutRequest(
                    f"{name}() was called without a payout id ({request['payout_id']!r}); "
                    f"protect(payout_id=...) reserves every call under its id, so one is "
                    f"required"
                )
            return request

        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def async_guarded(*args: P.args, **kwargs: P.kwargs) -> Any:
                request = ask(args, kwargs)
                # Cancelled while the hold is being taken: the hold, once taken, is released.
                reservation = await guard.threads.run_keeping(
                    _give_back, _admit, guard, request
                )
                if reservation is None:
                    return await func(*args, **kwargs)
                try:
                    result = await func(*args, **kwargs)
                except BaseException as exc:
                    # Cancelled during the body: the money may have left, so it is uncertain.
                    await guard.threads.run_shielded(
                        reservation.settle, exc, uncertain_on=uncertain_on
                    )
                    raise
                await guard.threads.run_shielded(reservation.settle, None)
                return result

            return cast("Callable[P, R]", async_guarded)

        @functools.wraps(func)
        def guarded(*args: P.args, **kwargs: P.kwargs) -> R:
            reservation = _admit(guard, ask(args, kwargs))
            if reservation is None:
                return func(*args, **kwargs)
            try:
                result = func(*args, **kwargs)
            except BaseException as exc:
                reservation.settle(exc, uncertain_on=uncertain_on)
                raise
            reservation.settle(None)
            return result

        return guarded


def _admit(guard: PayoutGuard, request: dict[str, Any]) -> Reservation | None:
    """Judge one call; return the reservation to hold during it, or ``None`` for a plain check.

    Raises:
        PayoutDenied: denied while enforcing.
    """
    if "payout_id" in request:
        return guard.reserve(**request)
    decision = guard.check(**request)
    if not decision.allowed and guard.mode == "enforce":
        raise PayoutDenied(decision)
    return None


def _getter(option: str, spec: Spec, signature: inspect.Signature, func: object) -> Getter:
    if callable(spec):
        return spec
    if not isinstance(spec, str):
        raise ConfigurationError(
            f"must be a parameter name or a callable taking the bound arguments, got {spec!r}",
            path=f"protect({option}=...)",
        )
    params = signature.parameters
    if spec in params and params[spec].kind not in (
        inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD
    ):
        return lambda arguments: arguments[spec]
    varkw = next(
        (p.name for p in params.values() if p.kind is inspect.Parameter.VAR_KEYWORD), None
    )
    name = getattr(func, "__qualname__", repr(func))
    if varkw is None:
        raise ConfigurationError(
            f"{name}() has no parameter {spec!r}; its parameters are {list(params)}",
            path=f"protect({option}=...)",
        )

    def from_kwargs(arguments: dict[str, Any]) -> Any:
        extra = arguments.get(varkw, {})
        if spec not in extra:
            raise InvalidPayoutRequest(
                f"{name}() was called without {spec!r}, which protect({option}=...) needs"
            )
        return extra[spec]

    return from_kwargs


def _give_back(reservation: Reservation | None) -> None:
    """Release a hold taken for a call whose task was cancelled before its body ran."""
    if reservation is not None:
        reservation.release()


def make_decorator(
    guard: PayoutGuard, *, uncertain_on: ExceptionTypes | None, **specs: Spec
) -> Decorator:
    """Return the decorator for ``PayoutGuard.protect``."""
    return Decorator(guard, specs, uncertain_on)
