"""What ``PayoutGuard`` and ``AsyncPayoutGuard`` share: options checked once, the core, protect.

The decisions themselves live in ``guard/_core.py``; each front door only runs its flows
(``guard/_sync.py`` with blocking calls, ``guard/_async.py`` on an event loop).
"""

from __future__ import annotations

import difflib
import functools
import itertools
import os
import secrets
from collections.abc import Callable, Iterable, Mapping, Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Any, NoReturn, Self

from guard._cache import BalanceCache, Budget, LocalBudget, shared_budget
from guard._clock import Clock, Clocks, clocks_of
from guard._config_build import configured_guard
from guard._core import Core, Policy, Release, store_call
from guard._health import Health, health_of
from guard._models import Mode
from guard._money import parse_currency, smallest_unit
from guard._protect import AsyncAdmit, Decorator, SyncAdmit
from guard._records import DecisionLog
from guard._request import Request, optional_text, parse_request
from guard._reservation import DEFAULT_UNCERTAIN_ON, GiveBacks, Handling, uncertain_on_option
from guard._seconds import seconds
from guard._threads import BlockingPool
from guard.errors import ConfigurationError, InvalidPayoutRequest
from guard.fetchers._checks import check_requests_per_minute
from guard.fetchers._protocol import BalanceFetcher
from guard.instrumentation._hooks import EVENTS
from guard.stores import FleetStore, Hold, InMemoryReservations, ReservationStore
from rules import AnyOf, FrozenFunds, MaxBalanceAge, Rule, RuleSet, SufficientFunds, When

if TYPE_CHECKING:
    from guard._config import ConfigSource

__all__ = ["Clock", "GuardBase", "guard_rules", "owner_token", "watches_frozen"]

_ZERO = Decimal(0)

Spec = str | Callable[[dict[str, Any]], Any]

# Owner tokens: a secret random prefix per process (made again in a forked child, so two
# processes never share one) and a counter. Unique and unguessable to other processes, and a
# fraction of a system call for random bytes on every reserve.
_token = {"prefix": secrets.token_hex(8)}
_counter = itertools.count()


def _new_prefix() -> None:
    _token["prefix"] = secrets.token_hex(8)


os.register_at_fork(after_in_child=_new_prefix)


def owner_token() -> str:
    """Return a new owner token for a reservation's hold (see ``ReservationStore``)."""
    return f"{_token['prefix']}{next(_counter):x}"


