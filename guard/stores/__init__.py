"""Reservation stores: where in-flight payouts hold funds until the provider shows them."""

from guard.stores._common import StoreUnavailable
from guard.stores._protocol import (
    CommittedTotals,
    FleetStore,
    Hold,
    HoldOutcome,
    HoldState,
    ReservationStore,
    Shared,
    balance_key,
    gcra,
)
from guard.stores.memory import InMemoryReservations
from guard.stores.postgres import PostgresReservations
from guard.stores.redis import RedisReservations
from guard.stores.sqlite import SqliteReservations

__all__ = [
    "CommittedTotals",
    "FleetStore",
    "Hold",
    "HoldOutcome",
    "HoldState",
    "InMemoryReservations",
    "PostgresReservations",
    "RedisReservations",
    "ReservationStore",
    "Shared",
    "SqliteReservations",
    "StoreUnavailable",
    "balance_key",
    "gcra",
]
