"""The DP-DCGAN's public prior: public data, frozen features, no effect on the accounting."""

from __future__ import annotations

import inspect
import json

import numpy as np
import pytest
import torch
from flwr.app import RecordDict

from fl_sim.options import OptionError, RunConfig
from tasks import dp_sgd
from tasks.base import Partition, Workspace
from tasks.dcgan import font_digits, public_prior
from tasks.dcgan.models import build_pair
from tasks.dcgan.options import resolve_prior
from tasks.dcgan.task import DCGANTask
from tasks.dcgan.weights import split_state
from tests.conftest import run_cli
from tests.data_files import cifar_dir


def make_task(tmp_path=None, resuming=False, **overrides) -> DCGANTask:
    settings = {"task": "dcgan", "clients": 5, "batch-size": 64, "num-server-rounds": 2,
                "local-epochs": 1, "gan-width": 8, **overrides}
    workspace = Workspace(tmp_path, resuming=resuming) if tmp_path is not None else Workspace()
    return DCGANTask(RunConfig.from_mapping(settings), workspace)


@pytest.mark.parametrize(("prior", "dataset", "expected"), [
    ("auto", "mnist5k", "digits"), ("auto", "mnist", "digits"),
    ("auto", "digits", "none"), ("auto", "fashion-mnist", "none"), ("auto", "cifar10", "none"),
    ("none", "mnist5k", "none"), ("digits", "fashion-mnist", "digits"),
])
def test_auto_gives_the_digits_prior_to_the_mnist_data_sets_only(prior, dataset, expected):
    assert resolve_prior(prior, dataset) == expected


@pytest.mark.parametrize(("overrides", "words"), [
    ({"dataset": "cifar10", "gan-public-prior": "digits"}, "one-channel images"),
    ({"gan-public-prior": "imagenet"}, "allowed: auto, digits, none"),
])
def test_bad_priors_name_the_flag(overrides, words, tmp_path):
    with pytest.raises(OptionError) as error:
        RunConfig.from_mapping({"task": "dcgan", "data-dir": str(cifar_dir(tmp_path)),
                                **overrides})
    assert error.value.flag == "--gan-public-prior" and words in str(error.value)


def test_the_digits_prior_is_allowed_for_the_private_digits_data_set():
    # The public digits are drawn from fonts, not scikit-learn's digits: no overlap.
    config = RunConfig.from_mapping({"task": "dcgan", "dataset": "digits",
                                     "gan-public-prior": "digits"})
    assert DCGANTask(config).prior == "digits"


def test_cli_refuses_a_grey_prior_for_colour_data(tmp_path):
    out = tmp_path / "out"
    done = run_cli("run", "--task", "dcgan", "--out", str(out), "--dataset", "cifar10",
                   "--data-dir", str(cifar_dir(tmp_path / "data")),
                   "--gan-public-prior", "digits", timeout=120)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and "--gan-public-prior" in lines[0]
    assert not out.exists() or list(out.iterdir()) == []


def test_every_font_draws_different_digits_and_no_slashed_zero():
    images, labels = font_digits.glyphs()
    per_face = [list(range(1 if name in font_digits.NO_ZERO else 0, 10))
                for name in font_digits.FONTS]
    assert len(font_digits.NO_ZERO) == 4 and set(font_digits.NO_ZERO) <= set(font_digits.FONTS)
    assert images.shape == (206, 1, font_digits.GLYPH, font_digits.GLYPH)
    assert labels.tolist() == [d for face in per_face for d in face]
    ink = (images > 0.5).flatten(1)
    assert bool((ink.sum(1) > 20).all())  # no empty (missing) glyph
    start = 0
    for face in per_face:  # no face maps two digits to one shape
        rows = ink[start:start + len(face)]
        assert len({tuple(row.tolist()) for row in rows}) == len(face)
        start += len(face)


@pytest.fixture(scope="module")
def public28():
    """Up to 2,060 public digits (10 copies of each glyph; a run draws 30)."""
    return font_digits.render(10, 28, 0)


