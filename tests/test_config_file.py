"""--config FILE.toml: the file's run-config keys, flags over them, one line for a bad file."""

from __future__ import annotations

import pytest

from fl_sim.cli import build_parser, main, overrides_from
from fl_sim.options import PYPROJECT, RunConfig, defaults


def _overrides(*argv: str) -> dict:
    return overrides_from(build_parser().parse_args(["run", *argv]))


def test_file_keys_are_used_and_flags_win(tmp_path):
    path = tmp_path / "study.toml"
    path.write_text('num-server-rounds = 3\nclients = 4\nstrategy = "fedprox"\n')
    keys = _overrides("--config", str(path), "--clients", "7")
    assert keys == {"num-server-rounds": 3, "clients": 7, "strategy": "fedprox"}
    cfg = RunConfig.from_mapping(keys)
    assert (cfg.federation.num_server_rounds, cfg.federation.clients) == (3, 7)


def test_a_copy_of_pyprojects_app_config_table_reads_as_the_defaults(tmp_path):
    text = PYPROJECT.read_text()
    table = text[text.index("[tool.flwr.app.config]"):]
    table = table[:table.index("\n[", 1)] if "\n[" in table[1:] else table
    path = tmp_path / "pyproject-copy.toml"
    path.write_text(table)
    keys = _overrides("--config", str(path))
    assert RunConfig.from_mapping(keys).to_run_config() == RunConfig.from_mapping(
        defaults()).to_run_config()


@pytest.mark.parametrize(("content", "words"), [
    ("no-such-key = 1\n", "unknown key 'no-such-key'"),
    ("clients = \n", "not TOML"),
    ('run-dir = "x"\n', "set by fl_sim itself"),
])
def test_a_bad_file_is_one_line_naming_the_flag_and_no_folder(tmp_path, capsys, content, words):
    path = tmp_path / "bad.toml"
    path.write_text(content)
    assert main(["run", "--config", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--config" in err and words in err and str(path) in err
    assert not (tmp_path / "out").exists()


def test_a_missing_file_is_one_line(tmp_path, capsys):
    assert main(["run", "--config", str(tmp_path / "none.toml")]) == 2
    assert "--config" in capsys.readouterr().err
