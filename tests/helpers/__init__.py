"""Shared test helpers (imported by conftest.py and test modules; never test modules from each other)."""