def test_public_digits_are_laid_out_as_mnist(public28):
    x, y = public28
    assert x.dtype == np.float32 and y.dtype == np.int64 and len(x) == len(y)
    counts = np.bincount(y)  # balanced, but for the four fonts' zeros left out
    assert 0.99 * 2060 <= len(x) <= 2060 and counts[1:].min() >= 0.98 * 210
    assert 0.98 * 170 <= counts[0] <= 170
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
    task_a = make_task(tmp_path / "a")
    arrays = task_a.initial_arrays()
    first = arrays.to_torch_state_dict()
    second = make_task(tmp_path / "b").initial_arrays().to_torch_state_dict()
    assert all(torch.equal(first[k], second[k]) for k in first)
    task_a.artifacts(tmp_path / "a").after_round(0, arrays)
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
    arrays = t.initial_arrays()
    metrics = t.central_evaluate(0, arrays)
    t.artifacts(tmp_path).after_round(0, arrays)
    assert np.isfinite(metrics["fid"]) and (tmp_path / "samples" / "round_000.png").exists()
    assert (tmp_path / "public_prior.json").exists()
    assert "code_agreement" in t.server_metrics and 0 <= metrics["code_agreement"] <= 1


def test_a_resumed_run_starts_from_its_round_zero_instead_of_pretraining(tmp_path, quick,
                                                                         monkeypatch):
    first = make_task(tmp_path)
    kept = first.initial_arrays()
    first.artifacts(tmp_path).after_round(0, kept)  # weights/round_000.pt, as a run writes

    def fail(*_args, **_kwargs):
        raise AssertionError("the public prior was trained again")

    monkeypatch.setattr(public_prior, "pretrain", fail)
    again = make_task(tmp_path, resuming=True).initial_arrays().to_torch_state_dict()
    assert all(torch.equal(again[k], v) for k, v in kept.to_torch_state_dict().items())
    with pytest.raises(AssertionError, match="trained again"):  # a new run does pretrain
        make_task(tmp_path / "new").initial_arrays()


def test_the_default_generator_is_coded_and_the_discriminator_is_not(quick):
    t = make_task()
    g, d = t._pair()
    assert t.coded and g.num_classes == public_prior.CODE_CLASSES and d.num_classes == 0
    assert g.net[0].in_channels == g.latent_dim + 10 and d.net[0].in_channels == 1
    plain = make_task(**{"gan-class-code": False})
    assert not plain.coded and plain._pair()[0].num_classes == 0
    assert not make_task(**{"gan-public-prior": "none"}).coded  # the code needs the prior
    assert not make_task(conditional=True).coded  # labels, not codes, there


def test_the_guide_travels_beside_the_model_and_the_private_loader_holds_no_labels(
        quick, monkeypatch):
    t = make_task(**{"noise-multiplier": 1.0})
    arrays = t.initial_arrays()
    assert not any(k.startswith("guide.") for k in arrays)  # nothing frozen is aggregated
    guide = t.frozen_arrays()
    assert guide is not None and "head.3.weight" in guide
    seen = {}
    real_round = __import__("tasks.dcgan.task", fromlist=["gan_round"]).gan_round

    def spy(generator, discriminator, loader, *args, **kwargs):
        seen["batch"] = len(next(iter(loader)))
        bound = inspect.signature(real_round).bind(generator, discriminator, loader, *args,
                                                   **kwargs)
        seen["guide"] = bound.arguments.get("guide")
        return real_round(generator, discriminator, loader, *args, **kwargs)

    monkeypatch.setattr("tasks.dcgan.task.gan_round", spy)
    result = t.train(arrays, Partition(0, 5), RecordDict(), server_round=1, frozen=guide)
    assert set(result.arrays.keys()) == set(arrays.keys())  # the guide is not sent back
    assert seen["batch"] == 1 and seen["guide"] is not None  # images only; G is guided


def test_the_guide_is_kept_in_the_run_folder_and_read_back_on_resume(tmp_path, quick):
    t = make_task(tmp_path)
    arrays = t.initial_arrays()
    t.artifacts(tmp_path).after_round(0, arrays)
    resumed = make_task(tmp_path, resuming=True)
    assert set(resumed.initial_arrays().keys()) == set(arrays.keys())
    kept = resumed.frozen_arrays().to_torch_state_dict()
    fitted = t.frozen_arrays().to_torch_state_dict()
    assert kept.keys() == fitted.keys() and all(torch.equal(kept[k], fitted[k]) for k in kept)


