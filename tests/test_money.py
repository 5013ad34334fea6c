"""Amount and currency parsing at the edge of the guard (guard._money)."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from guard import InvalidPayoutRequest
from guard._money import (
    currency_exponent,
    minor_to_major,
    parse_amount,
    parse_currency,
    smallest_unit,
)
from guard._request import Request, parse_request, parsed_in_full
from tests.strategies import CURRENCIES


class TestParseAmount:
    @pytest.mark.parametrize(
        ("value", "currency", "expected"),
        [
            (Decimal("10.50"), "BRL", "10.50"),
            (Decimal("10.5"), "BRL", "10.50"),
            ("10", "BRL", "10.00"),
            (10, "BRL", "10.00"),
            ("1.234", "KWD", "1.234"),
            ("1", "KWD", "1.000"),
            ("1500", "CLP", "1500"),
            (1500, "JPY", "1500"),
            ("0.01", "BRL", "0.01"),
            ("0.001", "KWD", "0.001"),
        ],
    )
    def test_accepts_decimal_str_and_int_at_the_currency_exponent(
        self, value: object, currency: str, expected: str
    ) -> None:
        """Decimal, str and int become a Decimal written at the currency's exponent."""
        actual = parse_amount(value, currency)
        assert Decimal(expected) == actual
        assert expected == str(actual)

    def test_trailing_zeros_beyond_the_exponent_are_not_rounding(self) -> None:
        """'10.000' BRL loses nothing, so it is accepted as 10.00 (providers send such zeros)."""
        assert "10.00" == str(parse_amount("10.000", "BRL"))

    @pytest.mark.parametrize("value", [1.5, 10.0, 0.1, float("nan"), float("inf")])
    def test_refuses_float_saying_to_pass_a_decimal_or_a_string(self, value: float) -> None:
        """A float is refused; the message says to quote it or pass a Decimal."""
        with pytest.raises(InvalidPayoutRequest) as info:
            parse_amount(value, "BRL")
        message = str(info.value)
        assert "float" in message
        assert "Decimal" in message
        assert f"quote it ({repr(value)!r})" in message

    @pytest.mark.parametrize(
        ("value", "currency", "needle"),
        [
            ("NaN", "BRL", "not an amount: write ASCII digits"),
            (Decimal("NaN"), "BRL", "not a finite number"),
            ("sNaN", "BRL", "not an amount: write ASCII digits"),
            ("Infinity", "BRL", "not an amount: write ASCII digits"),
            ("-inf", "BRL", "not an amount: write ASCII digits"),
            (Decimal("Infinity"), "BRL", "not a finite number"),
            ("0", "BRL", "must be positive"),
            ("0.00", "BRL", "must be positive"),
            ("-0", "BRL", "not an amount: write ASCII digits"),
            (0, "BRL", "must be positive"),
            ("-1", "BRL", "not an amount: write ASCII digits"),
            (Decimal("-0.01"), "BRL", "must be positive"),
            (-5, "CLP", "must be positive"),
            ("10.001", "BRL", "more decimal places than BRL allows (2)"),
            ("1.5", "CLP", "more decimal places than CLP allows (0)"),
            ("1.5", "JPY", "more decimal places than JPY allows (0)"),
            ("1.2345", "KWD", "more decimal places than KWD allows (3)"),
            (Decimal("1E-1000000000"), "BRL", "more decimal places than BRL allows (2)"),
            (Decimal("1E+40"), "BRL", "too many digits for BRL"),
            ("1" * 41, "BRL", "too many digits for BRL"),
            ("abc", "BRL", "not an amount: write ASCII digits"),
            ("", "BRL", "not an amount: write ASCII digits"),
            ("10,00", "BRL", "not an amount: write ASCII digits"),
            ("1e9999999999999999999", "BRL", "not an amount: write ASCII digits"),
        ],
    )
    def test_refuses_bad_amounts_with_a_clear_message(
        self, value: object, currency: str, needle: str
    ) -> None:
        """NaN, infinities, zero, negatives, excess decimals and junk are refused, said why."""
        with pytest.raises(InvalidPayoutRequest) as info:
            parse_amount(value, currency)
        assert needle in str(info.value)
        assert str(info.value).startswith("amount")

    @pytest.mark.parametrize(
        ("value", "kind"),
        [(True, "bool"), (None, "NoneType"), (b"10", "bytes"), ([10], "list"), ({}, "dict")],
    )
    def test_refuses_other_types_naming_what_is_accepted(self, value: object, kind: str) -> None:
        """Other types are refused, naming the type and the accepted ones."""
        with pytest.raises(InvalidPayoutRequest) as info:
            parse_amount(value, "BRL")
        assert f"expected an amount as a Decimal, str or int, not {kind}" in str(info.value)

    def test_invalid_payout_request_is_also_a_value_error(self) -> None:
        """Callers catching ValueError catch a bad amount too."""
        with pytest.raises(ValueError, match="must be positive"):
            parse_amount(-1, "BRL")

    def test_the_message_names_the_field(self) -> None:
        """The field name given (fee) starts the message."""
        with pytest.raises(InvalidPayoutRequest) as info:
            parse_amount("0.001", "BRL", field="fee")
        assert str(info.value).startswith("fee: ")

    def test_zero_is_allowed_when_asked(self) -> None:
        """A fee may be zero; it is still written at the currency's exponent."""
        assert "0.000" == str(parse_amount("0", "KWD", field="fee", allow_zero=True))

    def test_negative_is_refused_even_when_zero_is_allowed(self) -> None:
        """allow_zero does not let negatives through."""
        with pytest.raises(InvalidPayoutRequest, match="must be zero or positive"):
            parse_amount(Decimal("-0.01"), "BRL", field="fee", allow_zero=True)


