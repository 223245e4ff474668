"""Disguise task: mapping validation, the published data set, metrics and the pipeline."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fl_sim.options import OptionError, RunConfig
from tasks.base import Workspace
from tasks.disguise import metrics as disguise_metrics
from tasks.disguise import translator as translation
from tasks.disguise.options import MappingError, parse_mapping
from tasks.disguise.task import PUBLISHED, DisguiseTask, read_published, select
from tasks.image import cnn
from tests.conftest import run_cli


# --- mapping validation ------------------------------------------------------------------
def test_parse_mapping_accepts_equal_disjoint_lists():
    assert parse_mapping("0,1", "2,3", 10) == ((0, 1), (2, 3))
    assert parse_mapping("7", "4", 10) == ((7,), (4,))


@pytest.mark.parametrize(("hide", "decoy", "key", "words"), [
    ("0,1", "1,2", "decoy", "disjoint"),
    ("0,1", "2", "decoy", "as many"),
    ("0,1,4", "2,3", "decoy", "as many"),
    ("0,10", "2,3", "hide", "unknown classes [10]"),
    ("0,1", "2,-1", "decoy", "unknown classes [-1]"),
    ("zero", "2", "hide", "class numbers"),
    ("", "2", "hide", "class numbers"),
    ("0,0", "2,3", "hide", "repeats"),
])
def test_parse_mapping_rejects(hide, decoy, key, words):
    with pytest.raises(MappingError) as caught:
        parse_mapping(hide, decoy, 10)
    assert caught.value.key == key and words in str(caught.value)


def test_config_names_the_flag():
    with pytest.raises(OptionError, match=r"^--decoy: must be disjoint"):
        RunConfig.from_mapping({"task": "disguise", "hide": "0,1", "decoy": "1,2"})
    # Other tasks ignore the disguise keys.
    RunConfig.from_mapping({"task": "classifier", "hide": "0,1", "decoy": "1,2"})


@pytest.mark.parametrize("flags", [
    ("--hide", "0,1", "--decoy", "0,2"),
    ("--hide", "0,1", "--decoy", "2,3,4"),
    ("--hide", "0,11", "--decoy", "2,3"),
])
def test_cli_exits_2_before_ray(flags, tmp_path):
    done = run_cli("run", "--task", "disguise", *flags, "--out", str(tmp_path), timeout=120)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and ("--hide" in lines[0] or "--decoy" in lines[0])
    assert not any(tmp_path.iterdir())  # nothing claimed, nothing started


def test_select_maps_classes_to_their_position():
    y = np.array([5, 2, 7, 2, 5, 1])
    x = np.arange(len(y)).reshape(-1, 1, 1, 1).astype(np.float32)
    xs, index = select(x, y, (2, 5))
    assert xs.ravel().tolist() == [0, 1, 3, 4]
    assert index.tolist() == [1, 0, 0, 1]


# --- the published data set --------------------------------------------------------------
@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """A disguise task's owner side on the small digits set, with a short GAN."""
    run_dir = tmp_path_factory.mktemp("owner")
    cfg = RunConfig.from_mapping({
        "task": "disguise", "dataset": "digits", "clients": 2, "translator-steps": 40,
        "hide": "4,7", "decoy": "1,9", "run-dir": str(run_dir), "dp": False,
    })
    task = DisguiseTask(cfg, Workspace(run_dir))
    task.prepare()
    return task, run_dir