class GuardBase:
    """The options, the decision core and the balance cache both front doors are built on.

    Args:
        fetcher: Where balances come from (a provider fetcher, or ``StaticFetcher`` in tests),
            or a sequence of fetchers (unique ``name``s): a guard over several providers
            routes each payout to one that can pay it (see *routing*).
        rules: Rules applied on top of ``SufficientFunds``, which always applies.
        mode: ``"enforce"`` blocks denied payouts; ``"dry_run"`` records what it would do.
        cache_ttl: Seconds a fetched balance is reused; ``0`` fetches on every check.
        reservations: Where in-flight payouts hold funds (default: in this process's memory).
        fail_open: Allow (with a warning) when no balance can be read. Off by default: a
            provider outage denies with ``balance_unavailable``.
        settle_lag: Seconds a sent payout may take to show in a balance: a committed hold stops
            counting once a balance requested at least this long after its commit is in
            hand. Default: the fetcher's own (``LuxCoreFetcher`` 2 s, others 30 s). A mapping
            gives it per provider name (a provider left out keeps its fetcher's own).
        hold_ttl: Default seconds a pending hold lives before it stops counting (at most 30
            days).
        uncertain_on: Exceptions that, raised inside a guarded payout, mean the money may
            have left: the hold is marked ``uncertain`` instead of released (default
            ``OSError``, which covers timeouts and every ``requests`` exception, and
            ``PayoutOutcomeUnknown``). ``PayoutNotSent`` always releases.
        uncertain_ttl: Seconds an uncertain hold keeps counting when nobody resolves it
            (default one hour, at most 30 days); its payout id stays taken afterwards.
        refresh_after_commit: After a commit, a balance older than this many seconds is
            fetched again (so the committed hold stops counting sooner), within the request
            budget; ``None`` turns it off. A fleet sharing balances refreshes once, not once
            per process.
        share_balances: Share cached balances and the fetch itself with every process using
            the same ``SqliteReservations`` or ``RedisReservations`` (default: on with those
            stores). The fetcher's ``requests_per_minute`` budget is kept in such a store too.
        max_stale: Seconds old a cached balance may be and still be used when the request
            budget is spent (``MaxBalanceAge``'s limit instead, when the rules have one).
        own_payouts_window: Seconds after its commit our own payout still explains frozen
            funds to ``FrozenFunds`` (default one hour: long enough for a provider to complete
            it).
        max_workers: Threads the guard owns for blocking work started from an event loop:
            as many for fetches, and as many again for the store's calls (SQLite), so that a
            hung provider never holds up a store read; never the loop's default executor.
        clock: The wall clock for timestamps and the monotonic clock for durations (default
            ``time.time`` and ``time.monotonic``); tests pass a ``guard.testing.FakeClock``.
            A plain callable is read for both.
        routing: With several providers, the order candidates are tried in: ``"priority"``
            (the fetchers' order; the default) or ``"most_headroom"`` (the largest
            ``max_payable`` first). The first candidate whose rules allow a payout pays it.
        routes: Currency -> the provider names that may pay it, in priority order (default:
            every provider, for every currency).
        decision_log: Where a ``DecisionRecord`` of every decision goes
            (``JsonLinesDecisionLog``, ``SqliteDecisionLog`` or your own ``DecisionLog``):
            what ``payout-guard replay`` judges again. Its ``write`` never blocks or fails a
            decision. Closed with the guard.

    Raises:
        ConfigurationError: any option is invalid (two fetchers sharing a name among them).
    """

    def __init__(
        self,
        fetcher: BalanceFetcher | Sequence[BalanceFetcher],
        rules: Iterable[Rule] = (),
        *,
        mode: Mode = "enforce",
        cache_ttl: float = 5.0,
        reservations: ReservationStore | None = None,
        fail_open: bool = False,
        settle_lag: float | Mapping[str, float] | None = None,
        hold_ttl: float = 300.0,
        uncertain_on: type[BaseException] | tuple[type[BaseException], ...] = (
            DEFAULT_UNCERTAIN_ON
        ),
        uncertain_ttl: float = 3600.0,
        refresh_after_commit: float | None = 1.0,
        share_balances: bool | None = None,
        max_stale: float = 60.0,
        own_payouts_window: float = 3600.0,
        max_workers: int = 32,
        clock: Clock | None = None,
        routing: Policy = "priority",
        routes: Mapping[str, Sequence[str]] | None = None,
        decision_log: DecisionLog | None = None,
    ) -> None:
        fetchers = _fetchers_of(fetcher)
        names = tuple(fetchers)
        if routing not in ("priority", "most_headroom"):
            raise ConfigurationError(
                f"must be 'priority' or 'most_headroom', got {str(routing)[:40]!r}",
                path="routing",
            )
        routed = _routes_of(routes, names)
        if mode not in ("enforce", "dry_run"):
            raise ConfigurationError(f"must be 'enforce' or 'dry_run', got {mode!r}", path="mode")
        if reservations is not None and not isinstance(reservations, ReservationStore):
            raise ConfigurationError(
                f"must be a reservation store, got {type(reservations).__name__}",
                path="reservations",
            )
        if decision_log is not None and not isinstance(decision_log, DecisionLog):
            raise ConfigurationError(
                f"must have write(record) and close() (a DecisionLog), got "
                f"{type(decision_log).__name__}",
                path="decision_log",
            )
        ruleset = guard_rules(rules)
        if isinstance(max_workers, bool) or not isinstance(max_workers, int) or max_workers < 1:
            raise ConfigurationError(
                f"must be a whole number >= 1, got {str(max_workers)[:40]}", path="max_workers"
            )
        try:
            clocks = clocks_of(clock)
        except TypeError as exc:
            raise ConfigurationError(str(exc), path="clock") from None
        self.fetchers: dict[str, BalanceFetcher] = fetchers
        self.fetcher = fetchers[names[0]]
        self.routing: Policy = routing
        self.routes = routed
        self.rules = ruleset
        self.mode: Mode = mode
        self.fail_open = bool(fail_open)
        self.settle_lags = _settle_lags(fetchers, settle_lag)
        self.settle_lag = self.settle_lags[names[0]]
        self.hold_ttl = seconds(hold_ttl, "hold_ttl", positive=True)
        self.uncertain_on = uncertain_on_option(uncertain_on)
        self.uncertain_ttl = seconds(uncertain_ttl, "uncertain_ttl", positive=True)
        self.threads = BlockingPool(max_workers)
        # The store's calls have threads of their own: fetches a hung provider holds up never
        # queue a check's store read behind them.
        self.store_threads = BlockingPool(max_workers)
        self.reservations: ReservationStore = (
            InMemoryReservations() if reservations is None else reservations
        )
        self.clocks = clocks
        self.refresh_after_commit = (
            None if refresh_after_commit is None
            else seconds(refresh_after_commit, "refresh_after_commit")
        )
        own_window = seconds(own_payouts_window, "own_payouts_window")
        self.core = Core(providers=names, rules=ruleset, mode=mode,
                         fail_open=self.fail_open, settle_lags=self.settle_lags, clocks=clocks,
                         own_window=own_window if watches_frozen(ruleset) else None,
                         routing=routing, routes=routed, decision_log=decision_log)
        self.decision_log = decision_log
        # One balance cache per provider, each with its own request budget.
        ttl, max_stale = seconds(cache_ttl, "cache_ttl"), seconds(max_stale, "max_stale")
        self.caches: dict[str, BalanceCache] = {
            name: _cache_of(one, self.reservations, ttl=ttl, clocks=clocks,
                            share=share_balances,
                            stale_limit=stale_limits(ruleset, max_stale, name))
            for name, one in fetchers.items()
        }
        self.cache = self.caches[names[0]]
        self.core.cached = {name: cache.fresh for name, cache in self.caches.items()}
        if type(self.reservations) is InMemoryReservations:  # no I/O: read in place
            self.core.inline = self.reservations
        self._handling = self.handling(self.runner())
        # Holds the store may have taken for payouts that were denied or abandoned.
        self.give_backs = GiveBacks(self.give_back, clocks.time)
        EVENTS.preload()  # the metrics backends imported here, not on an event loop later

    @classmethod
    def from_config(
        cls,
        source: ConfigSource,
        *,
        provider: str | Sequence[str] | None = None,
        env: Mapping[str, str] | None = None,
        reservations: ReservationStore | None = None,
        clock: Clock | None = None,
    ) -> Self:
        """Build the guard of a configuration (file, mapping or ``GuardConfig``).

        Without *provider*, the guard is over every configured provider and routes each
        payout (``[routing]``; ``default_provider``, when set, is tried first); a name pins
        one provider, a list of names a subset (in the list's order). Credentials are read
        from the environment
        variables the configuration names. This is the one way to build a guard from a
        configuration; ``guard.load_config`` gives the validated configuration itself. Close
        the guard (``close()``, or a ``with`` block) to close its HTTP session and store.

        Args:
            source: A ``.toml`` (``.yaml``/``.yml``, ``.json``) path, a mapping or a config.
            provider: A configured provider name, or a list of them.
            env: Where credential variables are looked up (default ``os.environ``).
            reservations: A store to use instead of the configured one (to share one store
                between the guards of several providers).
            clock: Seconds since the epoch, for tests.

        Raises:
            ConfigurationError: the configuration is invalid (naming file and key path), a
                credential variable is missing, no provider is configured, or *provider*
                names one that is not (or is not a name).
        """
        return configured_guard(cls, source, provider=provider, env=env,
                                reservations=reservations, clock=clock)

    def __repr__(self) -> str:
        which = (f"provider={self.provider!r}" if len(self.fetchers) == 1
                 else f"providers={list(self.fetchers)!r}")
        return (
            f"{type(self).__name__}({which}, mode={self.mode!r}, "
            f"rules={list(self.rules.names)!r})"
        )

    @property
    def provider(self) -> str:
        """Return the provider name decisions carry (with several: the first, by priority)."""
        return self.fetcher.name

    @property
    def providers(self) -> tuple[str, ...]:
        """Return the names of the guard's providers, in priority order."""
        return tuple(self.fetchers)

    def pinned(self, provider: object) -> str | None:
        """Return the provider a call names (``None``: routed), checked.

        Raises:
            ConfigurationError: *provider* is not the name of one of the guard's providers.
        """
        if provider is None or provider in self.fetchers:
            return provider
        return _unknown_provider(provider, self.providers)

    def protect(
        self,
        *,
        amount: Spec = "amount",
        currency: Spec = "currency",
        payout_id: Spec | None = None,
        account: Spec | None = None,
        fee: Spec | None = None,
        uncertain_on: type[BaseException] | tuple[type[BaseException], ...] | None = None,
        provider: Spec | None = None,
    ) -> Decorator:
        """Return a decorator that guards every call of a payout function.

        Each option names a parameter of the decorated function, or is a callable taking the
        bound arguments (a dict). With a ``payout_id``, every call must carry one (``None``
        or ``""`` is ``InvalidPayoutRequest``), and it is reserved while the body runs: a
        duplicate id is refused before the body runs, so a body never runs twice for one id.
        The hold is committed when the body returns, and on an exception released or marked
        uncertain as :class:`Reservation` explains (*uncertain_on* replaces the guard's
        ``uncertain_on`` for this function). In ``enforce`` mode a denial raises
        ``PayoutDenied`` before the body runs; in ``dry_run`` mode the body always runs.
        With a ``provider`` spec, each call is pinned to the provider it names (``None``:
        routed).

        Raises:
            ConfigurationError: an option names a parameter the function does not have, or
                the function is not one this guard can run (see each guard class).
        """
        specs = {"amount": amount, "currency": currency, "payout_id": payout_id,
                 "account": account, "fee": fee, "provider": provider}
        return Decorator(
            specs,
            uncertain_on=None if uncertain_on is None else uncertain_on_option(
                uncertain_on, "protect(uncertain_on=...)"
            ),
            admit=self.blocking_admission(),
            aadmit=self.async_admission(),
            guard_name=type(self).__name__,
        )

    def blocking_admission(self) -> SyncAdmit | None:
        """Return how ``protect`` admits a plain function's call (``None``: it cannot)."""
        return None

    def async_admission(self) -> AsyncAdmit:
        """Return how ``protect`` admits an ``async def`` function's call."""
        raise NotImplementedError

    def parse_reserve(  # noqa: PLR0917 - reserve()'s own arguments, passed straight on
        self, amount: object, currency: object, payout_id: object, account: object,
        fee: object, ttl: object,
    ) -> tuple[Request, float]:
        """Return the validated request and hold ttl of a ``reserve`` call.

        Raises:
            InvalidPayoutRequest: the request is malformed (a ``payout_id`` is required).
            ConfigurationError: *ttl* is not a positive number of seconds up to 30 days.
        """
        if payout_id is None:
            raise InvalidPayoutRequest("reserve() needs a payout_id: it is the idempotency key")
        hold_ttl = self.hold_ttl if ttl is None else seconds(ttl, "ttl", positive=True)
        # parse_request computes in the money context itself, as check() relies on.
        return parse_request(amount, currency, account, payout_id, fee), hold_ttl

    def probe(self, currency: object, account: str | None) -> Request:
        """Return the smallest payout in *currency*: what ``max_payable`` judges."""
        code = parse_currency(currency)
        return Request(smallest_unit(code), code, _ZERO, optional_text(account, "account"),
                       None)

    def health_report(self, store_error: BaseException | None) -> Health:
        """Return the guard's health, given what reading the store raised (``None``: nothing)."""
        return health_of(self.caches, self.reservations, store_error,
                         monotonic=self.clocks.monotonic(), wall=self.clocks.time())

    def give_back(self, hold: Hold) -> bool:
        """Release *hold* by its owner token with a blocking call; return whether it did.

        What ``give_backs`` asks, from its own thread (the guard's blocking store serves both
        guards).
        """
        step = Release(hold.payout_id, hold.owner)
        with EVENTS.store_timer(self.reservations, step):
            released: bool = store_call(self.reservations, step)
        return released

    def runner(self) -> Callable[[Any], Any]:
        """Return how this guard runs a flow of the core (blocking, or as an awaitable)."""
        raise NotImplementedError

    def handling(self, run: Callable[[Any], Any], *, in_callers_transaction: bool = False
                 ) -> Handling:
        """Return what this guard's reservations share, with *run* to end their holds.

        *in_callers_transaction*: *run* works in the caller's own transaction (``connection``).
        """
        return Handling(run=run, clock=self.clocks.time, uncertain_ttl=self.uncertain_ttl,
                        uncertain_on=self.uncertain_on, on_commit=self.after_commit,
                        in_callers_transaction=in_callers_transaction)

    def after_commit(self, provider: str, currency: str) -> None:
        """Ask for a fresher *currency* balance at *provider* after a commit.

        Only with ``refresh_after_commit``.
        """
        cache = self.caches.get(provider)
        if self.refresh_after_commit is not None and cache is not None:
            cache.refresh_soon(currency, self.refresh_after_commit)

    def after_resolve(self, hold: Hold) -> None:
        """Ask for a fresher balance where *hold*, just committed by ``resolve``, is held."""
        self.after_commit(hold.key.split("|", 1)[0], hold.currency)


