"""Name -> class registries for tasks (here) and strategies (``strategies.registry``).

A module registers its class with a decorator; the registry imports every module of its
package once, on first lookup, so adding a task or a strategy is a one-file change.
Lookups of unknown names list the known ones, like Opacus's accountant registry.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from typing import Any


class Registry:
    """Names registered by the modules of one package.

    Parameters
    ----------
    package : str
        Package whose modules are imported on first lookup (``"tasks"``).
    kind : str
        Word used in error messages (``"task"``).
    """

    def __init__(self, package: str, kind: str) -> None:
        self.package = package
        self.kind = kind
        self._entries: dict[str, Any] = {}
        self._discovered = False

    def register(self, name: str) -> Callable[[Any], Any]:
        """Decorator registering a class or builder function under ``name``."""

        def decorator(obj: Any) -> Any:
            if self._entries.get(name, obj) is not obj:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = obj
            return obj

        return decorator

    def _discover(self) -> None:
        if self._discovered:
            return
        self._discovered = True
        package = importlib.import_module(self.package)
        for module in pkgutil.iter_modules(package.__path__):
            if not module.name.startswith("_"):
                importlib.import_module(f"{self.package}.{module.name}")

    def names(self) -> list[str]:
        """Return the registered names, sorted."""
        self._discover()
        return sorted(self._entries)

    def get(self, name: str) -> Any:
        """Return what is registered as ``name``.

        Raises
        ------
        KeyError
            Naming the known entries, if ``name`` is not registered.
        """
        self._discover()
        if name not in self._entries:
            raise KeyError(f"unknown {self.kind} {name!r}; known: {', '.join(self.names())}")
        return self._entries[name]


TASKS = Registry("tasks", "task")


def register(name: str) -> Callable[[type], type]:
    """Class decorator that makes a task selectable as ``--task name``."""

    def decorator(cls: type) -> type:
        cls.name = name
        return TASKS.register(name)(cls)

    return decorator


names = TASKS.names
get = TASKS.get