class TestParseCurrency:
    @pytest.mark.parametrize(
        ("value", "expected"),
        [("BRL", "BRL"), ("brl", "BRL"), ("ars", "ARS"), ("Kwd", "KWD"), ("CLP", "CLP")],
    )
    def test_returns_the_upper_case_code(self, value: str, expected: str) -> None:
        """Codes are upper-cased and stripped."""
        assert expected == parse_currency(value)

    @pytest.mark.parametrize(
        "value", ["VEF", "HRK", "SLL", "XAU", "XDR", "XXX", "ZZZ", "", "BR", "BRLL", "B1L", "€"]
    )
    def test_refuses_unknown_withdrawn_and_unit_less_codes(self, value: str) -> None:
        """Withdrawn (VEF), metal (XAU) and made-up (ZZZ) codes are InvalidPayoutRequest."""
        with pytest.raises(InvalidPayoutRequest) as info:
            parse_currency(value)
        assert f"unknown currency {value!r}: expected an active ISO 4217 code" in str(info.value)

    @pytest.mark.parametrize(("value", "kind"), [(None, "NoneType"), (986, "int"),
                                                 (b"BRL", "bytes")])
    def test_refuses_non_strings(self, value: object, kind: str) -> None:
        """A currency must be a string; the message says which type came instead."""
        with pytest.raises(InvalidPayoutRequest) as info:
            parse_currency(value)
        assert f"3-letter ISO 4217 code string such as 'BRL', not {kind}" in str(info.value)

    def test_invalid_currency_is_also_a_value_error(self) -> None:
        """Callers catching ValueError catch a bad currency too."""
        with pytest.raises(ValueError, match="unknown currency"):
            parse_currency("ZZZ")


class TestExponents:
    @pytest.mark.parametrize(
        ("currency", "exponent", "smallest"),
        [("BRL", 2, "0.01"), ("ARS", 2, "0.01"), ("CLP", 0, "1"), ("JPY", 0, "1"),
         ("KWD", 3, "0.001"), ("BHD", 3, "0.001")],
    )
    def test_exponent_and_smallest_unit_follow_iso_4217(
        self, currency: str, exponent: int, smallest: str
    ) -> None:
        """KWD has 3 decimals, CLP and JPY none, BRL two."""
        assert exponent == currency_exponent(currency)
        assert smallest == str(smallest_unit(currency))


class TestMinorToMajor:
    @pytest.mark.parametrize(
        ("minor", "currency", "expected"),
        [("1200000", "ARS", "12000.00"), ("1500", "CLP", "1500"), ("1500", "KWD", "1.500"),
         (1, "BRL", "0.01"), (Decimal(0), "BRL", "0.00"), (7, "JPY", "7")],
    )
    def test_converts_at_the_currency_exponent(
        self, minor: int | str | Decimal, currency: str, expected: str
    ) -> None:
        """Minor units become major units written at the exponent."""
        assert expected == str(minor_to_major(minor, currency))

    def test_refuses_fractional_minor_units(self) -> None:
        """'1.5' minor units is not a whole number of cents."""
        with pytest.raises(ValueError, match="not a whole number"):
            minor_to_major("1.5", "BRL")


_ANY_AMOUNT = (
    st.decimals(allow_nan=True, allow_infinity=True)
    | st.decimals(min_value=-10, max_value=10**25, places=4)
    | st.integers(-5, 10**30).map(Decimal)
    | st.from_regex(r"[0-9]{1,24}(\.[0-9]{0,4})?", fullmatch=True)
    | st.text(max_size=30)
)


class TestParseRequestQuickPath:
    """A Decimal or amount string in a currency seen before skips the full parse, alike."""

    @given(
        _ANY_AMOUNT,
        st.sampled_from((*CURRENCIES, "brl", "Ars", "XXX", "BR")),
        st.none() | st.sampled_from(("acct", "", " ")),
        st.none() | st.sampled_from(("p-1", "", "x\x00")),
        st.none() | st.sampled_from((Decimal("0.50"), "1", "-1", 1.5)),
    )
    def test_it_answers_exactly_as_the_full_parse(
        self, amount: object, currency: str, account: object, payout_id: object, fee: object
    ) -> None:
        """Same request, or the same refusal, as when every part is parsed by its parser."""

        def parsed(parse: Callable[..., Request]) -> Request | str:
            try:
                return parse(amount, currency, account, payout_id, fee)
            except InvalidPayoutRequest as exc:
                return str(exc)

        full = parsed(parsed_in_full)  # which also remembers the currency's spelling
        assert parsed(parse_request) == full

    def test_a_rounded_amount_is_still_refused(self) -> None:
        parse_request(Decimal("1.00"), "BRL", None, None, None)
        with pytest.raises(InvalidPayoutRequest, match="more decimal places than BRL allows"):
            parse_request(Decimal("1.001"), "BRL", None, None, None)
        with pytest.raises(InvalidPayoutRequest, match="more decimal places than BRL allows"):
            parse_request("1.001", "BRL", None, None, None)
