"""Augmentation multiplicity: shifted copies, one clipped row per real image, same epsilon."""

from __future__ import annotations

import copy

import pytest
import torch
from flwr.app import RecordDict
from opacus import GradSampleModule
from torch.nn import functional as F

from fl_sim.options import OptionError, RunConfig
from tasks import dp_sgd
from tasks.base import Partition, Workspace
from tasks.dcgan.augment import Augment, fold_copies, real_weights
from tasks.dcgan.models import build_pair
from tasks.dcgan.task import DCGANTask
from tasks.dcgan.weights import split_state
from tests.test_dp_sgd import independent_rdp_epsilon


def test_each_image_moves_by_whole_pixels_within_the_shift():
    torch.manual_seed(0)
    images = torch.rand(64, 2, 9, 9)
    out = Augment(1, shift=2)(images)
    padded = F.pad(images, (2, 2, 2, 2), mode="replicate")
    moves = set()
    for i in range(len(images)):
        found = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)
                 if torch.equal(out[i], padded[i, :, 2 + dy:11 + dy, 2 + dx:11 + dx])]
        assert found, f"image {i} is not a whole-pixel shift of its input"
        moves.add(found[0])
    assert len(moves) > 15  # the 25 shifts are drawn, not one fixed move
    assert torch.equal(Augment(1, shift=0)(images), images)


def test_the_shift_is_differentiable_for_g_steps():
    images = torch.rand(4, 1, 8, 8, requires_grad=True)
    Augment(1, shift=1)(images).sum().backward()
    # Replicated edges send more than one output pixel's gradient to an edge pixel.
    assert images.grad is not None and images.grad.sum().item() == pytest.approx(4 * 64)


def test_copies_are_adjacent_and_keep_their_labels():
    real = torch.arange(3.0).reshape(3, 1, 1, 1).expand(3, 1, 6, 6).clone()
    copies, labels = Augment(4, shift=1).expand(real, torch.tensor([7, 8, 9]))
    assert copies.shape == (12, 1, 6, 6)
    assert labels.tolist() == [7] * 4 + [8] * 4 + [9] * 4
    # A constant image stays itself under any shift: copy j belongs to image j // 4.
    assert [float(c.mean()) for c in copies] == [float(j // 4) for j in range(12)]


def test_folded_rows_are_each_images_mean_copy_gradient_and_the_fakes_are_untouched():
    torch.manual_seed(1)
    _, discriminator = build_pair(28, 1, 4, 0)
    plain = copy.deepcopy(discriminator)  # no Opacus hooks: the independent figure
    module = GradSampleModule(discriminator)
    reals, copies, fakes = 3, 4, 2
    inputs = torch.randn(reals * copies + fakes, 1, 28, 28)
    targets = torch.cat([torch.ones(reals * copies), torch.zeros(fakes)])
    F.binary_cross_entropy_with_logits(module(inputs), targets).backward()
    fold_copies(module, reals, copies)
    params = [p for p in discriminator.parameters() if p.requires_grad]

    def row_gradient(rows: slice) -> tuple[torch.Tensor, ...]:
        """Each row's own loss gradient, averaged over ``rows``, by plain autograd."""
        loss = F.binary_cross_entropy_with_logits(plain(inputs[rows]), targets[rows])
        return torch.autograd.grad(loss, [p for p in plain.parameters() if p.requires_grad])

    for i in range(reals):
        expected = row_gradient(slice(i * copies, (i + 1) * copies))
        for p, e in zip(params, expected, strict=True):
            assert p.grad_sample.shape[0] == reals + fakes
            assert torch.allclose(p.grad_sample[i], e, atol=1e-6)
    for j in range(fakes):
        row = reals * copies + j
        for p, e in zip(params, row_gradient(slice(row, row + 1)), strict=True):
            assert torch.allclose(p.grad_sample[reals + j], e, atol=1e-6)


def test_without_dp_the_copies_weigh_one_image():
    weights = real_weights(2, 3, 4, torch.device("cpu"))
    assert weights.tolist() == [0.25] * 8 + [1.0] * 3
    assert weights.sum().item() == 5  # as many votes as rows without copies


def task(**overrides) -> DCGANTask:
    settings = {"task": "dcgan", "clients": 16, "dataset": "digits", "batch-size": 32,
                "num-server-rounds": 2, "local-epochs": 1, "gan-width": 8,
                "noise-multiplier": 0.9, **overrides}
    return DCGANTask(RunConfig.from_mapping(settings), Workspace())


def test_multiplicity_changes_training_and_spends_the_same_epsilon():
    plain, augmented = task(), task(**{"gan-aug-shift": 2, "gan-aug-mult": 4})
    arrays = plain.initial_arrays()
    results = {}
    for name, t in (("plain", plain), ("augmented", augmented)):
        results[name] = result = t.train(arrays, Partition(1, 16), RecordDict(), 1)
    _, d_plain = split_state(results["plain"].arrays.to_torch_state_dict())
    _, d_aug = split_state(results["augmented"].arrays.to_torch_state_dict())
    assert any(not torch.equal(d_plain[k], d_aug[k]) for k in d_plain)
    rate, steps = dp_sgd.poisson_plan(result.num_examples, 32)
    expected = independent_rdp_epsilon(0.9, rate, steps, 1e-5)
    for result in results.values():
        assert result.metrics["epsilon"] == pytest.approx(expected, abs=1e-6)
    assert 0 <= results["augmented"].metrics["d_real_accuracy"] <= 1


def test_multiplicity_trains_without_dp_and_conditionally():
    t = task(**{"gan-aug-shift": 1, "gan-aug-mult": 2, "dp": False, "conditional": True})
    arrays = t.initial_arrays()
    result = t.train(arrays, Partition(0, 16), RecordDict(), 1)
    g0, _ = split_state(arrays.to_torch_state_dict())
    g1, _ = split_state(result.arrays.to_torch_state_dict())
    assert any(not torch.equal(g0[k], g1[k]) for k in g0 if g0[k].is_floating_point())
    assert 0 <= result.metrics["d_real_accuracy"] <= 1


def test_the_default_shifts_with_the_digits_prior_only_and_says_so():
    assert task().augment is None  # scikit-learn's digits: no prior, no shift
    assert task().resolved["gan-aug-shift"] == 0
    mnist = task(dataset="mnist5k")
    assert mnist.augment == Augment(1, 2) and mnist.resolved["gan-aug-shift"] == 2
    assert task(dataset="mnist5k", **{"gan-aug-shift": 0}).augment is None
    assert task(**{"gan-aug-shift": 3}).augment == Augment(1, 3)


@pytest.mark.parametrize("overrides", [{"gan-aug-shift": 0}, {"dataset": "digits"}])
def test_copies_need_a_shift(overrides):
    with pytest.raises(OptionError) as error:
        RunConfig.from_mapping({"task": "dcgan", "gan-aug-mult": 4, **overrides})
    assert error.value.flag == "--gan-aug-mult" and "--gan-aug-shift 0" in str(error.value)
