"""Luxtak's body signature and Pagsmile's Basic token, against the providers' published values."""

from __future__ import annotations

import base64
import hashlib
import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from guard.fetchers._signing import basic_authorization, luxtak_signature, sorted_params

# The 15-field BRL bank-transfer sample of the Security page (docs.pagsmile.com/payout/security;
# payout/security.md in dotaZealot/pagsmile), listed here out of order on purpose.
PUBLISHED_SAMPLE = {
    "source_currency": "BRL",
    "payout_currency": "BRL",
    "notify_url": "https://www.pagsmile.com",
    "name": "Test User Name",
    "fee": "merchant",
    "document_type": "CPF",
    "document_id": "50284414727",
    "custom_code": "1234567",
    "branch": "0001",
    "bankcode": "001",
    "amount": "10.00",
    "additional_remark": "1234567_test",
    "account_type": "CHECKING",
    "account_number": "1234567",
    "account_digit": "4",
}
PUBLISHED_PREIMAGE = (
    "account_digit=4&account_number=1234567&account_type=CHECKING&additional_remark=1234567_test"
    "&amount=10.00&bankcode=001&branch=0001&custom_code=1234567&document_id=50284414727"
    "&document_type=CPF&fee=merchant&name=Test User Name&notify_url=https://www.pagsmile.com"
    "&payout_currency=BRL&source_currency=BRL"
)
PUBLISHED_HASH = "b15f900705867ecc3f66088054c14a80f9f12b1fb31c82320c4cbfe181876abb"

# The docs' Basic token for the Pagsmile sandbox app (seed 003).
DOCS_TOKEN = (
    "MTYyNTgyOTIxNDUzMTY2Mzg6UGFnc21pbGVfc2tfZDUwMWQ1ZGNkNTI5OGQ5N2MwNmUzYjI4YjA2OWZjZmY3NDU5ZjY2"
    "NzNiMjFjMTFlYTY3NDM5MDgzOTZkOTYxNQ=="
)

keys = st.text(alphabet=string.ascii_letters + "_", min_size=1, max_size=12)
values = st.one_of(st.text(alphabet=string.printable, max_size=20), st.integers(0, 10**12))


class TestSortedParams:
    def test_published_sample(self) -> None:
        """The 15-field sample sorts to exactly the pre-image the docs print."""
        assert PUBLISHED_PREIMAGE == sorted_params(PUBLISHED_SAMPLE)

    def test_code_unit_order(self) -> None:
        """Keys sort like Java's TreeMap: upper case before lower case, '_' between."""
        assert "B=2&a_b=3&ab=4&b=1" == sorted_params({"b": "1", "B": "2", "a_b": "3", "ab": "4"})

    def test_empty_values_dropped(self) -> None:
        """Empty strings and None are left out, as the docs say."""
        assert "a=1&c=3" == sorted_params({"a": "1", "b": "", "c": 3, "d": None})

    def test_integers_as_digits(self) -> None:
        """An integer renders as plain digits."""
        assert "timestamp=1642075807" == sorted_params({"timestamp": 1642075807})

    @pytest.mark.parametrize("value", [True, 1.5, {"a": 1}, ["x"]])
    def test_other_types_refused(self, value: object) -> None:
        """Booleans, floats and nested values have no agreed rendering and are refused."""
        with pytest.raises(TypeError, match="cannot sign parameter 'x'"):
            sorted_params({"x": value})

    @given(st.dictionaries(keys, values, max_size=8))
    def test_insertion_order_irrelevant(self, params: dict[str, object]) -> None:
        """The pre-image depends on the parameters, not on their order in the body."""
        reordered = dict(reversed(list(params.items())))
        assert sorted_params(params) == sorted_params(reordered)


class TestLuxtakSignature:
    def test_published_example(self) -> None:
        """The docs' published hash for the 15-field sample and key ABCDE is reproduced."""
        assert PUBLISHED_HASH == luxtak_signature(PUBLISHED_SAMPLE, "ABCDE")

    @pytest.mark.parametrize(
        ("timestamp", "app_key", "expected"),
        [
            (1642075807, "ABCDE",
             "12d71e4a295418a902e8d460bbe33f2c29842d132a05f8701422d9d305e38b98"),
            (1628512575, "ABCDE",
             "0dc074b879e443c3da50f692b3e61263317f863d991aee2dda5639c577ec3f68"),
            (1700000000, "test_app_key",
             "01a9d5e147ab3bda2b8d487190fde9323e74d2059af3069c13b887ef79c8f2f5"),
        ],
    )
    def test_balance_vectors(self, timestamp: int, app_key: str, expected: str) -> None:
        """The three balance-body vectors of PROVIDERS.md 1.3 are reproduced."""
        assert expected == luxtak_signature({"timestamp": timestamp}, app_key)

    def test_not_hmac(self) -> None:
        """The signature is plain SHA-256 of pre-image + key, lowercase hex."""
        expected = hashlib.sha256(b"timestamp=1ABCDE").hexdigest()
        assert expected == luxtak_signature({"timestamp": 1}, "ABCDE")

    @given(st.dictionaries(keys, values, max_size=6), st.text(min_size=1, max_size=16))
    def test_empty_fields_do_not_change_it(self, params: dict[str, object], key: str) -> None:
        """Adding an empty field leaves the signature unchanged."""
        with_empty = {**params, "zz_empty": ""}
        assert luxtak_signature(params, key) == luxtak_signature(with_empty, key)


class TestBasicAuthorization:
    def test_docs_token_round_trips(self) -> None:
        """The docs' sample token decodes to app_id:key and re-encodes byte for byte."""
        app_id, _, key = base64.b64decode(DOCS_TOKEN).decode().partition(":")
        assert f"Basic {DOCS_TOKEN}" == basic_authorization(app_id, key)

    def test_shape(self) -> None:
        """The value is 'Basic ' then base64 of user:password."""
        assert "Basic dTpw" == basic_authorization("u", "p")
