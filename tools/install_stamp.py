"""What ``run.sh`` installs from, as one hash: reinstall only when it changes.

The stamp covers what pip reads (the project's dependency lists, its build requirements,
its package list and ``constraints.txt``) and nothing else, so editing a default in
``[tool.flwr.app.config]``, the ruff settings or the docs never triggers a reinstall, and
a machine without network keeps working once installed. Standard library only: it runs
with the system Python before the virtual environment exists.
"""

from __future__ import annotations

import hashlib
import json
import sys
import tomllib
from pathlib import Path


def stamp(root: Path) -> str:
    """The hash of everything pip's install of ``root`` depends on."""
    project = tomllib.loads((root / "pyproject.toml").read_text())
    relevant = {
        "dependencies": project["project"].get("dependencies", []),
        "optional": project["project"].get("optional-dependencies", {}),
        "scripts": project["project"].get("scripts", {}),
        "requires-python": project["project"].get("requires-python", ""),
        "build": project.get("build-system", {}),
        "packages": project.get("tool", {}).get("setuptools", {}),
        "constraints": (root / "constraints.txt").read_text(),
    }
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()


if __name__ == "__main__":
    print(stamp(Path(sys.argv[1]) if len(sys.argv) > 1 else Path.cwd()))
