"""The ``payout-guard`` command (``python -m guard`` too).

Commands: ``demo``, ``check``, ``balances``, ``simulate``, ``emulate``, ``health``,
``holds list|show|release|resolve|rearm``, ``replay``, ``rules validate`` and ``store migrate``.
Exit codes: 0 allowed / done, 1 denied, 2 usage or configuration error (rejected
credentials too), 3 provider unavailable. The command needs the ``cli`` extra (click and
rich); without it, :func:`main` says how to install it.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

__all__ = ["main"]

_MISSING_EXTRA = (
    "payout-guard: the command needs the 'cli' extra (click and rich), which is not "
    "installed ({missing}).\nInstall it with:  pip install 'payout-guard[cli]'\n"
)


def main(argv: Sequence[str] | None = None, *, prog_name: str = "payout-guard") -> int:
    """Run the ``payout-guard`` command; return its exit code (the console script exits with it).

    Args:
        argv: The arguments (default ``sys.argv[1:]``).
        prog_name: The name shown in usage messages.

    Returns:
        0 allowed or done, 1 denied, 2 usage or configuration error, 3 provider unavailable.
    """
    try:
        from guard.cli._root import run  # noqa: PLC0415 - click and rich are an optional extra
    except ImportError as exc:
        if exc.name not in {"click", "rich"}:
            raise
        sys.stderr.write(_MISSING_EXTRA.format(missing=exc.name))
        return 2
    return run(list(sys.argv[1:] if argv is None else argv), prog_name=prog_name)
