"""What only the Redis store promises: namespaces, exact Lua arithmetic, lost holds noticed.

Clear failures too, and a refusal of servers that may evict keys. The rules every store keeps
are in ``tests/test_store_contract.py``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

import pytest
import redis
from structlog.testing import capture_logs

from guard import PayoutDenied, PayoutGuard
from guard.errors import ConfigurationError, InvalidPayoutRequest
from guard.stores import Hold, RedisReservations, StoreUnavailable
from guard.testing import StaticFetcher
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
        """Marked uncertain for ten days, the record lives longer, its key's structures longer
        still (renewed together, at most twice ahead), the ledger never shorter than the rest."""
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

    @pytest.mark.parametrize(
        "durable", [("--appendonly", "yes"), ("--save", "3600 1")], ids=["aof", "rdb"]
    )
    def test_a_durable_server_is_not_warned_about(
        self, tmp_path: Path, durable: tuple[str, str]
    ) -> None:
        """With an AOF or RDB snapshots configured, nothing is logged."""
        server = start_redis(redis_binary(), extra=("--dir", str(tmp_path), *durable))
        try:
            with capture_logs() as logs, RedisReservations(server.url):
                pass
        finally:
            server.stop()
        assert [] == [e for e in logs if e["event"] == "payout_guard.store_not_durable"]


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
