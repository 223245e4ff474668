"""DP-DCGAN quality knobs: Adam state kept per client, D learning rate, label smoothing, width."""

from __future__ import annotations

import pytest
import torch
from flwr.app import RecordDict

from fl_sim.options import OptionError, RunConfig
from tasks import dp_sgd
from tasks.base import Partition
from tasks.dcgan.models import build_pair
from tasks.dcgan.training import OPTIMIZER_KEY, GANSteps, gan_round, load_optimizers
from tasks.dcgan.weights import split_state
from tests.test_dcgan import task


def _adam_steps(state: RecordDict) -> dict[str, int]:
    saved = state[OPTIMIZER_KEY].to_torch_state_dict()
    return {k: int(v) for k, v in saved.items() if k.endswith(".step")}


def test_adam_state_survives_rounds_and_steps_accumulate():
    t = task(**{"noise-multiplier": 1.0})
    arrays, state = t.initial_arrays(), RecordDict()
    result = t.train(arrays, Partition(0, 8), state, 1)
    _, steps = dp_sgd.poisson_plan(result.num_examples, 32)
    g_steps = t.g_steps
    assert g_steps == 3  # the default: three G steps after each D step

    def by_owner(counts):
        return {owner: {v for k, v in counts.items() if k.startswith(f"{owner}.")}
                for owner in ("g", "d")}

    # every D parameter stepped each D step, every G parameter each G step
    assert by_owner(_adam_steps(state)) == {"g": {g_steps * steps}, "d": {steps}}
    t.train(result.arrays, Partition(0, 8), state, 2)
    assert by_owner(_adam_steps(state)) == {"g": {2 * g_steps * steps}, "d": {2 * steps}}
    # a fresh optimizer pair resumes exactly the stored moments
    generator, discriminator = build_pair(28, 1, 32, 0)
    g_opt = torch.optim.Adam(generator.parameters())
    d_opt = torch.optim.Adam(discriminator.parameters())
    assert load_optimizers(state, g_opt, d_opt)
    saved = state[OPTIMIZER_KEY].to_torch_state_dict()
    assert torch.equal(d_opt.state_dict()["state"][0]["exp_avg"], saved["d.0.exp_avg"])
    assert float(g_opt.state_dict()["state"][1]["step"]) == 2 * g_steps * steps
    # the privacy accounting is unchanged: one accountant step per D step
    assert dp_sgd.load_history(state) == [(1.0, 1 / steps, 2 * steps)]


def test_fresh_optimizers_without_the_flag():
    t = task(**{"gan-keep-optimizer": False})
    state = RecordDict()
    t.train(t.initial_arrays(), Partition(0, 8), state, 1)
    assert OPTIMIZER_KEY not in state


def test_d_lr_sets_only_the_discriminators_step():
    """One no-DP step from the same start: D's first Adam step is lr-sized per coordinate."""
    for d_lr in (1e-3, 4e-3):
        generator, discriminator = build_pair(28, 1, 8, 0)
        d0 = {k: v.clone() for k, v in discriminator.state_dict().items()}
        loader = [(torch.rand(8, 1, 28, 28) * 2 - 1,)]
        g_opt = torch.optim.Adam(generator.parameters(), lr=1e-3, betas=(0.5, 0.999))
        d_opt = torch.optim.Adam(discriminator.parameters(), lr=d_lr, betas=(0.5, 0.999))
        gan_round(generator, discriminator, loader, g_opt, d_opt,
                  GANSteps(epochs=1, fakes=8, real_label=0.9))
        moved = max((discriminator.state_dict()[k] - d0[k]).abs().max().item() for k in d0)
        assert moved == pytest.approx(d_lr, rel=1e-3)  # Adam's first step is lr * sign(g)


def test_real_label_smoothing_changes_the_d_loss_floor():
    """With target 0.9, BCE on a real logit cannot fall below the target's entropy."""
    generator, discriminator = build_pair(28, 1, 8, 0)
    loader = [(torch.zeros(4, 1, 28, 28),)]
    opt = torch.optim.SGD(discriminator.parameters(), lr=0.0)
    g_opt = torch.optim.SGD(generator.parameters(), lr=0.0)
    torch.manual_seed(1)
    smooth = gan_round(generator, discriminator, loader, g_opt, opt,
                       GANSteps(epochs=1, fakes=4, real_label=0.9))["d_loss"]
    torch.manual_seed(1)
    plain = gan_round(generator, discriminator, loader, g_opt, opt,
                      GANSteps(epochs=1, fakes=4, real_label=1.0))["d_loss"]
    logits = discriminator(torch.zeros(4, 1, 28, 28)).detach()
    # the real half differs by 0.1 * mean(logit) / 2 (BCE is linear in the target)
    assert smooth - plain == pytest.approx(0.1 * logits.mean().item() / 2, rel=1e-4)


def test_width_builds_narrower_networks():
    narrow = task(**{"gan-width": 8})
    g, d = split_state(narrow.initial_arrays().to_torch_state_dict())
    assert g["net.0.weight"].shape == (64, 16, 7, 7) and d["net.0.weight"].shape == (8, 1, 4, 4)


@pytest.mark.parametrize(("key", "value"), [("gan-real-label", 0.4), ("gan-real-label", 1.1),
                                            ("gan-d-lr", -1.0), ("gan-width", 2)])
def test_bad_values_name_the_flag(key, value):
    with pytest.raises(OptionError, match=f"--{key}"):
        RunConfig.from_mapping({"task": "dcgan", key: value})


@pytest.mark.parametrize("dp", [True, False])
def test_fakes_per_step_balance_the_expected_real_batch(monkeypatch, dp):
    """Under DP as many fakes as Poisson's expected reals (N q); without DP the batch size."""
    import tasks.dcgan.task as dcgan

    seen = []
    real_round = dcgan.gan_round

    def spy(*args, **kwargs):
        seen.append(args[5].fakes)
        return real_round(*args, **kwargs)

    monkeypatch.setattr(dcgan, "gan_round", spy)
    t = task(dp=dp)
    result = t.train(t.initial_arrays(), Partition(0, 8), RecordDict(), 1)
    n = result.num_examples
    rate, _ = dp_sgd.poisson_plan(n, 32)
    assert seen == ([round(n * rate)] if dp else [32])
    assert (n, seen[0]) == ((180, 30) if dp else (180, 32))  # 1,438 digits / 8 clients, q = 1/6
