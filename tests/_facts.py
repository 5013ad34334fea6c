"""Facts in BRL for the rule tests, written as briefly as the numbers they test."""

from __future__ import annotations

from decimal import Decimal

from rules import Facts


def brl(amount: str, available: str = "1000.00", **more: object) -> Facts:
    """Return the facts of a BRL payout of *amount* from *available* (other fields by name)."""
    return Facts(amount=Decimal(amount), currency="BRL", available=Decimal(available), **more)  # type: ignore[arg-type]
