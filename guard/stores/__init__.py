"""Reservation stores: where in-flight payouts hold funds until the provider shows them."""

from guard.stores._protocol import Hold, HoldOutcome, HoldState, ReservationStore, balance_key
from guard.stores.memory import InMemoryReservations

__all__ = [
    "Hold",
    "HoldOutcome",
    "HoldState",
    "InMemoryReservations",
    "ReservationStore",
    "balance_key",
]
