"""``fl_sim sample``: shapes, ranges, determinism, provenance, PNG round trip, bad arguments.

Run folders are real (a tiny DCGAN trained in-process, no Ray); conditional releases use
a stand-in task whose ``synthesize`` returns labels, so they run before ``--conditional``
exists and keep running after.
"""

from __future__ import annotations

import csv
import json
import types
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fl_sim.cli import main
from fl_sim.options import RunConfig
from fl_sim.record import run_folder
from fl_sim.release import export
from tasks.image.data import load_images
from tests.dcgan_run import make_dcgan_run


@pytest.fixture(scope="module")
def dp_run(tmp_path_factory) -> Path:
    """DP run, 2 rounds: weights for rounds 0, 1, 2 and growing epsilons."""
    return make_dcgan_run(tmp_path_factory.mktemp("export") / "dp",
                          **{"num-server-rounds": 2})


@pytest.fixture(scope="module")
def plain_run(tmp_path_factory) -> Path:
    """The same task without DP-SGD, 1 round."""
    return make_dcgan_run(tmp_path_factory.mktemp("export") / "plain", dp=False)


def _images(path: Path) -> np.ndarray:
    with np.load(path) as data:
        return data["images"]


def _csv_epsilon(run_dir: Path, server_round: int) -> float:
    """Largest client epsilon up to the round, read here independently of fl_sim."""
    with (run_dir / "clients.csv").open(newline="") as handle:
        return max(float(r["epsilon"]) for r in csv.DictReader(handle)
                   if int(r["round"]) <= server_round)


# --- npz -------------------------------------------------------------------------------
def test_npz_images_are_float32_nchw_in_unit_range(dp_run, tmp_path):
    meta = export.sample(dp_run, n=50, out=tmp_path / "s.npz")
    with np.load(tmp_path / "s.npz") as data:
        assert data.files == ["images"]  # unconditional: no labels
        images = data["images"]
    assert images.shape == (50, 1, 28, 28) and images.dtype == np.float32
    assert images.min() >= 0.0 and images.max() <= 1.0 and images.std() > 0
    written = json.loads((tmp_path / "s.json").read_text())
    assert written == meta
    assert meta["n"] == 50 and meta["image_shape"] == [1, 28, 28] and meta["round"] == 2
    assert meta["run_id"] == "dp" and meta["seed"] == 0 and meta["conditional"] is False
    assert meta["dataset"] == "digits" and meta["label_counts"] is None


def test_same_seed_gives_same_bytes_and_another_seed_differs(dp_run, tmp_path):
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        export.sample(dp_run, n=40, out=tmp_path / f"{name}.npz", seed=seed)
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()
    meta_a, meta_b = (json.loads((tmp_path / f"{m}.json").read_text()) for m in "ab")
    for meta in (meta_a, meta_b):  # only the output's own name differs
        meta.pop("command"), meta.pop("files")
    assert meta_a == meta_b
    assert not np.allclose(_images(tmp_path / "a.npz"), _images(tmp_path / "c.npz"))


def test_batches_have_their_own_noise(dp_run, tmp_path, monkeypatch):
    monkeypatch.setattr(export, "BATCH", 16)
    export.sample(dp_run, n=40, out=tmp_path / "b.npz", seed=1)
    images = _images(tmp_path / "b.npz")
    assert images.shape[0] == 40
    # batch 1 and 2 are not copies of batch 0 (each batch has its own derived seed)
    assert not np.allclose(images[:8], images[16:24])
    assert not np.allclose(images[16:24], images[32:40])
    assert export.batch_seed(1, 0) != export.batch_seed(1, 1) != export.batch_seed(2, 0)


def test_rounds_give_different_generators(dp_run, tmp_path):
    first = export.sample(dp_run, n=20, out=tmp_path / "r1.npz", server_round=1)
    last = export.sample(dp_run, n=20, out=tmp_path / "r2.npz")
    assert (first["round"], last["round"]) == (1, 2)
    assert not np.allclose(_images(tmp_path / "r1.npz"), _images(tmp_path / "r2.npz"))


# --- metadata: the model's privacy ------------------------------------------------------
def test_metadata_epsilon_is_the_clients_csv_value_of_that_round(dp_run, tmp_path):
    last = export.sample(dp_run, n=10, out=tmp_path / "last.npz")
    first = export.sample(dp_run, n=10, out=tmp_path / "first.npz", server_round=1)
    init = export.sample(dp_run, n=10, out=tmp_path / "init.npz", server_round=0)
    assert last["epsilon"] == pytest.approx(_csv_epsilon(dp_run, 2), rel=1e-12)
    assert first["epsilon"] == pytest.approx(_csv_epsilon(dp_run, 1), rel=1e-12)
    assert 0 < first["epsilon"] < last["epsilon"]
    assert init["epsilon"] == 0.0  # the seeded initialisation read no data
    assert last["dp"] is True and last["delta"] == 1e-5 and last["accountant"] == "rdp"
    assert last["noise_multiplier"] == 1.0 and last["max_grad_norm"] == 1.0
    assert "client_level_epsilon" not in last  # no DP-FedAvg in this run
    assert "--round 2" in last["command"] and "--seed 0" in last["command"]


