"""Class-conditional DP-DCGAN and D steps per G step, without Flower."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from flwr.app import RecordDict

from fl_sim.options import OptionError, RunConfig
from tasks import dp_sgd
from tasks.base import Partition, fedavg
from tasks.dcgan.models import build_pair
from tests.test_dcgan import task


def test_conditional_networks_take_labels_and_stay_dp_compatible():
    generator, discriminator = build_pair(28, 1, 8, 0, num_classes=10)
    y = torch.tensor([0, 3, 9])
    fake = generator(torch.randn(3, generator.latent_dim), y)
    assert fake.shape == (3, 1, 28, 28)
    assert discriminator(fake, y).shape == (3,)
    assert dp_sgd.dp_problems(discriminator) == []
    with pytest.raises(ValueError, match="needs labels"):
        generator(torch.randn(3, generator.latent_dim))


def test_the_label_changes_what_g_draws_and_what_d_says():
    generator, discriminator = build_pair(28, 1, 8, 0, num_classes=10)
    generator.eval()
    z = torch.randn(1, generator.latent_dim).repeat(2, 1)
    with torch.no_grad():
        images = generator(z, torch.tensor([1, 7]))
        assert not torch.equal(images[0], images[1])
        same = images[:1].repeat(2, 1, 1, 1)
        logits = discriminator(same, torch.tensor([1, 7]))
    assert logits[0] != logits[1]


def test_released_labels_are_balanced_and_requested():
    t = task(conditional=True, **{"gan-width": 8})
    images, labels = t.synthesize(t.initial_arrays(), 25, seed=3)
    assert images.shape == (25, 1, 28, 28) and labels.dtype == np.int64
    assert labels.tolist() == [i % 10 for i in range(25)]
    assert task(**{"gan-width": 8}).synthesize(task(**{"gan-width": 8}).initial_arrays(),
                                               2, 0)[1] is None


def test_private_conditional_round_charges_one_step_per_poisson_batch():
    t = task(conditional=True, **{"gan-width": 8, "noise-multiplier": 1.0})
    state = RecordDict()
    result = t.train(t.initial_arrays(), Partition(0, 8), state, server_round=1)
    rate, steps = dp_sgd.poisson_plan(result.num_examples, 32)
    assert dp_sgd.load_history(state) == [(1.0, rate, steps)]
    assert np.isfinite(list(result.metrics.values())).all()


@pytest.mark.parametrize(("d", "g"), [(3, 1), (1, 2)])
def test_d_and_g_steps_change_g_progress_at_the_same_privacy_cost(d, g):
    states = {}
    for key, flags in (("plain", {"gan-g-steps": 1}),
                       ("tuned", {"gan-d-steps": d, "gan-g-steps": g})):
        t = task(**{"gan-width": 8, "gan-keep-optimizer": True, **flags})
        state = RecordDict()
        t.train(t.initial_arrays(), Partition(0, 8), state, server_round=1)
        states[key] = state
    history = {k: dp_sgd.load_history(s) for k, s in states.items()}
    assert history["plain"] == history["tuned"]  # privacy is spent per D step only
    d_steps = history["plain"][0][2]

    def adam_steps(state, owner):
        saved = state["dcgan-optimizers"].to_torch_state_dict()
        return int(next(v for k, v in saved.items() if k.startswith(f"{owner}.")
                        and k.endswith(".step")))

    assert adam_steps(states["plain"], "g") == d_steps
    assert adam_steps(states["tuned"], "g") == d_steps // d * g
    assert adam_steps(states["tuned"], "d") == d_steps


@pytest.mark.slow
def test_short_conditional_run_beats_chance_on_train_on_synthetic(tmp_path):
    """Two non-private rounds on the 8x8 digits: TSTR accuracy must clear 10% clearly."""
    t = task(tmp_path, conditional=True, dp=False, clients=2, lr=2e-3,
             **{"gan-width": 16, "local-epochs": 2, "batch-size": 32})
    arrays, states = t.initial_arrays(), [RecordDict(), RecordDict()]
    for server_round in (1, 2):
        arrays = fedavg([t.train(arrays, Partition(i, 2), states[i], server_round)
                         for i in range(2)])
    metrics = t.central_evaluate(2, arrays)
    assert metrics["tstr_accuracy"] > 0.3, metrics
    assert metrics["real_data_accuracy"] > 0.85
    t.artifacts(tmp_path).after_round(2, arrays)
    assert (tmp_path / "samples" / "round_002.png").exists()


@pytest.mark.parametrize(("overrides", "flag"), [
    ({"task": "classifier", "conditional": True}, "--conditional"),
    ({"task": "dcgan", "gan-d-steps": 0}, "--gan-d-steps"),
    ({"task": "dcgan", "gan-g-steps": 0}, "--gan-g-steps"),
    ({"task": "dcgan", "gan-ema": 1.0}, "--gan-ema"),
    ({"task": "dcgan", "gan-d-beta1": -0.1}, "--gan-d-beta1"),
])
def test_bad_release_and_tuning_flags_name_the_flag(overrides, flag):
    with pytest.raises(OptionError) as error:
        RunConfig.from_mapping(overrides)
    assert error.value.flag == flag


def test_label_agreement_is_the_reference_cnns_reading_of_each_fake_against_its_label(
        tmp_path):
    t = task(tmp_path, conditional=True, **{"gan-width": 8})
    arrays = t.initial_arrays()
    metrics = t.central_evaluate(0, arrays)
    assert "label_agreement" in t.server_metrics
    fakes = t.generate(arrays, len(t.images.test_x), t.seed + 1)  # what the server scores
    _, probs = t.scorer.reference.embed(fakes)
    labels = np.arange(len(fakes)) % 10
    assert metrics["label_agreement"] == float((probs.argmax(1) == labels).mean())
    assert "label_agreement" not in task(**{"gan-width": 8}).server_metrics
