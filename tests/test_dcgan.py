"""The DP-DCGAN task without Flower: models, one private round, cumulative epsilon."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from flwr.app import RecordDict

from fl_sim.options import RunConfig
from tasks import dp_sgd
from tasks.base import Partition, Workspace
from tasks.dcgan.models import Discriminator, Generator, build_pair
from tasks.dcgan.task import DCGANTask
from tasks.dcgan.weights import split_state
from tests.test_dp_sgd import independent_rdp_epsilon


def task(tmp_path=None, **overrides) -> DCGANTask:
    settings = {"task": "dcgan", "clients": 8, "dataset": "digits", "batch-size": 32,
                "num-server-rounds": 2, "local-epochs": 1, **overrides}
    workspace = Workspace(tmp_path) if tmp_path is not None else Workspace()
    return DCGANTask(RunConfig.from_mapping(settings), workspace)


@pytest.mark.parametrize("size", [28, 32, 64])
@pytest.mark.parametrize("channels", [1, 3])
def test_shapes_and_dp_validation(size, channels):
    generator, discriminator = build_pair(size, channels, 8, 0)
    fake = generator(torch.randn(3, generator.latent_dim))
    assert fake.shape == (3, channels, size, size)
    assert fake.min() >= -1 and fake.max() <= 1
    assert discriminator(fake).shape == (3,)
    assert dp_sgd.dp_problems(discriminator) == []
    assert dp_sgd.dp_problems(generator)  # BatchNorm: fine for G, refused for D


def test_dcgan_init_is_normal_0_02():
    generator, discriminator = build_pair(32, 1, 32, 0)
    weights = torch.cat([m.weight.flatten() for m in discriminator.modules()
                         if isinstance(m, torch.nn.Conv2d)])
    assert abs(weights.mean().item()) < 2e-3
    assert weights.std().item() == pytest.approx(0.02, rel=0.05)


def test_private_round_trains_d_and_g_and_counts_steps():
    t = task(**{"noise-multiplier": 1.0})
    arrays = t.initial_arrays()
    state = RecordDict()
    result = t.train(arrays, Partition(0, 8), state, server_round=1)
    before, after = arrays.to_torch_state_dict(), result.arrays.to_torch_state_dict()
    g0, d0 = split_state(before)
    g1, d1 = split_state(after)
    assert any(not torch.equal(d0[k], d1[k]) for k in d0)
    assert any(not torch.equal(g0[k], g1[k]) for k in g0 if g0[k].is_floating_point())
    n = result.num_examples
    rate, steps = dp_sgd.poisson_plan(n, 32)
    assert dp_sgd.load_history(state) == [(1.0, rate, steps)]
    assert np.isfinite(list(result.metrics.values())).all()
    assert 0 <= result.metrics["d_real_accuracy"] <= 1 and result.metrics["epsilon"] > 0


def test_epsilon_after_rounds_matches_an_independent_accountant():
    t = task(**{"noise-multiplier": 0.9})
    arrays, state, epsilons = t.initial_arrays(), RecordDict(), []
    for server_round in (1, 2, 3):
        result = t.train(arrays, Partition(1, 8), state, server_round)
        arrays = result.arrays
        epsilons.append(result.metrics["epsilon"])
    assert epsilons[0] < epsilons[1] < epsilons[2]
    rate, steps = dp_sgd.poisson_plan(result.num_examples, 32)
    expected = independent_rdp_epsilon(0.9, rate, 3 * steps, 1e-5)
    assert epsilons[-1] == pytest.approx(expected, abs=1e-6)


def test_target_epsilon_is_met_just_under_after_the_planned_run():
    t = task(**{"target-epsilon": 3.0, "num-server-rounds": 2, "local-epochs": 1})
    sigma = t.noise_multiplier
    assert sigma != 1.0 and t.resolved["noise-multiplier"] == sigma
    arrays = t.initial_arrays()
    finals = []
    for index in (0, 1):
        state = RecordDict()
        for server_round in (1, 2):
            result = t.train(arrays, Partition(index, 8), state, server_round)
        finals.append(result.metrics["epsilon"])
    assert max(finals) <= 3.0 and max(finals) >= 3.0 * 0.98
    assert finals == pytest.approx(t.resolved["planned-epsilon"][:2], abs=1e-9)


def test_no_dp_reports_no_epsilon():
    t = task(dp=False)
    result = t.train(t.initial_arrays(), Partition(0, 8), RecordDict(), 1)
    assert "epsilon" not in result.metrics and t.resolved == {"dp": False, "gan-aug-shift": 0}


def test_client_evaluation_uses_no_real_data():
    t = task()
    evaluation = t.evaluate(t.initial_arrays(), Partition(0, 8))
    assert evaluation.num_examples == 256
    assert set(evaluation.metrics) == set(t.evaluate_metrics) == {"g_loss", "d_fake_accuracy"}


def test_central_evaluation_writes_nothing_and_the_artifacts_writer_writes_the_round(tmp_path):
    t = task(tmp_path)
    arrays = t.initial_arrays()
    metrics = t.central_evaluate(0, arrays)
    assert set(metrics) == {"fid", "inception_score", "reference_accuracy"}
    assert np.isfinite(list(metrics.values())).all() and metrics["fid"] > 0
    # only the reference classifier's cache, which the metrics need, is in the folder
    assert sorted(p.name for p in tmp_path.iterdir()) == ["reference_classifier.json",
                                                          "reference_classifier.pt"]
    assert t.summary(arrays) == metrics  # the same measurement, no sentinel round
    t.artifacts(tmp_path).after_round(0, arrays)
    for name in ("samples/round_000.png", "generator.pt", "discriminator.pt",
                 "weights/round_000.pt", "partitions.json"):
        assert (tmp_path / name).exists(), name
    assert not list(tmp_path.rglob(".*.tmp*"))  # atomic writes leave no temporary file
    state = torch.load(tmp_path / "generator.pt")
    Generator(28, 1, 32).load_state_dict(state)
    Discriminator(28, 1, 32).load_state_dict(torch.load(tmp_path / "discriminator.pt"))


def test_expanded_weights_mode_is_refused_up_front():
    with pytest.raises(ValueError, match="grad-sample-mode ew"):
        task(**{"grad-sample-mode": "ew"}).initial_arrays()
    assert task(**{"grad-sample-mode": "ew", "dp": False}).initial_arrays()


def test_fedprox_pull_holds_both_networks_at_the_global_weights():
    """lr * mu = 1: after every step the proximal pull returns G's and D's parameters to
    the global ones (D's through its Opacus wrapper); without mu they move."""
    t = task(**{"noise-multiplier": 1.0, "lr": 1e-3, "gan-d-lr": 1e-3})
    arrays = t.initial_arrays()
    held = t.train(arrays, Partition(0, 8), RecordDict(), 1, proximal_mu=1e3)
    free = t.train(arrays, Partition(0, 8), RecordDict(), 1)
    start_g, start_d = t._load(arrays)
    for result, should_move in ((held, False), (free, True)):
        g, d = t._load(result.arrays)
        gaps = [float((p - q).abs().max()) for net, ref in ((g, start_g), (d, start_d))
                for p, q in zip(net.parameters(), ref.parameters(), strict=True)]
        assert (max(gaps) > 1e-4) is should_move, max(gaps)


def test_planned_privacy_costs_one_accountant_call_per_distinct_client_size(monkeypatch):
    """A large population of equal clients plans its epsilon in a few calls, not one each."""
    t = task(clients=64, **{"target-epsilon": 5.0})
    calls = []
    real = dp_sgd.epsilon_of
    monkeypatch.setattr(dp_sgd, "epsilon_of", lambda *a, **k: calls.append(a) or real(*a, **k))
    resolved = t.resolved
    assert len(resolved["planned-epsilon"]) == 64
    assert len(calls) == len(set(t.plans)) < 64
    assert max(resolved["planned-epsilon"]) <= 5.0 + 1e-6
