"""What only the Redis store promises: namespaces, exact Lua arithmetic, lost holds noticed.

Clear failures too, and a refusal of servers that may evict keys. The rules every store keeps
are in ``tests/test_store_contract.py``.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from typing import Any, ClassVar

import pytest
import redis
from structlog.testing import capture_logs

from guard import PayoutDenied, PayoutGuard
from guard.errors import ConfigurationError, InvalidPayoutRequest

# Not exported from guard.stores on this branch yet.
from guard.stores import CommittedTotals, FleetStore, Hold, RedisReservations, StoreUnavailable
from guard.stores import _redis_lua as lua
from guard.testing import FakeClock, StaticFetcher
from tests._holds import KEY, T0, hold
from tests._redis_server import RedisServer, free_port, redis_binary, shared_redis, start_redis

LOST = "lost its holds"


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """Yield the URL of the session's redis-server."""
    with shared_redis() as server:
        yield server.url


@pytest.fixture
def store(redis_url: str) -> Iterator[RedisReservations]:
    """Yield a store in a fresh namespace, on the caller's clock (these tests pin times)."""
    with RedisReservations(redis_url, namespace=f"test-{uuid.uuid4().hex}",
                           clock="caller") as made:
        yield made


@pytest.fixture
def own_server() -> Iterator[RedisServer]:
    """Yield a private redis-server (no persistence), for tests that wipe or restart it."""
    server = start_redis(redis_binary())
    try:
        yield server
    finally:
        server.stop()


def owned(
    payout_id: str, amount: str, *, currency: str = "BRL", key: str | None = None,
    at: float = T0, ttl: float = 300.0,
) -> Hold:
    """Return a pending hold (see ``tests._holds.hold``) owned by ``owner-of-<payout_id>``."""
    taken = hold(payout_id, amount, currency=currency, key=key, at=at, ttl=ttl)
    return replace(taken, owner=f"owner-of-{payout_id}")


def take(store: RedisReservations, taken: Hold, *, ceiling: int = 100) -> str:
    """Try to hold *taken* at its creation time; return the outcome's status."""
    return store.try_hold(taken, ceiling=Decimal(ceiling), counted_since=0,
                          now=taken.created_at).status


def keys_of(url: str, store: RedisReservations) -> list[str]:
    """Return every Redis key of the store's namespace."""
    client = redis.Redis.from_url(url, decode_responses=True)
    try:
        return sorted(str(k) for k in client.keys(f"{store._prefix}*"))
    finally:
        client.close()


class TestNamespaces:
    def test_namespaces_are_isolated(self, redis_url: str) -> None:
        """The same payout id and key in two namespaces are two separate holds."""
        with RedisReservations(redis_url, namespace=f"a-{uuid.uuid4().hex}") as one, \
                RedisReservations(redis_url, namespace=f"b-{uuid.uuid4().hex}") as two:
            one.try_hold(owned("po_1", "100.00"), ceiling=Decimal(100), counted_since=0, now=T0)
            outcome = two.try_hold(owned("po_1", "70.00"), ceiling=Decimal(100),
                                   counted_since=0, now=T0)
            assert ("held", Decimal(0)) == (outcome.status, outcome.counted)
            assert Decimal("100.00") == one.reserved(KEY, counted_since=0, now=T0)
            assert Decimal("70.00") == two.reserved(KEY, counted_since=0, now=T0)

    def test_every_key_is_under_the_namespace(self, redis_url: str) -> None:
        """All keys share the ``{namespace}:`` prefix (one cluster slot, easy to find)."""
        namespace = f"n-{uuid.uuid4().hex}"
        client = redis.Redis.from_url(redis_url, decode_responses=True)
        with RedisReservations(client, namespace=namespace) as store:
            taken = owned("po_1", "1.00")
            store.try_hold(taken, ceiling=Decimal(100), counted_since=0, now=T0)
            store.commit("po_1", owner=taken.owner, now=T0)
            keys = [str(k) for k in client.keys(f"*{namespace}*")]
        client.close()
        assert f"{{{namespace}}}:epoch" in keys
        assert all(k.startswith(f"{{{namespace}}}:") for k in keys)

    def test_keys_get_a_generous_ttl(self, store: RedisReservations, redis_url: str) -> None:
        """Redis only collects garbage: a TTL past the hold's life plus the retention."""
        store.try_hold(owned("po_1", "1.00"), ceiling=Decimal(100), counted_since=0, now=T0)
        client = redis.Redis.from_url(redis_url)
        ttl = client.ttl(store._record("po_1"))
        client.close()
        assert 86_400 + 300 < ttl <= 86_400 + 300 + 3600

    def test_an_uncertain_hold_outlives_its_uncertain_ttl(
        self, store: RedisReservations, redis_url: str
    ) -> None:
        """Marked uncertain for ten days, the record and its key's structures live longer.

        The structures are renewed together (at most twice ahead); the ledger outlives the rest.
        """
        taken = owned("po_1", "1.00")
        store.try_hold(taken, ceiling=Decimal(100), counted_since=0, now=T0)
        store.mark_uncertain("po_1", owner=taken.owner, now=T0, until=T0 + 10 * 86_400)
        client = redis.Redis.from_url(redis_url)
        record = client.ttl(store._record("po_1"))
        structures = [client.ttl(f"{store._prefix}{name}{KEY}") for name in ("x:", "u:", "t:")]
        client.close()
        assert 11 * 86_400 < record <= 11 * 86_400 + 3600
        assert all(record <= ttl <= 2 * record + 1 for ttl in structures), structures
        assert structures[-1] == max(structures)


class TestOwnerToken:
    def test_the_token_is_kept_and_returned(self, store: RedisReservations) -> None:
        """The owner token round-trips through Redis (get returns the hold as recorded)."""
        taken = owned("po_1", "1.00")
        store.try_hold(taken, ceiling=Decimal(100), counted_since=0, now=T0)
        found = store.get("po_1")
        assert found is not None
        assert taken.owner == found.owner

    def test_a_wrong_token_leaves_the_record_untouched(
        self, store: RedisReservations, redis_url: str
    ) -> None:
        """The script compares the token before any write: the record's fields stay as they were."""
        taken = owned("po_1", "1.00")
        store.try_hold(taken, ceiling=Decimal(100), counted_since=0, now=T0)
        client = redis.Redis.from_url(redis_url)
        before = client.hgetall(store._record("po_1"))
        store.commit("po_1", owner="guess", now=T0)
        store.mark_uncertain("po_1", owner="guess", now=T0, until=T0 + 9)
        store.release("po_1", owner="guess")
        after = client.hgetall(store._record("po_1"))
        client.close()
        assert before == after


