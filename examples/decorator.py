"""Guard the function that submits payouts: denied payouts never reach the provider.

With a ``payout_id``, the funds are held while the function runs, so concurrent workers cannot
spend them twice; the hold is committed when the function returns and released if it raises.
"""

from __future__ import annotations

import logging
from decimal import Decimal

import structlog

from guard import PayoutDenied, PayoutGuard
from guard.testing import StaticFetcher
from rules import MaxPayout, ReserveMargin

guard = PayoutGuard(
    StaticFetcher({"BRL": "5000.00"}, name="luxtak"),
    rules=[ReserveMargin(minimum={"BRL": "500.00"}), MaxPayout({"BRL": "3000.00"})],
)

sent: list[str] = []


@guard.protect(amount="amount", currency="currency", payout_id="reference")
def send_payout(amount: Decimal, currency: str, beneficiary: str, reference: str) -> str:
    """Submit one payout to the provider (here: record it)."""
    sent.append(reference)
    return f"{reference}: {amount} {currency} to {beneficiary}"


def main() -> None:
    # An application configures logging (the library never does): show warnings only.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    print(send_payout(Decimal("2000.00"), "BRL", "Ana", reference="po_1"))
    print(send_payout(Decimal("2000.00"), "BRL", "Bruno", reference="po_2"))
    try:
        send_payout(Decimal("2000.00"), "BRL", "Carla", reference="po_3")
    except PayoutDenied as denied:
        print(f"po_3 not sent: {', '.join(denied.decision.codes)}")
        print(denied.decision.explain())
    print(f"sent: {sent}")


if __name__ == "__main__":
    main()
