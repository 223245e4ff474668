"""``--config FILE.toml``: run-config keys from a file, as in ``[tool.flwr.app.config]``.

A study is dozens of runs that differ in a few keys; a file holds the rest. The file is
either the keys at top level (``num-server-rounds = 5``) or a copy of pyproject's
``[tool.flwr.app.config]`` table. Flags given on the command line win over the file.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from fl_core.options import UsageError, spec_of


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The run-config keys of ``path``.

    Raises
    ------
    UsageError
        Naming ``--config``, the file and the problem: unreadable, not TOML, an unknown key
        (with the close names), or a key the CLI sets itself.
    """
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except OSError as error:
        raise UsageError("--config", f"{path}: cannot be read ({error.strerror})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise UsageError("--config", f"{path}: not TOML ({error})") from None
    table = data.get("tool", {}).get("flwr", {}).get("app", {}).get("config", data)
    keys = {}
    for key, value in table.items():
        spec = spec_of(key)
        if spec is None:
            raise UsageError("--config", f"{path}: unknown key {key!r}; the keys are those of "
                             "docs/configuration.md")
        if spec.hidden:  # a copy of pyproject's table holds them at their defaults
            if value != spec.default:
                raise UsageError("--config", f"{path}: {key!r} is set by fl_sim itself")
            continue
        keys[key] = value
    return keys
