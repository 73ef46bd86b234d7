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
    """Observe a report after it is stored, before it is delivered; keep it cheap (each
    implementation is called on its own: one that raises is logged, the others still run)."""


@hookspec
def delivery_finished(delivery, report, hub):
    """Observe a delivery (a ``DeliveryRecord``) that succeeded or went dead, e.g. to alert on dead
    letters (each implementation is called on its own, as for ``report_received``)."""


@hookspec
def register_routes(register):
    """Add web routes: ``register(blueprint)`` with a Flask ``Blueprint``."""


@hookspec
def register_commands(cli):
    """Add click commands to the ``sovereign-hub`` group."""


@hookspec
def startup(hub):
    """Run once when the web app is built over a loaded configuration. Under ``serve`` that is in
    gunicorn's master, before it forks the workers: start threads and open connections on first
    use, not here (docs/plugin_hooks.md)."""


@hookspec
def register_tools(register):
    """Register tools the platform's LLM can call (tool-calls events): ``register(hub.Tool(...))``,
    or ``register(name=..., description=..., parameters={JSON Schema}, function=f, is_async=False)``.
    ``function(arguments, call)`` gets the checked arguments and a ``hub.ToolCall``; it may be a
    coroutine function. docs/plugin_hooks.md, "register_tools"."""
