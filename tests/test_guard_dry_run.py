"""Dry-run (shadow) mode: every decision judged and recorded, nothing blocked or held."""

from __future__ import annotations

import asyncio

from structlog.testing import capture_logs

from guard import AsyncPayoutGuard, Decision, PayoutGuard
from guard.stores import InMemoryReservations
from guard.testing import FailingFetcher, StaticFetcher, capture_decisions
from rules import MaxPayout
from tests._guard_strategies import FakeClock


def dry_guard(balance: str = "100.00") -> PayoutGuard:
    clock = FakeClock()
    return PayoutGuard(StaticFetcher({"BRL": balance}, clock=clock),
                       [MaxPayout({"BRL": "80"})], mode="dry_run", clock=clock)


class TestDryRunCheck:
    def test_a_would_be_denial_is_recorded_as_a_denial(self) -> None:
        """The decision says what enforce mode would do: denied, with reasons, mode dry_run."""
        with capture_decisions() as decisions:
            decision = dry_guard().check("120", "BRL")
        assert (False, "dry_run", ("insufficient_funds", "above_maximum_payout")) == (
            decision.allowed, decision.mode, decision.codes
        )
        assert [decision] == decisions

    def test_a_would_be_denial_is_logged_as_a_warning_too(self) -> None:
        """Besides the decision event, payout_guard.would_deny carries the same fields."""
        with capture_logs() as logs:
            decision = dry_guard().check("90", "BRL")
        assert ["payout_guard.decision", "payout_guard.would_deny"] == [
            entry["event"] for entry in logs
        ]
        assert {**decision.log_fields(), "event": "payout_guard.would_deny",
                "log_level": "warning", "rules_fingerprint": logs[0]["rules_fingerprint"],
                "version": logs[0]["version"]} == logs[1]

    def test_an_allowed_payout_logs_no_warning(self) -> None:
        """Only would-be denials warn."""
        with capture_logs() as logs:
            assert dry_guard().check("10", "BRL").allowed
        assert ["payout_guard.decision"] == [entry["event"] for entry in logs]

    def test_an_outage_is_a_would_be_denial(self) -> None:
        """Fail closed applies in dry-run too: the record shows balance_unavailable."""
        decision = PayoutGuard(FailingFetcher(), mode="dry_run").check("1", "BRL")
        assert (False, ("balance_unavailable",), "dry_run") == (
            decision.allowed, decision.codes, decision.mode
        )


class TestDryRunReserve:
    def test_a_would_be_denial_does_not_raise_and_holds_nothing(self) -> None:
        """A reservation comes back with the denial and no hold."""
        guard = dry_guard()
        reservation = guard.reserve("120", "BRL", payout_id="po_1")
        assert (False, None, "none") == (
            reservation.decision.allowed, reservation.hold, reservation.state
        )
        assert None is guard.reservations.get("po_1")

    def test_an_allowed_payout_holds_nothing_either(self) -> None:
        """Shadow mode never takes funds: the next check sees the whole balance."""
        guard = dry_guard()
        with guard.reserve("60", "BRL", payout_id="po_1") as reservation:
            pass
        assert (True, "none", None) == (
            reservation.decision.allowed, reservation.state, guard.reservations.get("po_1")
        )
        assert "100.00" == str(guard.check("1", "BRL").spendable)

    def test_each_reserve_is_recorded_once(self) -> None:
        """capture_decisions sees one decision per reserve, allowed or not."""
        guard = dry_guard()
        with capture_decisions() as decisions:
            guard.reserve("60", "BRL", payout_id="po_1")
            guard.reserve("120", "BRL", payout_id="po_2")
        assert [("po_1", True), ("po_2", False)] == [
            (d.payout_id, d.allowed) for d in decisions
        ]


def committed_elsewhere(store: InMemoryReservations, payout_id: str, clock: FakeClock) -> None:
    """Record *payout_id* as sent by an enforcing guard sharing *store*."""
    enforcing = PayoutGuard(StaticFetcher({"BRL": "100.00"}, clock=clock), reservations=store,
                            clock=clock)
    enforcing.reserve("10", "BRL", payout_id=payout_id).commit()


class TestDryRunNeverBlocks:
    def test_raise_for_denial_returns_a_would_be_denial(self) -> None:
        """The explicit-check pattern: raise_for_denial() does nothing in shadow mode."""
        decision = dry_guard().check("120", "BRL")
        assert (decision, False, False) == (
            decision.raise_for_denial(), decision.allowed, decision.blocks
        )

    def test_an_outage_does_not_block(self) -> None:
        """A balance_unavailable would-be denial neither raises nor blocks."""
        decision = PayoutGuard(FailingFetcher(), mode="dry_run").check("1", "BRL")
        assert (False, decision) == (decision.blocks, decision.raise_for_denial())

    def test_a_taken_payout_id_does_not_block(self) -> None:
        """Both reserve and check of an id already sent report duplicate_payout without raising."""
        clock = FakeClock()
        store = InMemoryReservations()
        committed_elsewhere(store, "po_1", clock)
        shadow = PayoutGuard(StaticFetcher({"BRL": "100.00"}, clock=clock), reservations=store,
                             mode="dry_run", clock=clock)
        reserved = shadow.reserve("10", "BRL", payout_id="po_1").decision
        checked = shadow.check("10", "BRL", payout_id="po_1")
        assert [(("duplicate_payout",), False)] * 2 == [
            (d.codes, d.blocks) for d in (reserved, checked)
        ]
        assert (reserved, checked) == (reserved.raise_for_denial(), checked.raise_for_denial())

    def test_the_async_guard_never_blocks_either(self) -> None:
        """AsyncPayoutGuard in shadow mode: check, reserve and protect all let the payout go."""
        sent: list[str] = []

        async def main() -> list[Decision]:
            clock = FakeClock()
            async with AsyncPayoutGuard(StaticFetcher({"BRL": "100.00"}, clock=clock),
                                        mode="dry_run", clock=clock) as shadow:

                @shadow.protect(payout_id="ref")
                async def pay(amount: str, currency: str, ref: str) -> None:
                    sent.append(f"{ref} {amount} {currency}")

                checked = await shadow.check("120", "BRL")
                reservation = await shadow.reserve("120", "BRL", payout_id="po_1")
                await pay("120", "BRL", ref="po_2")
                return [checked.raise_for_denial(), reservation.decision.raise_for_denial()]

        decisions = asyncio.run(main())
        assert [(False, False)] * 2 == [(d.allowed, d.blocks) for d in decisions]
        assert ["po_2 120 BRL"] == sent

    def test_an_enforced_denial_blocks(self) -> None:
        """The same payout in enforce mode is a denial that blocks."""
        clock = FakeClock()
        guard = PayoutGuard(StaticFetcher({"BRL": "100.00"}, clock=clock), clock=clock)
        decision = guard.check("120", "BRL")
        assert (False, True) == (decision.allowed, decision.blocks)