class TestClients:
    def test_decoding_client_works(self, redis_url: str) -> None:
        """A client with decode_responses=True is used as given, and not closed by the store."""
        client = redis.Redis.from_url(redis_url, decode_responses=True)
        with RedisReservations(client, namespace=f"d-{uuid.uuid4().hex}", clock="caller") as store:
            taken = owned("po_1", "1.25")
            store.try_hold(taken, ceiling=Decimal(100), counted_since=0, now=T0)
            store.mark_uncertain("po_1", owner=taken.owner, now=T0, until=T0 + 5)
            assert taken.uncertain(T0 + 5) == store.get("po_1")
            assert Decimal("1.25") == store.reserved(KEY, counted_since=0, now=T0)
            lapsed = store.try_hold(owned("po_2", "1.00", at=T0 + 6), ceiling=Decimal(100),
                                    counted_since=0, now=T0 + 6).lapsed
            assert (taken.uncertain(T0 + 5),) == lapsed
        assert client.ping()
        client.close()

    def test_unreachable_is_store_unavailable(self) -> None:
        """No Redis listening: construction succeeds, every use is a StoreUnavailable."""
        url = f"redis://127.0.0.1:{free_port()}/0"
        with RedisReservations(url, timeout=1.0) as store, pytest.raises(
            StoreUnavailable, match="redis reservation store"
        ):
            store.try_hold(owned("po_1", "1.00"), ceiling=Decimal(10), counted_since=0, now=T0)

    def test_first_contact_waits_for_redis(self) -> None:
        """A store built while Redis is down checks the server at its first use after."""
        port = free_port()
        with RedisReservations(f"redis://127.0.0.1:{port}/0", timeout=1.0) as store:
            with pytest.raises(StoreUnavailable):
                store.get("po_1")
            server = start_redis(redis_binary(), port=port)
            try:
                assert "held" == take(store, owned("po_1", "1.00"))
            finally:
                server.stop()

    def test_a_server_that_stops_answering_fails_within_the_timeout(
        self, own_server: RedisServer
    ) -> None:
        """A hung server (SIGSTOP) is a StoreUnavailable after about one timeout, not four.

        redis-py retries timeouts three times with backoff by default; the store does not
        (invariant 4: a store call is bounded by its timeout).
        """
        with RedisReservations(own_server.url, timeout=0.5) as store:
            take(store, owned("po_1", "1.00"))
            os.kill(own_server.process.pid, signal.SIGSTOP)
            try:
                started = time.monotonic()
                with pytest.raises(StoreUnavailable, match=r"[Tt]imeout"):
                    store.get("po_1")
                took = time.monotonic() - started
            finally:
                os.kill(own_server.process.pid, signal.SIGCONT)
        assert took < 1.2, f"took {took:.2f} s with a 0.5 s timeout"

    def test_a_client_without_a_timeout_is_bounded_by_the_stores(
        self, own_server: RedisServer
    ) -> None:
        """A client built with redis-py's defaults waits only the store's timeout too.

        Those defaults: no socket timeout before redis-py 8; since, 5 s and ten retries.

        The guard over it denies a hung server's check within about the store's timeout, and
        the client passed in keeps its own settings.
        """
        client = redis.Redis(port=own_server.port)
        settings = dict(client.connection_pool.connection_kwargs)
        store = RedisReservations(client, timeout=0.5)
        guard = PayoutGuard(StaticFetcher({"BRL": "100.00"}), cache_ttl=0, reservations=store)
        assert guard.check("1.00", "BRL").allowed
        decisions: list[bool] = []
        checking = threading.Thread(
            target=lambda: decisions.append(guard.check("10.00", "BRL").allowed), daemon=True)
        os.kill(own_server.process.pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            checking.start()
            checking.join(10)
            took = time.monotonic() - started
        finally:
            os.kill(own_server.process.pid, signal.SIGCONT)
        store.close()
        assert [False] == decisions, f"still waiting after {took:.1f} s"
        assert took < 1.2, f"took {took:.2f} s with a 0.5 s timeout"
        assert settings == client.connection_pool.connection_kwargs
        assert client.ping()
        client.close()

    def test_a_reply_that_came_too_late_is_never_read_as_the_next_calls(
        self, own_server: RedisServer
    ) -> None:
        """A connection that timed out is dropped, never reused in mid-reply.

        The store keeps its connections between calls: the late answer about po_1 must not
        pass for the answer about po_2.
        """
        with RedisReservations(own_server.url, timeout=0.5) as store:
            take(store, owned("po_1", "1.00"))
            os.kill(own_server.process.pid, signal.SIGSTOP)
            try:
                with pytest.raises(StoreUnavailable):
                    store.get("po_1")
            finally:
                os.kill(own_server.process.pid, signal.SIGCONT)
            time.sleep(0.2)  # the server answers the abandoned call now
            assert store.get("po_2") is None
            hold = store.get("po_1")
            assert hold is not None
            assert "po_1" == hold.payout_id

    def test_the_async_twin_stops_waiting_within_the_timeout(
        self, own_server: RedisServer
    ) -> None:
        """The redis.asyncio client of asyncio() is bounded the same way."""
        async def scenario() -> float:
            with RedisReservations(own_server.url, timeout=0.5) as store:
                twin = store.asyncio()
                assert await twin.get("po_1") is None
                os.kill(own_server.process.pid, signal.SIGSTOP)
                try:
                    started = time.monotonic()
                    with pytest.raises(StoreUnavailable):
                        await twin.get("po_1")
                    return time.monotonic() - started
                finally:
                    os.kill(own_server.process.pid, signal.SIGCONT)
                    await twin.aclose()

        took = asyncio.run(scenario())
        assert took < 1.2, f"took {took:.2f} s with a 0.5 s timeout"

    def test_an_evicting_server_found_at_first_use_denies(self) -> None:
        """Deferred to the first use, the eviction check makes that use a StoreUnavailable."""
        port = free_port()
        with RedisReservations(f"redis://127.0.0.1:{port}/0", timeout=1.0) as store:
            server = start_redis(redis_binary(), port=port,
                                 extra=("--maxmemory-policy", "allkeys-lru"))
            try:
                with pytest.raises(StoreUnavailable, match="maxmemory-policy"):
                    take(store, owned("po_1", "1.00"))
            finally:
                server.stop()

    def test_bad_url_is_a_configuration_error_without_the_url(self) -> None:
        """A URL that is not Redis is refused without repeating it (it may hold a password)."""
        with pytest.raises(ConfigurationError) as caught:
            RedisReservations("http://user:s3cret@example.invalid/")
        assert "s3cret" not in str(caught.value)

    def test_a_refused_password_is_not_repeated(self) -> None:
        """A URL whose password the server refuses: the error never shows that password."""
        server = start_redis(redis_binary(), extra=("--requirepass", "the-right-one"))
        url = server.url.replace("redis://", "redis://:s3cret-pw@")
        try:
            with RedisReservations(url, timeout=1.0) as store:
                with pytest.raises(StoreUnavailable) as caught:
                    store.get("po_1")
                assert "s3cret" not in repr(store)
        finally:
            server.stop()
        seen = [str(caught.value), repr(caught.value), str(caught.value.__cause__)]
        assert not [text for text in seen if "s3cret" in text]

    @pytest.mark.parametrize("namespace", ["", "a{b}", "x}"])
    def test_bad_namespace(self, redis_url: str, namespace: str) -> None:
        """A namespace must be non-empty and free of hash-tag braces."""
        with pytest.raises(ConfigurationError, match="namespace"):
            RedisReservations(redis_url, namespace=namespace)

    def test_not_a_client(self) -> None:
        """Something that is neither a URL nor a client is refused."""
        with pytest.raises(ConfigurationError, match=r"redis\.Redis client"):
            RedisReservations(6379)  # type: ignore[arg-type] # a wrong type on purpose

    def test_missing_package_says_how_to_install(self) -> None:
        """Without the redis package, the error says which extra to install."""
        code = (
            "import sys; sys.modules['redis'] = None\n"
            "from guard.stores import RedisReservations\n"
            "try:\n    RedisReservations('redis://127.0.0.1:1/0')\n"
            "except Exception as exc:\n    print(type(exc).__name__, exc)\n"
        )
        result = subprocess.run(  # the running interpreter with a fixed script
            [sys.executable, "-c", code], capture_output=True, text=True, check=True,
            timeout=60, env={**os.environ, "PYTHONWARNINGS": "error"},
        )
        assert "ConfigurationError" in result.stdout
        assert "pip install payout-guard[redis]" in result.stdout

    def test_closed_store_refuses(self, redis_url: str) -> None:
        """Using a closed store raises StoreUnavailable."""
        store = RedisReservations(redis_url)
        store.close()
        with pytest.raises(StoreUnavailable, match="closed"):
            store.get("po_1")

    def test_repr_hides_the_url(self) -> None:
        """The repr names the namespace only."""
        with RedisReservations("redis://:pw@127.0.0.1:1/0", namespace="ns") as store:
            assert "RedisReservations(namespace='ns')" == repr(store)


class TestLostHolds:
    def test_flushall_denies_until_rearm(self, own_server: RedisServer) -> None:
        """After FLUSHALL every call says the store lost its holds, until rearm()."""
        with RedisReservations(own_server.url) as store:
            taken = owned("po_1", "1.00")
            take(store, taken)
            client = redis.Redis.from_url(own_server.url)
            client.flushall()
            client.close()
            calls: list[Callable[[], object]] = [
                lambda: take(store, owned("po_2", "1.00")),
                lambda: store.commit("po_1", owner=taken.owner, now=T0),
                lambda: store.release("po_1", owner=taken.owner),
                lambda: store.mark_uncertain("po_1", owner=taken.owner, now=T0, until=T0 + 1),
                lambda: store.resolve("po_1", sent=True, now=T0),
                lambda: store.get("po_1"),
                lambda: store.reserved(KEY, counted_since=0, now=T0),
                lambda: store.holds(KEY, counted_since=0, now=T0),
            ]
            for call in calls:
                with pytest.raises(StoreUnavailable, match=f"{LOST}.*rearm"):
                    call()
            store.rearm()
            assert (None, "held") == (store.get("po_1"), take(store, owned("po_2", "1.00")))

    def test_a_lost_epoch_marker_alone_denies(self, store: RedisReservations,
                                              redis_url: str) -> None:
        """The marker evicted or deleted on its own is noticed too."""
        take(store, owned("po_1", "1.00"))
        client = redis.Redis.from_url(redis_url)
        client.delete(f"{store._prefix}epoch")
        client.close()
        with pytest.raises(StoreUnavailable, match=LOST):
            store.reserved(KEY, counted_since=0, now=T0)

    def test_restart_without_persistence_denies_the_guard(self, own_server: RedisServer) -> None:
        """Redis restarted empty under a running guard: reserves deny until rearm()."""
        store = RedisReservations(own_server.url, timeout=2.0)
        guard = PayoutGuard(StaticFetcher({"BRL": "100.00"}), reservations=store)
        sending = guard.reserve("80.00", "BRL", payout_id="po_1")
        own_server.restart()  # the 80.00 held for po_1 is gone with it
        with pytest.raises(PayoutDenied) as caught:
            guard.reserve("80.00", "BRL", payout_id="po_2")
        assert ["balance_unavailable"] == [r.code for r in caught.value.decision.reasons]
        assert not guard.check("1.00", "BRL").allowed
        store.rearm()  # an operator accepts the loss
        assert guard.check("10.00", "BRL").allowed
        assert sending.release() is False
        store.close()

    def test_a_restart_from_an_older_snapshot_denies_until_rearm(self, tmp_path: Path) -> None:
        """Redis back from a snapshot older than a commit: the id is never sent twice.

        The epoch marker is in the snapshot; the write counter is lower than the store saw.
        Another store that read the counter after the commit notices as well.
        """
        server = start_redis(redis_binary(), extra=("--dir", str(tmp_path)))
        admin = redis.Redis.from_url(server.url)
        try:
            store = RedisReservations(server.url, timeout=2.0)
            other = RedisReservations(server.url, timeout=2.0, clock="caller")
            guard = PayoutGuard(StaticFetcher({"BRL": "100.00"}), cache_ttl=0,
                                reservations=store)
            admin.save()  # the snapshot: the epoch marker, no hold
            sent: list[str] = []

            @guard.protect(payout_id="ref")
            def send(amount: str, currency: str, ref: str) -> None:  # noqa: ARG001 - protect reads them
                sent.append(ref)

            send("80.00", "BRL", ref="X")
            assert other.get("X") is not None
            server.restart()  # SIGTERM without save points: it comes back from the snapshot
            with pytest.raises(PayoutDenied) as caught:
                send("80.00", "BRL", ref="X")
            assert ["balance_unavailable"] == [r.code for r in caught.value.decision.reasons]
            with pytest.raises(StoreUnavailable, match=f"{LOST}.*older snapshot.*rearm"):
                other.get("X")
            store.rearm()  # an operator accepts what Redis holds
            assert store.get("X") is None
            assert ["X"] == sent
            store.close()
            other.close()
        finally:
            admin.close()
            server.stop()

    def test_a_store_started_after_the_loss_works_and_rearm_joins_it(
        self, own_server: RedisServer
    ) -> None:
        """A new store writes a new marker; rearm() makes the old one adopt it: one view."""
        with RedisReservations(own_server.url, clock="caller") as old:
            take(old, owned("po_1", "1.00"))
            own_server.restart()
            with RedisReservations(own_server.url, clock="caller") as new:
                take(new, owned("po_2", "2.00"))
                with pytest.raises(StoreUnavailable, match=LOST):
                    old.get("po_2")
                old.rearm()
                assert owned("po_2", "2.00") == old.get("po_2")
                assert Decimal("2.00") == new.reserved(KEY, counted_since=0, now=T0)

    def test_lost_ledger_fails_closed(self, store: RedisReservations, redis_url: str) -> None:
        """If someone deletes a key's ledger, the store refuses rather than undercount."""
        taken = owned("po_1", "1.00")
        store.try_hold(taken, ceiling=Decimal(10), counted_since=0, now=T0)
        store.commit("po_1", owner=taken.owner, now=T0)
        client = redis.Redis.from_url(redis_url)
        client.delete(f"{store._prefix}t:{KEY}")
        client.close()
        with pytest.raises(StoreUnavailable, match="ledger"):
            store.try_hold(owned("po_2", "1.00"), ceiling=Decimal(10), counted_since=0, now=T0)
        with pytest.raises(StoreUnavailable, match="ledger"):
            store.reserved(KEY, counted_since=0, now=T0)


class TestRearmRepairs:
    def test_a_lost_ledger_is_rebuilt_from_the_commits_kept(
        self, store: RedisReservations, redis_url: str
    ) -> None:
        """After rearm() the commits and live holds that stayed count again, in their currency."""
        sent, sending = owned("po_1", "10.00"), owned("po_2", "5.00", at=T0 + 1)
        take(store, sent)
        store.commit("po_1", owner=sent.owner, now=T0)
        take(store, sending)
        client = redis.Redis.from_url(redis_url)
        client.delete(f"{store._prefix}t:{KEY}")
        client.close()
        with pytest.raises(StoreUnavailable, match="ledger"):
            store.reserved(KEY, counted_since=0, now=T0 + 1)
        store.rearm()
        assert Decimal("15.00") == store.reserved(KEY, counted_since=0, now=T0 + 1)
        store.commit("po_2", owner=sending.owner, now=T0 + 2)
        assert Decimal("5.00") == store.reserved(KEY, counted_since=T0, now=T0 + 3)
        assert Decimal("15.00") == store.reserved(KEY, counted_since=0, now=T0 + 3)
        with pytest.raises(InvalidPayoutRequest, match="holds BRL"):
            take(store, owned("po_3", "1", currency="CLP", key=KEY))

    def test_leftovers_no_hold_explains_are_forgotten(
        self, store: RedisReservations, redis_url: str
    ) -> None:
        """With the ledger and every record gone, rearm() forgets the key's leftovers."""
        sent = owned("po_1", "10.00")
        take(store, sent)
        store.commit("po_1", owner=sent.owner, now=T0)
        client = redis.Redis.from_url(redis_url)
        client.delete(f"{store._prefix}t:{KEY}", store._record("po_1"))
        client.close()
        store.rearm()
        assert Decimal(0) == store.reserved(KEY, counted_since=0, now=T0)
        assert "held" == take(store, owned("po_2", "1.00"))


class _Counting(redis.Connection):
    """A redis-py connection that records the name of every command sent on it.

    On the connection, not the client: the store sends its scripts straight on connections
    borrowed from the client's pool, past ``execute_command``.
    """

    sent: ClassVar[list[str]] = []

    def send_packed_command(self, command: object, check_health: bool = True) -> None:
        packed = command if isinstance(command, bytes) else b"".join(command)  # type: ignore[arg-type]
        self.sent.append(packed.split(b"\r\n", 3)[2].decode())
        super().send_packed_command(command, check_health)  # type: ignore[no-untyped-call]


def has_functions(url: str) -> bool:
    """Return whether the server at *url* has Redis Functions (Redis 7 and later)."""
    client = redis.Redis.from_url(url)
    try:
        return int(client.info("server")["redis_version"].split(".")[0]) >= 7
    finally:
        client.close()


class TestRoundTrips:
    def test_reserve_commit_and_check_are_one_script_call_each(self, redis_url: str) -> None:
        """try_hold, commit and reserved each cost one script call, on either clock.

        One FCALL (EVALSHA before Redis 7), once the server has the scripts: the first call of
        each on a server loads it.
        """
        sent = _Counting.sent
        one = ["FCALL"] if has_functions(redis_url) else ["EVALSHA"]
        for clock in ("server", "caller"):
            client = redis.Redis(connection_pool=redis.ConnectionPool.from_url(
                redis_url, connection_class=_Counting))
            with RedisReservations(client, namespace=f"rt-{uuid.uuid4().hex}",
                                   clock=clock) as store:
                warm = owned("po_0", "1.00")
                take(store, warm)
                store.commit("po_0", owner=warm.owner, now=T0)
                store.reserved(KEY, counted_since=0, now=T0)
                taken = owned("po_1", "1.00")
                sent.clear()
                assert "held" == take(store, taken)
                assert one == sent
                sent.clear()
                assert store.commit("po_1", owner=taken.owner, now=T0) is not None
                assert one == sent
                sent.clear()
                store.reserved(KEY, counted_since=0, now=T0)
                assert one == sent
            client.close()
            client.connection_pool.disconnect()  # the client was given the pool: not its to close

    def test_a_server_that_forgot_the_scripts_gets_them_again(self, redis_url: str) -> None:
        """After SCRIPT FLUSH, the next call loads its script and runs it (blocking and asyncio)."""
        admin = redis.Redis.from_url(redis_url)
        with RedisReservations(redis_url, namespace=f"nf-{uuid.uuid4().hex}",
                               clock="caller") as store:
            first = owned("po_1", "1.00")
            admin.script_flush()
            assert "held" == take(store, first)
            done = store.commit("po_1", owner=first.owner, now=T0)
            assert done is not None
            assert "committed" == done.state
            twin = store.asyncio()

            async def run() -> str:
                second = owned("po_2", "2.00")
                await twin.try_hold(second, ceiling=Decimal(100), counted_since=0, now=T0)
                admin.script_flush()
                done = await twin.commit("po_2", owner=second.owner, now=T0)
                await twin.aclose()
                return "" if done is None else done.state

            assert "committed" == asyncio.run(run())
        admin.close()

    def test_either_protocol_gives_the_same_replies(self, redis_url: str) -> None:
        """A store on a RESP2 link (read by the store) and one on RESP3 (by redis-py) agree."""
        found = []
        for protocol in (2, 3):
            client = redis.Redis.from_url(redis_url, protocol=protocol)
            with RedisReservations(client, namespace=f"p{protocol}-{uuid.uuid4().hex}",
                                   clock="caller") as store:
                taken = owned("po_1", "2.50")
                outcome = store.try_hold(taken, ceiling=Decimal(100), counted_since=0, now=T0)
                again = store.try_hold(taken, ceiling=Decimal(100), counted_since=0, now=T0)
                done = store.commit("po_1", owner=taken.owner, now=T0 + 1)
                found.append((outcome.status, outcome.hold, again.status, again.hold, done,
                               store.get("po_1"), store.get("po_9"), store.release(
                                   "po_1", owner=taken.owner),
                               store.reserved(KEY, counted_since=0, now=T0 + 1)))
            client.close()
        assert found[0] == found[1]
        assert ("held", "duplicate") == (found[0][0], found[0][2])

    def test_a_server_that_forgot_the_functions_gets_them_again(self, redis_url: str) -> None:
        """After FUNCTION FLUSH, the next call loads the library again and runs its function."""
        if not has_functions(redis_url):
            pytest.skip("Redis Functions need Redis 7")
        admin = redis.Redis.from_url(redis_url)
        sent = _Counting.sent
        client = redis.Redis(connection_pool=redis.ConnectionPool.from_url(
            redis_url, connection_class=_Counting))
        with RedisReservations(client, namespace=f"ff-{uuid.uuid4().hex}",
                               clock="caller") as store:
            first = owned("po_1", "1.00")
            assert "held" == take(store, first)
            admin.function_flush()
            sent.clear()
            done = store.commit("po_1", owner=first.owner, now=T0)
            assert (2, 1) == (sent.count("FCALL"), sent.count("FUNCTION"))  # refused, loaded
            assert done is not None
            assert "committed" == done.state
        client.close()
        client.connection_pool.disconnect()
        admin.close()

    def test_a_user_refused_functions_runs_the_scripts(self, redis_url: str) -> None:
        """A Redis user the ACL refuses FUNCTION LOAD gets the same holds through EVALSHA."""
        if not has_functions(redis_url):
            pytest.skip("Redis Functions need Redis 7")
        admin = redis.Redis.from_url(redis_url)
        name, secret = f"nofn-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
        admin.acl_setuser(name, enabled=True, passwords=[f"+{secret}"], keys=["*"],
                          channels=["*"], commands=["+@all", "-function", "-fcall"])
        sent = _Counting.sent
        client = redis.Redis(connection_pool=redis.ConnectionPool.from_url(
            redis_url, connection_class=_Counting, username=name, password=secret))
        try:
            with RedisReservations(client, namespace=f"nf-{uuid.uuid4().hex}") as store:
                taken = owned("po_1", "1.00")
                sent.clear()
                assert "held" == take(store, taken)
                assert store.commit("po_1", owner=taken.owner, now=T0) is not None
                assert Decimal("1.00") == store.committed(KEY, since=T0 - 60, now=T0)
                assert "FCALL" not in sent
                assert "EVALSHA" in sent
        finally:
            client.close()
            client.connection_pool.disconnect()
            admin.acl_deluser(name)
            admin.close()


class TestScripts:
    def test_each_script_defines_every_helper_it_names(self, redis_url: str) -> None:
        """Each script carries the shared Lua helpers it names (and only those), and compiles."""
        helpers = set(re.findall(r"^local (?:function )?(\w+)", lua._COMMON, re.M))
        client = redis.Redis.from_url(redis_url)
        try:
            for name in lua.__all__:
                text = getattr(lua, name)
                defined = set(re.findall(r"^local (?:function )?(\w+)", text, re.M))
                named = set(re.findall(r"\w+", re.sub(r"--[^\n]*", "", text)))
                assert helpers & named <= defined, name
                assert client.script_load(text)
        finally:
            client.close()

    def test_the_library_holds_every_script_as_a_function(self, redis_url: str) -> None:
        """The Functions library loads, and names one function for each script (Redis 7)."""
        if not has_functions(redis_url):
            pytest.skip("Redis Functions need Redis 7")
        client = redis.Redis.from_url(redis_url)
        try:
            assert lua.LIBRARY_NAME.encode() == client.function_load(lua.LIBRARY, replace=True)
            found = client.function_list(library=lua.LIBRARY_NAME)
        finally:
            client.close()
        names = {_name(f) for library in found for f in _field(library, "functions")}
        assert set(lua.FUNCTIONS.values()) == names
        assert {_name_of(text) for text in lua.__all__} == set(lua.FUNCTIONS)


def _field(entry: object, name: str) -> Any:
    """Return the field *name* of a FUNCTION LIST entry (a flat list of names and values)."""
    assert isinstance(entry, list)
    return entry[[_text(k) for k in entry[::2]].index(name) * 2 + 1]


def _name(function: object) -> str:
    return _text(_field(function, "name"))


def _name_of(constant: str) -> str:
    return constant.lower()


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class TestServerChecks:
    def test_an_evicting_policy_is_refused(self) -> None:
        """maxmemory-policy allkeys-lru is a ConfigurationError naming the setting and value."""
        server = start_redis(redis_binary(), extra=("--maxmemory-policy", "allkeys-lru"))
        try:
            with pytest.raises(ConfigurationError) as caught:
                RedisReservations(server.url)
            with RedisReservations(server.url, allow_eviction=True) as store:
                assert "held" == take(store, owned("po_1", "1.00"))
        finally:
            server.stop()
        assert "maxmemory-policy" in str(caught.value)
        assert "allkeys-lru" in str(caught.value)
        assert "noeviction" in str(caught.value)
        assert "allow_eviction=True" in str(caught.value)

    def test_without_config_the_policy_is_read_from_info(self) -> None:
        """With CONFIG disabled (managed Redis), INFO memory still tells the policy."""
        server = start_redis(redis_binary(), extra=("--maxmemory-policy", "volatile-ttl",
                                                    "--rename-command", "CONFIG", ""))
        try:
            with pytest.raises(ConfigurationError, match="volatile-ttl"):
                RedisReservations(server.url)
        finally:
            server.stop()

    def test_not_durable_is_logged_once(self, own_server: RedisServer) -> None:
        """Neither AOF nor RDB snapshots: one payout_guard.store_not_durable warning per store."""
        with capture_logs() as logs, RedisReservations(own_server.url) as store:
            take(store, owned("po_1", "1.00"))
            store.rearm()
            store.get("po_1")
        warned = [e for e in logs if e["event"] == "payout_guard.store_not_durable"]
        assert [("warning", "redis")] == [(e["log_level"], e["store"]) for e in warned]

    def test_a_durable_server_is_not_warned_about(self, tmp_path: Path) -> None:
        """With an AOF configured, nothing is logged."""
        server = start_redis(redis_binary(), extra=("--dir", str(tmp_path), "--appendonly", "yes"))
        try:
            with capture_logs() as logs, RedisReservations(server.url):
                pass
        finally:
            server.stop()
        assert [] == [e for e in logs if e["event"] == "payout_guard.store_not_durable"]

    def test_rdb_snapshots_alone_are_warned_about(self, tmp_path: Path) -> None:
        """RDB snapshots without an AOF: a restart loses the latest holds; one warning says so."""
        server = start_redis(redis_binary(), extra=("--dir", str(tmp_path), "--save", "3600 1"))
        try:
            with capture_logs() as logs, RedisReservations(server.url):
                pass
        finally:
            server.stop()
        warned = [e for e in logs if e["event"] == "payout_guard.store_not_durable"]
        assert ["warning"] == [e["log_level"] for e in warned]
        assert "only RDB snapshots" in warned[0]["detail"]


class TestAtMaxmemory:
    """At maxmemory (noeviction) a payout whose money left can still be committed."""

    def test_holds_end_and_reads_work_but_new_holds_are_refused(
        self, own_server: RedisServer
    ) -> None:
        """Commit, release, mark_uncertain, resolve and the reads run; try_hold is refused."""
        if not has_functions(own_server.url):
            pytest.skip("Functions flags need Redis 7; by EVALSHA an ending may be refused")
        admin = redis.Redis.from_url(own_server.url)
        with RedisReservations(own_server.url, clock="caller", timeout=2.0) as store:
            sent, dropped, unsure, later = (owned(f"po_{n}", "1.00") for n in range(1, 5))
            for taken in (sent, dropped, unsure, later):
                take(store, taken)
            store.mark_uncertain("po_3", owner=unsure.owner, now=T0, until=T0 + 60)
            # below what Redis uses: every write that needs memory fails
            admin.config_set("maxmemory", 1)
            try:
                with pytest.raises(StoreUnavailable, match="maxmemory"):
                    take(store, owned("po_5", "1.00"))
                assert "committed" == getattr(store.commit("po_1", owner=sent.owner, now=T0),
                                              "state", None)
                assert store.release("po_2", owner=dropped.owner)
                assert "uncertain" == getattr(store.mark_uncertain(
                    "po_4", owner=later.owner, now=T0, until=T0 + 60), "state", None)
                assert store.resolve("po_3", sent=True, now=T0) is not None
                assert "committed" == getattr(store.get("po_3"), "state", None)
                assert Decimal("3.00") == store.reserved(KEY, counted_since=0, now=T0)
                assert Decimal("2.00") == store.committed(KEY, since=0, now=T0)
                assert 3 == len(store.holds(KEY, counted_since=0, now=T0))
                assert 3 == len(store.list_holds(now=T0))

                async def twin_commits() -> str:
                    twin = store.asyncio()
                    try:
                        done = await twin.resolve("po_4", sent=True, now=T0)
                        return "" if done is None else done.state
                    finally:
                        await twin.aclose()

                assert "uncertain" == asyncio.run(twin_commits())  # as found, then committed
                assert "committed" == getattr(store.get("po_4"), "state", None)
            finally:
                admin.config_set("maxmemory", 0)
                admin.close()

    def test_the_guard_denies_a_new_payout(self, own_server: RedisServer) -> None:
        """A reserve at maxmemory is a denial (balance_unavailable), not an error."""
        admin = redis.Redis.from_url(own_server.url)
        with RedisReservations(own_server.url, timeout=2.0) as store:
            guard = PayoutGuard(StaticFetcher({"BRL": "100.00"}), reservations=store)
            admin.config_set("maxmemory", 1)
            try:
                with pytest.raises(PayoutDenied) as caught:
                    guard.reserve("1.00", "BRL", payout_id="po_1")
            finally:
                admin.config_set("maxmemory", 0)
                admin.close()
        assert ["balance_unavailable"] == [r.code for r in caught.value.decision.reasons]


class TestBoundsBeforeWrites:
    def test_a_ttl_of_1e16_writes_nothing(self, store: RedisReservations, redis_url: str) -> None:
        """A ttl no EXPIRE could take is refused in Python: no key is written, the id is free."""
        with pytest.raises(ValueError, match="30 days"):
            take(store, owned("po_1", "1.00", ttl=1e16))
        assert [f"{store._prefix}epoch"] == keys_of(redis_url, store)
        assert "held" == take(store, owned("po_1", "1.00"))

    def test_an_uncertain_ttl_of_1e16_changes_nothing(
        self, store: RedisReservations, redis_url: str
    ) -> None:
        """mark_uncertain with an end 1e16 s away is refused before the script runs."""
        taken = owned("po_1", "1.00")
        take(store, taken)
        client = redis.Redis.from_url(redis_url)
        before = client.hgetall(store._record("po_1"))
        with pytest.raises(ValueError, match="30 days"):
            store.mark_uncertain("po_1", owner=taken.owner, now=T0, until=T0 + 1e16)
        assert before == client.hgetall(store._record("po_1"))
        client.close()


class TestLuaArithmetic:
    def test_hold_of_2_pow_53_minor_units_is_refused(self, store: RedisReservations) -> None:
        """A single hold Lua cannot represent exactly is an InvalidPayoutRequest."""
        with pytest.raises(InvalidPayoutRequest, match="too large for the redis"):
            store.try_hold(owned("po_1", str(2**53), currency="CLP"), ceiling=Decimal(10**20),
                           counted_since=0, now=T0)

    def test_largest_exact_hold_is_kept_exactly(self, store: RedisReservations) -> None:
        """2**53 - 1 minor units round-trip exactly."""
        big = owned("po_1", str(2**53 - 1), currency="CLP")
        store.try_hold(big, ceiling=Decimal(10**20), counted_since=0, now=T0)
        assert Decimal(2**53 - 1) == store.reserved(big.key, counted_since=0, now=T0)

    def test_total_reaching_2_pow_53_is_refused_not_rounded(
        self, store: RedisReservations
    ) -> None:
        """With a ceiling past 2**53, a total Lua cannot count exactly raises."""
        first = owned("po_1", str(5 * 10**15), currency="CLP")
        store.try_hold(first, ceiling=Decimal(10**20), counted_since=0, now=T0)
        with pytest.raises(InvalidPayoutRequest, match="2\\*\\*53"):
            store.try_hold(owned("po_2", str(5 * 10**15), currency="CLP"),
                           ceiling=Decimal(10**20), counted_since=0, now=T0)
        assert store.get("po_2") is None

    def test_total_over_a_smaller_ceiling_is_just_over(self, store: RedisReservations) -> None:
        """Below-2**53 ceilings give a plain over_ceiling, whatever the total would be."""
        first = owned("po_1", str(5 * 10**15), currency="CLP")
        store.try_hold(first, ceiling=Decimal(6 * 10**15), counted_since=0, now=T0)
        outcome = store.try_hold(owned("po_2", str(5 * 10**15), currency="CLP"),
                                 ceiling=Decimal(6 * 10**15), counted_since=0, now=T0)
        assert "over_ceiling" == outcome.status

    def test_running_totals_past_2_pow_53_stay_exact(self, store: RedisReservations) -> None:
        """Running totals outgrow doubles over time; window sums stay exact."""
        amounts = [4 * 10**15 + 1, 4 * 10**15 + 3, 4 * 10**15 + 7, 123]
        for n, amount in enumerate(amounts):
            taken = owned(f"po_{n}", str(amount), currency="CLP", at=T0 + n)
            outcome = store.try_hold(taken, ceiling=Decimal(2**53 - 1),
                                     counted_since=T0 + n - 0.5, now=T0 + n)
            assert "held" == outcome.status
            store.commit(f"po_{n}", owner=taken.owner, now=T0 + n)
        key = hold("x", "1", currency="CLP").key
        assert Decimal(4 * 10**15 + 7 + 123) == store.reserved(key, counted_since=T0 + 1.5,
                                                               now=T0 + 4)
        assert Decimal(123) == store.reserved(key, counted_since=T0 + 2.5, now=T0 + 4)

    def test_times_round_trip_exactly(self, store: RedisReservations) -> None:
        """Guard clock values come back as the very same floats, uncertain ends included."""
        at = 1_712_345_678.123456789
        taken = owned("po_1", "1.00", at=at, ttl=0.1)
        store.try_hold(taken, ceiling=Decimal(10), counted_since=0, now=at)
        assert taken == store.get("po_1")
        assert Decimal("1.00") == store.reserved(KEY, counted_since=0, now=taken.expires_at - 1e-6)
        assert Decimal(0) == store.reserved(KEY, counted_since=0, now=taken.expires_at)
        until = at + 0.123456789
        store.mark_uncertain("po_1", owner=taken.owner, now=at, until=until)
        assert Decimal("1.00") == store.reserved(KEY, counted_since=0, now=until - 1e-6)
        assert Decimal(0) == store.reserved(KEY, counted_since=0, now=until)
        assert taken.uncertain(until) == store.get("po_1")

    def test_mixed_currencies_on_one_key_are_refused(self, store: RedisReservations) -> None:
        """A key sums one currency; a hold in another currency on it is an error."""
        store.try_hold(owned("po_1", "1.00", key="k"), ceiling=Decimal(10), counted_since=0,
                       now=T0)
        with pytest.raises(InvalidPayoutRequest, match="holds BRL"):
            store.try_hold(owned("po_2", "1.00", key="k", currency="USD"), ceiling=Decimal(10),
                           counted_since=0, now=T0)


def server_store(url: str, namespace: str | None = None) -> RedisReservations:
    """Return a store on the Redis server's clock (the default)."""
    return RedisReservations(url, namespace=namespace or f"srv-{uuid.uuid4().hex}")


class TestOneClockPerStore:
    @pytest.mark.parametrize("clock", ["local", "", None, 1])
    def test_the_clock_option_is_checked(self, redis_url: str, clock: object) -> None:
        """Only 'server' and 'caller' are clocks; the error says which are accepted."""
        with pytest.raises(ConfigurationError, match=r"'server'.*'caller'"):
            RedisReservations(redis_url, clock=clock)  # type: ignore[arg-type] # on purpose

    def test_holds_carry_the_servers_times(self, redis_url: str) -> None:
        """On the server's clock a hold is stored at the server's time, its ttl kept."""
        with server_store(redis_url) as store:
            taken = owned("po_1", "1.00", at=T0, ttl=300.0)
            before = time.time()
            outcome = store.try_hold(taken, ceiling=Decimal(10), counted_since=T0 - 30, now=T0)
            stored = store.get("po_1")
            after = time.time()
        assert stored is not None
        assert stored == outcome.hold
        assert before - 1 < stored.created_at < after + 1
        assert 300.0 == pytest.approx(stored.expires_at - stored.created_at, abs=1e-6)

    def test_hosts_60_s_apart_never_overspend(self, redis_url: str) -> None:
        """Two hosts whose clocks differ by 60 s share one ceiling: together within it."""
        namespace = f"skew-{uuid.uuid4().hex}"
        now = time.time()
        with server_store(redis_url, namespace) as here, \
                server_store(redis_url, namespace) as ahead:
            first = owned("po_1", "60.00", at=now, ttl=300.0)
            assert "held" == here.try_hold(first, ceiling=Decimal(100), counted_since=now - 30,
                                           now=now).status
            # 60 s ahead, the other host would think a 30 s hold long gone on its own clock.
            second = owned("po_2", "50.00", at=now + 60, ttl=30.0)
            outcome = ahead.try_hold(second, ceiling=Decimal(100), counted_since=now + 30,
                                     now=now + 60)
            assert ("over_ceiling", Decimal("60.00")) == (outcome.status, outcome.counted)
            assert here.reserved(KEY, counted_since=now - 30, now=now) == ahead.reserved(
                KEY, counted_since=now + 30, now=now + 60)

    def test_expiry_and_commits_agree_across_skewed_hosts(self, redis_url: str) -> None:
        """A hold expires for both hosts at once, and a commit counts for both alike."""
        namespace = f"skew-{uuid.uuid4().hex}"
        now = time.time()
        with server_store(redis_url, namespace) as here, \
                server_store(redis_url, namespace) as ahead:
            brief = owned("po_1", "10.00", at=now, ttl=0.3)
            sent = owned("po_2", "5.00", at=now, ttl=300.0)
            for taken in (brief, sent):
                here.try_hold(taken, ceiling=Decimal(100), counted_since=now - 30, now=now)
            here.commit("po_2", owner=sent.owner, now=now)
            # The host 60 s ahead still counts both: the hold has 0.3 s left on the server.
            assert Decimal("15.00") == ahead.reserved(KEY, counted_since=now + 30, now=now + 60)
            time.sleep(0.4)
            assert Decimal("5.00") == ahead.reserved(KEY, counted_since=now + 30, now=now + 60)
            assert Decimal("5.00") == here.reserved(KEY, counted_since=now - 30, now=now)

    def test_two_guards_60_s_apart_never_overspend(self, redis_url: str) -> None:
        """Guards whose clocks differ by 60 s on one Redis store pay out at most the balance."""
        namespace = f"skew-{uuid.uuid4().hex}"
        clocks = [FakeClock(time.time()), FakeClock(time.time() + 60)]
        with server_store(redis_url, namespace) as one, \
                server_store(redis_url, namespace) as two:
            guards = [
                PayoutGuard(StaticFetcher({"BRL": "100.00"}, clock=clock), reservations=store,
                            clock=clock, hold_ttl=30.0)
                for clock, store in zip(clocks, (one, two), strict=True)
            ]
            allowed = []
            for n in range(6):
                try:
                    with guards[n % 2].reserve("30.00", "BRL", payout_id=f"po_{n}"):
                        allowed.append(True)  # sent: committed on leaving the block
                except PayoutDenied:
                    allowed.append(False)
        # On the callers' clocks, the guard ahead would take the other's commits as settled.
        assert [True, True, True, False, False, False] == allowed


class TestHoldsAtConstantCost:
    def test_expired_holds_leave_the_total_as_time_passes(self, store: RedisReservations) -> None:
        """Holds stop counting exactly at their expiry, in any order they were taken."""
        ttls = [50.0, 10.0, 30.0, 20.0, 40.0]
        for n, ttl in enumerate(ttls):
            take(store, owned(f"po_{n}", "1.00", ttl=ttl))
        for at in (0.0, 10.0, 15.0, 20.0, 39.9, 40.0, 50.0):
            expected = Decimal(sum(1 for ttl in ttls if at < ttl))
            assert expected == store.reserved(KEY, counted_since=0, now=T0 + at), at

    def test_a_clock_stepping_back_counts_them_again(self, store: RedisReservations) -> None:
        """On the caller's clock, holds expired at a later now count again at an earlier one."""
        for n, ttl in enumerate([10.0, 20.0, 30.0]):
            take(store, owned(f"po_{n}", "1.00", ttl=ttl))
        assert Decimal(0) == store.reserved(KEY, counted_since=0, now=T0 + 60)
        assert Decimal(2) == store.reserved(KEY, counted_since=0, now=T0 + 15)
        assert Decimal(3) == store.reserved(KEY, counted_since=0, now=T0)
        assert Decimal(0) == store.reserved(KEY, counted_since=0, now=T0 + 60)

    def test_leaving_holds_keep_the_total_exact(self, store: RedisReservations) -> None:
        """Released, committed, uncertain and replaced holds move the running total exactly."""
        taken = [owned(f"po_{n}", "1.00", ttl=100.0) for n in range(5)]
        for one in taken:
            take(store, one)
        store.release("po_0", owner=taken[0].owner)
        store.commit("po_1", owner=taken[1].owner, now=T0)
        store.mark_uncertain("po_2", owner=taken[2].owner, now=T0, until=T0 + 500)
        # po_1 counts as committed after the window; po_2 beyond its first expiry.
        assert Decimal(4) == store.reserved(KEY, counted_since=0, now=T0 + 1)
        assert Decimal(3) == store.reserved(KEY, counted_since=T0, now=T0 + 1)
        assert Decimal(1) == store.reserved(KEY, counted_since=T0, now=T0 + 200)
        again = owned("po_3", "7.00", at=T0 + 200, ttl=10.0)
        assert "held" == take(store, again)
        assert Decimal(8) == store.reserved(KEY, counted_since=T0, now=T0 + 200)
        assert Decimal(0) == store.reserved(KEY, counted_since=T0, now=T0 + 600)

    def test_counting_reads_no_hold(self, store: RedisReservations, redis_url: str) -> None:
        """With thousands of live holds, a count reads none of them: its cost does not grow.

        Counted by the commands Redis ran for it (no HGETALL or range over the key's holds).
        """
        for n in range(2000):
            store.try_hold(owned(f"po_{n}", "1.00"), ceiling=Decimal(10**6), counted_since=0,
                           now=T0)
        client = redis.Redis.from_url(redis_url)
        try:
            client.config_resetstat()
            assert Decimal(2000) == store.reserved(KEY, counted_since=0, now=T0 + 1)
            stats = client.info("commandstats")
        finally:
            client.close()
        calls = sum(int(v["calls"]) for k, v in stats.items()
                    if k not in {"cmdstat_evalsha", "cmdstat_fcall", "cmdstat_config|resetstat"})
        assert calls <= 12, stats


class TestCommittedTotals:
    def test_commits_after_a_time_are_summed(self, store: RedisReservations) -> None:
        """``committed`` sums what was sent after *since*, whatever is still pending."""
        for n, amount in enumerate(["1.00", "2.00", "4.00"]):
            taken = owned(f"po_{n}", amount, at=T0 + n)
            take(store, taken, ceiling=1000)
            store.commit(taken.payout_id, owner=taken.owner, now=T0 + n)
        take(store, owned("po_9", "8.00", at=T0 + 5), ceiling=1000)
        assert Decimal("7.00") == store.committed(KEY, since=T0 - 1, now=T0 + 5)
        assert Decimal("6.00") == store.committed(KEY, since=T0, now=T0 + 5)
        assert Decimal(0) == store.committed(KEY, since=T0 + 2, now=T0 + 5)
        assert Decimal(0) == store.committed("nothing|here|BRL", since=T0, now=T0 + 5)

    def test_on_the_server_clock_since_is_taken_from_now(self, redis_url: str) -> None:
        """On the server's clock, ``since`` counts back from the caller's ``now``."""
        with server_store(redis_url) as store:
            taken = owned("po_1", "3.00")
            store.try_hold(taken, ceiling=Decimal(10), counted_since=T0 - 30, now=T0)
            store.commit("po_1", owner=taken.owner, now=T0)
            assert Decimal("3.00") == store.committed(KEY, since=T0 + 3540, now=T0 + 3600)
            assert Decimal(0) == store.committed(KEY, since=T0 + 3601, now=T0 + 3600)


class TestFleetStore:
    def test_the_store_keeps_the_fleet_protocols(self, store: RedisReservations) -> None:
        """RedisReservations is a FleetStore and gives CommittedTotals."""
        assert isinstance(store, FleetStore)
        assert isinstance(store, CommittedTotals)

    def test_one_reader_leads_the_others_wait(self, redis_url: str) -> None:
        """With no value, the first reader takes the lease; the next ones wait for its value."""
        with server_store(redis_url) as store:
            first = store.read_shared("bal|luxcore|ARS", owner="a", lease_ttl=5, fresh_for=5)
            second = store.read_shared("bal|luxcore|ARS", owner="b", lease_ttl=5, fresh_for=5)
            assert ((None, True), (None, False)) == (first, second)
            store.write_shared("bal|luxcore|ARS", '{"ARS": "10.00"}', keep=60, owner="a")
            shared, leads = store.read_shared("bal|luxcore|ARS", owner="b", lease_ttl=5,
                                              fresh_for=5)
        assert shared is not None
        assert ('{"ARS": "10.00"}', False) == (shared.payload, leads)
        assert 0 <= shared.age < 1

    def test_a_stale_value_is_returned_and_one_reader_refreshes(self, redis_url: str) -> None:
        """Past fresh_for, readers still get the value; exactly one of them leads."""
        with server_store(redis_url) as store:
            store.write_shared("v", "old", keep=60, owner="a")
            time.sleep(0.25)
            answers = [store.read_shared("v", owner=o, lease_ttl=5, fresh_for=0.2)
                       for o in ("b", "c", "b")]
        assert ["old"] * 3 == [shared.payload for shared, _ in answers if shared]
        assert all(shared is not None and shared.age >= 0.2 for shared, _ in answers)
        assert [True, False, True] == [leads for _, leads in answers]

    def test_a_dropped_or_expired_lease_passes_on(self, redis_url: str) -> None:
        """After drop_lease (a failed fetch) or the lease's ttl, the next reader leads."""
        with server_store(redis_url) as store:
            store.read_shared("v", owner="a", lease_ttl=5, fresh_for=1)
            store.drop_lease("v", owner="someone else")
            assert (None, False) == store.read_shared("v", owner="b", lease_ttl=0.2, fresh_for=1)
            store.drop_lease("v", owner="a")
            assert (None, True) == store.read_shared("v", owner="b", lease_ttl=0.2, fresh_for=1)
            time.sleep(0.3)
            assert (None, True) == store.read_shared("v", owner="c", lease_ttl=5, fresh_for=1)

    def test_a_value_lasts_its_keep(self, redis_url: str) -> None:
        """A shared value is gone once *keep* seconds have passed."""
        with server_store(redis_url) as store:
            store.write_shared("v", "x", keep=0.2, owner="a")
            time.sleep(0.3)
            assert (None, True) == store.read_shared("v", owner="a", lease_ttl=5, fresh_for=1)

    def test_the_budget_is_gcra(self, redis_url: str) -> None:
        """100 a minute: a burst of 10 at once, then one every 60/91 s (``gcra``)."""
        with server_store(redis_url) as store:
            waits = [store.spend("luxcore|key", per_minute=100) for _ in range(12)]
        assert [0.0] * 10 == waits[:10]
        interval = 60 / 91
        assert interval - 0.5 < waits[10] <= interval
        assert waits[10] == pytest.approx(waits[11], abs=0.1)

    def test_skewed_hosts_spend_one_budget(self, redis_url: str) -> None:
        """Stores of one namespace (any host clock) draw on one budget."""
        namespace = f"budget-{uuid.uuid4().hex}"
        with server_store(redis_url, namespace) as one, \
                server_store(redis_url, namespace) as two:
            assert 0.0 == one.spend("p", per_minute=1)
            assert 59 < two.spend("p", per_minute=1) <= 60

    def test_fleet_keys_are_under_the_namespace(self, redis_url: str) -> None:
        """Shared values, leases and budgets live under ``{namespace}:``."""
        namespace = f"fleet-{uuid.uuid4().hex}"
        with server_store(redis_url, namespace) as store:
            store.read_shared("v", owner="a", lease_ttl=5, fresh_for=1)
            store.write_shared("w", "x", keep=5, owner="a")
            store.spend("p", per_minute=5)
        client = redis.Redis.from_url(redis_url, decode_responses=True)
        try:
            keys = [str(k) for k in client.keys(f"*{namespace}*")]
        finally:
            client.close()
        assert {f"{{{namespace}}}:{k}" for k in ("epoch", "l:v", "s:w", "g:p")} == set(keys)

    @pytest.mark.parametrize(
        "call",
        [
            lambda s: s.read_shared("", owner="a", lease_ttl=1, fresh_for=1),
            lambda s: s.read_shared("v" * 201, owner="a", lease_ttl=1, fresh_for=1),
            lambda s: s.read_shared("v", owner="", lease_ttl=1, fresh_for=1),
            lambda s: s.read_shared("v", owner="a", lease_ttl=0, fresh_for=1),
            lambda s: s.read_shared("v", owner="a", lease_ttl=1, fresh_for=float("nan")),
            lambda s: s.write_shared("v", "x", keep=float("inf"), owner="a"),
            lambda s: s.write_shared("v", b"x", keep=1, owner="a"),
            lambda s: s.drop_lease(7, owner="a"),
            lambda s: s.spend("p", per_minute=0),
            lambda s: s.spend("p", per_minute=True),
            lambda s: s.spend("p", per_minute=1.5),
        ],
    )
    def test_inputs_are_checked(
        self, store: RedisReservations, call: Callable[[RedisReservations], object]
    ) -> None:
        """Names, owners, durations and budgets that make no sense are a ValueError."""
        with pytest.raises(ValueError):  # noqa: PT011 - each case has its own message
            call(store)

    def test_an_unreachable_server_is_store_unavailable(self) -> None:
        """Fleet calls fail like the others when Redis cannot be reached."""
        with RedisReservations(f"redis://127.0.0.1:{free_port()}/0", timeout=0.5) as store:
            for call in (
                lambda: store.read_shared("v", owner="a", lease_ttl=1, fresh_for=1),
                lambda: store.write_shared("v", "x", keep=1, owner="a"),
                lambda: store.drop_lease("v", owner="a"),
                lambda: store.spend("p", per_minute=5),
                lambda: store.committed(KEY, since=T0, now=T0),
            ):
                with pytest.raises(StoreUnavailable):
                    call()

    def test_a_flushed_server_denies_fleet_calls_too(self, own_server: RedisServer) -> None:
        """The epoch marker guards the fleet scripts as it guards the holds."""
        with RedisReservations(own_server.url) as store:
            store.spend("p", per_minute=5)
            client = redis.Redis.from_url(own_server.url)
            client.flushall()
            client.close()
            with pytest.raises(StoreUnavailable, match=LOST):
                store.spend("p", per_minute=5)


class TestAsyncTwin:
    def test_every_new_method_is_awaitable(self, redis_url: str) -> None:
        """The asyncio store answers committed and the fleet calls as the blocking one does."""
        with server_store(redis_url) as store:
            twin = store.asyncio()

            async def run() -> tuple[object, ...]:
                found = await twin.read_shared("v", owner="a", lease_ttl=5, fresh_for=5)
                await twin.write_shared("v", "x", keep=5, owner="a")
                await twin.drop_lease("v", owner="a")
                shared, leads = await twin.read_shared("v", owner="b", lease_ttl=5,
                                                       fresh_for=5)
                wait = await twin.spend("p", per_minute=1)
                again = await twin.spend("p", per_minute=1)
                total = await twin.committed(KEY, since=T0, now=T0)
                await twin.aclose()
                return found, shared.payload if shared else None, leads, wait, again > 59, total

            assert ((None, True), "x", False, 0.0, True, Decimal(0)) == asyncio.run(run())


class TestUpgrade:
    def test_live_holds_of_an_older_version_deny_until_rearm_moves_them(
        self, store: RedisReservations, redis_url: str
    ) -> None:
        """A key whose live holds are in the older layout (a p: hash) denies; rearm moves them."""
        taken = owned("po_1", "10.00")
        take(store, taken)
        sent = owned("po_2", "5.00")
        take(store, sent)
        store.commit("po_2", owner=sent.owner, now=T0)
        client = redis.Redis.from_url(redis_url)
        prefix = store._prefix
        try:
            # What the previous version wrote for po_1, and left behind for the committed po_2.
            client.delete(f"{prefix}x:{KEY}")
            client.hdel(f"{prefix}t:{KEY}", "live", "wm", "gcu", "pur")
            client.hset(f"{prefix}p:{KEY}", mapping={
                "po_1": f"1000 {taken.expires_at!r}", "po_2": f"500 {sent.expires_at!r}",
            })
            with pytest.raises(StoreUnavailable, match="older version"):
                store.reserved(KEY, counted_since=0, now=T0)
            store.rearm()
            assert [] == client.keys(f"{prefix}p:*")
        finally:
            client.close()
        assert Decimal("15.00") == store.reserved(KEY, counted_since=0, now=T0)
        assert Decimal("5.00") == store.reserved(KEY, counted_since=0, now=taken.expires_at)
