"""Reservations in Redis: shared by every host that pays out from the same balances.

``try_hold``, ``commit`` and ``release`` are each one Lua script, so Redis runs the check and
the hold as one step whatever the number of workers. Amounts are integers in the currency's
minor unit (exact in Lua below 2**53). Expiry follows the guard's clock values (``now``,
``expires_at``); Redis TTLs (the retention plus an hour) only collect what nobody touches
any more. ``reserved`` costs one sorted-set seek and the live pending holds of the key, however
many committed holds the retention keeps. Every key lives under ``{namespace}:`` (one cluster
slot). Needs the ``redis`` package: ``pip install payout-guard[redis]``.
"""

from __future__ import annotations

import json
import math
from decimal import Decimal
from types import TracebackType
from typing import TYPE_CHECKING, Any

from guard.errors import ConfigurationError, InvalidPayoutRequest
from guard.stores import _redis_lua as lua
from guard.stores._common import (
    StoreUnavailable,
    ceiling_to_minor,
    check_seconds,
    check_time,
    from_minor,
    mixed_currencies,
    to_minor,
)
from guard.stores._protocol import Hold, HoldOutcome

if TYPE_CHECKING:
    from redis import Redis

__all__ = ["RedisReservations"]

_ZERO = Decimal(0)
_LIMIT = 2**53  # Lua numbers are doubles: integers are exact below this
_GC_MARGIN = 3600  # seconds Redis keeps a record past the retention before collecting it
_FIELDS = ("k", "cur", "amt", "fee", "st", "ca", "ea", "cm")


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _hold(payout_id: str, fields: list[Any]) -> Hold:
    key, cur, amt, fee, state, created, expires, committed = map(_text, fields)
    return Hold(
        payout_id=payout_id,
        key=key,
        currency=cur,
        amount=from_minor(int(amt), cur),
        fee=from_minor(int(fee), cur),
        state="committed" if state == "committed" else "pending",
        created_at=float(created),  # money-ok: a time
        expires_at=float(expires),  # money-ok: a time
        committed_at=float(committed) if committed else None,  # money-ok: a time
    )


def _seconds(value: float) -> str:
    """Return *value* as the shortest text that reads back as the same double."""
    return repr(float(value))  # money-ok: a time


