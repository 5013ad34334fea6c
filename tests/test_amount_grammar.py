"""One grammar for amounts, three ASCII letters for currencies, and input never echoed in full.

``check``, ``reserve``, rules from data, the CLI and the provider fetchers read amount strings
the same way: ASCII digits with at most one ``.``. Provider text is cleaned before it reaches a
reason, ``explain()`` or a log field.
"""

from __future__ import annotations

import json
import unicodedata
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from structlog.testing import capture_logs

from guard import ConfigurationError, InvalidPayoutRequest, PayoutGuard
from guard._text import printable, quoted
from guard.fetchers import LuxCoreFetcher, RetryPolicy
from guard.fetchers import _parse as parse
from guard.testing import StaticFetcher
from guard.testing.emulators import LuxCoreEmulator
from rules import load
from rules._money import AMOUNT_GRAMMAR, normalize_currency, to_decimal
from tests._cli import emulator_env, run_cli, write_config
from tests._hostile import HostileServer, answer

REFUSED_AMOUNTS = ["1_000", "1e3", "1E+3", "\u0661\u0662\u0663", " 10", "10 ", "10\n", "+5",
                   "-5", "10.", ".5", "1.2.3", "NaN", "Infinity", "", "\uff11\uff10", "0x10",
                   "1,5"]
REFUSED_CURRENCIES = ["\u0131nr", "\u017fek", " brl", "BRL ", "BRL\n", "B R", "\uff22\uff32\uff2c",
                      "BR", "BRLL", "12A", "XXX"]


@pytest.fixture
def guard() -> PayoutGuard:
    return PayoutGuard(StaticFetcher({"BRL": "1000000.00", "INR": "10.00", "SEK": "10.00"}))


class TestAmountGrammar:
    @pytest.mark.parametrize("text", REFUSED_AMOUNTS)
    def test_check_and_reserve_refuse_what_the_fetchers_refuse(
        self, guard: PayoutGuard, text: str
    ) -> None:
        """Signs, spaces, '_', exponents and non-ASCII digits are InvalidPayoutRequest."""
        with pytest.raises(InvalidPayoutRequest, match="not an amount"):
            guard.check(text, "BRL")
        with pytest.raises(InvalidPayoutRequest, match="not an amount"):
            guard.reserve(text, "BRL", payout_id="po-1")
        with pytest.raises(parse.BodyError):
            parse.amount(text, "BRL", "amount")

    @pytest.mark.parametrize(("value", "expected"), [
        ("2500", "2500.00"), ("2500.00", "2500.00"), ("0.5", "0.50"), (7, "7.00"),
        (Decimal("1.5"), "1.50"),
    ])
    def test_digits_with_one_point_int_and_decimal_are_accepted(
        self, guard: PayoutGuard, value: object, expected: str
    ) -> None:
        """'2500', '2500.00', int and Decimal are read as before."""
        assert expected == str(guard.check(value, "BRL").amount)

    @given(st.text(alphabet="0123456789._-+eE \u0661\uff11", max_size=12))
    def test_strings_follow_exactly_the_one_grammar(self, text: str) -> None:
        """A string is read iff it is ASCII digits with at most one '.', as Decimal(text)."""
        if AMOUNT_GRAMMAR.fullmatch(text):
            assert Decimal(text) == to_decimal(text)
        else:
            with pytest.raises(ValueError, match="not an amount"):
                to_decimal(text)

    @pytest.mark.parametrize("text", ["1_000", "1e3", "-5"])
    def test_rules_from_data_use_the_grammar(self, text: str) -> None:
        """A rule amount such as '1_000' in configuration is a ConfigurationError."""
        with pytest.raises(ConfigurationError, match="not an amount"):
            load({"rules": [{"type": "reserve_margin", "minimum": {"BRL": text}}]})

    def test_the_cli_uses_the_grammar(self, tmp_path: Path) -> None:
        """payout-guard check 1_000 ARS is a usage error (exit 2), not a payout of 1000."""
        with LuxCoreEmulator() as emu:
            config = write_config(tmp_path / "guard.toml", luxcore=emu)
            result = run_cli("check", "1_000", "ARS", "-c", str(config),
                             env=emulator_env(luxcore=emu))
        assert 2 == result.returncode
        assert "not an amount" in result.stderr


