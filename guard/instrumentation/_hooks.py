"""The hooks in use: discovered on first use, switched in one place, called through ``EVENTS``.

The guard's modules call ``EVENTS.<event>(...)`` at each instrumented point. ``EVENTS`` holds,
per event, one callable resolved from the hooks in use, so a call costs the same whatever the
number of hooks that could have been: an event no hook records is an empty function, one hook
is that hook's method (guarded), several are called in turn. Nothing is resolved until the
first event after the hooks were set (stamina's delayed initialisation): the default hooks,
and their backends' imports, cost nothing until a guard records something.

Default hooks, by what imports: ``PrometheusHook`` (on ``prometheus_client.REGISTRY``) when
``prometheus_client`` does, ``OpenTelemetryHook`` (the global meter and tracer providers) when
``opentelemetry-api`` does and a global provider is set. structlog events are logged by the
guard itself, always, whatever the hooks.
"""

from __future__ import annotations

import re
import threading
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from contextlib import AbstractContextManager
from decimal import Decimal
from importlib import import_module
from importlib.util import find_spec
from time import perf_counter
from types import TracebackType
from typing import TYPE_CHECKING, Any

import structlog

from guard.errors import ConfigurationError
from guard.instrumentation._data import Hook, HookFactory, judged_held
from guard.instrumentation._otel import OpenTelemetryHook, global_providers_set
from guard.instrumentation._prometheus import PrometheusHook

if TYPE_CHECKING:
    from guard._models import Decision
    from guard._request import Request

__all__ = [
    "EVENTS",
    "Events",
    "decision_log_dropped",
    "default_hooks",
    "get_hooks",
    "restore_default_hooks",
    "set_hooks",
]

_log = structlog.get_logger("payout_guard")

HookOrFactory = Hook | HookFactory


def _importable(module: str) -> bool:
    """Return whether *module* can be imported (found, not imported)."""
    try:
        return find_spec(module) is not None
    except ImportError:  # its parent package is missing
        return False


def default_hooks() -> tuple[HookFactory, ...]:
    """Return the hooks used unless others are set, as they stand now.

    ``PrometheusHook`` when ``prometheus_client`` imports; ``OpenTelemetryHook`` when
    ``opentelemetry-api`` imports and the process has set a global meter or tracer provider
    (through the API's stand-in, every check would pay for metrics and spans that go
    nowhere). The guard asks this once, at its first event: set the OpenTelemetry providers
    before the first check, or call :func:`restore_default_hooks` after setting them.
    """
    hooks: list[HookFactory] = []
    if _importable("prometheus_client"):
        hooks.append(HookFactory(PrometheusHook))
    if _importable("opentelemetry.metrics") and _importable("opentelemetry.trace"):
        try:
            configured = global_providers_set()
        except Exception:  # noqa: BLE001 - a broken install is no backend
            configured = False
        if configured:
            hooks.append(HookFactory(OpenTelemetryHook))
    return tuple(hooks)


def _nothing(*args: object) -> None:
    """Record nothing: the event no hook records."""


# The same for an event of one argument, without a Python call: a C method that drops what it
# is given (a deque that keeps nothing). Every check makes two such events.
_drop_one: Callable[[object], None] = deque[object](maxlen=0).append


def _one(call: Callable[..., None]) -> Callable[..., None]:
    """Return *call*, an event of one argument, or the free no-op when it records nothing."""
    return _drop_one if call is _nothing else call


class _NoSpan:
    """The span when no hook traces: enters and leaves, nothing else."""

    __slots__ = ()

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None


_NO_SPAN = _NoSpan()

# A store step's class name -> the operation label: TryHold -> try_hold.
_OPERATIONS: dict[type[Any], str] = {}


