"""Money as ``rules`` and ``guard`` compute it: exponents, quantization, grammar, context.

This is the public face of the money functions; they live in ``rules._money``. Nothing here
ever touches ``float``.

Example:
    >>> from decimal import Decimal
    >>> from rules.money import quantize_exact, smallest_unit
    >>> smallest_unit("CLP"), quantize_exact(Decimal("10.5"), "BRL")
    (Decimal('1'), Decimal('10.50'))
"""

from rules._money import (
    ADD,
    DIVIDE,
    MONEY_CONTEXT,
    MULTIPLY,
    SUBTRACT,
    currency_exponent,
    float_refusal,
    is_currency,
    money_context,
    normalize_currency,
    quantize_down,
    quantize_exact,
    quantize_up,
    smallest_unit,
    to_decimal,
    zero,
)

__all__ = [
    "ADD",
    "DIVIDE",
    "MONEY_CONTEXT",
    "MULTIPLY",
    "SUBTRACT",
    "currency_exponent",
    "float_refusal",
    "is_currency",
    "money_context",
    "normalize_currency",
    "quantize_down",
    "quantize_exact",
    "quantize_up",
    "smallest_unit",
    "to_decimal",
    "zero",
]
