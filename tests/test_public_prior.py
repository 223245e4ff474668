"""The DP-DCGAN's public prior: public data, frozen features, no effect on the accounting."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from flwr.app import RecordDict

from fl_sim.config import ConfigError, RunConfig
from tasks import dp_sgd, public_prior
from tasks.base import Partition
from tasks.dcgan import DCGANTask, split_state
from tasks.dcgan_models import build_pair
from tests.conftest import run_cli


def make_task(tmp_path=None, **overrides) -> DCGANTask:
    settings = {"task": "dcgan", "clients": 5, "batch-size": 64, "num-server-rounds": 2,
                "local-epochs": 1, "gan-width": 8, **overrides}
    config = RunConfig.from_mapping(settings).to_run_config()
    if tmp_path is not None:
        config["run-dir"] = str(tmp_path)
    return DCGANTask(config)


@pytest.fixture
def quick(monkeypatch):
    """One public epoch of each phase: these tests check plumbing, not quality."""
    monkeypatch.setattr(public_prior, "FEATURE_EPOCHS", 1)
    monkeypatch.setattr(public_prior, "GAN_EPOCHS", 1)


@pytest.mark.parametrize(("prior", "dataset", "expected"), [
    ("auto", "mnist5k", "digits"), ("auto", "mnist", "digits"),
    ("auto", "digits", "none"), ("auto", "fashion-mnist", "none"), ("auto", "cifar10", "none"),
    ("none", "mnist5k", "none"), ("digits", "fashion-mnist", "digits"),
])
def test_auto_gives_the_digits_prior_to_the_mnist_data_sets_only(prior, dataset, expected):
    assert public_prior.resolve(prior, dataset) == expected


@pytest.mark.parametrize(("overrides", "words"), [
    ({"dataset": "digits", "gan-public-prior": "digits"}, "would be the private data"),
    ({"gan-public-prior": "imagenet"}, "allowed: auto, digits, none"),
])
def test_bad_priors_name_the_flag(overrides, words):
    with pytest.raises(ConfigError) as error:
        RunConfig.from_mapping({"task": "dcgan", **overrides})
    assert error.value.flag == "--gan-public-prior" and words in str(error.value)


def test_cli_refuses_the_private_data_as_public_prior(tmp_path):
    done = run_cli("run", "--task", "dcgan", "--out", str(tmp_path), "--dataset", "digits",
                   "--gan-public-prior", "digits", timeout=120)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and "--gan-public-prior" in lines[0]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("size", [28, 32, 64])
def test_public_digits_are_mnist_style(size):
    x, y = public_prior.public_digits(size)
    assert x.shape == (1797, 1, size, size) and x.dtype == np.float32
    assert x.min() >= -1 and x.max() <= 1 and sorted(set(y)) == list(range(10))
    border = (size - round(size * 20 / 28)) // 2
    assert np.all(x[:, :, :border] < -0.99) and np.all(x[:, :, :, -border:] < -0.99)
    assert (x > 0.5).mean() > 0.05  # solid strokes, not a grey blur


def test_frozen_layers_are_the_middle_convolutions():
    _, d = build_pair(32, 1, 8, 0)
    convs = [m for m in d.net if isinstance(m, torch.nn.Conv2d)]
    assert public_prior.frozen_layers(d) == convs[1:-1] and len(convs) == 4
    public_prior.freeze(d)
    trainable = sum(p.numel() for p in d.parameters() if p.requires_grad)
    assert trainable == sum(p.numel() for p in d.parameters()) - sum(
        p.numel() for layer in convs[1:-1] for p in layer.parameters())


def test_pretraining_learns_digits_and_is_deterministic(tmp_path, quick):
    first = make_task(tmp_path / "a").initial_arrays().to_torch_state_dict()
    second = make_task(tmp_path / "b").initial_arrays().to_torch_state_dict()
    assert all(torch.equal(first[k], second[k]) for k in first)
    record = json.loads((tmp_path / "a" / "public_prior.json").read_text())
    assert record["prior"] == "digits" and record["public_feature_accuracy"] > 0.6  # one epoch
    plain = make_task(**{"gan-public-prior": "none"}).initial_arrays().to_torch_state_dict()
    assert not torch.equal(first["generator.net.0.weight"], plain["generator.net.0.weight"])


def test_private_step_leaves_public_features_alone_and_is_accounted_as_before(quick):
    t = make_task(**{"noise-multiplier": 1.0})
    arrays = t.initial_arrays()
    state = RecordDict()
    result = t.train(arrays, Partition(0, 5), state, server_round=1)
    _, d0 = split_state(arrays.to_torch_state_dict())
    _, d1 = split_state(result.arrays.to_torch_state_dict())
    _, d = t._pair()
    frozen = {f"net.{i}.{name}" for i, m in enumerate(d.net)
              if m in public_prior.frozen_layers(d) for name, _ in m.named_parameters()}
    assert frozen and all(torch.equal(d0[k], d1[k]) for k in frozen)
    assert all(not torch.equal(d0[k], d1[k]) for k in d0 if k not in frozen
               and k.endswith("weight"))
    rate, steps = dp_sgd.poisson_plan(result.num_examples, 64)
    assert dp_sgd.load_history(state) == [(1.0, rate, steps)]
    assert result.metrics["epsilon"] == pytest.approx(
        dp_sgd.epsilon_of([(1.0, rate, steps)], 1e-5, "rdp"), abs=1e-9)


def test_round_zero_evaluates_the_public_generator(tmp_path, quick):
    t = make_task(tmp_path)
    metrics = t.central_evaluate(0, t.initial_arrays())
    assert np.isfinite(metrics["fid"]) and (tmp_path / "samples" / "round_000.png").exists()
    assert (tmp_path / "public_prior.json").exists()
