"""The :class:`Rule` protocol: what every rule, built-in or yours, provides.

The contract that makes ``max_payable`` exact is described in ``rules._engine``.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from rules._facts import Facts, Verdict

__all__ = ["Rule"]


@runtime_checkable
class Rule(Protocol):
    """What every rule provides: a stable name and a pure ``evaluate``."""

    @property
    def name(self) -> str:
        """Return the rule's name as it appears in verdicts (``"reserve_margin"``)."""
        ...

    def evaluate(self, facts: Facts) -> Verdict:
        """Judge *facts*; never raise for a denial, never do I/O."""
        ...
