"""The public names of guard, guard.testing and guard.stores: sorted and exactly complete."""

from __future__ import annotations

import importlib
from types import ModuleType

import pytest

PACKAGES = ["guard", "guard.instrumentation", "guard.testing", "guard.stores"]


def public_names(module: ModuleType) -> set[str]:
    """Return the names a user sees: not private, not submodules."""
    return {
        name for name, value in vars(module).items()
        if not name.startswith("_") and not isinstance(value, ModuleType)
        and name != "annotations"
    }


class TestExports:
    @pytest.mark.parametrize("package", PACKAGES)
    def test_all_is_sorted(self, package: str) -> None:
        """__all__ is kept in sorted order, so a diff shows an addition in one place."""
        exported = list(importlib.import_module(package).__all__)
        assert sorted(exported) == exported

    @pytest.mark.parametrize("package", PACKAGES)
    def test_all_lists_exactly_the_public_names(self, package: str) -> None:
        """Every public name is in __all__, and __all__ names nothing else."""
        module = importlib.import_module(package)
        assert public_names(module) == set(module.__all__)

    @pytest.mark.parametrize("package", PACKAGES)
    def test_every_exported_name_resolves(self, package: str) -> None:
        """A star import gives every listed name."""
        namespace: dict[str, object] = {}
        exec(f"from {package} import *", namespace)
        module = importlib.import_module(package)
        assert set(module.__all__) <= set(namespace)

    @pytest.mark.parametrize(
        ("package", "names"),
        [
            ("guard", {"PayoutGuard", "Decision", "Reason", "BalanceSnapshot", "Reservation",
                       "PayoutDenied", "InvalidPayoutRequest", "ConfigurationError",
                       "GuardError", "ProviderError", "ProviderAuthError",
                       "ProviderRateLimited", "ProviderUnavailable", "ProviderResponseError"}),
            ("guard.testing", {"StaticFetcher", "FailingFetcher", "FakeClock",
                               "capture_decisions"}),
            ("guard.stores", {"InMemoryReservations", "ReservationStore"}),
        ],
    )
    def test_the_design_names_are_exported(self, package: str, names: set[str]) -> None:
        """The names DESIGN.md promises for this issue are public."""
        assert names <= set(importlib.import_module(package).__all__)

    def test_guard_errors_all_is_sorted_and_complete(self) -> None:
        """The exception module lists every error it defines or re-exports."""
        module = importlib.import_module("guard.errors")
        errors = {n for n in public_names(module)
                  if isinstance(getattr(module, n), type) and n not in {"Decision"}}
        assert (sorted(module.__all__), errors) == (list(module.__all__), set(module.__all__))