def _operation(step: object) -> str:
    if isinstance(step, str):  # a fleet call named by the balance cache (spend, read_shared)
        return step
    kind = type(step)
    name = _OPERATIONS.get(kind)
    if name is None:
        name = _OPERATIONS[kind] = re.sub(r"(?<!^)(?=[A-Z])", "_", kind.__name__).lower()
    return name


class _Failures:
    """Log a hook's first failure per event; the later ones of the same hook stay quiet."""

    def __init__(self) -> None:
        self._seen: set[tuple[int, str]] = set()

    def report(self, hook: object, name: str, exc: Exception) -> None:
        key = (id(hook), name)
        if key in self._seen:
            return
        self._seen.add(key)
        _log.warning("payout_guard.hook_failed", hook=type(hook).__name__, call=name,
                     error=type(exc).__name__)


def _guarded(hook: object, name: str, failures: _Failures) -> Callable[..., None]:
    """Return *hook*'s method *name*, called so that an exception never leaves it."""
    method = getattr(hook, name)

    def call(*args: Any) -> None:
        try:
            method(*args)
        except Exception as exc:  # noqa: BLE001 - a hook must never fail a check
            failures.report(hook, name, exc)

    return call


def _fan(calls: list[Callable[..., None]]) -> Callable[..., None]:
    """Return one callable calling each of *calls* in turn (the empty function for none)."""
    if not calls:
        return _nothing
    if len(calls) == 1:
        return calls[0]
    first, *rest = calls

    def every(*args: Any) -> None:
        first(*args)
        for call in rest:
            call(*args)

    return every


class _StoreTimer:
    """Time one store call and report it when it ends (however it ends)."""

    __slots__ = ("_operation", "_record", "_started", "_store")

    def __init__(self, record: Callable[[str, str, float], None], store: str, operation: str
                 ) -> None:
        self._record = record
        self._store = store
        self._operation = operation
        self._started = 0.0

    def __enter__(self) -> None:
        self._started = perf_counter()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._record(self._store, self._operation, perf_counter() - self._started)


class _Spans:
    """The spans of every tracing hook around one call; a failing hook is left out."""

    __slots__ = ("_attributes", "_failures", "_hooks", "_name", "_open")

    def __init__(self, hooks: tuple[Hook, ...], name: str, attributes: Mapping[str, str],
                 failures: _Failures) -> None:
        self._hooks = hooks
        self._name = name
        self._attributes = attributes
        self._failures = failures
        self._open: list[tuple[Hook, AbstractContextManager[None]]] = []

    def __enter__(self) -> None:
        for hook in self._hooks:
            try:
                span = hook.span(self._name, self._attributes)
                span.__enter__()
            except Exception as exc:  # noqa: BLE001 - a hook must never fail a check
                self._failures.report(hook, "span", exc)
            else:
                self._open.append((hook, span))

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        while self._open:
            hook, span = self._open.pop()
            try:
                span.__exit__(exc_type, exc, tb)  # what it returns never swallows the error
            except Exception as failure:  # noqa: BLE001 - a hook must never fail a check
                self._failures.report(hook, "span", failure)


def _overrides(hook: object, name: str) -> bool:
    """Return whether *hook* records event *name* (has its own method for it)."""
    own = getattr(type(hook), name, None)
    return callable(own) and own is not getattr(Hook, name)