def test_an_older_run_folder_with_the_guide_inside_its_weights_still_resumes(tmp_path, quick):
    from tasks.dcgan.weights import guide_path, weights_path

    t = make_task(tmp_path)
    arrays = t.initial_arrays()
    t.artifacts(tmp_path).after_round(0, arrays)
    older = {**arrays.to_torch_state_dict(),
             **{f"guide.{k}": v for k, v in t.frozen_arrays().to_torch_state_dict().items()}}
    torch.save(older, weights_path(tmp_path, 0))
    guide_path(tmp_path).unlink()
    resumed = make_task(tmp_path, resuming=True)
    assert set(resumed.initial_arrays().keys()) == set(arrays.keys())
    assert set(resumed.frozen_arrays().keys()) == set(t.frozen_arrays().keys())


def test_guide_loss_is_the_weighted_cross_entropy_against_the_codes():
    torch.manual_seed(0)
    guide = public_prior.frozen_guide(torch.nn.Sequential(torch.nn.Flatten(),
                                                          torch.nn.Linear(4, 10)))
    fakes, codes = torch.randn(6, 1, 2, 2, requires_grad=True), torch.arange(6)
    loss = public_prior.guide_loss(guide, 0.5)(fakes, codes)
    logits = guide(fakes)
    by_hand = -0.5 * (logits.log_softmax(1)[torch.arange(6), codes]).mean()
    assert float(loss) == pytest.approx(float(by_hand), rel=1e-6)
    loss.backward()  # the pull reaches G's images, not the frozen guide
    assert fakes.grad is not None and all(p.grad is None for p in guide.parameters())


@pytest.mark.slow
def test_the_coded_public_generator_draws_the_class_it_is_given(tmp_path):
    """The full prior (not the quick one): the guide reads the code back from G's images."""
    t = make_task(tmp_path, **{"gan-width": 32})
    arrays = t.initial_arrays()
    images = t.generate(arrays, 500, 7)
    guide = t._guide(t.frozen_arrays(), {})
    with torch.no_grad():
        agree = (guide(torch.from_numpy(images)).argmax(1) == torch.arange(500) % 10)
    assert float(agree.float().mean()) > 0.9
    # a classifier of real handwritten digits reads many of them as their codes too (it
    # is trained on 1,000 digits and reads printed shapes less well)
    assert t.central_evaluate(0, arrays)["code_agreement"] > 0.25  # chance: 0.1
    t.artifacts(tmp_path).after_round(0, arrays)
    record = json.loads((tmp_path / "public_prior.json").read_text())
    assert record["class_code"] is True


def test_a_coded_generator_serves_evaluation_release_and_audit(tmp_path, quick):
    t = make_task(tmp_path)
    arrays = t.initial_arrays()
    assert t.evaluate(arrays, Partition(1, 5)).num_examples > 0  # G reads drawn codes
    images, labels = t.synthesize(arrays, 30, seed=3)
    assert images.shape == (30, 1, 28, 28) and labels is None  # codes are not labels
    assert images.min() >= 0.0 and images.max() <= 1.0
    assert t.discriminator_logits(arrays, images * 2 - 1).shape == (30,)
    t.artifacts(tmp_path).after_round(1, arrays)
    grid = (tmp_path / "samples" / "round_001.png")
    from PIL import Image
    assert Image.open(grid).size[0] > Image.open(grid).size[1]  # 10 columns x 8 rows


def test_the_average_of_a_prior_started_generator_has_no_warm_up(quick, monkeypatch):
    """The warm-up forgets a random start; a prior is none, and would cap the decay."""
    import tasks.dcgan.task as dcgan_module

    made = []
    real = dcgan_module.GeneratorEMA

    def spy(*args, **kwargs):
        made.append(kwargs.get("warmup"))
        return real(*args, **kwargs)

    monkeypatch.setattr(dcgan_module, "GeneratorEMA", spy)
    for prior, expected in (("digits", False), ("none", True)):
        t = make_task(**{"gan-public-prior": prior, "noise-multiplier": 1.0})
        t.train(t.initial_arrays(), Partition(0, 5), RecordDict(), server_round=1)
        assert made[-1] is expected and t.ema_decay == 0.999
