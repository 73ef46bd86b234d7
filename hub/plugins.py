"""The plugin manager: hookspecs, built-in plugins, entry points, and what they registered."""
from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass, field
from importlib import metadata

import pluggy

from . import hookspecs
from .errors import ConfigError

log = logging.getLogger(__name__)

DEFAULT_PLUGINS = (
    "hub.default_plugins.hms_source",
    "hub.default_plugins.webhook",
    "hub.default_plugins.jsonl",
    "hub.default_plugins.answer_tools",
)


@dataclass
class PluginFailure:
    name: str
    error: str


@dataclass
class Registry:
    """What the loaded plugins registered; built once per plugin manager."""

    sources: dict = field(default_factory=dict)
    destinations: dict = field(default_factory=dict)
    owners: dict = field(default_factory=dict)  # destination type -> plugin name
    source_owners: dict = field(default_factory=dict)  # source name -> plugin name


class HubPluginManager(pluggy.PluginManager):
    """pluggy's manager plus what ``sovereign-hub plugins`` shows: distributions and failures."""

    def __init__(self) -> None:
        super().__init__(hookspecs.PROJECT)
        self.add_hookspecs(hookspecs)
        self.failures: list[PluginFailure] = []
        self.distributions: dict[str, metadata.Distribution] = {}

    def load_entry_points(self) -> None:
        """Load every ``sovereign_hub`` entry point; one that fails to import is recorded, not fatal.

        (pluggy's own ``load_setuptools_entrypoints`` stops at the first import error.)
        """
        for ep in metadata.entry_points(group=hookspecs.PROJECT):
            if self.get_plugin(ep.name) is not None or self.is_blocked(ep.name):
                continue
            try:
                self._register_entry_point(ep)
            except Exception as exc:  # noqa: BLE001 - any import failure of a third-party plugin
                self.failures.append(PluginFailure(ep.name, f"{type(exc).__name__}: {exc}"))
                log.warning("plugin %s failed to load: %s", ep.name, exc)

    def load_entry_point(self, name: str) -> None:
        """Load the one installed ``sovereign_hub`` entry point ``name`` (a test's ``hub_plugins``);
        its import errors propagate. ``LookupError`` names the installed ones if it is not there."""
        found = metadata.entry_points(group=hookspecs.PROJECT, name=name)
        if not found:
            installed = ", ".join(sorted(ep.name for ep in metadata.entry_points(group=hookspecs.PROJECT)))
            raise LookupError(f"no plugin {name!r} is installed in the entry-point group {hookspecs.PROJECT!r} "
                              f"(installed: {installed or 'none'})")
        for ep in found:
            self._register_entry_point(ep)

    def _register_entry_point(self, ep: metadata.EntryPoint) -> None:
        self.register(ep.load(), name=ep.name)
        if ep.dist is not None:
            self.distributions[ep.name] = ep.dist


def make_manager(*, load_entry_points: bool = True) -> HubPluginManager:
    pm = HubPluginManager()
    for name in DEFAULT_PLUGINS:
        pm.register(importlib.import_module(name), name=name)
    if load_entry_points:
        pm.load_entry_points()
    pm.check_pending()
    return pm


def notify(pm: pluggy.PluginManager, hook: str, log_fields: dict | None = None, **kwargs) -> None:
    """Call every implementation of the observer ``hook`` on its own, in pluggy's order.

    A pluggy broadcast stops at the first implementation that raises, so one plugin's bug
    would silence every other observer; here it is logged, naming the plugin, and the rest
    still run. Each implementation gets only the arguments it names.
    """
    for impl in reversed(getattr(pm.hook, hook).get_hookimpls()):
        try:
            impl.function(**{name: kwargs[name] for name in impl.argnames})
        except Exception:  # noqa: BLE001 - an observer's bug must never fail the hub's own work
            log.exception(f"{hook} hook failed", extra={"fields": {"plugin": impl.plugin_name, **(log_fields or {})}})


def collect(pm: pluggy.PluginManager) -> Registry:
    """Call the registration hooks once; a type registered twice is a clear error."""
    registry = Registry()

    for impl in pm.hook.register_sources.get_hookimpls():
        def register_source(source, _plugin=impl.plugin_name):
            registry.sources[source.name] = source
            registry.source_owners[source.name] = _plugin
        impl.function(register=register_source)

    for impl in pm.hook.register_destinations.get_hookimpls():
        def register_destination(cls, _plugin=impl.plugin_name):
            type_name = getattr(cls, "type", None)
            if not type_name:
                raise ConfigError("", f"plugin {_plugin} registered {cls!r} without a 'type'")
            if type_name in registry.destinations and registry.owners[type_name] != _plugin:
                raise ConfigError("", f"destination type {type_name!r} is registered by both "
                                      f"{registry.owners[type_name]} and {_plugin}: uninstall one")
            registry.destinations[type_name] = cls
            registry.owners[type_name] = _plugin
        impl.function(register=register_destination)
    return registry


def describe(pm: HubPluginManager) -> list[dict]:
    """One row per plugin for ``sovereign-hub plugins``: name, version, hooks, types."""
    registry = collect(pm)
    rows = []
    for name, plugin in sorted(pm.list_name_plugin(), key=lambda item: item[0]):
        dist = pm.distributions.get(name)
        hooks = sorted(caller.name for caller in pm.get_hookcallers(plugin) or [])
        rows.append({
            "name": name,
            "version": dist.version if dist else "built-in",
            "distribution": dist.metadata["name"] if dist else "sovereign-hub",
            "hooks": hooks,
            "destination_types": sorted(t for t, owner in registry.owners.items() if owner == name),
            "sources": sorted(s for s, owner in registry.source_owners.items() if owner == name),
            # every type's rate-limit buckets and their defaults; "default" is unlimited unless set
            "rate_limits": {t: {"default": None, **registry.destinations[t].rate_limits}
                            for t, owner in sorted(registry.owners.items()) if owner == name},
        })
    for failure in pm.failures:
        rows.append({"name": failure.name, "version": "?", "distribution": "?", "hooks": [],
                     "destination_types": [], "sources": [], "rate_limits": {}, "error": failure.error})
    return rows
