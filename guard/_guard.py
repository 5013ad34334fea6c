"""``PayoutGuard``: the coordinator that reads balances, subtracts holds and applies rules."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterable, Mapping
from decimal import Decimal
from types import TracebackType
from typing import TYPE_CHECKING, Any

import structlog

from guard import _judge
from guard._cache import BalanceCache
from guard._capture import record
from guard._models import BalanceSnapshot, Decision, HoldSummary, Mode, Reason
from guard._money import parse_currency, smallest_unit
from guard._protect import Decorator, make_decorator
from guard._request import (
    Request,
    optional_text,
    parse_payout_id,
    parse_request,
    pick_account,
    seconds,
)
from guard._reservation import DEFAULT_UNCERTAIN_ON, Reservation, uncertain_on_option
from guard._threads import BlockingPool
from guard.errors import (
    ConfigurationError,
    GuardError,
    InvalidPayoutRequest,
    PayoutDenied,
    StoreUnavailable,
)
from guard.fetchers._protocol import BalanceFetcher
from guard.stores import Hold, InMemoryReservations, ReservationStore, balance_key
from guard.stores._common import MAX_SECONDS
from rules import Clearance, Facts, Rule, RuleSet, SufficientFunds, Verdict
from rules._money import money_context

if TYPE_CHECKING:
    from guard._config import ConfigSource

__all__ = ["Clock", "PayoutGuard"]

Clock = Callable[[], float]
_ZERO = Decimal(0)
_SHOWN_HOLDS = 20
# After a commit, a balance older than this is fetched again (see BalanceCache.refresh_soon).
_COMMIT_REFRESH = 1.0
# How often a payout is re-judged after concurrent payouts took the room it was judged with.
_ATTEMPTS = 5
# The room given to a hold taken without a balance (fail_open): counted, never capped.
_NO_CEILING = Decimal(10) ** 12


class PayoutGuard:
    """Decide, with reasons, whether a payout may go out now.

    Args:
        fetcher: Where balances come from (a provider fetcher, or ``StaticFetcher`` in tests).
        rules: Rules applied on top of ``SufficientFunds``, which always applies.
        mode: ``"enforce"`` blocks denied payouts; ``"dry_run"`` records what it would do.
        cache_ttl: Seconds a fetched balance is reused; ``0`` fetches on every check. A
            committed payout shortens this to one second after the fetch for its currency.
        reservations: Where in-flight payouts hold funds (default: in this process's memory).
        fail_open: Allow (with a warning) when no balance can be read. Off by default: a
            provider outage denies with ``balance_unavailable``.
        settle_lag: Seconds a submitted payout keeps counting against a balance fetched
            before it could show there.
        hold_ttl: Default seconds a pending hold lives before it stops counting (at most 30
            days).
        uncertain_on: Exceptions that, raised inside a guarded payout, mean the money may
            have left: the hold is marked ``uncertain`` instead of released (default
            ``OSError``, which covers timeouts and every ``requests`` exception, and
            ``PayoutOutcomeUnknown``). ``PayoutNotSent`` always releases.
        uncertain_ttl: Seconds an uncertain hold keeps counting when nobody resolves it
            (default one hour, at most 30 days); its payout id stays taken afterwards.
        max_workers: Threads the guard runs blocking calls in for ``async def`` payouts.
        clock: Seconds since the epoch (default ``time.time``); tests pass a fake.

    Raises:
        ConfigurationError: any option is invalid.
    """

    def __init__(
        self,
        fetcher: BalanceFetcher,
        rules: Iterable[Rule] = (),
        *,
        mode: Mode = "enforce",
        cache_ttl: float = 5.0,
        reservations: ReservationStore | None = None,
        fail_open: bool = False,
        settle_lag: float = 30.0,
        hold_ttl: float = 300.0,
        uncertain_on: type[BaseException] | tuple[type[BaseException], ...] = (
            DEFAULT_UNCERTAIN_ON
        ),
        uncertain_ttl: float = 3600.0,
        max_workers: int = 32,
        clock: Clock | None = None,
    ) -> None:
        if not isinstance(fetcher, BalanceFetcher):
            raise ConfigurationError(
                "fetcher must provide .name and .fetch(currency=None); "
                f"got {type(fetcher).__name__}"
            )
        if mode not in ("enforce", "dry_run"):
            raise ConfigurationError(f"must be 'enforce' or 'dry_run', got {mode!r}", path="mode")
        if reservations is not None and not isinstance(reservations, ReservationStore):
            raise ConfigurationError(
                f"must be a reservation store, got {type(reservations).__name__}",
                path="reservations",
            )
        ruleset = RuleSet(list(rules))
        if not any(isinstance(rule, SufficientFunds) for rule in ruleset):
            ruleset = RuleSet([SufficientFunds(), *ruleset])
        self.fetcher = fetcher
        self.rules = ruleset
        self.mode: Mode = mode
        self.fail_open = bool(fail_open)
        self.settle_lag = seconds(settle_lag, "settle_lag")
        self.hold_ttl = seconds(hold_ttl, "hold_ttl", positive=True, most=MAX_SECONDS)
        self.uncertain_on = uncertain_on_option(uncertain_on)
        self.uncertain_ttl = seconds(uncertain_ttl, "uncertain_ttl", positive=True,
                                     most=MAX_SECONDS)
        if isinstance(max_workers, bool) or not isinstance(max_workers, int) or max_workers < 1:
            raise ConfigurationError(
                f"must be a whole number >= 1, got {str(max_workers)[:40]}", path="max_workers"
            )
        self.threads = BlockingPool(max_workers)
        self.reservations: ReservationStore = (
            InMemoryReservations() if reservations is None else reservations
        )
        self._clock: Clock = clock or time.time
        self._cache = BalanceCache(
            fetcher, ttl=seconds(cache_ttl, "cache_ttl"), clock=self._clock
        )
        self._log = structlog.get_logger("payout_guard")

    @classmethod
    def from_config(
        cls,
        source: ConfigSource,
        *,
        provider: str | None = None,
        env: Mapping[str, str] | None = None,
        reservations: ReservationStore | None = None,
        clock: Clock | None = None,
    ) -> PayoutGuard:
        """Build the guard of one provider of a configuration (file, mapping or ``GuardConfig``).

        With several providers, *provider* names the one; otherwise the configuration's
        ``default_provider``, or its only provider. Credentials are read from the environment
        variables the configuration names.

        Args:
            source: A ``.toml`` (``.yaml``/``.yml``, ``.json``) path, a mapping or a config.
            provider: The configured provider name to build.
            env: Where credential variables are looked up (default ``os.environ``).
            reservations: A store to use instead of the configured one.
            clock: Seconds since the epoch, for tests.

        Raises:
            ConfigurationError: the configuration is invalid (naming file and key path), a
                credential variable is missing, or no provider can be picked.
        """
        from guard._config_build import guard_from_config  # noqa: PLC0415 - it imports this module

        return guard_from_config(source, provider=provider, env=env, reservations=reservations,
                                 clock=clock, guard_class=cls)

    def close(self) -> None:
        """Close the fetcher's HTTP session and the reservation store, where they have one."""
        self.threads.close()
        for part in (self.fetcher, self.reservations):
            close = getattr(part, "close", None)
            if callable(close):
                close()

    def __enter__(self) -> PayoutGuard:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"PayoutGuard(provider={self.provider!r}, mode={self.mode!r}, "
            f"rules={list(self.rules.names)!r})"
        )

    @property
    def provider(self) -> str:
        """Return the provider name decisions carry."""
        return self.fetcher.name

    def check(
        self,
        amount: object,
        currency: object,
        *,
        account: str | None = None,
        payout_id: str | None = None,
        fee: object = None,
    ) -> Decision:
        """Return whether a payout of *amount* *currency* may go out now, with reasons.

        Reads the (cached) balance and the holds, applies the rules and logs the decision;
        changes nothing. A denial is a return value: call ``raise_for_denial()`` to raise.

        Args:
            amount: Major units, as ``Decimal``, ``str`` or ``int`` (never ``float``).
            currency: ISO 4217 code.
            account: Account to check, for providers that report several.
            payout_id: Your id for the payout, carried into the decision and logs. An id
                that ``reserve`` would refuse (it is being sent, was sent, or may have been
                sent) is denied as ``duplicate_payout``: this costs one store read.
            fee: What the provider charges on top (default 0).

        Raises:
            InvalidPayoutRequest: the request itself is malformed. Nothing else: provider
                trouble is a ``balance_unavailable`` denial, a rule that raises a
                ``rule_error`` one.
        """
        request = parse_request(amount, currency, account, payout_id, fee)
        decision, _ = self._decide(request)
        if request.payout_id is not None:
            decision = self._unless_duplicate(request, decision)
        self._emit(decision)
        return decision

    def max_payable(self, currency: object, *, account: str | None = None) -> Decimal:
        """Return the largest amount (fee 0) that would be allowed now; 0 when none would be."""
        code = parse_currency(currency)
        request = Request(smallest_unit(code), code, _ZERO, optional_text(account, "account"),
                          None)
        # Its bounds are the answer, not this probe amount's clearance (which a minimum payout
        # would refuse anyway): have every rule explain itself.
        with money_context():
            decision, _ = self._decide(request, clear=False)
        return decision.max_payable

    def reserve(
        self,
        amount: object,
        currency: object,
        *,
        payout_id: str,
        account: str | None = None,
        fee: object = None,
        ttl: float | None = None,
        connection: Any = None,
    ) -> Reservation:
        """Check and hold the funds for one payout, atomically; see :class:`Reservation`.

        By what the store holds for *payout_id*: nothing, a released hold or a pending hold
        past its ttl: the payout is judged and held. A live pending hold (being sent now), a
        committed one (sent) or an uncertain one (may have been sent): ``duplicate_payout``
        (retryable only for the pending one), and nothing is held.

        With *connection* (an open ``psycopg.Connection``, for ``PostgresReservations``), the
        hold is written in that connection's transaction, and the reservation's ``commit()``
        and ``release()`` act in it too: the hold commits or rolls back with the caller's own
        rows (``examples/postgres_outbox.py``).

        Raises:
            ConfigurationError: *connection* is given but the store cannot work inside a
                caller's transaction (it has no ``bound``).
            InvalidPayoutRequest: the request is malformed (a ``payout_id`` is required).
            PayoutDenied: the payout is denied and the guard enforces.
        """
        if payout_id is None:
            raise InvalidPayoutRequest("reserve() needs a payout_id: it is the idempotency key")
        hold_ttl = (
            self.hold_ttl if ttl is None
            else seconds(ttl, "ttl", positive=True, most=MAX_SECONDS)
        )
        store = self.reservations if connection is None else self._bound(connection)
        with money_context():
            request = parse_request(amount, currency, account, payout_id, fee)
            return self._reserve(request, hold_ttl, store)

    def hold(self, payout_id: str) -> Hold | None:
        """Return what the store records for *payout_id* (without its owner token), if any.

        ``state`` is ``pending``, ``committed`` or ``uncertain``; a pending hold past its
        ``expires_at`` has expired (``hold.expired(now)``).

        Raises:
            InvalidPayoutRequest: *payout_id* cannot be a payout id.
            StoreUnavailable: the store did not answer.
        """
        found = self.reservations.get(parse_payout_id(payout_id))
        return None if found is None else found.public()

    def resolve(self, payout_id: str, *, sent: bool) -> Hold | None:
        """End an uncertain hold once you know whether its payout left.

        Args:
            payout_id: The payout whose outcome was unknown.
            sent: ``True``: it left (the hold becomes committed now and counts until a
                balance can show it). ``False``: it did not (the hold is released).

        Returns:
            The committed hold, or ``None`` when it was released.

        Raises:
            GuardError: no hold is recorded for *payout_id*, or its hold is not uncertain.
            InvalidPayoutRequest: *payout_id* cannot be a payout id.
            StoreUnavailable: the store did not answer.
        """
        payout_id = parse_payout_id(payout_id)
        if not isinstance(sent, bool):
            raise InvalidPayoutRequest(f"sent must be True or False, got {str(sent)[:40]}")
        found = self.reservations.resolve(payout_id, sent=sent, now=self._clock())
        if found is None:
            raise GuardError(f"no hold is recorded for payout {payout_id[:40]!r}; nothing to "
                             f"resolve")
        if found.state != "uncertain":
            raise GuardError(
                f"payout {payout_id[:40]!r} is {found.state}, not uncertain; only a hold whose "
                f"outcome is unknown is resolved"
            )
        self._log.warning(
            "payout_guard.hold", change="resolved", payout_id=payout_id, sent=sent,
            amount=str(found.held), currency=found.currency,
        )
        if not sent:
            return None
        self._cache.refresh_soon(found.currency, _COMMIT_REFRESH)
        return self.hold(payout_id)

    def protect(
        self,
        *,
        amount: str | Callable[[dict[str, Any]], Any] = "amount",
        currency: str | Callable[[dict[str, Any]], Any] = "currency",
        payout_id: str | Callable[[dict[str, Any]], Any] | None = None,
        account: str | Callable[[dict[str, Any]], Any] | None = None,
        fee: str | Callable[[dict[str, Any]], Any] | None = None,
        uncertain_on: type[BaseException] | tuple[type[BaseException], ...] | None = None,
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
        Works on functions, methods and ``async def`` functions.

        Raises:
            ConfigurationError: an option names a parameter the function does not have.
        """
        return make_decorator(
            self, amount=amount, currency=currency, payout_id=payout_id, account=account, fee=fee,
            uncertain_on=None if uncertain_on is None else uncertain_on_option(
                uncertain_on, "protect(uncertain_on=...)"
            ),
        )

    # -- internals --------------------------------------------------------------------------

    def _bound(self, connection: object) -> ReservationStore:
        """Return the store's view working inside *connection*'s transaction."""
        bound = getattr(self.reservations, "bound", None)
        if not callable(bound):
            raise ConfigurationError(
                f"reserve(connection=...) needs a store that can work inside the caller's "
                f"transaction (PostgresReservations); this guard's is "
                f"{type(self.reservations).__name__}",
                path="connection",
            )
        store: ReservationStore = bound(connection)
        return store

    def _reserve(
        self, request: Request, ttl: float, store: ReservationStore | None = None
    ) -> Reservation:
        """Judge *request* and hold its funds atomically; judge again when others took room.

        *store* is where the hold goes (default: the guard's store; a bound view of it to
        hold inside a caller's transaction).
        """
        store = self.reservations if store is None else store
        payout_id = request.payout_id or ""
        owner = secrets.token_hex(16)
        decision: Decision | None = None
        for _ in range(_ATTEMPTS):
            decision, snapshot = self._decide(request)
            try:
                if not decision.allowed or self.mode == "dry_run":
                    return self._refuse(self._unless_duplicate(request, decision, store))
                # Hold on the account that was judged, however the caller named it.
                account = request.account if snapshot is None else snapshot.account
                now = self._clock()
                if snapshot is None:  # allowed without a balance: fail_open was chosen
                    ceiling, since = _NO_CEILING, now - self.settle_lag
                else:
                    # Caps fall at most one for one as holds grow, so judged with `reserved`
                    # held, the payout stays allowed while the counting holds stay within this.
                    ceiling = decision.reserved + decision.max_payable + request.fee
                    since = snapshot.as_of.timestamp() - self.settle_lag
                wanted = Hold(
                    payout_id=payout_id, key=balance_key(self.provider, account, request.currency),
                    currency=request.currency, amount=request.amount, fee=request.fee,
                    state="pending", created_at=now, expires_at=now + ttl, owner=owner,
                )
                outcome = store.try_hold(
                    wanted, ceiling=ceiling, counted_since=since, now=now
                )
            except StoreUnavailable as exc:
                return self._refuse(_denied(decision, _judge.store_reason(request.currency, exc)))
            for lapsed in outcome.lapsed:
                self._log.warning(
                    "payout_guard.hold", change="uncertain_expired", payout_id=lapsed.payout_id,
                    amount=str(lapsed.held), currency=lapsed.currency,
                )
            if outcome.status == "held":
                try:
                    self._emit(decision)
                    return Reservation(
                        decision, wanted, store=store, clock=self._clock,
                        uncertain_ttl=self.uncertain_ttl, uncertain_on=self.uncertain_on,
                        on_commit=self._after_commit,
                    )
                except BaseException:
                    # Nobody would hold the handle: give the hold back in this same call.
                    store.release(payout_id, owner=owner)
                    raise
            if outcome.status == "duplicate" and outcome.hold is not None:
                return self._refuse(_duplicate(decision, outcome.hold))
            # over_ceiling: concurrent payouts took the room; judge again with their holds.
        assert decision is not None  # noqa: S101 - the loop runs at least once
        reason = Reason.model_construct(
            code="insufficient_funds",
            message=(
                f"concurrent payouts kept claiming the {request.currency} funds this payout was "
                f"judged with ({_ATTEMPTS} attempts); retry"
            ),
            rule="guard", retryable=True, details={},
        )
        return self._refuse(_denied(decision, reason))

    def _refuse(self, decision: Decision) -> Reservation:
        """Log a refused reservation; raise it when enforcing, else hand back an empty one."""
        self._emit(decision)
        if self.mode == "dry_run":
            return Reservation(
                decision, None, store=self.reservations, clock=self._clock,
                uncertain_ttl=self.uncertain_ttl, uncertain_on=self.uncertain_on,
                on_commit=self._after_commit,
            )
        raise PayoutDenied(decision)

    def _unless_duplicate(
        self, request: Request, decision: Decision, store: ReservationStore | None = None
    ) -> Decision:
        """Return *decision*, or a ``duplicate_payout`` denial when the id is taken."""
        try:
            existing = (store or self.reservations).get(request.payout_id or "")
        except StoreUnavailable as exc:
            return _denied(decision, _judge.store_reason(request.currency, exc))
        if existing is None or existing.expired(self._clock()):
            return decision
        return _duplicate(decision, existing)

    def _after_commit(self, currency: str) -> None:
        """Refresh *currency*'s balance after a commit, at most once per ``_COMMIT_REFRESH``."""
        self._cache.refresh_soon(currency, _COMMIT_REFRESH)


    def _decide(
        self, request: Request, *, clear: bool = True
    ) -> tuple[Decision, BalanceSnapshot | None]:
        """Judge *request*; return the decision and the snapshot it was judged on.

        With *clear* (the default), a payout every rule allows is decided without verdicts
        (see ``RuleSet.clearance``); otherwise every rule explains itself.
        """
        decision, snapshot = self._judge_once(request, force=False, clear=clear)
        if not decision.allowed and "stale_balance" in decision.codes:
            # The cache may hold an old answer: judge a stale balance once more, fresh.
            decision, snapshot = self._judge_once(request, force=True, clear=clear)
        return decision, snapshot

    def _judge_once(
        self, request: Request, *, force: bool, clear: bool
    ) -> tuple[Decision, BalanceSnapshot | None]:
        """Judge *request* once."""
        provider = self.fetcher.name
        try:
            by_account = self._cache.get(request.currency, force=force)
        except Exception as exc:  # noqa: BLE001 - fail closed on anything a fetcher raises
            self._log.warning(
                "payout_guard.balance_unavailable", provider=provider,
                currency=request.currency, error=type(exc).__name__,
            )
            reason = _judge.unavailable_reason(
                provider, request.currency, exc, allowed=self.fail_open
            )
            return _judge.denial(
                request, reason, mode=self.mode, provider=provider, now=self._clock(),
                allowed=self.fail_open,
            ), None
        now = self._clock()
        snapshot = pick_account(by_account, request.account, provider, request.currency)
        if snapshot is None:
            reason = _judge.not_held_reason(provider, request.currency, request.account)
            return _judge.denial(
                request, reason, mode=self.mode, provider=provider, now=now
            ), None
        # Holds live under the account actually judged, however the caller named it.
        key = balance_key(provider, snapshot.account, request.currency)
        as_of = snapshot.as_of.timestamp()
        since = as_of - self.settle_lag
        try:
            reserved = self.reservations.reserved(key, counted_since=since, now=now)
        except StoreUnavailable as exc:
            self._log.warning("payout_guard.store_unavailable", store=exc.store,
                              currency=request.currency)
            return _judge.denial(
                request, _judge.store_reason(request.currency, exc), mode=self.mode,
                provider=provider, now=now, balance=snapshot,
            ), None
        facts = Facts.trusted(
            request.amount, request.currency, snapshot.available, request.fee, snapshot.frozen,
            snapshot.total, reserved, max(0.0, now - as_of), provider,
            request.account,
        )
        try:
            verdict = self._apply_rules(facts, clear=clear)
        except Exception as exc:  # noqa: BLE001 - a rule that fails denies; it never allows
            self._log.exception("payout_guard.rule_error", error=type(exc).__name__,
                                currency=request.currency)
            return _judge.denial(
                request, _judge.rule_error_reason(exc), mode=self.mode, provider=provider,
                now=now, balance=snapshot,
            ), snapshot
        if isinstance(verdict, Clearance):
            return _judge.from_clearance(
                request, verdict, mode=self.mode, provider=provider, balance=snapshot,
                reserved=reserved, now=now,
            ), snapshot
        holds: tuple[HoldSummary, ...] = ()
        more_holds = False
        if verdict.denies and reserved:
            # Only a denial explains itself with the holds; listing them costs a store read,
            # so ask for one more than is shown, just to know whether there are more.
            try:
                listed = self.reservations.holds(
                    key, counted_since=since, now=now, limit=_SHOWN_HOLDS + 1
                )
            except StoreUnavailable:
                listed = []  # the denial stands; only its list of holds is missing
            more_holds = len(listed) > _SHOWN_HOLDS
            holds = tuple(
                HoldSummary(payout_id=h.payout_id, amount=h.held, state=h.state)
                for h in listed[:_SHOWN_HOLDS]
            )
        return _judge.from_verdict(
            request, verdict, mode=self.mode, provider=provider, balance=snapshot,
            reserved=reserved, now=now, holds=holds, more_holds=more_holds,
        ), snapshot

    def _apply_rules(self, facts: Facts, *, clear: bool) -> Clearance | Verdict:
        """Return the clearance of *facts*, or every rule's verdict when there is none.

        There is a clearance when *clear* asks for one and every rule allows *facts* without
        a warning. Raises whatever a rule raises.
        """
        clearance = self.rules.clearance(facts) if clear else None
        if clearance is not None:
            return clearance  # nothing to explain: no verdicts built
        with money_context():  # rules, yours among them, compute in the money context
            return self.rules.evaluate(facts)

    def _emit(self, decision: Decision) -> None:
        record(decision)
        self._log.info("payout_guard.decision", **decision.log_fields())
        if not decision.allowed and decision.mode == "dry_run":
            self._log.warning("payout_guard.would_deny", **decision.log_fields())


def _denied(decision: Decision, reason: Reason) -> Decision:
    """Return *decision* denied for *reason* alone."""
    return decision.model_copy(update={"allowed": False, "reasons": (reason,), "warnings": ()})


def _duplicate(decision: Decision, held: Hold) -> Decision:
    """Return *decision* denied because its payout id already has *held*."""
    reason = _judge.duplicate_reason(decision.payout_id or held.payout_id, held)
    return decision.model_copy(update={"allowed": False, "reasons": (reason,)})
