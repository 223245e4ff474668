"""A damaged or foreign run folder gives one line naming the file, exit 2, for every command."""

from __future__ import annotations

import json

import pytest
import torch

from fl_sim.cli import main
from fl_sim.options import RunConfig
from tests.synthetic_run import write_run


def _fails(capsys, argv, *words) -> str:
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("fl_sim: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    for word in words:
        assert word in err, err
    return err


def _dcgan_folder(path, rounds=(0, 1)):
    path.mkdir(parents=True)
    settings = RunConfig.from_mapping({"task": "dcgan", "dataset": "digits",
                                       "checkpoint-every": 1}).to_run_config()
    (path / "config.json").write_text(json.dumps({"run_id": path.name, "settings": settings,
                                                  "status": "finished"}))
    (path / "weights").mkdir()
    for r in rounds:
        torch.save({"generator.x": torch.zeros(3)}, path / "weights" / f"round_{r:03d}.pt")
    return path


COMMANDS = {
    "report": lambda run: ["report", str(run)],
    "compare": lambda run: ["compare", str(run), str(run)],
    "sample": lambda run: ["sample", str(run), "--n", "4"],
    "audit": lambda run: ["audit", str(run)],
    "resume": lambda run: ["run", "--resume", str(run)],
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_an_invalid_config_json(tmp_path, capsys, command):
    run = _dcgan_folder(tmp_path / "run")
    (run / "config.json").write_text('{"run_id": "r", "settings": {')  # cut short
    _fails(capsys, COMMANDS[command](run), "config.json", "not valid JSON")


@pytest.mark.parametrize("command", ["report", "compare", "sample", "audit", "resume"])
def test_a_config_json_that_is_no_object(tmp_path, capsys, command):
    run = _dcgan_folder(tmp_path / "run")
    (run / "config.json").write_text("[1, 2, 3]")
    _fails(capsys, COMMANDS[command](run), "config.json")


@pytest.mark.parametrize("command", ["sample", "audit"])
def test_truncated_round_weights(tmp_path, capsys, command):
    run = _dcgan_folder(tmp_path / "run")
    path = run / "weights" / "round_001.pt"
    path.write_bytes(path.read_bytes()[:50])
    _fails(capsys, COMMANDS[command](run), "round_001.pt")


def test_a_truncated_checkpoint(tmp_path, capsys):
    run = _dcgan_folder(tmp_path / "run")
    (run / "checkpoint.pt").write_bytes(b"PK\x03\x04 truncated")
    _fails(capsys, ["run", "--resume", str(run)], "checkpoint.pt")


@pytest.mark.parametrize("command", ["report", "compare"])
def test_a_csv_that_is_not_a_csv(tmp_path, capsys, command):
    run = write_run(tmp_path / "run")
    (run / "rounds.csv").write_bytes(bytes(range(256)) * 8)
    _fails(capsys, COMMANDS[command](run), "rounds.csv")


def test_settings_of_a_foreign_tool(tmp_path, capsys):
    run = _dcgan_folder(tmp_path / "run")
    (run / "config.json").write_text(json.dumps({"settings": {"task": "dcgan",
                                                              "gan-width": "wide"}}))
    _fails(capsys, ["sample", str(run)], "config.json", "--gan-width")


@pytest.mark.parametrize("command", ["report", "compare"])
def test_out_that_is_a_file(tmp_path, capsys, command):
    run = write_run(tmp_path / "run")
    target = tmp_path / "taken"
    target.write_text("a file")
    _fails(capsys, [*COMMANDS[command](run), "--out", str(target)], "--out", "taken")
    assert target.read_text() == "a file"
