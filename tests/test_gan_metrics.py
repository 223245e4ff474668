"""Frechet distance, Inception-style score, sample grids: checked against closed forms."""

from __future__ import annotations

import numpy as np
import pytest

from tasks.dcgan import metrics as gan_metrics
from tasks.image.images import grid, save_grid


def test_frechet_distance_of_gaussians_matches_the_closed_form():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(4000, 3))
    mu, cov = gan_metrics.statistics(a)
    assert gan_metrics.frechet_distance(mu, cov, mu, cov) == pytest.approx(0.0, abs=1e-8)
    # Shifted mean, same covariance: distance is |shift|^2.
    shift = np.array([1.0, -2.0, 0.5])
    assert gan_metrics.frechet_distance(mu + shift, cov, mu, cov) == pytest.approx(5.25, rel=1e-9)
    # Diagonal covariances: sum of (sqrt(s1) - sqrt(s2))^2.
    c1, c2 = np.diag([1.0, 4.0, 9.0]), np.diag([4.0, 4.0, 1.0])
    expected = (1 - 2) ** 2 + 0 + (3 - 1) ** 2
    assert gan_metrics.frechet_distance(np.zeros(3), c1, np.zeros(3), c2) == pytest.approx(expected)


def test_inception_score_bounds():
    confident = np.eye(10)[np.arange(1000) % 10]
    assert gan_metrics.inception_score(confident) == pytest.approx(10.0, rel=1e-6)
    one_class = np.tile(np.eye(10)[3], (500, 1))
    assert gan_metrics.inception_score(one_class) == pytest.approx(1.0, abs=1e-6)
    unsure = np.full((500, 10), 0.1)
    assert gan_metrics.inception_score(unsure) == pytest.approx(1.0, abs=1e-9)


def test_reference_classifier_learns_digits_and_is_cached(tmp_path):
    from tasks.image.data import load_images

    images = load_images("digits", "", 28, 0)
    first = gan_metrics.cached_reference(tmp_path, images.test_x, images.test_y, 10, 0)
    assert first.accuracy > 0.6  # trained on 287 images, scored on 72 unseen
    assert (tmp_path / gan_metrics.REFERENCE_FILE).exists()
    again = gan_metrics.cached_reference(tmp_path, images.test_x, images.test_y, 10, 0)
    assert again.accuracy == first.accuracy
    f1, _ = first.embed(images.test_x[:5])
    f2, _ = again.embed(images.test_x[:5])
    assert np.allclose(f1, f2)
    # Real images are closer to themselves than to noise in feature space.
    real = gan_metrics.statistics(first.embed(images.test_x)[0])
    noise = np.random.default_rng(0).uniform(-1, 1, images.test_x.shape).astype(np.float32)
    fake = gan_metrics.statistics(first.embed(noise)[0])
    half = gan_metrics.statistics(first.embed(images.test_x[::2])[0])
    assert gan_metrics.frechet_distance(*half, *real) < gan_metrics.frechet_distance(*fake, *real)


def test_grid_layout_and_png(tmp_path):
    images = -np.ones((5, 1, 4, 4), dtype=np.float32)
    images[4] = 1.0
    tiled = grid(images, columns=3, padding=1)
    assert tiled.shape == (2 * 5 + 1, 3 * 5 + 1) and tiled.dtype == np.uint8
    assert tiled[6:10, 6:10].min() == 255 and tiled[1:5, 1:5].max() == 0
    colour = grid(np.zeros((4, 3, 2, 2), dtype=np.float32), padding=0)
    assert colour.shape == (4, 4, 3)
    from PIL import Image

    path = save_grid(images, tmp_path / "s" / "round_001.png", columns=3, scale=2)
    with Image.open(path) as png:
        assert png.size == (2 * (3 * 6 + 2), 2 * (2 * 6 + 2))
