"""DP-SGD wiring: validation, one private step, cumulative accounting across rounds."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from flwr.app import RecordDict
from opacus.accountants.analysis import rdp as rdp_analysis
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from tasks import dp_sgd
from tasks.dp_sgd import DPSettings, PrivateTrainer


def tiny_loader(n: int = 40, batch: int = 8) -> DataLoader:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(n, 4, generator=generator)
    y = (x.sum(1) > 0).long()
    return DataLoader(TensorDataset(x, y), batch_size=batch)


def one_round(state: RecordDict, settings: DPSettings,
              epochs: int = 1) -> tuple[dict[str, float], nn.Module]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.GroupNorm(2, 8), nn.ReLU(), nn.Linear(8, 2))
    trainer = PrivateTrainer(settings, state)
    module, optimizer, loader = trainer.make_private(
        model, torch.optim.SGD(model.parameters(), lr=0.1), tiny_loader(), seed=1
    )
    for _ in range(epochs):
        for x, y in loader:
            optimizer.zero_grad()
            nn.functional.cross_entropy(module(x), y).backward()
            optimizer.step()
    return trainer.save(), module


def independent_rdp_epsilon(noise: float, rate: float, steps: int, delta: float) -> float:
    """Epsilon straight from Opacus's RDP analysis functions, no accountant object."""
    orders = [1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64))
    rdp = rdp_analysis.compute_rdp(q=rate, noise_multiplier=noise, steps=steps, orders=orders)
    return float(rdp_analysis.get_privacy_spent(orders=orders, rdp=rdp, delta=delta)[0])


def test_batchnorm_is_rejected_and_groupnorm_accepted():
    assert dp_sgd.dp_problems(nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4)))
    assert dp_sgd.dp_problems(nn.Sequential(nn.Conv2d(1, 4, 3), nn.GroupNorm(2, 4))) == []
    with pytest.raises(ValueError, match="not DP-compatible"):
        dp_sgd.require_dp_compatible(nn.BatchNorm1d(3))


def test_one_private_step_changes_parameters_and_records_a_step():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 2))
    before = [p.detach().clone() for p in model.parameters()]
    state = RecordDict()
    trainer = PrivateTrainer(DPSettings(noise_multiplier=1.0, max_grad_norm=1.0), state)
    module, optimizer, loader = trainer.make_private(
        model, torch.optim.SGD(model.parameters(), lr=0.5), tiny_loader(), seed=3
    )
    x, y = next(iter(loader))
    optimizer.zero_grad()
    nn.functional.cross_entropy(module(x), y).backward()
    optimizer.step()
    assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters()))
    assert trainer.history == [(1.0, 0.2, 1)]  # q = 1 / ceil(40 / 8)
    assert trainer.epsilon() > 0
    trainer.save()
    assert dp_sgd.load_history(state) == [(1.0, 0.2, 1)]


def test_poisson_plan_matches_the_opacus_loader():
    for n, batch in [(40, 8), (800, 64), (1037, 50), (7, 16)]:
        rate, steps = dp_sgd.poisson_plan(n, batch)
        loader = tiny_loader(n, batch)
        state = RecordDict()
        model = nn.Linear(4, 2)
        _, _, private = PrivateTrainer(DPSettings(1.0, 1.0), state).make_private(
            model, torch.optim.SGD(model.parameters(), lr=0.1), loader
        )
        assert private.sample_rate == pytest.approx(rate, rel=1e-12)
        assert len(private) == steps


