"""TSTR averaged over several classifiers (``--tstr-seeds``), checked against separate fits."""

from __future__ import annotations

import numpy as np
import pytest

from fl_sim.options import OptionError, RunConfig
from tasks.dcgan.metrics import TSTR_EPOCHS, TSTR_SPREAD, Scorer
from tasks.image import cnn
from tests.test_dcgan import task


def one_fit(images, x, y, seed):
    """A TSTR classifier fitted on its own, as the score is defined."""
    model = cnn.fit(x, y, images.num_classes, epochs=TSTR_EPOCHS, seed=seed)
    return cnn.score(model, images.test_x, images.test_y)["accuracy"]


def test_scores_are_the_mean_and_spread_of_classifiers_seeded_from_the_run_seed():
    images = task().images
    x, y = images.train_x[:300], images.train_y[:300]
    separate = [one_fit(images, x, y, seed) for seed in (7, 8, 9)]
    assert len(set(separate)) > 1  # the seed alone moves one classifier's accuracy
    got = Scorer(images, seed=7, tstr_seeds=3).tstr(x, y)
    assert got["tstr_accuracy"] == pytest.approx(np.mean(separate), abs=1e-12)
    assert got[TSTR_SPREAD] == pytest.approx(np.std(separate, ddof=1), abs=1e-12)


def test_one_classifier_is_the_single_fit_and_reports_no_spread():
    images = task().images
    x, y = images.train_x[:300], images.train_y[:300]
    got = Scorer(images, seed=7).tstr(x, y)
    assert got["tstr_accuracy"] == one_fit(images, x, y, 7)
    assert TSTR_SPREAD not in got


def test_the_spread_becomes_a_server_column_only_with_several_classifiers():
    assert TSTR_SPREAD in task(conditional=True, **{"tstr-seeds": 2}).server_metrics
    assert TSTR_SPREAD not in task(conditional=True).server_metrics
    assert TSTR_SPREAD not in task(**{"tstr-seeds": 2}).server_metrics  # no labels, no TSTR


def test_zero_classifiers_names_the_flag():
    with pytest.raises(OptionError) as error:
        RunConfig.from_mapping({"task": "dcgan", "tstr-seeds": 0})
    assert error.value.flag == "--tstr-seeds"
