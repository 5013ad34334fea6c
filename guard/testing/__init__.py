"""What users import into their own tests: fakes, a capture helper and provider emulators.

The emulators (``LuxtakEmulator``, ``LuxCoreEmulator``, ``PagsmileEmulator``) live in
``guard.testing.emulators``; the pytest plugin's fixtures are in
``guard.testing.pytest_plugin``.
"""

from guard._capture import capture_decisions
from guard.testing._clock import FakeClock
from guard.testing._fakes import FailingFetcher, StaticFetcher

__all__ = ["FailingFetcher", "FakeClock", "StaticFetcher", "capture_decisions"]