class RedisReservations:
    """A reservation store in Redis, safe across threads, processes and hosts.

    Args:
        url_or_client: A Redis URL (``redis://host:6379/0``, ``rediss://``, ``unix://``) or a
            ``redis.Redis`` client. A client built here from a URL is closed by ``close``; one
            passed in belongs to the caller.
        namespace: Prefix of every key, so several guards can share one Redis.
        retention: Seconds a committed hold is remembered for idempotency (default one day).
        timeout: Socket timeout in seconds for a client built from a URL (default 5).

    Raises:
        ConfigurationError: the ``redis`` package is missing, the URL or client is not one,
            the namespace is empty or contains ``{``/``}``, or a number is out of range.
    """

    def __init__(
        self,
        url_or_client: str | Redis,
        *,
        namespace: str = "payout_guard",
        retention: float = 86_400.0,
        timeout: float = 5.0,
    ) -> None:
        try:
            import redis  # noqa: PLC0415 - optional dependency, imported only when used
        except ImportError:
            raise ConfigurationError(
                "RedisReservations needs the redis package: pip install payout-guard[redis]"
            ) from None
        if not isinstance(namespace, str) or not namespace or {"{", "}"} & set(namespace):
            raise ConfigurationError(
                f"must be a non-empty string without braces, got {namespace!r}", path="namespace"
            )
        self._retention = check_seconds("retention", retention, positive=False)
        seconds = check_seconds("timeout", timeout, positive=True)
        self._owned = isinstance(url_or_client, str)
        if isinstance(url_or_client, str):
            try:
                client = redis.Redis.from_url(
                    url_or_client, socket_timeout=seconds, socket_connect_timeout=seconds
                )
            except ValueError:
                # The URL is not repeated: it may carry a password.
                raise ConfigurationError(
                    "is not a Redis URL; expected redis://, rediss:// or unix://",
                    path="url_or_client",
                ) from None
        elif isinstance(url_or_client, redis.Redis):
            client = url_or_client
        else:
            raise ConfigurationError(
                f"must be a Redis URL or a redis.Redis client, not "
                f"{type(url_or_client).__name__}",
                path="url_or_client",
            )
        self._client: Redis | None = client
        self._errors = redis.RedisError
        self._prefix = f"{{{namespace}}}:"
        self._namespace = namespace
        self._gc = math.ceil(self._retention) + _GC_MARGIN
        self._scripts = {
            name: client.register_script(text)
            for name, text in (
                ("try_hold", lua.TRY_HOLD), ("commit", lua.COMMIT), ("release", lua.RELEASE),
                ("reserved", lua.RESERVED), ("holds", lua.HOLDS),
            )
        }

    def __repr__(self) -> str:
        return f"RedisReservations(namespace={self._namespace!r})"

    def __enter__(self) -> RedisReservations:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def try_hold(
        self, hold: Hold, *, ceiling: Decimal, counted_since: float, now: float
    ) -> HoldOutcome:
        """Add *hold* atomically if it fits under *ceiling* (see ``ReservationStore``).

        Raises:
            InvalidPayoutRequest: an amount is negative or not exact at its currency's
                exponent; the hold or the key's counted total reaches 2**53 minor units (the
                largest exact integer in Lua); or *hold* is in another currency than the holds
                already on its key.
            StoreUnavailable: Redis could not be reached or refused the script.
        """
        for name, value in (("created_at", hold.created_at), ("expires_at", hold.expires_at)):
            check_time(name, value)
        cur = hold.currency
        amount = to_minor(hold.amount, cur, limit=_LIMIT, store="redis")
        fee = to_minor(hold.fee, cur, limit=_LIMIT, store="redis")
        held = to_minor(hold.held, cur, limit=_LIMIT, store="redis")
        limit = min(max(ceiling_to_minor(ceiling, cur), -1), _LIMIT)
        horizon = check_time("now", now) - self._retention
        life = math.ceil(max(hold.expires_at - now, 0.0)) + self._gc
        numbers = " ".join((
            str(amount), str(fee), str(held), _seconds(hold.created_at),
            _seconds(hold.expires_at), str(limit),
            _seconds(check_time("counted_since", counted_since)), _seconds(now),
            _seconds(horizon), str(life), str(self._gc),
        ))
        reply = self._run(
            "try_hold", [self._record(hold.payout_id)],
            [self._prefix, hold.payout_id, hold.key, cur, numbers], hold,
        )
        status = _text(reply[0])
        counted = from_minor(int(reply[1]), cur)
        if status == "held":
            return HoldOutcome(status="held", hold=hold, counted=counted)
        if status == "over_ceiling":
            return HoldOutcome(status="over_ceiling", hold=None, counted=counted)
        existing = _hold(hold.payout_id, reply[2:])
        if status == "existing":
            return HoldOutcome(status="existing", hold=existing, counted=counted)
        return HoldOutcome(status="conflict", hold=existing, counted=counted)

    def commit(self, payout_id: str, *, now: float) -> Hold | None:
        """Mark the hold as submitted (see ``ReservationStore.commit``).

        A commit time earlier than the key's last one (a clock stepping back) is recorded as
        that last time: the hold then counts a little longer, which is the safe side.

        Raises:
            StoreUnavailable: Redis could not be reached or refused the script.
        """
        reply = self._run(
            "commit", [self._record(payout_id)],
            [self._prefix, payout_id, _seconds(check_time("now", now)), self._gc, self._gc],
        )
        return None if reply is None else _hold(payout_id, reply)

    def release(self, payout_id: str) -> bool:
        """Drop a pending hold (see ``ReservationStore.release``).

        Raises:
            StoreUnavailable: Redis could not be reached or refused the script.
        """
        return bool(self._run("release", [self._record(payout_id)], [self._prefix, payout_id]))

    def get(self, payout_id: str) -> Hold | None:
        """Return the hold recorded under *payout_id*, if any.

        Raises:
            StoreUnavailable: Redis could not be reached.
        """
        client = self._live()
        try:
            fields = client.hmget(self._record(payout_id), list(_FIELDS))
        except self._errors as exc:
            raise StoreUnavailable(f"{type(exc).__name__}: {exc}", store="redis") from exc
        if fields[0] is None:
            return None
        return _hold(payout_id, [b"" if f is None else f for f in fields])

    def reserved(self, key: str, *, counted_since: float, now: float) -> Decimal:
        """Return the total held on *key* by holds that count.

        Raises:
            StoreUnavailable: Redis could not be reached.
        """
        reply = self._run(
            "reserved", [f"{self._prefix}t:{key}"],
            [self._prefix, key, _seconds(check_time("counted_since", counted_since)),
             _seconds(check_time("now", now))],
        )
        return from_minor(int(reply[1]), _text(reply[0])) if reply else _ZERO

    def holds(
        self, key: str, *, counted_since: float, now: float, limit: int | None = None
    ) -> list[Hold]:
        """Return the holds on *key* that count, oldest first.

        With *limit*, at most that many: the pending ones first, then the earliest commits.

        Raises:
            StoreUnavailable: Redis could not be reached.
        """
        reply = self._run(
            "holds", [f"{self._prefix}t:{key}"],
            [self._prefix, key, _seconds(check_time("counted_since", counted_since)),
             _seconds(check_time("now", now)), -1 if limit is None else limit],
        )
        found = [_hold(row[0], row[1:]) for row in json.loads(reply)]
        return sorted(found, key=lambda h: (h.created_at, h.payout_id))

    def close(self) -> None:
        """Close the client if this store built it; the holds stay in Redis."""
        if self._client is not None and self._owned:
            self._client.close()
        self._client = None

    def _record(self, payout_id: str) -> str:
        return f"{self._prefix}r:{payout_id}"

    def _live(self) -> Redis:
        if self._client is None:
            raise StoreUnavailable("the store was closed", store="redis")
        return self._client

    def _run(self, name: str, keys: list[str], args: list[Any], hold: Hold | None = None) -> Any:
        self._live()
        try:
            return self._scripts[name](keys=keys, args=args)
        except self._errors as exc:
            text = str(exc)
            if hold is not None and "PAYOUT_GUARD_CURRENCY" in text:
                raise mixed_currencies(hold, text.rsplit(maxsplit=1)[-1]) from None
            if "PAYOUT_GUARD_TOO_LARGE" in text:
                raise InvalidPayoutRequest(
                    f"the holds on this balance would reach 2**53 minor units, more than the "
                    f"redis reservation store counts exactly; use SqliteReservations for "
                    f"balances this large ({text})"
                ) from None
            raise StoreUnavailable(f"{type(exc).__name__}: {exc}", store="redis") from exc
