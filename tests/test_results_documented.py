"""Every column a run can write is documented in docs/results-format.md."""

from __future__ import annotations

import re

import pytest

from fl_sim.record.results import PRIVACY_COLUMNS, client_columns, round_columns
from tasks.classifier import ClassifierTask
from tasks.dcgan.metrics import LABEL_AGREEMENT, TSTR_METRICS, TSTR_SPREAD
from tasks.dcgan.task import DCGANTask
from tasks.disguise.task import DisguiseTask
from tasks.regression import RegressionTask
from tests.conftest import REPO

DOC = (REPO / "docs" / "results-format.md").read_text()
DOCUMENTED = set(re.findall(r"`([a-z_0-9<>]+)`", DOC))
EXTRA_SERVER = {DCGANTask: (*TSTR_METRICS, TSTR_SPREAD, LABEL_AGREEMENT, "code_agreement")}


def _documented(column: str) -> bool:
    if column in DOCUMENTED:
        return True
    for prefix in ("train_", "evaluate_", "server_"):
        if column.startswith(prefix) and f"{prefix}<metric>" in DOCUMENTED:
            return column.removeprefix(prefix) in DOCUMENTED
    return False


@pytest.mark.parametrize("task", [RegressionTask, ClassifierTask, DisguiseTask, DCGANTask])
def test_every_column_of_every_task_is_documented(task):
    server = (*task.server_metrics, *EXTRA_SERVER.get(task, ()))
    columns = {*client_columns(task.client_metrics, sample_dp=True),
               *round_columns(task.client_metrics, server,
                              getattr(task, "evaluate_metrics", None), True, True),
               *PRIVACY_COLUMNS}
    missing = sorted(c for c in columns if not _documented(c))
    assert not missing, f"undocumented columns: {missing}"


def test_the_check_catches_an_undocumented_column():
    assert not _documented("train_made_up_metric") and not _documented("surprise")
