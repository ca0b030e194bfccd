"""Superset integration: the engine spec for amplitude:// connections."""
