"""Loopback HTTP emulators of the provider balance APIs, for tests."""