@pytest.mark.slow
def test_published_set_has_only_decoy_labels_and_no_original_bytes(prepared):
    task, run_dir = prepared
    x, labels = read_published(run_dir / PUBLISHED)
    with np.load(run_dir / PUBLISHED) as archive:
        assert sorted(archive.files) == ["x", "y"]
    assert set(labels.tolist()) == {1, 9}
    originals, index = select(task.images.train_x, task.images.train_y, (4, 7))
    assert len(x) == len(originals)
    assert labels.tolist() == np.asarray([1, 9])[index].tolist()
    # No original image's bytes appear in the file, as an image or as any one row.
    raw = (run_dir / PUBLISHED).read_bytes()
    rows = originals.reshape(len(originals), -1, originals.shape[-1])
    informative = [r for r in rows[:, 10:18].reshape(-1, originals.shape[-1])
                   if np.ptp(r) > 0.5][:200]
    assert informative
    assert not any(row.astype(np.float32).tobytes() in raw for row in informative)
    flat_pub = x.reshape(len(x), -1)
    flat_orig = originals.reshape(len(originals), -1)
    assert np.abs(flat_pub - flat_orig).max(axis=1).min() > 0.1
    # The same search does find an original that was written the same way.
    leaky = run_dir / "leaky.npz"
    np.savez(leaky, x=np.concatenate([x[:3], originals[:1]]), y=labels[:4])
    assert informative[0].astype(np.float32).tobytes() in leaky.read_bytes()


@pytest.mark.slow
def test_clients_read_only_the_published_set(prepared):
    task, run_dir = prepared
    x, index = task.train_data()
    published_x, labels = read_published(run_dir / PUBLISHED)
    assert np.array_equal(x, published_x)
    assert index.tolist() == (labels == 9).astype(int).tolist()
    assert task.report["published"]["examples"] == len(x)


@pytest.mark.slow
def test_report_figures_are_shares(prepared):
    task, _ = prepared
    quality = task.report["disguise_quality"]
    assert sum(quality["label_counts"]) == task.report["published"]["examples"]
    assert quality["decoy_share"] + quality["hidden_share"] + quality["other_share"] \
        == pytest.approx(1.0)
    assert 0.0 <= task.report["leakage_probe"]["accuracy"] <= 1.0


# --- metrics against hand-made cases ------------------------------------------------------
class _Fixed(torch.nn.Module):
    """A 'classifier' that returns a fixed class per image (its first pixel)."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.head = torch.nn.Sequential(torch.nn.Linear(1, num_classes))

    def forward(self, x):
        return torch.nn.functional.one_hot(x[:, 0, 0, 0].long(), 10).float()


def test_decoy_shares_counts_intended_and_source_labels():
    # Four disguises of hidden (0, 1) -> decoy (2, 3); reference says 2, 0, 3, 5.
    x = np.array([2, 0, 3, 5], dtype=np.float32).reshape(4, 1, 1, 1)
    index = np.array([0, 0, 1, 1])
    shares = disguise_metrics.decoy_shares(_Fixed(10), x, index, (0, 1), (2, 3))
    assert shares["decoy_share"] == 0.5
    assert shares["hidden_share"] == 0.25
    assert shares["other_share"] == 0.25
    assert shares["label_counts"] == [1, 0, 1, 1, 0, 1, 0, 0, 0, 0]


def test_probe_separates_obvious_fakes_and_not_identical_sets():
    rng = np.random.default_rng(0)
    real = rng.uniform(-1, -0.5, size=(200, 1, 28, 28)).astype(np.float32)
    fake = rng.uniform(0.5, 1, size=(200, 1, 28, 28)).astype(np.float32)
    assert disguise_metrics.distinguishability_probe(fake, real, 0)["accuracy"] > 0.95
    same = rng.uniform(-1, 1, size=(400, 1, 28, 28)).astype(np.float32)
    chance = disguise_metrics.distinguishability_probe(same[:200], same[200:], 0)
    assert 0.3 < chance["accuracy"] < 0.7


def test_translator_keeps_image_shape_and_range():
    g = translation.Translator(1)
    out = translation.disguise(g, np.zeros((3, 1, 28, 28), np.float32))
    assert out.shape == (3, 1, 28, 28) and np.abs(out).max() <= 1.0
    assert cnn.make_cnn(1, 2, 0)(torch.zeros(2, 1, 32, 32)).shape == (2, 2)