def test_metadata_of_a_run_without_dp_has_no_epsilon(plain_run, tmp_path):
    meta = export.sample(plain_run, n=10, out=tmp_path / "p.npz")
    assert meta["dp"] is False and meta["epsilon"] is None
    assert meta["noise_multiplier"] is None and "without DP" in meta["guarantee"]


def test_client_level_epsilon_comes_from_privacy_csv(dp_run, tmp_path):
    assert run_folder.RunFolder(dp_run).epsilon_at(2, "privacy.csv") is None
    (tmp_path / "privacy.csv").write_text(
        "run_id,round,epsilon,status\nx,1,0.5,released\nx,2,0.9,released\nx,3,1.4,released\n")
    assert run_folder.RunFolder(tmp_path).epsilon_at(2, "privacy.csv") == 0.9
    assert run_folder.RunFolder(tmp_path).epsilon_at(0, "privacy.csv") is None


# --- PNG folder --------------------------------------------------------------------------
def test_png_folder_matches_the_npz_and_reads_back_as_a_folder_data_set(dp_run, tmp_path):
    export.sample(dp_run, n=60, out=tmp_path / "s.npz", seed=5)
    meta = export.sample(dp_run, n=60, out=tmp_path / "folder", seed=5, fmt="png-folder")
    pngs = sorted((tmp_path / "folder" / "unlabelled").glob("*.png"))
    assert len(pngs) == 60 and pngs[0].name == "000000.png"
    assert json.loads((tmp_path / "folder" / "release.json").read_text()) == meta
    assert meta["files"]["folders"] == ["unlabelled"]
    reference = _images(tmp_path / "s.npz")
    for index in (0, 59):  # 8-bit quantisation of the same float images
        pixels = np.asarray(Image.open(pngs[index]), dtype=np.float32) / 255.0
        assert np.abs(pixels - reference[index, 0]).max() <= 0.5 / 255 + 1e-6
    data = load_images("folder", str(tmp_path / "folder"), 28, 0)
    assert len(data.train_x) + len(data.test_x) == 60 and data.num_classes == 1
    assert data.channels == 1
    loaded = np.concatenate([data.train_x, data.test_x])
    assert loaded.mean() == pytest.approx((reference * 2 - 1).mean(), abs=0.02)


def test_a_release_trains_with_fl_sim_itself(dp_run, tmp_path):
    export.sample(dp_run, n=200, out=tmp_path / "release", fmt="png-folder")
    trained = make_dcgan_run(tmp_path / "retrained", dataset="folder",
                             **{"data-dir": str(tmp_path / "release")})
    assert run_folder.RunFolder(trained).rounds_with_weights() == [0, 1]
    assert _csv_epsilon(trained, 1) > 0


# --- conditional releases (labels) ------------------------------------------------------
class LabelledTask:
    """The real task's generator plus balanced labels, as a conditional model returns them."""

    conditional = True

    def __init__(self, task, num_classes: int) -> None:
        self.task = task
        self.images = types.SimpleNamespace(num_classes=num_classes, channels=1)
        self.requested: list[np.ndarray] = []

    def synthesize(self, arrays, count, seed):
        images, _ = self.task.synthesize(arrays, count, seed)
        labels = np.random.default_rng(seed).permutation(np.arange(count) % self.images.num_classes)
        self.requested.append(labels)
        return images, labels.astype(np.int64)


@pytest.fixture()
def labelled(monkeypatch):
    made = {}

    def load(folder, need=None):
        made["task"] = LabelledTask(real_load(folder, need), made.get("classes", 10))
        return made["task"]

    real_load = run_folder.RunFolder.load_task
    monkeypatch.setattr(run_folder.RunFolder, "load_task", load)
    return made


def test_conditional_npz_holds_the_requested_labels(dp_run, tmp_path, labelled):
    meta = export.sample(dp_run, n=30, out=tmp_path / "c.npz")
    with np.load(tmp_path / "c.npz") as data:
        assert data.files == ["images", "labels"]
        labels = data["labels"]
        assert data["images"].shape == (30, 1, 28, 28)
    assert labels.dtype == np.int64
    np.testing.assert_array_equal(labels, np.concatenate(labelled["task"].requested))
    assert meta["conditional"] is True and meta["files"]["arrays"] == ["images", "labels"]
    assert meta["label_counts"] == {str(k): 3 for k in range(10)}


