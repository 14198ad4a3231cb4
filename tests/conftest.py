"""Shared pytest wiring: fixture modules live in tests/support/ and are loaded here."""

pytest_plugins = ["tests.support.fixtures", "tests.support.hpc", "tests.support.tiers", "tests.support.notify"]
