"""Fixtures of the search tests that script trials use too."""

from tests.search.conftest import sqlite_url  # noqa: F401 - a fixture
