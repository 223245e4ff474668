"""The translator never travels: every Flower message of a disguise run, inspected.

The real ServerApp ``main`` and ClientApp functions run in-process over a recording
grid (no Ray), on a tiny configuration. Every message the server sends and every
reply is kept; the test then asserts that message contents hold only the classifier's
arrays, that none of them equals a translator tensor, and that the published data set
is all the clients read.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, MetricRecord, RecordDict

from tasks.disguise.task import OWNER, PUBLISHED
from tasks.image import cnn
from tests.recording_grid import run_in_process

pytestmark = pytest.mark.slow

CLIENTS = 2


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("disguise") / "run"
    run_dir.mkdir()
    grid = run_in_process({
        "task": "disguise", "clients": CLIENTS, "num-server-rounds": 2,
        "dataset": "digits", "translator-steps": 30, "dp": True,
    }, run_dir)
    return grid, run_dir


def _arrays_of(content: RecordDict) -> dict[str, np.ndarray]:
    found = {}
    for name, record in content.items():
        if isinstance(record, ArrayRecord):
            for key, value in record.to_torch_state_dict().items():
                found[f"{name}/{key}"] = value.numpy()
    return found


def test_messages_carry_only_the_classifier(recorded):
    grid, run_dir = recorded
    translator = torch.load(run_dir / OWNER / "translator.pt", weights_only=True)
    classifier_keys = set(cnn.make_cnn(1, 2, 0).state_dict())
    assert len(grid.sent) == CLIENTS * 2 * 2  # train + evaluate, 2 rounds
    assert {m.metadata.message_type for m in grid.sent} == {"train", "evaluate"}
    for message in grid.sent + grid.replies:
        content = message.content
        for record in content.values():
            assert isinstance(record, (ArrayRecord, ConfigRecord, MetricRecord))
            if isinstance(record, ArrayRecord):
                assert set(record.to_torch_state_dict()) == classifier_keys
            else:  # config/metric records: only scalars, no weights smuggled as lists
                assert all(not isinstance(v, list) for v in record.values())
        for key, array in _arrays_of(content).items():
            for name, secret in translator.items():
                same_shape = tuple(array.shape) == tuple(secret.shape)
                assert not (same_shape and np.allclose(array, secret.numpy())), (key, name)
    # The translator's tensors are not even of the classifier's shapes.
    shapes = {tuple(v.shape) for v in cnn.make_cnn(1, 2, 0).state_dict().values()}
    big = [n for n, v in translator.items() if v.ndim == 4 and tuple(v.shape) not in shapes]
    assert big, "the check above would be vacuous"


def test_run_finishes_and_reports(recorded):
    grid, run_dir = recorded
    config = json.loads((run_dir / "config.json").read_text())
    assert config["status"] == "finished"
    report = json.loads((run_dir / "disguise.json").read_text())
    assert report["published"]["labels"] == [2, 3]
    assert 0.0 <= report["disguise_quality"]["decoy_share"] <= 1.0
    assert set(report["stage_seconds"]) >= {"translator", "convert", "federated",
                                            "direct_baseline"}
    # DP on: every train reply carries a positive, non-decreasing epsilon per client.
    eps = {}
    for reply in grid.replies:
        metrics = reply.content["metrics"]
        if "epsilon" in metrics:
            part = int(metrics["partition-id"])
            assert metrics["epsilon"] > eps.get(part, 0.0)
            eps[part] = metrics["epsilon"]
    assert len(eps) == CLIENTS
    assert (run_dir / PUBLISHED).is_file() and (run_dir / OWNER / "pairs.png").is_file()