class Events:
    """The instrumented points' way to the hooks: one attribute per event.

    Attributes:
        decision: ``(decision)``: a decision was made (and logged); also samples the held
            total it was judged with.
        balance_fetch: ``(provider, outcome, seconds)``: one balance fetch ended.
        provider_request: ``(provider, status)``: one HTTP request to a provider ended
            (*status* an ``int``, or ``None`` when no answer came back).
        balance_cache: ``(result)``: one balance lookup (``hit``, ``miss``, ``shared``, ``stale``).
        decision_log_dropped: ``()``: a decision log dropped a record.
        stores: Whether any hook times store calls (ask ``store_timer`` only then).
        tracing: Whether any hook traces (ask ``span`` only then: a ``with`` block costs an
            untraced check a thirtieth of its time).
    """

    decision: Callable[[Decision], None]
    balance_fetch: Callable[[str, str, float], None]
    provider_request: Callable[[str, int | None], None]
    balance_cache: Callable[[str], None]
    decision_log_dropped: Callable[[], None]
    stores: bool
    tracing: bool

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._chosen: tuple[HookOrFactory, ...] | None = None
        self._hooks: tuple[Hook, ...] | None = None
        self._store_call: Callable[[str, str, float], None] = _nothing
        self._tracers: tuple[Hook, ...] = ()
        self._failures = _Failures()
        self._unresolved()

    # -- the call points that are not plain callables ----------------------------------------

    def store_timer(self, store: object, step: object) -> AbstractContextManager[None]:
        """Return a context manager timing one call of *store* for *step*.

        *step* is a store step (its class names the operation: ``TryHold`` is ``try_hold``)
        or the operation's name itself (the balance cache's fleet calls: ``read_shared``,
        ``write_shared``, ``drop_lease``, ``spend``).
        """
        if self._hooks is None:
            self.resolve()
        if self._store_call is _nothing:
            return _NO_SPAN
        return _StoreTimer(self._store_call, type(store).__name__, _operation(step))

    def span(self, name: str, request: Request) -> AbstractContextManager[None]:
        """Return the tracing spans around one ``check`` or ``reserve`` of *request*."""
        tracers = self._tracers
        if not tracers:
            if self._hooks is not None:
                return _NO_SPAN
            self.resolve()
            tracers = self._tracers
            if not tracers:
                return _NO_SPAN
        attributes = {"payout_guard.currency": request.currency,
                      "payout_guard.amount": str(request.amount)}
        if request.payout_id is not None:
            attributes["payout_guard.payout_id"] = request.payout_id
        return _Spans(tracers, name, attributes, self._failures)

    # -- choosing the hooks --------------------------------------------------------------------

    def choose(self, hooks: tuple[HookOrFactory, ...] | None) -> tuple[HookOrFactory, ...] | None:
        """Use *hooks* from the next event on (``None``: the defaults); return the old choice."""
        with self._lock:
            old = self._chosen
            self._chosen = hooks
            self._hooks = None
            self._unresolved()
            return old

    def preload(self) -> None:
        """Import the backends the default hooks would use, now rather than at the first event.

        A guard calls this when it is built: the first event of an ``AsyncPayoutGuard`` runs
        on the event loop, which an import of ``prometheus_client`` (about 150 ms) would stall.
        Which hooks are used is still decided at the first event.
        """
        if self._hooks is not None or self._chosen is not None:
            return
        for module in ("prometheus_client", "opentelemetry.metrics", "opentelemetry.trace"):
            if _importable(module):
                try:
                    import_module(module)
                except Exception:  # noqa: BLE001, S112 - a broken install is no backend: skip it
                    continue

    def resolve(self) -> tuple[Hook, ...]:
        """Return the hooks in use, making them (and the call points) on the first call."""
        hooks = self._hooks
        if hooks is not None:
            return hooks
        with self._lock:
            if self._hooks is None:
                try:
                    chosen = self._chosen if self._chosen is not None else default_hooks()
                    made = self._made(chosen)
                except Exception as exc:  # noqa: BLE001 - never fail a check: record nothing
                    self._failures.report(self, "resolve", exc)
                    made = ()
                self._install(made)
            return self._hooks  # type: ignore[return-value] # set by _install

    def _made(self, chosen: tuple[HookOrFactory, ...]) -> tuple[Hook, ...]:
        """Return *chosen* with each factory called; a factory that fails is left out."""
        hooks: list[Hook] = []
        for one in chosen:
            if isinstance(one, HookFactory):
                try:
                    hooks.append(one.hook_factory())
                except Exception as exc:  # noqa: BLE001 - a backend that fails is left out
                    self._failures.report(one, "hook_factory", exc)
            else:
                hooks.append(one)
        return tuple(hooks)

    def _unresolved(self) -> None:
        """Set every call point to resolve the hooks first, then record."""
        for name in ("decision", "balance_fetch", "provider_request", "balance_cache",
                     "decision_log_dropped"):
            setattr(self, name, self._first_use(name))
        self._store_call = _nothing
        self._tracers = ()
        # Until resolved: the first store call or span resolves the hooks.
        self.stores = True
        self.tracing = True

    def _first_use(self, name: str) -> Callable[..., None]:
        def first(*args: Any) -> None:
            self.resolve()
            getattr(self, name)(*args)

        return first

    def _install(self, hooks: tuple[Hook, ...]) -> None:
        """Resolve each call point from *hooks* (under the lock)."""
        failures = self._failures

        def calls(name: str) -> Callable[..., None]:
            return _fan([_guarded(h, name, failures) for h in hooks if _overrides(h, name)])

        decided, held = calls("decision"), calls("held")
        if held is _nothing:
            self.decision = _one(decided)
        else:
            def decision(made: Decision) -> None:
                decided(made)
                amount: Decimal | None = judged_held(made)
                if amount is not None:
                    held(made.provider, made.currency, "counting", amount)

            self.decision = decision
        requested = calls("provider_request")
        if requested is _nothing:
            self.provider_request = _nothing
        else:
            def provider_request(provider: str, status: int | None) -> None:
                requested(provider, "error" if status is None else str(status))

            self.provider_request = provider_request
        self.balance_fetch = calls("balance_fetch")
        self.balance_cache = _one(calls("balance_cache"))
        self.decision_log_dropped = calls("decision_log_dropped")
        self._store_call = calls("store_call")
        self.stores = self._store_call is not _nothing
        self._tracers = tuple(h for h in hooks if _overrides(h, "span"))
        self.tracing = bool(self._tracers)
        self._hooks = hooks