def _fetchers_of(
    fetcher: BalanceFetcher | Sequence[BalanceFetcher],
) -> dict[str, BalanceFetcher]:
    """Return the guard's fetchers by name, in order.

    Raises:
        ConfigurationError: one is not a fetcher, there are none, or two share a name.
    """
    given = [fetcher] if isinstance(fetcher, BalanceFetcher) else fetcher
    if isinstance(given, str | bytes) or not isinstance(given, Sequence):
        given = [given]  # refused just below, with its type named
    fetchers: dict[str, BalanceFetcher] = {}
    for one in given:
        if not isinstance(one, BalanceFetcher):
            raise ConfigurationError(
                "fetcher must provide .name and .fetch(currency=None); "
                f"got {type(one).__name__}"
            )
        if one.name in fetchers:
            raise ConfigurationError(
                f"two fetchers are named {one.name!r}; a guard over several providers needs "
                f"a unique name for each (holds are kept by provider name)", path="fetcher",
            )
        fetchers[one.name] = one
    if not fetchers:
        raise ConfigurationError("needs at least one fetcher", path="fetcher")
    return fetchers


def _unknown_provider(name: object, known: Sequence[str], path: str = "provider") -> NoReturn:
    """Raise the ``ConfigurationError`` for *name*, which is none of *known* (the closest named)."""
    if not isinstance(name, str):
        raise ConfigurationError(
            f"must be a provider name, got {type(name).__name__}", path=path
        )
    close = difflib.get_close_matches(name, known, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise ConfigurationError(
        f"no provider named {name[:40]!r}; this guard's are {', '.join(known)}{hint}",
        path=path,
    )


def _routes_of(
    routes: Mapping[str, Sequence[str]] | None, names: tuple[str, ...]
) -> dict[str, tuple[str, ...]]:
    """Return *routes* checked: currency codes to non-empty lists of the guard's providers.

    Raises:
        ConfigurationError: a currency is unknown, or a route is empty, repeats a provider
            or names one the guard does not have.
    """
    if routes is None:
        return {}
    if not isinstance(routes, Mapping):
        raise ConfigurationError(
            f"must map currency codes to lists of provider names, got {type(routes).__name__}",
            path="routes",
        )
    checked: dict[str, tuple[str, ...]] = {}
    for currency, route in routes.items():
        try:
            code = parse_currency(currency)
        except InvalidPayoutRequest as exc:
            raise ConfigurationError(str(exc), path="routes") from None
        where = f"routes.{code}"
        if isinstance(route, str) or not isinstance(route, Sequence) or not route:
            raise ConfigurationError("must be a non-empty list of provider names", path=where)
        for name in route:
            if name not in names:
                _unknown_provider(name, names, where)
        if len(set(route)) != len(route):
            raise ConfigurationError("names a provider twice", path=where)
        checked[code] = tuple(route)
    return checked


def _settle_lags(
    fetchers: Mapping[str, BalanceFetcher], settle_lag: float | Mapping[str, float] | None
) -> dict[str, float]:
    """Return each provider's settle lag: *settle_lag*'s, else its fetcher's own (or 30 s)."""
    given: Mapping[str, float] = {}
    if isinstance(settle_lag, Mapping):
        for name in settle_lag:
            if name not in fetchers:
                _unknown_provider(name, tuple(fetchers), "settle_lag")
        given = settle_lag
    elif settle_lag is not None:
        given = dict.fromkeys(fetchers, settle_lag)
    return {
        name: seconds(given[name] if name in given else getattr(fetcher, "settle_lag", 30.0),
                      "settle_lag")
        for name, fetcher in fetchers.items()
    }


def _cache_of(
    fetcher: BalanceFetcher,
    store: ReservationStore,
    *,
    ttl: float,
    clocks: Clocks,
    share: bool | None,
    stale_limit: Callable[[str], float],
) -> BalanceCache:
    """Return the balance cache of a guard: shared through *store* when it can, budgeted.

    Raises:
        ConfigurationError: *share* is asked for and the store cannot share.
    """
    if share is not None and not isinstance(share, bool):
        raise ConfigurationError(f"must be True or False, got {str(share)[:40]}",
                                 path="share_balances")
    fleet = store if isinstance(store, FleetStore) else None
    if share and fleet is None:
        raise ConfigurationError(
            f"balances are shared through SqliteReservations, RedisReservations or "
            f"PostgresReservations; this guard's store is {type(store).__name__}",
            path="share_balances",
        )
    name = getattr(fetcher, "budget_name", None)
    name = name if isinstance(name, str) and name else fetcher.name
    # The budget is the key's; a shared balance is also what was read with it (host, options).
    balances = getattr(fetcher, "balance_name", None)
    balances = balances if isinstance(balances, str) and balances else name
    per_minute = check_requests_per_minute(getattr(fetcher, "requests_per_minute", None))
    budget: Budget | None = None
    if per_minute is not None:
        budget = (LocalBudget(per_minute, clocks.monotonic) if fleet is None
                  else shared_budget(fleet, f"budget|{name}", per_minute))
    return BalanceCache(
        fetcher, ttl=ttl, clock=clocks, wait_timeout=_wait_timeout(fetcher),
        share=fleet if share is not False else None, name=f"balance|{balances}", budget=budget,
        requests_per_minute=per_minute, stale_limit=stale_limit,
    )


def guard_rules(rules: Iterable[Rule]) -> RuleSet:
    """Return the rules a guard judges with: *rules*, after ``SufficientFunds`` if missing."""
    ruleset = RuleSet(list(rules))
    if not any(isinstance(rule, SufficientFunds) for rule in ruleset):
        ruleset = RuleSet([SufficientFunds(), *ruleset])
    return ruleset


def watches_frozen(rules: RuleSet) -> bool:
    """Return whether a rule judges frozen funds by their ratio (needs ``own_in_flight``).

    Wherever it sits: scoped by ``when`` (a rules file's ``currency`` or ``provider`` key),
    or inside ``any_of`` or a nested ``all_of``.
    """
    pending: list[Rule] = list(rules)
    while pending:
        rule = pending.pop()
        if isinstance(rule, FrozenFunds) and rule.max_ratio is not None:
            return True
        if isinstance(rule, When):
            pending.append(rule.rule)
        elif isinstance(rule, RuleSet | AnyOf):
            pending.extend(rule.rules)
    return False


def stale_limits(rules: RuleSet, max_stale: float, provider: str) -> Callable[[str], float]:
    """Return how old a balance of a currency may be, when the budget is spent, to be used.

    For a request in that currency to *provider*: the ``MaxBalanceAge`` limit the rules
    would hold it to (wherever the rule sits: under ``when`` if in scope, the smallest of an
    ``all_of``'s, the largest of an ``any_of``'s if each alternative has one), else
    *max_stale*. A balance older than that would be denied as stale anyway; one within it is
    judged by the rules as usual.
    """
    provider = provider.lower()

    def age_limit(rule: Rule, currency: str) -> float | None:
        if isinstance(rule, MaxBalanceAge):
            return float(rule.seconds)
        if isinstance(rule, When):
            within = ((rule.currencies is None or currency in rule.currencies)
                      and (rule.providers is None or provider in rule.providers))
            return age_limit(rule.rule, currency) if within else None
        if isinstance(rule, RuleSet | AnyOf):
            limits = [age_limit(member, currency) for member in rule.rules]
            found = [limit for limit in limits if limit is not None]
            if not found:
                return None
            if isinstance(rule, AnyOf):  # one alternative without a limit: none at all
                return max(found) if len(found) == len(limits) else None
            return min(found)
        return None

    @functools.cache
    def limit(currency: str) -> float:
        found = age_limit(rules, currency)
        return max_stale if found is None else found

    return limit


def _wait_timeout(fetcher: BalanceFetcher) -> float:
    """Return how long a check waits for another fetch in flight: its deadline and a second.

    A fetcher with a ``deadline`` (the provider fetchers) gives up by then, so a check waiting
    on it can too; for others the wait is a minute.
    """
    deadline = getattr(fetcher, "deadline", None)
    if isinstance(deadline, int | float) and not isinstance(deadline, bool) and deadline > 0:
        return float(deadline) + 1.0
    return 60.0
