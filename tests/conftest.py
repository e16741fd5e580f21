"""Shared fixtures: each tier's real part is a pytest plugin in tests/fixtures/."""

pytest_plugins = [
    "tests.fixtures.cluster",
    "tests.fixtures.reconciler",
    "tests.fixtures.serving",
]