@pytest.mark.parametrize("accountant", ["rdp", "prv"])
def test_epsilon_is_cumulative_across_rebuilt_clients(accountant):
    """Three rounds, each with a new engine: epsilon equals one accountant over all steps."""
    settings = DPSettings(noise_multiplier=1.1, max_grad_norm=1.0, accountant=accountant)
    state, epsilons = RecordDict(), []
    for _ in range(3):
        figures, _ = one_round(state, settings)
        epsilons.append(figures["epsilon"])
        # each round's own sigma, q and steps, although the accountant merges the rounds
        assert (figures["noise_multiplier"], figures["sample_rate"], figures["dp_steps"]) \
            == (1.1, 0.2, 5)
    assert epsilons == sorted(epsilons) and epsilons[0] < epsilons[-1]
    history = dp_sgd.load_history(state)
    assert sum(steps for _, _, steps in history) == 3 * 5
    if accountant == "rdp":
        expected = independent_rdp_epsilon(1.1, 0.2, 15, 1e-5)
    else:
        from opacus.accountants import PRVAccountant

        fresh = PRVAccountant()
        fresh.history = [(1.1, 0.2, 15)]
        expected = fresh.get_epsilon(delta=1e-5)
    assert epsilons[-1] == pytest.approx(expected, abs=1e-6)


def test_cumulative_rdp_epsilon_agrees_with_dp_accounting():
    """An accountant from another library (Google's dp-accounting) gives the same order."""
    import dp_accounting
    from dp_accounting import rdp

    ours = dp_sgd.epsilon_of([(1.1, 0.2, 15)], 1e-5, "rdp")
    event = dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(0.2, dp_accounting.GaussianDpEvent(1.1)), 15
    )
    google = rdp.RdpAccountant().compose(event).get_epsilon(1e-5)
    # Different RDP orders and conversion: equal within a few percent, not to 1e-6.
    assert ours == pytest.approx(google, rel=0.1)


def test_switching_accountant_mid_run_is_refused():
    state = RecordDict()
    one_round(state, DPSettings(1.0, 1.0, accountant="rdp"))
    with pytest.raises(ValueError, match="stored accountant"):
        PrivateTrainer(DPSettings(1.0, 1.0, accountant="prv"), state)


def test_target_epsilon_noise_lands_just_under_the_target():
    rate, steps_per_epoch = dp_sgd.poisson_plan(800, 64)
    steps = 3 * 2 * steps_per_epoch
    sigma = dp_sgd.noise_for_target(4.0, 1e-5, rate, steps)
    eps = dp_sgd.epsilon_of([(sigma, rate, steps)], 1e-5)
    assert 4.0 * 0.98 <= eps <= 4.0


def test_frozen_leaves_no_per_sample_gradients():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 2))
    trainer = PrivateTrainer(DPSettings(1.0, 1.0), RecordDict())
    module, optimizer, _ = trainer.make_private(
        model, torch.optim.SGD(model.parameters(), lr=0.1), tiny_loader()
    )
    x = torch.randn(6, 4, requires_grad=True)
    with dp_sgd.frozen(module):
        module(x).sum().backward()
    assert x.grad is not None
    assert all(getattr(p, "grad_sample", None) is None and p.grad is None
               for p in model.parameters())
    assert all(p.requires_grad for p in model.parameters())
    assert trainer.history == []


@pytest.mark.parametrize("bad", [dict(noise_multiplier=-1.0, max_grad_norm=1.0),
                                 dict(noise_multiplier=1.0, max_grad_norm=0.0),
                                 dict(noise_multiplier=1.0, max_grad_norm=1.0, delta=1.0),
                                 dict(noise_multiplier=1.0, max_grad_norm=1.0, accountant="gdp2")])
def test_bad_settings_are_refused(bad):
    with pytest.raises(ValueError):
        DPSettings(**bad)


def test_empty_history_has_zero_epsilon():
    assert dp_sgd.epsilon_of([], 1e-5) == 0.0
    assert math.isfinite(dp_sgd.epsilon_of([(0.8, 0.01, 100)], 1e-5))
    assert np.isclose(dp_sgd.epsilon_of([(0.8, 0.01, 100)], 1e-5),
                      independent_rdp_epsilon(0.8, 0.01, 100, 1e-5), atol=1e-9)