EVENTS = Events()
"""The one dispatcher every instrumented point calls."""


class _Restore:
    """Returned by :func:`set_hooks`: as a ``with`` block, puts the previous hooks back."""

    def __init__(self, previous: tuple[HookOrFactory, ...] | None) -> None:
        self._previous = previous

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        EVENTS.choose(self._previous)


def set_hooks(hooks: Iterable[HookOrFactory] | None) -> _Restore:
    """Use *hooks* for everything the guard instruments, in every guard of the process.

    Takes effect at the next event; factories are called then. Usable as a ``with`` block
    that puts the previous hooks back on leaving it.

    Args:
        hooks: ``Hook`` instances and ``HookFactory`` s. ``[]`` turns instrumentation off
            (structlog events are still logged); ``None`` restores the defaults.

    Returns:
        A context manager restoring the hooks in use before this call.

    Raises:
        ConfigurationError: an item is neither a ``Hook`` nor a ``HookFactory``.
    """
    chosen = None if hooks is None else tuple(hooks)
    for position, one in enumerate(chosen or ()):
        if not isinstance(one, Hook | HookFactory):
            raise ConfigurationError(
                f"must be a guard.instrumentation.Hook (or a HookFactory), got "
                f"{type(one).__name__}", path=f"hooks[{position}]",
            )
    return _Restore(EVENTS.choose(chosen))


def get_hooks() -> tuple[Hook, ...]:
    """Return the hooks in use (factories are made now, if they were not yet)."""
    return EVENTS.resolve()


def restore_default_hooks() -> None:
    """Use the default hooks again (see :func:`default_hooks`); same as ``set_hooks(None)``."""
    EVENTS.choose(None)


def decision_log_dropped() -> None:
    """Count one decision record a decision log could not write.

    Decision log sinks call this for each record they drop
    (``payout_guard_decision_log_dropped_total``).
    """
    EVENTS.decision_log_dropped()

