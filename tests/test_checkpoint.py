"""Checkpoint files, CSV truncation, round offsets and the scale and fault settings."""

from __future__ import annotations

import csv
import json
import random
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord

from fl_sim.cli import main
from fl_sim.options import OptionError, RunConfig
from fl_sim.run import checkpoint
from fl_sim.run.lifecycle import resume_config
from strategies.fedavg import fedavg_kwargs


class Counter:
    """A stand-in accountant: a state that must continue across a resume."""

    def __init__(self):
        self.steps = 0

    def state_dict(self):
        return {"steps": self.steps}

    def load_state_dict(self, state):
        self.steps = state["steps"]


def _arrays(value: float) -> ArrayRecord:
    return ArrayRecord({"weight": torch.full((2, 2), value), "bias": torch.tensor([value])})


def test_checkpoint_is_written_when_due_and_restores_states_and_rng(tmp_path):
    counter = Counter()
    saver = checkpoint.Checkpointer(tmp_path, every=2, planned_rounds=5,
                                    providers={"accountant": counter})
    assert saver.after_round(0, _arrays(0)) is None
    assert saver.after_round(1, _arrays(1)) is None
    counter.steps = 40
    random.seed(1)
    assert saver.after_round(2, _arrays(2)) == tmp_path / checkpoint.CHECKPOINT
    expected_draws = (random.random(), np.random.random(), torch.rand(1).item())
    assert saver.after_round(3, _arrays(3)) is None
    assert checkpoint.load(tmp_path).server_round == 2

    restored = Counter()
    fresh = checkpoint.Checkpointer(tmp_path, 2, 5, {"accountant": restored})
    loaded = checkpoint.load(tmp_path)
    random.seed(99)
    fresh.restore(loaded)
    assert restored.steps == 40
    assert (random.random(), np.random.random(), torch.rand(1).item()) == expected_draws
    assert loaded.planned_rounds == 5
    assert torch.equal(loaded.array_record().to_torch_state_dict()["weight"],
                       torch.full((2, 2), 2.0))
    # The last planned round is always checkpointed, whatever K is.
    saver.after_round(5, _arrays(5))
    assert checkpoint.load(tmp_path).server_round == 5


def test_checkpoints_off_and_missing_state(tmp_path):
    assert checkpoint.Checkpointer(tmp_path, 0, 3).after_round(3, _arrays(1)) is None
    assert not (tmp_path / checkpoint.CHECKPOINT).exists()
    checkpoint.Checkpointer(tmp_path, 1, 3).after_round(1, _arrays(1))
    needs_more = checkpoint.Checkpointer(tmp_path, 1, 3, {"accountant": Counter()})
    with pytest.raises(ValueError, match="accountant"):
        needs_more.restore(checkpoint.load(tmp_path))
    with pytest.raises(ValueError, match="twice"):
        needs_more.register("accountant", Counter())


def test_truncate_csv_keeps_rounds_up_to_the_checkpoint(tmp_path):
    path = tmp_path / "clients.csv"
    rows = [["run_id", "round", "phase"], ["r", "1", "train"], ["r", "2", "train"],
            ["r", "2", "evaluate"], ["r", "3", "train"], ["r", "10", "train"]]
    with path.open("w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    assert checkpoint.truncate_csv(path, 2) == 2
    with path.open(newline="") as handle:
        assert list(csv.reader(handle)) == rows[:4]
    assert checkpoint.truncate_csv(tmp_path / "absent.csv", 2) == 0


def test_round_offset_renumbers_every_call():
    seen = []
    inner = SimpleNamespace(
        configure_train=lambda r, *a: seen.append(("ct", r)) or [],
        aggregate_train=lambda r, replies: seen.append(("at", r)) or (None, None),
        configure_evaluate=lambda r, *a: seen.append(("ce", r)) or [],
        aggregate_evaluate=lambda r, replies: seen.append(("ae", r)),
        min_replies=2,
    )
    shifted = checkpoint.RoundOffset(inner, 7)
    shifted.configure_train(1, None, None, None)
    shifted.aggregate_train(1, [])
    shifted.configure_evaluate(2, None, None, None)
    shifted.aggregate_evaluate(2, [])
    assert seen == [("ct", 8), ("at", 8), ("ce", 9), ("ae", 9)]
    assert shifted.min_replies == 2


@pytest.mark.parametrize("clients", [1, 3, 7, 10, 99, 100, 333, 1000, 1001])
@pytest.mark.parametrize("per_round", [1, 3, 10])
def test_clients_per_round_samples_exactly_k(clients, per_round):
    if per_round > clients:
        return
    kw = fedavg_kwargs(RunConfig.from_mapping({"clients": clients,
                                               "clients-per-round": per_round}))
    # Flower 1.42 FedAvg: sample_size = max(int(connected * fraction), min_nodes)
    assert max(int(clients * kw["fraction_train"]), kw["min_train_nodes"]) == per_round
    assert max(int(clients * kw["fraction_evaluate"]), kw["min_evaluate_nodes"]) == per_round
    assert kw["min_available_nodes"] == clients


def test_scale_and_fault_settings_validate():
    cfg = RunConfig.from_mapping({"clients": 1000, "clients-per-round": 10, "fail-rate": 0.1})
    assert (cfg.sampling.clients_per_round, cfg.faults.fail_rate,
            cfg.quorum.min_replies) == (10, 0.1, 1)
    bad = [({"fail-rate": 1.5}, "--fail-rate"), ({"straggler-rate": -0.1}, "--straggler-rate"),
           ({"clients": 5, "clients-per-round": 6}, "--clients-per-round"),
           ({"clients-per-round": 2, "min-replies": 3}, "--min-replies"),
           ({"checkpoint-every": -1}, "--checkpoint-every"),
           ({"round-timeout": 0}, "--round-timeout")]
    for overrides, flag in bad:
        with pytest.raises(OptionError) as error:
            RunConfig.from_mapping(overrides)
        assert str(error.value).startswith(flag)


def _stored_run(tmp_path, done_round: int, rounds: int = 4):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    settings = RunConfig.from_mapping({"num-server-rounds": rounds, "checkpoint-every": 1,
                                       "clients": 3, "seed": 9}).to_run_config()
    (run_dir / "config.json").write_text(json.dumps({"settings": settings, "status": "running"}))
    checkpoint.Checkpointer(run_dir, 1, rounds).after_round(done_round, _arrays(1))
    return run_dir


def test_resume_config_continues_the_stored_settings(tmp_path):
    run_dir = _stored_run(tmp_path, 2)
    cfg = resume_config({"resume": str(run_dir), "ray-address": "127.0.0.1:1"})
    assert (cfg.federation.seed, cfg.federation.clients,
            cfg.federation.num_server_rounds) == (9, 3, 4)
    assert cfg.run.run_dir == cfg.run.resume == str(run_dir)
    assert cfg.resources.ray_address == "127.0.0.1:1"
    with pytest.raises(OptionError, match="cannot change --seed"):
        resume_config({"resume": str(run_dir), "seed": 1})


def test_resume_refusals_exit_2(tmp_path, capsys):
    assert main(["run", "--resume", str(tmp_path / "none")]) == 2
    assert "--resume: " in capsys.readouterr().err
    finished = _stored_run(tmp_path, 4)
    assert main(["run", "--resume", str(finished)]) == 2
    assert "already finished its 4 rounds" in capsys.readouterr().err
    (finished / checkpoint.CHECKPOINT).unlink()
    assert main(["run", "--resume", str(finished)]) == 2
    assert "--checkpoint-every" in capsys.readouterr().err
