"""Reservation stores: where in-flight payouts hold funds until the provider shows them."""
