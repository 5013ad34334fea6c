"""How to test your own payout code with payout-guard, in dry-run (shadow) mode.

The pytest plugin shipped with payout-guard provides the fixtures used here; override
``payout_guard_balances`` and ``payout_guard_rules`` to describe the situation under test.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal

import pytest

from guard import Decision, PayoutGuard
from rules import CurrencyMinimums, ReserveMargin, Rule


@pytest.fixture
def payout_guard_balances() -> Mapping[str, str]:
    return {"BRL": "1000.00"}


@pytest.fixture
def payout_guard_rules() -> Sequence[Rule]:
    return [ReserveMargin(percent="10"), CurrencyMinimums(min_payout={"BRL": "5.00"})]


def run_payouts(guard: PayoutGuard, batch: list[tuple[str, str]]) -> list[str]:
    """Stand-in for your payout job: sends every payout the guard does not block."""
    sent = []

    @guard.protect(amount="amount", currency="currency")
    def send(amount: str, currency: str) -> None:
        sent.append(f"{amount} {currency}")

    for amount, currency in batch:
        send(amount, currency)
    return sent


class TestPayoutJobInShadowMode:
    """The payout job, run under a shadow-mode guard."""

    def test_the_job_still_sends_everything_in_dry_run(
        self, payout_guard_dry_run: PayoutGuard
    ) -> None:
        """A dry-run guard never blocks: the job behaves exactly as without the guard."""
        batch = [("100.00", "BRL"), ("950.00", "BRL"), ("1.00", "BRL")]

        sent = run_payouts(payout_guard_dry_run, batch)

        assert ["100.00 BRL", "950.00 BRL", "1.00 BRL"] == sent

    def test_the_decisions_show_what_enforcing_would_have_blocked(
        self, payout_guard_dry_run: PayoutGuard, payout_guard_decisions: list[Decision]
    ) -> None:
        """Each would-be denial is recorded with its reason code and numbers."""
        run_payouts(payout_guard_dry_run, [("100.00", "BRL"), ("950.00", "BRL"), ("1.00", "BRL")])

        verdicts = [(d.amount, d.allowed, d.codes) for d in payout_guard_decisions]
        assert [
            (Decimal("100.00"), True, ()),
            (Decimal("950.00"), False, ("reserve_margin",)),
            (Decimal("1.00"), False, ("below_minimum_payout",)),
        ] == verdicts
        assert Decimal("900.00") == payout_guard_decisions[1].max_payable
