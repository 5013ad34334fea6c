"""Tests for rules._money: currency exponents, exact quantization, refusing floats."""

from __future__ import annotations

from decimal import Decimal, localcontext

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rules.money import (
    MONEY_CONTEXT,
    currency_exponent,
    is_currency,
    money_context,
    normalize_currency,
    quantize_down,
    quantize_exact,
    quantize_up,
    smallest_unit,
    to_decimal,
)
from tests.strategies import amounts, currencies


class TestCurrencies:
    @pytest.mark.parametrize(
        ("code", "exponent"),
        [("BRL", 2), ("ARS", 2), ("CLP", 0), ("JPY", 0), ("KWD", 3), ("BHD", 3)],
    )
    def test_exponent_comes_from_iso_4217(self, code: str, exponent: int) -> None:
        """Each currency's exponent is its ISO 4217 minor unit."""
        assert exponent == currency_exponent(code)

    def test_exponent_accepts_lower_case(self) -> None:
        """A lower-case code has the same exponent as the upper-case one."""
        assert 3 == currency_exponent("kwd")

    def test_normalize_upper_cases(self) -> None:
        """Codes are normalized to upper case."""
        assert "BRL" == normalize_currency("brl")

    @pytest.mark.parametrize("code", ["XXX", "BRLX", "XAU", "", "12A"])
    def test_normalize_refuses_non_currencies(self, code: str) -> None:
        """Unknown codes and units without a minor unit (gold) are refused with examples."""
        with pytest.raises(ValueError, match="expected an active ISO 4217 code"):
            normalize_currency(code)

    def test_normalize_refuses_non_strings(self) -> None:
        """A currency must be a string."""
        with pytest.raises(ValueError, match="not int"):
            normalize_currency(986)

    def test_is_currency(self) -> None:
        """is_currency says yes to payout currencies and no to the rest."""
        assert (True, False, False) == (is_currency("CLP"), is_currency("XAU"), is_currency("x"))

    @pytest.mark.parametrize(
        ("code", "unit"), [("BRL", "0.01"), ("CLP", "1"), ("KWD", "0.001")]
    )
    def test_smallest_unit(self, code: str, unit: str) -> None:
        """The smallest unit is 10 ** -exponent."""
        assert Decimal(unit) == smallest_unit(code)


class TestQuantize:
    def test_exact_pads_to_the_exponent(self) -> None:
        """Trailing zeros are added or dropped without changing the amount."""
        assert ("10.00", "1500", "1.500") == (
            str(quantize_exact(Decimal("10"), "BRL")),
            str(quantize_exact(Decimal("1500.000"), "CLP")),
            str(quantize_exact(Decimal("1.5"), "KWD")),
        )

    @pytest.mark.parametrize(
        ("value", "code"), [("10.001", "BRL"), ("1.5", "CLP"), ("0.0001", "KWD")]
    )
    def test_exact_refuses_to_round(self, value: str, code: str) -> None:
        """More decimals than the currency has is an error, never a silent rounding."""
        with pytest.raises(ValueError, match="never rounds money silently"):
            quantize_exact(Decimal(value), code)

    def test_exact_refuses_non_finite(self) -> None:
        """NaN and infinities are not amounts."""
        with pytest.raises(ValueError, match="not a finite number"):
            quantize_exact(Decimal("Infinity"), "BRL")

    def test_down_and_up_round_toward_the_bound(self) -> None:
        """Caps round toward minus infinity, reserves toward plus infinity."""
        assert (Decimal("10.01"), Decimal("10.02"), Decimal("-10.02")) == (
            quantize_down(Decimal("10.019"), "BRL"),
            quantize_up(Decimal("10.011"), "BRL"),
            quantize_down(Decimal("-10.011"), "BRL"),
        )

    @given(st.data())
    def test_amounts_round_trip_at_their_exponent(self, data: st.DataObject) -> None:
        """Every amount at its currency's exponent survives quantize_exact and str unchanged."""
        code = data.draw(currencies())
        amount = data.draw(amounts(code))
        exact = quantize_exact(amount, code)
        assert (amount, str(amount)) == (exact, str(Decimal(str(exact))))
        assert -currency_exponent(code) == exact.as_tuple().exponent

    def test_quantize_ignores_the_callers_context(self) -> None:
        """A low precision set by the application does not make amounts round."""
        with localcontext() as ctx:
            ctx.prec = 3
            assert Decimal("123456.78") == quantize_down(Decimal("123456.789"), "BRL")


class TestToDecimal:
    @pytest.mark.parametrize(
        ("value", "expected"),
        [(Decimal("1.50"), "1.50"), ("2.5", "2.5"), (7, "7"), ("1000", "1000")],
    )
    def test_accepts_decimal_str_and_int(self, value: object, expected: str) -> None:
        """Decimal, str and int become a Decimal with the same digits."""
        assert Decimal(expected) == to_decimal(value)

    def test_refuses_float_and_says_to_quote_it(self) -> None:
        """A float is refused; the message shows the quoted form to use instead."""
        with pytest.raises(TypeError, match=r"0\.1 is a float.*quote it \('0\.1'\)"):
            to_decimal(0.1)

    @pytest.mark.parametrize("value", [True, None, [1]])
    def test_refuses_other_types(self, value: object) -> None:
        """bool, None and containers are not amounts."""
        with pytest.raises(TypeError, match="expected an amount"):
            to_decimal(value)

    @pytest.mark.parametrize("value", ["abc", "NaN", "-Infinity", ""])
    def test_refuses_non_numbers(self, value: str) -> None:
        """Text that is not a finite decimal number is refused."""
        with pytest.raises(ValueError, match=r"not (a (decimal|finite) number|an amount)"):
            to_decimal(value)


class TestMoneyContext:
    def test_computes_with_34_digits_whatever_the_caller_set(self) -> None:
        """Inside money_context, subtraction is exact even if the caller lowered precision."""
        with localcontext() as ctx:
            ctx.prec = 4
            with money_context():
                result = Decimal("1234567.89") - Decimal("0.01")
            assert (Decimal("1234567.88"), 4) == (result, ctx.prec)
        assert 34 == MONEY_CONTEXT.prec
