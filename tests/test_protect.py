"""protect(): the guard as a decorator on the function that sends payouts."""

from __future__ import annotations

import asyncio
import inspect
from decimal import Decimal
from typing import Any

import pytest

from guard import ConfigurationError, InvalidPayoutRequest, PayoutDenied, PayoutGuard
from guard.testing import StaticFetcher, capture_decisions
from tests._guard_strategies import FakeClock


def make_guard(balance: str = "100.00", **options: object) -> PayoutGuard:
    clock = FakeClock()
    return PayoutGuard(StaticFetcher({"BRL": balance}, clock=clock), clock=clock, **options)  # type: ignore[arg-type]  # the guard's keyword options


def state_of(guard: PayoutGuard, payout_id: str) -> str | None:
    hold = guard.reservations.get(payout_id)
    return None if hold is None else hold.state


class TestDecoration:
    def test_an_unknown_parameter_name_fails_at_decoration(self) -> None:
        """The mistake shows when the module is imported, naming the function's parameters."""
        guard = make_guard()

        def pay(value: str, currency: str) -> str:
            return value + currency

        with pytest.raises(ConfigurationError) as info:
            guard.protect(amount="amount")(pay)
        assert "protect(amount=...)" == info.value.path
        assert "has no parameter 'amount'; its parameters are ['value', 'currency']" in (
            info.value.message
        )

    def test_an_option_that_is_neither_name_nor_callable_fails(self) -> None:
        """Only parameter names or callables are accepted."""
        guard = make_guard()
        with pytest.raises(ConfigurationError, match="parameter name or a callable"):
            guard.protect(amount=42)(print)  # type: ignore[arg-type]  # a bad option on purpose

    def test_names_may_come_through_keyword_arguments(self) -> None:
        """A function taking **kwargs is checked at call time; a missing value is refused."""
        guard = make_guard()
        calls: list[tuple[str, object]] = []

        @guard.protect(amount="value")
        def pay(currency: str, **kwargs: Any) -> None:
            calls.append((currency, kwargs["value"]))

        pay("BRL", value="5")
        with pytest.raises(InvalidPayoutRequest, match="called without 'value'"):
            pay("BRL")
        assert [("BRL", "5")] == calls

    def test_keeps_the_function_metadata(self) -> None:
        """The functools.wraps metadata stays: name, docstring and __wrapped__."""
        guard = make_guard()

        def send_payout(amount: str, currency: str) -> str:
            """Send one payout."""
            return amount + currency

        guarded = guard.protect()(send_payout)
        assert ("send_payout", "Send one payout.", send_payout) == (
            guarded.__name__, guarded.__doc__, guarded.__wrapped__  # type: ignore[attr-defined]  # set by functools.wraps
        )


class TestEnforce:
    def test_an_allowed_call_runs_and_returns(self) -> None:
        """Enough funds: the body runs with its arguments, its value is returned."""
        guard = make_guard()
        calls: list[tuple[str, str, str]] = []

        @guard.protect()
        def pay(amount: str, currency: str, beneficiary: str) -> str:
            calls.append((amount, currency, beneficiary))
            return "ok"

        assert "ok" == pay("10", "BRL", beneficiary="ana")
        assert [("10", "BRL", "ana")] == calls

    def test_a_denied_call_raises_before_the_body_runs(self) -> None:
        """PayoutDenied carries the decision; the body never ran."""
        guard = make_guard()
        calls: list[tuple[str, str]] = []

        @guard.protect()
        def pay(amount: str, currency: str) -> None:
            calls.append((amount, currency))

        with pytest.raises(PayoutDenied) as info:
            pay("150", "BRL")
        assert ([], ("insufficient_funds",)) == (calls, info.value.decision.codes)

    def test_callables_receive_the_bound_arguments(self) -> None:
        """Options may compute the request from every argument, defaults included."""
        guard = make_guard()
        seen: list[dict[str, Any]] = []

        def amount_of(arguments: dict[str, Any]) -> Decimal:
            seen.append(arguments)
            return Decimal(arguments["order"]["total"])

        @guard.protect(amount=amount_of, currency=lambda a: a["order"]["currency"])
        def pay(order: dict[str, str], note: str = "none") -> str:
            return order["total"] + note

        pay({"total": "60.00", "currency": "BRL"})
        assert [{"order": {"total": "60.00", "currency": "BRL"}, "note": "none"}] == seen
        with pytest.raises(PayoutDenied):
            pay({"total": "160.00", "currency": "BRL"})

    def test_a_malformed_request_raises_invalid_payout_request(self) -> None:
        """A float amount in the call is refused before the body runs."""
        guard = make_guard()
        calls: list[tuple[float, str]] = []

        @guard.protect()
        def pay(amount: float, currency: str) -> None:
            calls.append((amount, currency))

        with pytest.raises(InvalidPayoutRequest, match="float"):
            pay(10.5, "BRL")
        assert [] == calls

    def test_works_on_methods(self) -> None:
        """The instance is one of the bound arguments; the names still resolve."""
        guard = make_guard()

        class Payouts:
            def __init__(self) -> None:
                self.sent: list[tuple[str, str, str]] = []

            @guard.protect(fee="fee")
            def send(self, amount: str, currency: str, fee: str = "0") -> str:
                self.sent.append((amount, currency, fee))
                return amount

        payouts = Payouts()
        assert "99" == payouts.send("99", "BRL", fee="1")
        with pytest.raises(PayoutDenied):
            payouts.send("99", "BRL", fee="1.01")
        assert [("99", "BRL", "1")] == payouts.sent


