"""The vapi source's tests: of hub.testing's fixtures only ``hub_plugins`` is overridden, so the
app loads this plugin (and the built-in ones) and nothing else that is installed."""
import pytest


@pytest.fixture
def hub_plugins():
    return ("vapi",)
