"""Quick start: guard payouts against a LuxCore balance (served by the built-in emulator).

Run it with ``python examples/quickstart.py``; it needs no credentials.
"""

from __future__ import annotations

import logging

import structlog

from guard import PayoutGuard
from guard.fetchers import LuxCoreFetcher
from guard.testing.emulators import LuxCoreEmulator
from rules import CurrencyMinimums, FrozenFunds, ReserveMargin


def main() -> None:
    # An application configures logging (the library never does): show warnings only.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    # A loopback LuxCore: 12,000.00 ARS available and 3,000.00 ARS frozen by pending withdrawals.
    with LuxCoreEmulator() as luxcore:
        luxcore.set_balance("ARS", available="12000.00", frozen="3000.00")
        guard = PayoutGuard(
            LuxCoreFetcher(luxcore.api_key, base_url=luxcore.url),
            rules=[
                ReserveMargin(percent="5", minimum={"ARS": "1000.00"}),
                FrozenFunds(max_ratio="0.5"),
                CurrencyMinimums(min_payout={"ARS": "100"}, min_remaining={"ARS": "500"}),
            ],
        )
        for amount in ("2500.00", "11500.00", "50"):
            decision = guard.check(amount, "ARS")
            print(decision.explain())
            print()
        print(f"largest ARS payout allowed now: {guard.max_payable('ARS')}")


if __name__ == "__main__":
    main()
