"""run.sh reinstalls only when what pip installs from changes, so it works offline after."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys

import pytest

from tests.conftest import REPO

spec = importlib.util.spec_from_file_location("install_stamp", REPO / "tools/install_stamp.py")
install_stamp = importlib.util.module_from_spec(spec)
spec.loader.exec_module(install_stamp)


@pytest.fixture
def project(tmp_path):
    for name in ("pyproject.toml", "constraints.txt", "run.sh"):
        shutil.copy(REPO / name, tmp_path / name)
    (tmp_path / "tools").mkdir()
    shutil.copy(REPO / "tools/install_stamp.py", tmp_path / "tools/install_stamp.py")
    return tmp_path


def _edit(path, old, new):
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


def test_a_default_edit_keeps_the_stamp_and_a_dependency_edit_changes_it(project):
    before = install_stamp.stamp(project)
    _edit(project / "pyproject.toml", 'num-server-rounds = 0', 'num-server-rounds = 4')
    _edit(project / "pyproject.toml", "line-length = 100", "line-length = 99")
    assert install_stamp.stamp(project) == before
    _edit(project / "pyproject.toml", '"rich",', '"rich", "six",')
    assert install_stamp.stamp(project) != before
    changed = install_stamp.stamp(project)
    _edit(project / "constraints.txt", "rich==", "rich>=")
    assert install_stamp.stamp(project) != changed


def test_run_sh_does_not_reinstall_after_a_default_edit(project):
    """A stand-in venv whose python only echoes: no pip call may happen."""
    venv = project / "venv"
    (venv / "bin").mkdir(parents=True)
    python = venv / "bin" / "python"
    python.write_text('#!/bin/sh\necho "python $*"\n')
    python.chmod(0o755)
    (venv / ".fl-sim-stamp").write_text(install_stamp.stamp(project) + "\n")
    _edit(project / "pyproject.toml", 'num-server-rounds = 0', 'num-server-rounds = 4')
    env = {**os.environ, "FL_SIM_VENV": str(venv), "PYTHON": sys.executable}
    done = subprocess.run(["bash", "run.sh", "reference"], cwd=project, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "installing" not in done.stderr and "pip" not in done.stderr + done.stdout
    assert done.stdout.strip() == "python -m fl_sim.reference"
    _edit(project / "pyproject.toml", '"rich",', '"rich", "six",')
    done = subprocess.run(["bash", "run.sh", "reference"], cwd=project, env=env,
                          capture_output=True, text=True, timeout=60)
    assert "installing" in done.stderr and "-m pip install" in done.stderr  # pip's output
    assert "--upgrade" not in done.stderr  # pip itself is never upgraded behind the user
