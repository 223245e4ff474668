"""Classifier task without Ray: local training, cumulative DP epsilon, evaluation."""

from __future__ import annotations

import dp_accounting
import numpy as np
import pytest
from flwr.app import RecordDict

from fl_sim.options import RunConfig
from tasks import dp_sgd
from tasks.base import Partition
from tasks.classifier import CLIENT_EVAL_FRACTION, ClassifierTask, local_split


def _task(**overrides) -> ClassifierTask:
    settings = {"task": "classifier", "dataset": "digits", "clients": 4, **overrides}
    return ClassifierTask(RunConfig.from_mapping(settings))


def _independent_epsilon(sigma: float, rate: float, steps: int, delta: float) -> float:
    """Google's dp-accounting RDP accountant (not Opacus) for the same mechanism."""
    accountant = dp_accounting.rdp.RdpAccountant()
    event = dp_accounting.PoissonSampledDpEvent(rate, dp_accounting.GaussianDpEvent(sigma))
    accountant.compose(event, steps)
    return accountant.get_epsilon(delta)


def test_local_split_is_disjoint_and_complete():
    train, held = local_split(100, 3, 1)
    assert len(held) == round(100 * CLIENT_EVAL_FRACTION)
    assert sorted(np.concatenate([train, held]).tolist()) == list(range(100))


def test_dp_epsilon_is_cumulative_across_rounds_and_matches_dp_accounting():
    task = _task(**{"num-server-rounds": 2, "batch-size": 32, "local-epochs": 1})
    state = RecordDict()
    arrays = task.initial_arrays()
    partition = Partition(0, 4)
    first = task.train(arrays, partition, state, 1)
    second = task.train(first.arrays, partition, state, 2)
    rate, per_epoch = dp_sgd.poisson_plan(first.num_examples, 32)
    assert first.metrics["epsilon"] == pytest.approx(
        _independent_epsilon(1.0, rate, per_epoch, 1e-5), rel=0.05)
    assert second.metrics["epsilon"] == pytest.approx(
        _independent_epsilon(1.0, rate, 2 * per_epoch, 1e-5), rel=0.05)
    assert second.metrics["epsilon"] > first.metrics["epsilon"]


def test_target_epsilon_sets_the_noise_for_the_whole_run():
    task = _task(**{"num-server-rounds": 3, "target-epsilon": 4.0})
    planned = task.resolved["planned-epsilon"]
    assert max(planned) <= 4.0 and max(planned) > 3.9
    assert task.noise_multiplier > 0.5


def test_training_without_dp_learns_and_evaluates():
    task = _task(dp=False, **{"local-epochs": 3})
    before = task.central_evaluate(0, task.initial_arrays())
    result = task.train(task.initial_arrays(), Partition(1, 4), RecordDict(), 1)
    assert "epsilon" not in result.metrics
    after = task.central_evaluate(1, result.arrays)
    assert after["accuracy"] > before["accuracy"] + 0.3
    local = task.evaluate(result.arrays, Partition(1, 4))
    assert local.num_examples == len(task.client_data(Partition(1, 4))[2]) > 0


@pytest.mark.parametrize("dp", [False, True])
def test_fedprox_pull_holds_the_model_at_the_global_weights(dp):
    """With lr * mu = 1 each proximal step returns every weight to the global model.

    Under DP the term cannot ride in the loss (Opacus drops parameter-only gradients);
    the decoupled pull must still act, with and without Opacus in the loop.
    """
    task = _task(dp=dp, **{"local-epochs": 1, "lr": 0.05})
    start = task.initial_arrays()
    held = task.train(start, Partition(0, 4), RecordDict(), 1, proximal_mu=1 / 0.05)
    free = task.train(start, Partition(0, 4), RecordDict(), 1)
    for name, array in start.items():
        np.testing.assert_allclose(held.arrays[name].numpy(), array.numpy(), atol=1e-6)
    moved = max(float(np.abs(free.arrays[n].numpy() - a.numpy()).max()) for n, a in start.items())
    assert moved > 1e-3
