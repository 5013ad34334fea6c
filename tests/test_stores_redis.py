"""What only the Redis store promises: namespaces, exact Lua arithmetic, clear failures."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from decimal import Decimal

import pytest
import redis

from guard.errors import ConfigurationError, InvalidPayoutRequest
from guard.stores import RedisReservations, StoreUnavailable
from tests._holds import KEY, T0, hold
from tests._redis_server import free_port, shared_redis


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """Yield the URL of the session's redis-server."""
    with shared_redis() as server:
        yield server.url


@pytest.fixture
def store(redis_url: str) -> Iterator[RedisReservations]:
    """Yield a store in a fresh namespace."""
    with RedisReservations(redis_url, namespace=f"test-{uuid.uuid4().hex}") as made:
        yield made


class TestNamespaces:
    def test_namespaces_are_isolated(self, redis_url: str) -> None:
        """The same payout id and key in two namespaces are two separate holds."""
        with RedisReservations(redis_url, namespace=f"a-{uuid.uuid4().hex}") as one, \
                RedisReservations(redis_url, namespace=f"b-{uuid.uuid4().hex}") as two:
            one.try_hold(hold("po_1", "100.00"), ceiling=Decimal(100), counted_since=0, now=T0)
            outcome = two.try_hold(hold("po_1", "70.00"), ceiling=Decimal(100), counted_since=0,
                                   now=T0)
            assert ("held", Decimal(0)) == (outcome.status, outcome.counted)
            assert Decimal("100.00") == one.reserved(KEY, counted_since=0, now=T0)
            assert Decimal("70.00") == two.reserved(KEY, counted_since=0, now=T0)

    def test_every_key_is_under_the_namespace(self, redis_url: str) -> None:
        """All keys share the ``{namespace}:`` prefix (one cluster slot, easy to find)."""
        namespace = f"n-{uuid.uuid4().hex}"
        client = redis.Redis.from_url(redis_url, decode_responses=True)
        with RedisReservations(client, namespace=namespace) as store:
            store.try_hold(hold("po_1", "1.00"), ceiling=Decimal(100), counted_since=0, now=T0)
            store.commit("po_1", now=T0)
            keys = [str(k) for k in client.keys(f"*{namespace}*")]
        client.close()
        assert keys
        assert all(k.startswith(f"{{{namespace}}}:") for k in keys)

    def test_keys_get_a_generous_ttl(self, store: RedisReservations, redis_url: str) -> None:
        """Redis only collects garbage: a TTL past the retention, never shorter."""
        store.try_hold(hold("po_1", "1.00"), ceiling=Decimal(100), counted_since=0, now=T0)
        client = redis.Redis.from_url(redis_url)
        ttl = client.ttl(store._record("po_1"))
        client.close()
        assert 86_400 + 300 < ttl <= 86_400 + 300 + 3600


class TestClients:
    def test_decoding_client_works(self, redis_url: str) -> None:
        """A client with decode_responses=True is used as given, and not closed by the store."""
        client = redis.Redis.from_url(redis_url, decode_responses=True)
        with RedisReservations(client, namespace=f"d-{uuid.uuid4().hex}") as store:
            store.try_hold(hold("po_1", "1.25"), ceiling=Decimal(100), counted_since=0, now=T0)
            assert hold("po_1", "1.25") == store.get("po_1")
            assert Decimal("1.25") == store.reserved(KEY, counted_since=0, now=T0)
        assert client.ping()
        client.close()

    def test_unreachable_is_store_unavailable(self) -> None:
        """No Redis listening: a StoreUnavailable, not a redis exception."""
        url = f"redis://127.0.0.1:{free_port()}/0"
        with RedisReservations(url, timeout=1.0) as store, pytest.raises(
            StoreUnavailable, match="redis reservation store"
        ):
            store.try_hold(hold("po_1", "1.00"), ceiling=Decimal(10), counted_since=0, now=T0)

    def test_bad_url_is_a_configuration_error_without_the_url(self) -> None:
        """A URL that is not Redis is refused without repeating it (it may hold a password)."""
        with pytest.raises(ConfigurationError) as caught:
            RedisReservations("http://user:s3cret@example.invalid/")
        assert "s3cret" not in str(caught.value)

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


