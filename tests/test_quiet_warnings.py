"""Library warnings a user cannot act on are hidden at their source, and --verbose shows them."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tasks.dp_sgd import KNOWN_WARNINGS, VERBOSE_ENV
from tests.conftest import REPO

SCRIPT = ("import warnings, tasks.dp_sgd\n"
          "for message in tasks.dp_sgd.KNOWN_WARNINGS:\n"
          "    warnings.warn(message + ' (as the library says it)', UserWarning)\n"
          "warnings.warn('some other warning', UserWarning)\n")


@pytest.mark.parametrize("verbose", [False, True])
def test_known_warnings_are_hidden_unless_verbose(verbose):
    env = {k: v for k, v in os.environ.items() if k != VERBOSE_ENV}
    if verbose:
        env[VERBOSE_ENV] = "1"
    done = subprocess.run([sys.executable, "-c", SCRIPT], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "some other warning" in done.stderr  # nothing else is hidden
    for message in KNOWN_WARNINGS:
        assert (message in done.stderr) is verbose
