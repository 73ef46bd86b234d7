"""Fixtures of this plugin's tests; the hub's own come from hub.testing."""
import pytest


@pytest.fixture(autouse=True)
def _full_rate_limits(fresh_rate_limits):
    """Every test starts with full rate-limit buckets (they are shared process-wide)."""


@pytest.fixture
def hub_plugins():
    """The app fixture loads this plugin (and the built-in ones)."""
    return ("salesforce",)
