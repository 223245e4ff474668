"""Frozen arrays (the DCGAN's guide) reach every client and no strategy aggregates them."""

from __future__ import annotations

import json

import numpy as np
import pytest
from flwr.app import ConfigRecord
from flwr.common import FitIns, Parameters

from fl_core.flower import recorddict_compat as compat
from fl_sim.app.frozen import FROZEN_KEY, frozen_of, train_config
from fl_sim.options import RunConfig
from strategies import registry
from strategies.secagg import ARRAY_KEYS, ours_from_legacy_train
from tests.fakes import FakeGrid, arrays, reply, task_identity

MODEL = arrays(np.ones(3), np.ones((2, 2)))
TRAINED = arrays(np.full(3, 1.5), np.full((2, 2), 0.5))  # server-side clipping needs a change
GUIDE = arrays(np.full(5, 7.0), np.full(4, -1.0), np.zeros(2))


@pytest.fixture(autouse=True)
def _identity():
    task_identity()
    np.random.seed(0)


@pytest.mark.parametrize("overrides", [
    {"strategy": "fedavg"}, {"strategy": "fedprox"}, {"strategy": "fedadam"},
    {"strategy": "dp-fedavg", "dp-clipping": "server"},
    {"strategy": "dp-fedavg", "dp-clipping": "client"},
    {"strategy": "dp-fedavg", "dp-clip": "adaptive", "server-noise-multiplier": 0.1},
])
def test_every_strategy_sends_the_frozen_arrays_and_aggregates_only_the_model(overrides):
    strategy = registry.build(RunConfig.from_mapping({"clients": 4, **overrides}))
    messages = list(strategy.configure_train(1, MODEL, train_config(GUIDE), FakeGrid(4)))
    assert messages
    for message in messages:
        assert len(message.content.array_records) == 1  # the model alone
        sent = frozen_of(message.content["config"])
        assert sent is not None and list(sent.keys()) == list(GUIDE.keys())
        assert np.array_equal(sent["p0"].numpy(), GUIDE["p0"].numpy())
    # clients send back the model alone; the aggregate has exactly the model's arrays
    aggregated, _ = strategy.aggregate_train(1, [reply(m, TRAINED) for m in messages])
    assert list(aggregated.keys()) == list(MODEL.keys())


def test_the_frozen_arrays_survive_secaggs_legacy_train_message():
    config = {**dict(train_config(GUIDE)), ARRAY_KEYS: json.dumps(list(MODEL.keys()))}
    params = compat.arrayrecord_to_parameters(MODEL, keep_input=True)
    legacy = compat.fitins_to_recorddict(FitIns(Parameters(params.tensors, params.tensor_type),
                                                config), keep_input=True)

    class Msg:
        content = legacy

    ours_from_legacy_train(Msg)
    assert list(Msg.content["arrays"].keys()) == list(MODEL.keys())
    assert list(frozen_of(Msg.content["config"]).keys()) == list(GUIDE.keys())


def test_no_frozen_arrays_means_an_empty_train_config():
    assert train_config(None) == ConfigRecord() and FROZEN_KEY not in train_config(None)
    assert frozen_of(ConfigRecord()) is None
