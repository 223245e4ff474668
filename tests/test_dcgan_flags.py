"""Bad image/DP flags stop before Ray starts: exit 2 and one line naming the flag."""

from __future__ import annotations

import pytest

from fl_sim.options import OptionError, RunConfig
from tests.conftest import run_cli


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--noise-multiplier", "-0.5"], "--noise-multiplier: must be >= 0 (got -0.5)"),
        (["--delta", "1"], "--delta: must be in (0, 1) (got 1.0)"),
        (["--dataset", "mnist", "--data-dir", "/no/such/folder"],
         "--data-dir: /no/such/folder is not a folder (expected IDX files train-images-idx3-ubyte"),
    ],
)
def test_cli_exits_2_with_one_clear_line(flags, message, tmp_path):
    done = run_cli("run", "--task", "dcgan", "--out", str(tmp_path), *flags, timeout=120)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], done.stderr
    assert list(tmp_path.iterdir()) == []  # no run folder, no Ray


@pytest.mark.parametrize(
    ("overrides", "flag"),
    [
        ({"dataset": "imagenet"}, "--dataset"),
        ({"dataset": "cifar10"}, "--data-dir"),
        ({"image-size": 48}, "--image-size"),
        ({"partition": "zipf"}, "--partition"),
        ({"dirichlet-alpha": 0.0}, "--dirichlet-alpha"),
        ({"max-grad-norm": 0.0}, "--max-grad-norm"),
        ({"delta": 0.0}, "--delta"),
        ({"target-epsilon": -1.0}, "--target-epsilon"),
        ({"accountant": "gdp"}, "--accountant"),
        ({"grad-sample-mode": "ghost"}, "--grad-sample-mode"),
    ],
)
def test_config_names_the_bad_flag(overrides, flag):
    with pytest.raises(OptionError) as error:
        RunConfig.from_mapping({"task": "dcgan", **overrides})
    assert error.value.flag == flag and str(error.value).startswith(f"{flag}: ")


def test_defaults_are_valid_and_resolve_the_task_defaults():
    cfg = RunConfig.from_mapping({"task": "dcgan"})
    f = cfg.federation
    assert (f.num_server_rounds, f.local_epochs, f.batch_size, f.lr) == (10, 2, 64, 3e-4)
    assert (cfg.image.dataset, cfg.image.image_size, cfg.dp_sgd.dp, f.delta) == (
        "mnist5k", 28, True, 1e-5)