class TestLuaArithmetic:
    def test_hold_of_2_pow_53_minor_units_is_refused(self, store: RedisReservations) -> None:
        """A single hold Lua cannot represent exactly is an InvalidPayoutRequest."""
        with pytest.raises(InvalidPayoutRequest, match="too large for the redis"):
            store.try_hold(hold("po_1", str(2**53), currency="CLP"), ceiling=Decimal(10**20),
                           counted_since=0, now=T0)

    def test_largest_exact_hold_is_kept_exactly(self, store: RedisReservations) -> None:
        """2**53 - 1 minor units round-trip exactly."""
        big = hold("po_1", str(2**53 - 1), currency="CLP")
        store.try_hold(big, ceiling=Decimal(10**20), counted_since=0, now=T0)
        assert Decimal(2**53 - 1) == store.reserved(big.key, counted_since=0, now=T0)

    def test_total_reaching_2_pow_53_is_refused_not_rounded(
        self, store: RedisReservations
    ) -> None:
        """With a ceiling past 2**53, a total Lua cannot count exactly raises."""
        first = hold("po_1", str(5 * 10**15), currency="CLP")
        store.try_hold(first, ceiling=Decimal(10**20), counted_since=0, now=T0)
        with pytest.raises(InvalidPayoutRequest, match="2\\*\\*53"):
            store.try_hold(hold("po_2", str(5 * 10**15), currency="CLP"),
                           ceiling=Decimal(10**20), counted_since=0, now=T0)

    def test_total_over_a_smaller_ceiling_is_just_over(self, store: RedisReservations) -> None:
        """Below-2**53 ceilings give a plain over_ceiling, whatever the total would be."""
        first = hold("po_1", str(5 * 10**15), currency="CLP")
        store.try_hold(first, ceiling=Decimal(6 * 10**15), counted_since=0, now=T0)
        outcome = store.try_hold(hold("po_2", str(5 * 10**15), currency="CLP"),
                                 ceiling=Decimal(6 * 10**15), counted_since=0, now=T0)
        assert "over_ceiling" == outcome.status

    def test_running_totals_past_2_pow_53_stay_exact(self, store: RedisReservations) -> None:
        """Running totals outgrow doubles over time; window sums stay exact."""
        amounts = [4 * 10**15 + 1, 4 * 10**15 + 3, 4 * 10**15 + 7, 123]
        for n, amount in enumerate(amounts):
            taken = hold(f"po_{n}", str(amount), currency="CLP", at=T0 + n)
            outcome = store.try_hold(taken, ceiling=Decimal(2**53 - 1),
                                     counted_since=T0 + n - 0.5, now=T0 + n)
            assert "held" == outcome.status
            store.commit(f"po_{n}", now=T0 + n)
        key = hold("x", "1", currency="CLP").key
        assert Decimal(4 * 10**15 + 7 + 123) == store.reserved(key, counted_since=T0 + 1.5,
                                                               now=T0 + 4)
        assert Decimal(123) == store.reserved(key, counted_since=T0 + 2.5, now=T0 + 4)

    def test_times_round_trip_exactly(self, store: RedisReservations) -> None:
        """Guard clock values come back as the very same floats."""
        at = 1_712_345_678.123456789
        taken = hold("po_1", "1.00", at=at, ttl=0.1)
        store.try_hold(taken, ceiling=Decimal(10), counted_since=0, now=at)
        assert taken == store.get("po_1")
        assert Decimal("1.00") == store.reserved(KEY, counted_since=0, now=taken.expires_at - 1e-6)
        assert Decimal(0) == store.reserved(KEY, counted_since=0, now=taken.expires_at)

    def test_commit_time_never_goes_backwards(self, store: RedisReservations) -> None:
        """A commit stamped before the key's last one is recorded at that last time."""
        for n in (1, 2):
            store.try_hold(hold(f"po_{n}", "1.00"), ceiling=Decimal(10), counted_since=0, now=T0)
        store.commit("po_1", now=T0 + 10)
        late = store.commit("po_2", now=T0 + 5)
        assert late is not None
        assert T0 + 10 == late.committed_at
        assert Decimal("2.00") == store.reserved(KEY, counted_since=T0 + 9, now=T0 + 11)

    def test_mixed_currencies_on_one_key_are_refused(self, store: RedisReservations) -> None:
        """A key sums one currency; a hold in another currency on it is an error."""
        store.try_hold(hold("po_1", "1.00", key="k"), ceiling=Decimal(10), counted_since=0,
                       now=T0)
        with pytest.raises(InvalidPayoutRequest, match="holds BRL"):
            store.try_hold(hold("po_2", "1.00", key="k", currency="USD"), ceiling=Decimal(10),
                           counted_since=0, now=T0)

    def test_lost_ledger_fails_closed(self, store: RedisReservations, redis_url: str) -> None:
        """If someone deletes a key's ledger, the store refuses rather than undercount."""
        store.try_hold(hold("po_1", "1.00"), ceiling=Decimal(10), counted_since=0, now=T0)
        store.commit("po_1", now=T0)
        client = redis.Redis.from_url(redis_url)
        client.delete(f"{store._prefix}t:{KEY}")
        client.close()
        with pytest.raises(StoreUnavailable, match="ledger"):
            store.try_hold(hold("po_2", "1.00"), ceiling=Decimal(10), counted_since=0, now=T0)
        with pytest.raises(StoreUnavailable, match="ledger"):
            store.reserved(KEY, counted_since=0, now=T0)