def test_conditional_png_folder_has_one_folder_per_class_in_label_order(
        dp_run, tmp_path, labelled):
    labelled["classes"] = 12  # folders 00..11, so that sorted order is label order
    meta = export.sample(dp_run, n=48, out=tmp_path / "c", fmt="png-folder")
    folders = sorted(p.name for p in (tmp_path / "c").iterdir() if p.is_dir())
    assert folders == [f"{k:02d}" for k in range(12)] == meta["files"]["folders"]
    labels = np.concatenate(labelled["task"].requested)
    for k in range(12):
        names = sorted(p.name for p in (tmp_path / "c" / f"{k:02d}").glob("*.png"))
        assert names == [f"{i:06d}.png" for i in np.flatnonzero(labels == k)]
    data = load_images("folder", str(tmp_path / "c"), 28, 0)
    counts = np.bincount(np.concatenate([data.train_y, data.test_y]), minlength=12)
    assert data.num_classes == 12 and counts.tolist() == [4] * 12


# --- command line: bad arguments exit 2 with one line naming the flag ----------------------
def _fails(capsys, *argv: str) -> str:
    assert main(["sample", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("fl_sim: error: ")
    return err


def test_bad_arguments_exit_2_with_a_clear_line(dp_run, tmp_path, capsys):
    run = str(dp_run)
    err = _fails(capsys, str(tmp_path / "nope"))
    assert err.startswith("fl_sim: error: RUN_DIR:") and "does not exist" in err
    err = _fails(capsys, run, "--round", "9", "--out", str(tmp_path / "x.npz"))
    assert "--round" in err and "0..2" in err
    assert "--n" in _fails(capsys, run, "--n", "0")
    assert "--n" in _fails(capsys, run, "--n", "-5")
    err = _fails(capsys, run, "--format", "gif")
    assert "--format" in err and "npz, png-folder" in err
    assert "--seed" in _fails(capsys, run, "--seed", "-1")
    assert ".npz" in _fails(capsys, run, "--out", str(tmp_path / "x.bin"))
    (tmp_path / "file").write_text("x")
    assert "is a file" in _fails(capsys, run, "--format", "png-folder",
                                 "--out", str(tmp_path / "file"))
    assert not list(tmp_path.glob("x.*"))  # nothing written by a refused command


def test_a_run_of_another_task_is_refused(tmp_path, capsys):
    settings = RunConfig.from_mapping({"task": "regression"}).to_run_config()
    (tmp_path / "config.json").write_text(json.dumps({"run_id": "r", "settings": settings}))
    err = _fails(capsys, str(tmp_path))
    assert "regression" in err and "dcgan" in err


def test_existing_output_is_kept_unless_forced(dp_run, tmp_path, capsys):
    out = tmp_path / "s.npz"
    assert main(["sample", str(dp_run), "--n", "8", "--out", str(out)]) == 0
    assert "epsilon" in capsys.readouterr().out
    before = out.read_bytes()
    err = _fails(capsys, str(dp_run), "--n", "9", "--out", str(out))
    assert "--out" in err and "--force" in err
    assert out.read_bytes() == before
    assert main(["sample", str(dp_run), "--n", "9", "--out", str(out), "--force"]) == 0
    assert _images(out).shape[0] == 9 and json.loads(out.with_suffix(".json").read_text())["n"] == 9


def test_force_replaces_a_release_folder_but_never_another_folder(dp_run, tmp_path, capsys):
    out = tmp_path / "rel"
    assert main(["sample", str(dp_run), "--n", "5", "--format", "png-folder",
                 "--out", str(out)]) == 0
    assert "--force" in _fails(capsys, str(dp_run), "--format", "png-folder", "--out", str(out))
    assert main(["sample", str(dp_run), "--n", "3", "--format", "png-folder",
                 "--out", str(out), "--force"]) == 0
    assert len(list((out / "unlabelled").glob("*.png"))) == 3  # no stale images left
    other = tmp_path / "other"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    err = _fails(capsys, str(dp_run), "--format", "png-folder", "--out", str(other), "--force")
    assert "not a previous release" in err and (other / "keep.txt").read_text() == "mine"


def test_default_output_goes_inside_the_run_folder(plain_run, capsys):
    assert main(["sample", str(plain_run), "--n", "4"]) == 0
    assert _images(plain_run / "synthetic.npz").shape == (4, 1, 28, 28)
    assert json.loads((plain_run / "synthetic.json").read_text())["run_id"] == "plain"


@pytest.mark.slow
def test_python_m_fl_sim_sample_as_a_process(dp_run, tmp_path):
    from tests.conftest import run_cli

    done = run_cli("sample", str(dp_run), "--n", "12", "--out", str(tmp_path / "p.npz"))
    assert done.returncode == 0, done.stderr[-2000:]
    assert "wrote 12 images" in done.stdout and _images(tmp_path / "p.npz").shape[0] == 12
    bad = run_cli("sample", str(dp_run), "--round", "5")
    assert bad.returncode == 2
    assert bad.stderr.strip().startswith("fl_sim: error: --round: round 5")
    assert len(bad.stderr.strip().splitlines()) == 1
