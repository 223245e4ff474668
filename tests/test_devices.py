"""``--device``: which torch device a task trains on, and the refusal of a missing GPU."""

from __future__ import annotations

import pytest
import torch

from fl_sim.cli import main
from tasks.image.devices import torch_device


@pytest.mark.parametrize(("choice", "gpu", "expected"), [
    ("auto", False, "cpu"), ("auto", True, "cuda"), ("cpu", True, "cpu"), ("cpu", False, "cpu"),
    ("cuda", True, "cuda"),
])
def test_device_follows_the_choice_and_the_visible_gpu(monkeypatch, choice, gpu, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpu)
    assert torch_device(choice) == torch.device(expected)


def test_cuda_without_a_gpu_is_refused_not_silently_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="--device cuda, but this process sees no GPU"):
        torch_device("cuda")


def test_unknown_device_is_a_one_line_exit_2(tmp_path, capsys):
    code = main(["run", "--task", "dcgan", "--device", "gpu", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err == "fl_sim: error: --device: unknown value 'gpu'; allowed: auto, cpu, cuda"
    assert not (tmp_path / "out").exists()