class TestDryRun:
    def test_the_body_always_runs_and_the_denial_is_recorded(self) -> None:
        """Shadow mode never blocks; capture_decisions shows what enforce would have done."""
        guard = make_guard(mode="dry_run")
        calls: list[tuple[str, str, str | None]] = []

        @guard.protect(payout_id="ref")
        def pay(amount: str, currency: str, ref: str | None = None) -> None:
            calls.append((amount, currency, ref))

        with capture_decisions() as decisions:
            pay("150", "BRL", ref="po_1")
            pay("150", "BRL", ref="po_1")
        assert [("150", "BRL", "po_1"), ("150", "BRL", "po_1")] == calls
        assert [False, False] == [d.allowed for d in decisions]
        assert None is guard.reservations.get("po_1")


class TestWithPayoutId:
    def test_return_commits_the_hold(self) -> None:
        """The body returned: the payout is recorded as submitted."""
        guard = make_guard()
        during: list[str | None] = []

        @guard.protect(payout_id="reference")
        def pay(amount: str, currency: str, reference: str) -> str:
            during.append(state_of(guard, reference))
            return amount + currency

        pay("60", "BRL", reference="po_1")
        assert (["pending"], "committed") == (during, state_of(guard, "po_1"))

    def test_an_exception_outside_uncertain_on_releases_the_hold(self) -> None:
        """The body raised a plain error: the funds come back and the exception propagates."""
        guard = make_guard()

        @guard.protect(payout_id="reference")
        def pay(amount: str, currency: str, reference: str) -> None:
            raise KeyError(amount, currency, reference)

        with pytest.raises(KeyError):
            pay("60", "BRL", reference="po_1")
        assert (None, True) == (state_of(guard, "po_1"), guard.check("100", "BRL").allowed)

    def test_a_timeout_keeps_the_hold_as_uncertain(self) -> None:
        """The body timed out: the payout may have left, so its funds stay held."""
        guard = make_guard()

        @guard.protect(payout_id="reference")
        def pay(amount: str, currency: str, reference: str) -> None:
            raise TimeoutError(amount, currency, reference)

        with pytest.raises(TimeoutError):
            pay("60", "BRL", reference="po_1")
        assert ("uncertain", False) == (
            state_of(guard, "po_1"), guard.check("100", "BRL").allowed)

    def test_held_funds_deny_a_concurrent_second_payout(self) -> None:
        """While one payout is in flight its funds are held from the next call."""
        guard = make_guard()
        inner: list[tuple[str, ...]] = []

        @guard.protect(payout_id="reference")
        def pay(amount: str, currency: str, reference: str) -> None:
            if reference == "po_1":
                try:
                    pay(amount, currency, reference="po_2")
                except PayoutDenied as exc:
                    inner.append(exc.decision.codes)

        pay("60", "BRL", reference="po_1")
        assert [("insufficient_funds",)] == inner

    @pytest.mark.parametrize("reference", [None, ""])
    def test_a_missing_payout_id_is_refused_before_the_body(self, reference: str | None) -> None:
        """A configured payout id is required: None or "" never falls back to a plain check."""
        guard = make_guard()
        calls: list[str | None] = []

        @guard.protect(payout_id="reference")
        def pay(amount: str, currency: str, reference: str | None = None) -> str:
            calls.append(reference)
            return amount + currency

        with pytest.raises(InvalidPayoutRequest, match="called without a payout id"):
            pay("60", "BRL", reference=reference)
        assert ([], Decimal("0.00")) == (calls, guard.check("1", "BRL").reserved)


class TestAsync:
    def test_an_allowed_coroutine_runs_and_commits(self) -> None:
        """Async functions are awaited; the hold is committed on return."""
        guard = make_guard()

        @guard.protect(payout_id="reference")
        async def pay(amount: str, currency: str, reference: str) -> str:
            await asyncio.sleep(0)
            return f"{reference}: {amount} {currency}"

        assert "po_1: 60 BRL" == asyncio.run(pay("60", "BRL", reference="po_1"))
        assert "committed" == state_of(guard, "po_1")

    def test_a_denied_coroutine_never_runs(self) -> None:
        """PayoutDenied is raised from the await; the body did not start."""
        guard = make_guard()
        calls: list[tuple[str, str]] = []

        @guard.protect()
        async def pay(amount: str, currency: str) -> None:
            calls.append((amount, currency))

        with pytest.raises(PayoutDenied):
            asyncio.run(pay("160", "BRL"))
        assert [] == calls

    def test_a_failing_coroutine_releases(self) -> None:
        """A plain exception inside the coroutine releases the hold and propagates."""
        guard = make_guard()

        @guard.protect(payout_id="reference")
        async def pay(amount: str, currency: str, reference: str) -> None:
            raise ValueError(amount, currency, reference)

        with pytest.raises(ValueError, match="po_1"):
            asyncio.run(pay("60", "BRL", reference="po_1"))
        assert None is state_of(guard, "po_1")

    def test_a_connection_reset_in_a_coroutine_is_uncertain(self) -> None:
        """An OSError inside the coroutine keeps the hold, marked uncertain."""
        guard = make_guard()

        @guard.protect(payout_id="reference")
        async def pay(amount: str, currency: str, reference: str) -> None:
            raise ConnectionResetError(amount, currency, reference)

        with pytest.raises(ConnectionResetError):
            asyncio.run(pay("60", "BRL", reference="po_1"))
        assert "uncertain" == state_of(guard, "po_1")

    def test_keeps_metadata_and_stays_a_coroutine_function(self) -> None:
        """The wrapper is still an async def, with the original's name and docstring."""
        guard = make_guard()

        async def send(amount: str, currency: str) -> str:
            """Send asynchronously."""
            return amount + currency

        guarded = guard.protect()(send)
        assert (True, "send", "Send asynchronously.") == (
            inspect.iscoroutinefunction(guarded), guarded.__name__, guarded.__doc__
        )
