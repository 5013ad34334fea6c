"""``python -m guard``: the ``payout-guard`` command."""

import sys

from guard.cli import main

if __name__ == "__main__":
    sys.exit(main(prog_name="python -m guard"))