class TestCurrencyCodes:
    @pytest.mark.parametrize("code", REFUSED_CURRENCIES)
    def test_only_three_ascii_letters(self, guard: PayoutGuard, code: str) -> None:
        """Dotless i, long s, fullwidth letters, spaces and wrong lengths are refused."""
        with pytest.raises(InvalidPayoutRequest, match="unknown currency"):
            guard.check("1", code)

    @pytest.mark.parametrize("code", ["brl", "Brl", "bRL"])
    def test_any_case_is_upper_cased(self, code: str) -> None:
        """Lower and mixed case ASCII codes are normalised to upper case."""
        assert "BRL" == normalize_currency(code)


class TestNoEcho:
    def test_a_10_mb_payout_id_is_not_echoed(self, guard: PayoutGuard) -> None:
        """A 10 MB payout id is refused with a short message quoting 60 characters at most."""
        huge = "x" * 10_000_000
        with pytest.raises(InvalidPayoutRequest) as info:
            guard.check("1", "BRL", payout_id=huge)
        assert len(str(info.value)) < 300
        assert "x" * 61 not in str(info.value)

    @pytest.mark.parametrize("field", ["amount", "currency", "fee", "account"])
    def test_huge_inputs_are_quoted_at_most_60_characters(
        self, guard: PayoutGuard, field: str
    ) -> None:
        """Every field's message quotes at most 60 characters of a megabyte of input."""
        values: dict[str, object] = {"amount": "1", "currency": "BRL"}
        values[field] = "9" * 1_000_000 + ("z" if field != "currency" else "")
        with pytest.raises(InvalidPayoutRequest) as info:
            guard.check(values.pop("amount"), values.pop("currency"), **values)  # type: ignore[arg-type]  # fee and account as keywords
        assert "9" * 61 not in str(info.value)
        assert len(str(info.value)) < 400

    def test_quoted_cuts_to_the_limit(self) -> None:
        """quoted() is repr() of at most 60 characters, ending in '...' when cut."""
        assert "'abc'" == quoted("abc")
        assert 60 == len(quoted("y" * 1000))
        assert quoted("y" * 1000).endswith("...")


HOSTILE_MESSAGE = "bad key\r\n2026-01-01 [info] payout_guard.decision allowed=True\x1b[31m" + (
    "A" * 5000)


class TestProviderTextIsCleaned:
    def test_printable_drops_controls_and_cuts_to_200(self) -> None:
        """Control, format and separator characters become spaces; 200 characters at most."""
        text = printable("a\nb\x1b[0m\u2028c\u202e" + "d" * 500)
        assert 200 == len(text)
        assert all(unicodedata.category(c)[0] != "C" for c in text)

    def test_a_hostile_msg_reaches_reasons_explain_and_logs_clean(self) -> None:
        """A provider message with newlines and escapes is one clean line of <= 200 chars."""
        body = json.dumps({"error": "INVALID_API_KEY\n\x1b[2J", "message": HOSTILE_MESSAGE})
        with HostileServer(answer(401, body)) as server:
            fetcher = LuxCoreFetcher("qp_test_sk_x", base_url=server.url,
                                     retry=RetryPolicy(attempts=1))
            with PayoutGuard(fetcher) as guard, capture_logs() as logs:
                decision = guard.check("1.00", "ARS")
        [reason] = decision.reasons
        for text in (reason.message, decision.explain(), repr(logs)):
            assert "\r" not in text
            assert "\x1b" not in text
            assert "A" * 201 not in text
        assert "\n" not in reason.message
        fields = [str(value) for event in logs for value in event.values()]
        assert not any("\n" in field or "\x1b" in field for field in fields)
