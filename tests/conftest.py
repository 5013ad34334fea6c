"""Shared test configuration: the hypothesis settings profiles.

``dev`` (the default) and ``ci`` both run without a per-example deadline, because tests must not
depend on wall-clock speed. ``ci`` is chosen when the ``CI`` environment variable is set, and is
then derandomized so that a failure reproduces; ``HYPOTHESIS_PROFILE`` overrides the choice.
"""

from __future__ import annotations

import os

from hypothesis import settings

settings.register_profile(
    "ci", deadline=None, max_examples=100, derandomize=bool(os.environ.get("CI"))
)
settings.register_profile("dev", deadline=None)
settings.load_profile(
    os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev")
)
