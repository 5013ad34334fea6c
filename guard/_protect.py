"""``protect``: the guard as a decorator on the function that sends payouts.

The decorator only binds arguments and runs the body; how a call is admitted (reserved or
checked) and how its hold ends is the guard's (``PayoutGuard`` for plain and ``async def``
functions, ``AsyncPayoutGuard`` for ``async def`` ones).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, Protocol, TypeVar, cast

from guard._reservation import ExceptionTypes, Reservation
from guard.errors import ConfigurationError, InvalidPayoutRequest

__all__ = ["AsyncAdmit", "Decorator", "Settles", "SyncAdmit"]

P = ParamSpec("P")
R = TypeVar("R")
Spec = str | Callable[[dict[str, Any]], Any] | None
Getter = Callable[[dict[str, Any]], Any]


class Settles(Protocol):
    """A hold an ``async def`` payout ends when it returns or raises."""

    async def settle(
        self, exc: BaseException | None, *, uncertain_on: ExceptionTypes | None = None
    ) -> None:
        """End the hold as leaving the payout with *exc* says (see ``Reservation.settle``)."""
        ...


SyncAdmit = Callable[[dict[str, Any]], Reservation | None]
"""Judge one call (reserve with a payout id, else check); raise ``PayoutDenied`` to refuse."""
AsyncAdmit = Callable[[dict[str, Any]], Awaitable[Settles | None]]
"""The same for an ``async def`` call."""


class Decorator:
    """What ``protect(...)`` returns: call it on a payout function.

    Args:
        specs: Option -> parameter name or getter (``None``: not asked for).
        uncertain_on: Replaces the guard's ``uncertain_on`` for this function.
        admit: How a plain function's call is admitted (``None``: the guard cannot).
        aadmit: How an ``async def`` function's call is admitted.
        guard_name: The guard's class, for messages.
    """

    def __init__(
        self,
        specs: dict[str, Spec],
        *,
        uncertain_on: ExceptionTypes | None,
        admit: SyncAdmit | None,
        aadmit: AsyncAdmit,
        guard_name: str,
    ) -> None:
        self._specs = specs
        self._uncertain_on = uncertain_on
        self._admit = admit
        self._aadmit = aadmit
        self._guard_name = guard_name

    def __call__(self, func: Callable[P, R]) -> Callable[P, R]:
        """Return *func* guarded.

        Raises:
            ConfigurationError: an option names a parameter *func* does not have, or *func*
                is a plain function and the guard only runs ``async def`` ones.
        """
        signature = inspect.signature(func)
        getters = {
            option: _getter(option, spec, signature, func)
            for option, spec in self._specs.items()
            if spec is not None
        }
        uncertain_on = self._uncertain_on
        admit, aadmit = self._admit, self._aadmit
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
                # Cancelled while the hold is being taken: the hold, once taken, is released.
                reservation = await aadmit(ask(args, kwargs))
                if reservation is None:
                    return await func(*args, **kwargs)
                try:
                    result = await func(*args, **kwargs)
                except BaseException as exc:
                    # Cancelled during the body: the money may have left, so it is uncertain.
                    await reservation.settle(exc, uncertain_on=uncertain_on)
                    raise
                await reservation.settle(None)
                return result

            return cast("Callable[P, R]", async_guarded)

        if admit is None:
            raise ConfigurationError(
                f"{self._guard_name}.protect guards async def functions; "
                f"{getattr(func, '__qualname__', 'this function')} is a plain function (use "
                f"PayoutGuard for it)",
                path="protect",
            )
        blocking_admit = admit

        @functools.wraps(func)
        def guarded(*args: P.args, **kwargs: P.kwargs) -> R:
            reservation = blocking_admit(ask(args, kwargs))
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
