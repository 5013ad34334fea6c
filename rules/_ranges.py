"""Sets of allowed amounts, so that combinators report exact ``floor`` and ``cap``.

A built-in rule allows one closed range of amounts, ``[floor, cap]``. ``all_of`` intersects
ranges and ``any_of`` unites them, and a union can have holes: ``any_of(max 100, min 500)``
allows 100 and 500 but not 300. Combinators therefore compute with unions of ranges and report
the smallest and largest allowed amount; ``min(caps)`` would be wrong as soon as an
``any_of`` with a hole sits inside an ``all_of``.
"""

from __future__ import annotations

from decimal import Decimal

from rules._money import ADD, quantize_down, quantize_up, smallest_unit

__all__ = ["Ranges"]

Bound = Decimal | None
Span = tuple[Bound, Bound]


def _low_key(span: Span) -> tuple[int, Decimal]:
    return (0, Decimal(0)) if span[0] is None else (1, span[0])


def _max_low(a: Bound, b: Bound) -> Bound:
    if a is None:
        return b
    return a if b is None else max(a, b)


def _min_high(a: Bound, b: Bound) -> Bound:
    if a is None:
        return b
    return a if b is None else min(a, b)


def _max_high(a: Bound, b: Bound) -> Bound:
    return None if a is None or b is None else max(a, b)


class Ranges:
    """A union of disjoint closed ranges of amounts in one currency; ``None`` is unbounded.

    Bounds lie on the currency's grid (multiples of its smallest unit), so two ranges one
    unit apart leave no amount between them and are merged.
    """

    __slots__ = ("currency", "spans")

    def __init__(self, currency: str, spans: tuple[Span, ...] = ((None, None),)) -> None:
        self.currency = currency
        self.spans = spans

    @classmethod
    def between(cls, currency: str, floor: Bound, cap: Bound) -> Ranges:
        """Return the amounts of *currency* in ``[floor, cap]``, bounds rounded inward."""
        low = None if floor is None else quantize_up(floor, currency)
        high = None if cap is None else quantize_down(cap, currency)
        if low is not None and high is not None and low > high:
            return cls(currency, ())
        return cls(currency, ((low, high),))

    def __and__(self, other: Ranges) -> Ranges:
        spans: list[Span] = []
        for a_low, a_high in self.spans:
            for b_low, b_high in other.spans:
                low, high = _max_low(a_low, b_low), _min_high(a_high, b_high)
                if low is None or high is None or low <= high:
                    spans.append((low, high))
        return Ranges(self.currency, tuple(sorted(spans, key=_low_key)))

    def __or__(self, other: Ranges) -> Ranges:
        unit = smallest_unit(self.currency)
        merged: list[Span] = []
        for low, high in sorted(self.spans + other.spans, key=_low_key):
            if merged:
                last_low, last_high = merged[-1]
                if last_high is None or low is None or low <= ADD(last_high, unit):
                    merged[-1] = (last_low, _max_high(last_high, high))
                    continue
            merged.append((low, high))
        return Ranges(self.currency, tuple(merged))

    def bounds(self) -> tuple[Bound, Decimal | None]:
        """Return ``(floor, cap)`` of the payable amounts (those of at least one unit).

        ``floor`` is ``None`` when every amount up to ``cap`` is allowed; ``cap`` is ``None``
        when there is no upper bound, and ``Decimal(0)`` when no amount is allowed at all.
        """
        unit = smallest_unit(self.currency)
        payable = self & Ranges(self.currency, ((unit, None),))
        if not payable.spans:
            return None, Decimal(0)
        low, high = payable.spans[0][0], payable.spans[-1][1]
        return (None if low is None or low <= unit else low), high

    def __repr__(self) -> str:
        return f"Ranges({self.currency!r}, {self.spans!r})"
