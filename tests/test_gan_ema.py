"""EMA of the generator: the average by hand, and how it travels with the federated model."""

from __future__ import annotations

import pytest
import torch
from flwr.app import RecordDict

from tasks.base import Partition
from tasks.dcgan.ema import EMA_PREFIX, GeneratorEMA, decay_at, ema_state
from tasks.dcgan.weights import split_state
from tests.test_dcgan import task


def test_decay_warms_up_then_holds():
    assert decay_at(0.99, 0) == pytest.approx(0.1)
    assert decay_at(0.99, 10) == pytest.approx(11 / 20)
    assert decay_at(0.99, 10_000) == 0.99
    assert decay_at(0.999, 780) == pytest.approx(781 / 790)  # the cap a default run meets
    assert decay_at(0.999, 0, warmup=False) == decay_at(0.999, 780, warmup=False) == 0.999


def test_average_matches_the_hand_computed_recursion():
    net = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        net.weight.fill_(0.0)
    ema = GeneratorEMA(net.state_dict(), 0.5, first_step=100)  # past warm-up: beta = 0.5
    expected = 0.0
    for value in (1.0, 2.0, 4.0):
        with torch.no_grad():
            net.weight.fill_(value)
        ema.update(net)
        expected = 0.5 * expected + 0.5 * value
    assert float(ema.state["weight"]) == pytest.approx(expected)  # 2.375
    assert ema.step == 103


def test_bad_decay_is_refused():
    with pytest.raises(ValueError, match="decay"):
        GeneratorEMA({}, 1.0)


def test_ema_travels_with_the_model_and_feeds_the_samples():
    t = task(**{"gan-ema": 0.9, "noise-multiplier": 1.0})
    arrays = t.initial_arrays()
    start = arrays.to_torch_state_dict()
    g0, _ = split_state(start)
    assert {k for k in ema_state(start)} == set(g0)  # starts as G itself
    result = t.train(arrays, Partition(0, 8), RecordDict(), server_round=1)
    after = result.arrays.to_torch_state_dict()
    g1, _ = split_state(after)
    e1 = ema_state(after)
    name = next(k for k in g1 if k.endswith("weight"))
    # moved from the start, but not all the way to the trained G
    assert not torch.equal(e1[name], g0[name]) and not torch.equal(e1[name], g1[name])
    released = t.generate(result.arrays, 4, 0)
    raw = task(**{"noise-multiplier": 1.0, "gan-ema": 0.0}).generate(
        type(result.arrays)({k: v for k, v in after.items() if not k.startswith(EMA_PREFIX)}),
        4, 0)
    assert released.shape == raw.shape and not torch.allclose(
        torch.from_numpy(released), torch.from_numpy(raw))


def test_without_ema_no_extra_weights_travel():
    arrays = task(**{"gan-ema": 0.0}).initial_arrays()
    assert not ema_state(arrays.to_torch_state_dict())


def test_weights_without_an_ema_release_g_itself_whatever_the_setting():
    """A run folder from before --gan-ema existed has no EMA weights; today's default is on."""
    plain = task(**{"gan-ema": 0.0}).initial_arrays()
    with_setting = task(**{"gan-ema": 0.99})
    assert torch.equal(torch.from_numpy(with_setting.generate(plain, 4, 0)),
                       torch.from_numpy(task(**{"gan-ema": 0.0}).generate(plain, 4, 0)))
