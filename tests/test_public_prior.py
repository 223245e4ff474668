"""The DP-DCGAN's public prior: public data, frozen features, no effect on the accounting."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch
from flwr.app import RecordDict

from fl_sim.config import ConfigError, RunConfig
from tasks import dp_sgd, font_digits, public_prior
from tasks.base import Partition
from tasks.dcgan import DCGANTask, split_state
from tasks.data import CIFAR_FILES
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
    """One public epoch of each phase on 630 digits: these tests check plumbing."""
    monkeypatch.setattr(public_prior, "COPIES", 3)
    monkeypatch.setattr(public_prior, "FEATURE_EPOCHS", 1)
    monkeypatch.setattr(public_prior, "GAN_EPOCHS", 1)


@pytest.mark.parametrize(("prior", "dataset", "expected"), [
    ("auto", "mnist5k", "digits"), ("auto", "mnist", "digits"),
    ("auto", "digits", "none"), ("auto", "fashion-mnist", "none"), ("auto", "cifar10", "none"),
    ("none", "mnist5k", "none"), ("digits", "fashion-mnist", "digits"),
])
def test_auto_gives_the_digits_prior_to_the_mnist_data_sets_only(prior, dataset, expected):
    assert public_prior.resolve(prior, dataset) == expected


def cifar_dir(root):
    """Tiny CIFAR-10 python batches: colour data the grey prior must refuse."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in CIFAR_FILES:
        entry = {b"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8),
                 b"labels": [0, 1, 2, 9]}
        (folder / name).write_bytes(pickle.dumps(entry))
    return root


@pytest.mark.parametrize(("overrides", "words"), [
    ({"dataset": "cifar10", "gan-public-prior": "digits"}, "one-channel images"),
    ({"gan-public-prior": "imagenet"}, "allowed: auto, digits, none"),
])
def test_bad_priors_name_the_flag(overrides, words, tmp_path):
    with pytest.raises(ConfigError) as error:
        RunConfig.from_mapping({"task": "dcgan", "data-dir": str(cifar_dir(tmp_path)),
                                **overrides})
    assert error.value.flag == "--gan-public-prior" and words in str(error.value)


def test_the_digits_prior_is_allowed_for_the_private_digits_data_set():
    # The public digits are drawn from fonts, not scikit-learn's digits: no overlap.
    config = RunConfig.from_mapping({"task": "dcgan", "dataset": "digits",
                                     "gan-public-prior": "digits"}).to_run_config()
    assert DCGANTask(config).prior == "digits"


def test_cli_refuses_a_grey_prior_for_colour_data(tmp_path):
    out = tmp_path / "out"
    done = run_cli("run", "--task", "dcgan", "--out", str(out), "--dataset", "cifar10",
                   "--data-dir", str(cifar_dir(tmp_path / "data")),
                   "--gan-public-prior", "digits", timeout=120)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and "--gan-public-prior" in lines[0]
    assert not out.exists() or list(out.iterdir()) == []


def test_every_font_draws_ten_different_digits():
    images, labels = font_digits.glyphs()
    assert images.shape == (210, 1, font_digits.GLYPH, font_digits.GLYPH)
    assert labels.tolist() == list(range(10)) * 21
    ink = (images > 0.5).flatten(1)
    assert bool((ink.sum(1) > 20).all())  # no empty (missing) glyph
    for face in ink.view(21, 10, -1):  # no face maps two digits to one shape
        assert len({tuple(row.tolist()) for row in face}) == 10


@pytest.fixture(scope="module")
def public28():
    """2,100 public digits (10 copies of each glyph; a run draws 30)."""
    return font_digits.render(10, 28, 0)


def test_public_digits_are_laid_out_as_mnist(public28):
    x, y = public28
    assert x.dtype == np.float32 and y.dtype == np.int64 and len(x) == len(y)
    assert 0.99 * 2100 <= len(x) <= 2100 and np.bincount(y).min() >= 0.98 * 210  # balanced
    assert x.min() == -1.0 and x.max() <= 1.0 and x.shape[1:] == (1, 28, 28)
    ink = x[:, 0] > 0.0
    rows, cols = ink.any(2), ink.any(1)
    # MNIST's layout: the longer side of the digit's box is 20 of 28 pixels (the
    # 2 x 2 average may add a faint pixel), and the centre of mass is the centre.
    sides = np.maximum(rows.sum(1), cols.sum(1))
    assert np.median(sides) in (20, 21) and np.all(sides <= 24)
    mass = (x[:, 0] + 1.0) / 2.0
    grid = np.arange(28)
    centre_y = (mass.sum(2) * grid).sum(1) / mass.sum((1, 2))
    centre_x = (mass.sum(1) * grid).sum(1) / mass.sum((1, 2))
    assert np.abs(centre_y - 13.5).max() <= 1.0 and np.abs(centre_x - 13.5).max() <= 1.0


def test_public_digits_have_even_solid_strokes(public28):
    x, _ = public28
    ink = (x[:, 0] > 0.0).mean((1, 2))
    solid = (x[:, 0] > 0.5).sum((1, 2)) / (x[:, 0] > -0.5).sum((1, 2)).clip(1)
    # mnist5k's digits ink 13% of the image on average, 7-21% for 90% of them (and
    # 66% of their lit pixels are solid). Bold and light faces would spread far wider
    # without the stroke-width normalisation.
    assert 0.10 < ink.mean() < 0.22 and np.percentile(ink, 95) < 0.30
    assert np.percentile(ink, 5) > 0.05 and solid.mean() > 0.5


def test_public_digits_are_seeded():
    first, again, other = (font_digits.render(2, 28, seed)[0] for seed in (0, 0, 1))
    assert np.array_equal(first, again) and not np.array_equal(first[:100], other[:100])


@pytest.mark.parametrize("size", [32, 64])
def test_public_digits_fit_every_image_size(size):
    x, _ = font_digits.render(3, size, 0)
    ink = x[:, 0] > 0.0
    sides = np.maximum(ink.any(2).sum(1), ink.any(1).sum(1))
    assert x.shape[1:] == (1, size, size)
    assert abs(np.median(sides) - size * 20 / 28) <= 1.0


def test_frozen_layers_are_every_convolution_but_the_output():
    _, d = build_pair(32, 1, 8, 0)
    convs = [m for m in d.net if isinstance(m, torch.nn.Conv2d)]
    assert public_prior.frozen_layers(d) == convs[:-1] and len(convs) == 4
    public_prior.freeze(d)
    trainable = {name for name, p in d.named_parameters() if p.requires_grad}
    norms = {f"{name}.{p}" for name, m in d.named_modules()
             if isinstance(m, torch.nn.GroupNorm) for p in ("weight", "bias")}
    assert trainable == norms | {"net.8.weight", "net.8.bias"}


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


def test_a_resumed_run_starts_from_its_round_zero_instead_of_pretraining(tmp_path, quick,
                                                                         monkeypatch):
    first = make_task(tmp_path)
    kept = first.initial_arrays()
    first.central_evaluate(0, kept)  # writes weights/round_000.pt, as a run does

    def fail(*_args, **_kwargs):
        raise AssertionError("the public prior was trained again")

    monkeypatch.setattr(public_prior, "pretrain", fail)
    again = make_task(tmp_path, resume=str(tmp_path)).initial_arrays().to_torch_state_dict()
    assert all(torch.equal(again[k], v) for k, v in kept.to_torch_state_dict().items())
    with pytest.raises(AssertionError, match="trained again"):  # a new run does pretrain
        make_task(tmp_path / "new").initial_arrays()
