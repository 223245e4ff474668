"""TSTR averaged over several classifiers (``--tstr-seeds``), checked against separate fits."""

from __future__ import annotations

import numpy as np
import pytest

from fl_sim.options import OptionError, RunConfig
from fl_sim.report.data import higher_is_better
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
    ceiling = [one_fit(images, images.train_x, images.train_y, seed) for seed in (7, 8, 9)]
    assert got["real_data_accuracy"] == pytest.approx(np.mean(ceiling), abs=1e-12)


def test_one_classifier_is_the_single_fit_and_reports_no_spread():
    images = task().images
    x, y = images.train_x[:300], images.train_y[:300]
    got = Scorer(images, seed=7).tstr(x, y)
    assert got["tstr_accuracy"] == one_fit(images, x, y, 7)
    assert TSTR_SPREAD not in got


@pytest.mark.parametrize("seeds", [1, 2])
def test_what_the_server_measures_is_what_it_declares(tmp_path, seeds):
    """The recorder keeps only declared columns: a measured metric left undeclared is lost."""
    t = task(tmp_path, conditional=True, **{"gan-width": 8, "tstr-seeds": seeds})
    assert set(t.central_evaluate(0, t.initial_arrays())) == set(t.server_metrics)
    assert (TSTR_SPREAD in t.server_metrics) == (seeds > 1)


def test_no_labels_no_tstr_and_a_smaller_spread_is_steadier():
    assert TSTR_SPREAD not in task(**{"tstr-seeds": 2}).server_metrics
    assert not higher_is_better("server_tstr_accuracy_std")
    assert higher_is_better("server_tstr_accuracy")


def test_zero_classifiers_names_the_flag():
    with pytest.raises(OptionError) as error:
        RunConfig.from_mapping({"task": "dcgan", "tstr-seeds": 0})
    assert error.value.flag == "--tstr-seeds"
