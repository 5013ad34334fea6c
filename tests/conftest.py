"""Shared test configuration: the hypothesis settings profiles and the store fixtures.

``dev`` (the default) and ``ci`` both run without a per-example deadline, because tests must not
depend on wall-clock speed. ``ci`` is chosen when the ``CI`` environment variable is set, and is
then derandomized so that a failure reproduces; ``HYPOTHESIS_PROFILE`` overrides the choice.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from guard.stores import (
    InMemoryReservations,
    PostgresReservations,
    RedisReservations,
    ReservationStore,
    SqliteReservations,
)
from tests._postgres_server import PostgresServer, shared_postgres
from tests._redis_server import shared_redis

settings.register_profile(
    "ci", deadline=None, max_examples=100, derandomize=bool(os.environ.get("CI"))
)
settings.register_profile("dev", deadline=None)
settings.load_profile(
    os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev")
)

STORES = ["memory", "sqlite", "redis", "postgres"]


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """Yield the URL of the session's redis-server."""
    with shared_redis() as server:
        yield server.url


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """Yield the session's PostgreSQL server."""
    with shared_postgres() as server:
        yield server


@pytest.fixture(params=STORES)
def make_store(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[Callable[..., ReservationStore]]:
    """Yield a factory of fresh stores of one kind; every store made is closed afterwards."""
    made: list[ReservationStore] = []
    url = request.getfixturevalue("redis_url") if request.param == "redis" else ""
    postgres: PostgresServer | None = (
        request.getfixturevalue("postgres_server") if request.param == "postgres" else None
    )
    namespace = f"test-{uuid.uuid4().hex}"

    def make(*, retention: float = 86_400.0) -> ReservationStore:
        store: ReservationStore
        if request.param == "memory":
            store = InMemoryReservations(retention=retention)
        elif request.param == "sqlite":
            store = SqliteReservations(tmp_path / f"holds-{len(made)}.db", retention=retention)
        elif postgres is not None:
            # A schema of its own per store: tests never see each other's holds.
            store = PostgresReservations(postgres.dsn(), schema=postgres.fresh_schema(),
                                         retention=retention, create_schema=True,
                                         clock="caller")
        else:
            store = RedisReservations(url, namespace=f"{namespace}-{len(made)}",
                                      retention=retention, clock="caller")
        made.append(store)
        return store

    yield make
    for store in made:
        store.close()


@pytest.fixture
def store(make_store: Callable[..., ReservationStore]) -> ReservationStore:
    """Return a fresh store with the default retention."""
    return make_store()
