"""Options declared once: the declarations, the settings built from them, and their copies.

The copies (``[tool.flwr.app.config]`` in pyproject.toml, ``docs/configuration.md``) are
generated from the declarations; these tests fail when a copy is out of date.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib

import pytest

from fl_core.federation import FederationOptions
from fl_core.options import OptionError, Options, group, option
from fl_sim.options import PYPROJECT, RunConfig, defaults, option_groups
from tasks.dcgan.options import DCGANOptions
from tests.conftest import REPO


def test_pyproject_app_config_is_a_copy_of_the_declared_defaults():
    table = tomllib.loads(PYPROJECT.read_text())["tool"]["flwr"]["app"]["config"]
    declared = defaults()
    assert list(table) == list(declared)  # same keys, same order
    for key, value in declared.items():
        assert table[key] == value and type(table[key]) is type(value), key


def test_configuration_reference_is_generated_from_the_declarations():
    from fl_sim.reference import configuration_markdown

    assert (REPO / "docs" / "configuration.md").read_text() == configuration_markdown(), (
        "docs/configuration.md is stale: run `./run.sh reference`")


def test_each_key_and_flag_is_declared_once():
    specs = [spec for kind in option_groups() for spec in kind.specs()]
    assert len({s.key for s in specs}) == len(specs) == len(defaults())
    assert len({s.flag for s in specs}) == len(specs)
    assert all(s.help for s in specs)


def test_a_second_declaration_of_a_key_is_refused():
    with pytest.raises(ValueError, match="declared twice"):
        @group("clash")
        class Clash(Options):
            lr: float = option(0.1, "again")


def test_type_and_default_must_agree():
    with pytest.raises(TypeError, match="must agree"):
        @group("bad")
        class Bad(Options):
            some_new_key: float = option(1, "an int default for a float option")


def test_components_receive_typed_groups():
    cfg = RunConfig.from_mapping({"task": "dcgan", "gan-width": "16", "clients": 3.0})
    assert cfg.get(DCGANOptions) is cfg.dcgan
    assert cfg.dcgan.gan_width == 16 and isinstance(cfg.dcgan.gan_width, int)
    assert cfg.get(FederationOptions).clients == 3
    with pytest.raises(AttributeError):  # frozen
        cfg.dcgan.gan_width = 8


def test_defaults_resolve_task_defaults():
    cfg = RunConfig.from_mapping({})
    assert cfg.task == defaults()["task"] == "regression"
    f = cfg.federation
    assert (f.num_server_rounds, f.local_epochs, f.batch_size, f.lr) == (10, 5, 16, 0.01)
    d = RunConfig.from_mapping({"task": "dcgan"}).federation
    assert (d.num_server_rounds, d.local_epochs, d.batch_size, d.lr) == (10, 2, 64, 3e-4)


def test_explicit_values_win_over_task_defaults_and_strings_are_coerced():
    cfg = RunConfig.from_mapping({"num-server-rounds": "3", "lr": "0.5", "clients": 2.0})
    f = cfg.federation
    assert (f.num_server_rounds, f.lr, f.clients) == (3, 0.5, 2)
    assert isinstance(f.clients, int)


def test_round_trip_through_run_config():
    cfg = RunConfig.from_mapping({"clients": 7, "seed": 3, "task": "dcgan", "gan-ema": 0.99})
    assert list(cfg.to_run_config()) == list(defaults())
    assert RunConfig.from_mapping(cfg.to_run_config()) == cfg


@pytest.mark.parametrize(
    ("overrides", "flag", "fragment"),
    [
        ({"task": "nope"}, "--task", "allowed: "),
        ({"strategy": "fedsgd"}, "--strategy", "fedavg, fedprox"),
        ({"clients": 0}, "--clients", "must be >= 1"),
        ({"num-server-rounds": -1}, "--rounds", "must be >= 1"),
        ({"fraction-train": 1.5}, "--fraction-train", "(0, 1]"),
        ({"fraction-evaluate": 0.0}, "--fraction-evaluate", "(0, 1]"),
        ({"lr": -0.1}, "--lr", "must be > 0"),
        ({"batch-size": -4}, "--batch-size", ">= 1"),
        ({"run-name": "../escape"}, "--run-name", "plain folder name"),
        ({"clients": "many"}, "--clients", "expected int"),
        ({"no-such-key": 1}, "no-such-key", "unknown setting"),
    ],
)
def test_invalid_settings_name_the_flag(overrides, flag, fragment):
    with pytest.raises(OptionError) as caught:
        RunConfig.from_mapping(overrides)
    message = str(caught.value)
    assert message.startswith(f"{flag}: ")
    assert fragment in message
    assert "\n" not in message


def test_unknown_task_lists_known_tasks():
    with pytest.raises(OptionError, match="regression"):
        RunConfig.from_mapping({"task": "nope"})


LIGHT = """
import sys
from fl_sim.cli import build_parser, main
build_parser().format_help()
for command in ("run", "deploy"):
    build_parser()._subparsers._group_actions[0].choices[command].format_help()
from fl_sim.options import RunConfig
RunConfig.from_mapping({"task": "dcgan"})
code = main(["report", sys.argv[1]])
heavy = sorted({m.split(".")[0] for m in sys.modules} & {"torch", "opacus", "ray"})
print("HEAVY", heavy, code)
"""


def test_cli_help_settings_and_report_import_no_torch_opacus_or_ray(tmp_path):
    from tests.synthetic_run import write_run

    run = write_run(tmp_path / "run")
    done = subprocess.run([sys.executable, "-c", LIGHT, str(run)], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert "HEAVY [] 0" in done.stdout, done.stdout + done.stderr


def test_registries_name_their_components_without_importing_them():
    done = subprocess.run(
        [sys.executable, "-c", "import sys; from tasks import registry as t; "
         "from strategies import registry as s; print(t.names(), s.names(), "
         "'torch' in sys.modules, 'tasks.dcgan.task' in sys.modules)"],
        cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.stdout.split("]")[-1].split() == ["False", "False"], done.stdout + done.stderr
    assert "'dcgan'" in done.stdout and "'dp-fedavg'" in done.stdout
