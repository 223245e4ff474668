"""Name -> component registries whose entries are imported only when used.

Why: ``--help``, the option checks and ``report`` must list the task and strategy names
without importing torch, Opacus or Ray, so an entry is the dotted path of its component
(``"tasks.dcgan.task:DCGANTask"``), imported on first :meth:`Registry.get`. Lookups of
unknown names list the known ones, like Opacus's accountant registry.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any


class Registry:
    """An explicit table of named components of one kind.

    Parameters
    ----------
    kind : str
        Word used in error messages (``"task"``).
    entries : mapping of str to str
        Name -> ``"package.module:attribute"``.
    """

    def __init__(self, kind: str, entries: Mapping[str, str]) -> None:
        for name, target in entries.items():
            if target.count(":") != 1:
                raise ValueError(f"{kind} {name!r}: target {target!r} is not 'module:attribute'")
        self.kind = kind
        self._entries = dict(entries)
        self._loaded: dict[str, Any] = {}

    def names(self) -> list[str]:
        """Return the registered names, sorted."""
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def target(self, name: str) -> str:
        """Return ``"module:attribute"`` of ``name`` without importing it.

        Raises
        ------
        KeyError
            Naming the known entries, if ``name`` is not registered.
        """
        if name not in self._entries:
            raise KeyError(f"unknown {self.kind} {name!r}; known: {', '.join(self.names())}")
        return self._entries[name]

    def get(self, name: str) -> Any:
        """Return the component registered as ``name``, importing its module once."""
        if name not in self._loaded:
            module, _, attribute = self.target(name).partition(":")
            self._loaded[name] = getattr(importlib.import_module(module), attribute)
        return self._loaded[name]
