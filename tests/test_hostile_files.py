"""No file a user was sent (data set, run folder, checkpoint, release) runs code when loaded.

Each loader is fed a file whose unpickling would create a marker file; the marker must
never appear, and the command must answer with one line and exit code 2.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from fl_sim.cli import main
from fl_sim.options import RunConfig
from tests.data_files import CIFAR_FILES, cifar_dir, hostile_pickle, hostile_torch_file


def _one_line_exit_2(capsys, argv) -> str:
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("fl_sim: error: ") and err.count("\n") == 1, err
    return err


def _run_folder(path, **settings):
    path.mkdir(parents=True)
    config = RunConfig.from_mapping(settings).to_run_config()
    (path / "config.json").write_text(json.dumps({"run_id": path.name, "settings": config,
                                                  "status": "interrupted"}))
    return path


def test_a_cifar_batch_that_is_a_hostile_pickle_is_refused(tmp_path, capsys):
    data = cifar_dir(tmp_path / "data")
    (data / "cifar-10-batches-py" / CIFAR_FILES[0]).write_bytes(
        hostile_pickle(tmp_path / "marker", {b"labels": [0]}))
    err = _one_line_exit_2(capsys, ["run", "--task", "classifier", "--dataset", "cifar10",
                                    "--data-dir", str(data), "--out", str(tmp_path / "out")])
    assert CIFAR_FILES[0] in err and "refused" in err
    assert not (tmp_path / "marker").exists()
    assert not (tmp_path / "out").exists()  # refused before the run folder is claimed


def test_cifar_batches_still_load_through_the_restricted_unpickler(tmp_path):
    from tasks.image.data import load_images

    images = load_images("cifar10", str(cifar_dir(tmp_path)), 32, 0)
    assert images.train_x.shape == (20, 3, 32, 32) and images.test_x.shape == (4, 3, 32, 32)


def test_a_hostile_checkpoint_is_refused_by_resume(tmp_path, capsys):
    run = _run_folder(tmp_path / "run", **{"checkpoint-every": 1, "num-server-rounds": 3})
    hostile_torch_file(run / "checkpoint.pt", tmp_path / "marker", {"format": 1})
    err = _one_line_exit_2(capsys, ["run", "--resume", str(run)])
    assert "checkpoint.pt" in err
    assert not (tmp_path / "marker").exists()


def test_client_state_in_a_checkpoint_is_no_pickle(tmp_path):
    from fl_sim.app.client_state import ClientStates
    from fl_sim.record.run_folder import RunFolderError
    from strategies.fedavg import build_fedavg

    states = ClientStates(build_fedavg(RunConfig.from_mapping({})))
    with pytest.raises(RunFolderError) as error:
        states.load_state_dict({"states": {0: hostile_pickle(tmp_path / "marker")}})
    assert "client state" in str(error.value) and "\n" not in str(error.value)
    assert not (tmp_path / "marker").exists()


def test_a_hostile_reference_classifier_is_refused(tmp_path):
    from fl_core.safe_load import DamagedFile
    from tasks.dcgan import metrics
    from tasks.image.data import load_images

    hostile_torch_file(tmp_path / metrics.REFERENCE_FILE, tmp_path / "marker",
                       {"accuracy": 0.9})
    images = load_images("digits", "", 28, 0)
    with pytest.raises(DamagedFile) as error:
        metrics.cached_reference(tmp_path, images.test_x, images.test_y, 10, 0)
    assert metrics.REFERENCE_FILE in str(error.value) and "\n" not in str(error.value)
    assert not (tmp_path / "marker").exists()


@pytest.mark.parametrize("command", ["sample", "audit"])
def test_hostile_round_weights_are_refused_by_sample_and_audit(tmp_path, capsys, command):
    run = _run_folder(tmp_path / "run", task="dcgan", dataset="digits")
    (run / "weights").mkdir()
    hostile_torch_file(run / "weights" / "round_001.pt", tmp_path / "marker")
    err = _one_line_exit_2(capsys, [command, str(run)])
    assert "round_001.pt" in err
    assert not (tmp_path / "marker").exists()


def test_a_hostile_synthetic_file_is_refused_by_audit(tmp_path, capsys):
    from tests.data_files import Payload

    run = _run_folder(tmp_path / "run", task="dcgan", dataset="digits")
    (run / "weights").mkdir()
    torch.save({"generator.x": torch.zeros(1)}, run / "weights" / "round_001.pt")
    release = tmp_path / "release.npz"
    np.savez(release, images=np.array([Payload(tmp_path / "marker")], dtype=object))
    err = _one_line_exit_2(capsys, ["audit", str(run), "--synthetic-file", str(release)])
    assert "release.npz" in err
    assert not (tmp_path / "marker").exists()


def test_a_hostile_guide_file_is_refused_when_a_run_resumes(tmp_path):
    from fl_core.safe_load import DamagedFile
    from tasks.dcgan.weights import guide_path, round_zero, weights_path

    weights_path(tmp_path, 0).parent.mkdir(parents=True)
    torch.save({"generator.w": torch.zeros(2)}, weights_path(tmp_path, 0))
    hostile_torch_file(guide_path(tmp_path), tmp_path / "marker", {"head.w": 1})
    with pytest.raises(DamagedFile, match="guide.pt") as error:
        round_zero(tmp_path)
    assert "\n" not in str(error.value)
    assert not (tmp_path / "marker").exists()


def test_a_hostile_published_disguise_data_set_is_refused(tmp_path):
    from fl_core.safe_load import DamagedFile
    from tasks.disguise.task import read_published
    from tests.data_files import Payload

    path = tmp_path / "published.npz"
    np.savez(path, x=np.array([Payload(tmp_path / "marker")], dtype=object), y=np.zeros(1))
    with pytest.raises(DamagedFile, match="published.npz") as error:
        read_published(path)
    assert "\n" not in str(error.value)
    assert not (tmp_path / "marker").exists()
