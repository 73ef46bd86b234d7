"""Every hook a plugin can implement. docs/plugin_hooks.md has a section for each one."""
from pluggy import HookimplMarker, HookspecMarker

PROJECT = "sovereign_hub"
hookspec = HookspecMarker(PROJECT)
hookimpl = HookimplMarker(PROJECT)


@hookspec
def register_sources(register):
    """Register payload adapters: ``register(source)`` with a ``Source`` instance."""


@hookspec
def register_destinations(register):
    """Register destination types: ``register(cls)`` with a ``Destination`` subclass."""


@hookspec
def report_received(report, hub):
    """Observe a report after it is stored, before it is delivered; keep it cheap."""


@hookspec
def delivery_finished(delivery, report, hub):
    """Observe a delivery that succeeded or went dead (e.g. alert on dead letters)."""


@hookspec
def register_routes(hub):
    """Add Flask blueprints or routes: ``hub.app.register_blueprint(...)``."""


@hookspec
def register_commands(cli):
    """Add click commands to the ``sovereign-hub`` group."""


@hookspec
def startup(hub):
    """Run once when the hub has loaded its configuration and store."""
