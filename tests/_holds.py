"""Shared helpers of the reservation store tests: a fixed epoch and a hold builder."""

from __future__ import annotations

from decimal import Decimal

from guard.stores import Hold, balance_key

__all__ = ["KEY", "T0", "hold", "owner_of"]

T0 = 1_700_000_000.0
KEY = balance_key("luxcore", None, "BRL")


def owner_of(payout_id: str) -> str:
    """Return the owner token ``hold()`` gives the hold of *payout_id*."""
    return f"owner-of-{payout_id}"


def hold(
    payout_id: str,
    amount: str,
    *,
    currency: str = "BRL",
    fee: str = "0",
    key: str | None = None,
    at: float = T0,
    ttl: float = 300.0,
) -> Hold:
    """Return a pending hold taken at *at*, expiring *ttl* s later, owned by owner_of()."""
    return Hold(
        payout_id=payout_id,
        key=key or balance_key("luxcore", None, currency),
        currency=currency,
        amount=Decimal(amount),
        fee=Decimal(fee),
        state="pending",
        created_at=at,
        expires_at=at + ttl,
        owner=owner_of(payout_id),
    )
