"""Money as ``rules`` and ``guard`` compute it: exponents, quantization, grammar, context.

This is the public face of the money functions; they live in ``rules._money``. Nothing here
ever touches ``float``.

Example:
    >>> from decimal import Decimal
    >>> from rules.money import quantize_exact, smallest_unit
    >>> smallest_unit("CLP"), quantize_exact(Decimal("10.5"), "BRL")
    (Decimal('1'), Decimal('10.50'))
"""

# Every name rules._money lists is public here: a name added there is exported without a
# second list to keep in step (the exports test holds __all__ to the module's public names).
from rules._money import *  # noqa: F403 - re-exports exactly rules._money.__all__
from rules._money import __all__  # noqa: F401 - the list re-exported above
