"""The CLI's contract: every flag in --help, bad input -> one line + exit 2, nothing lost."""

from __future__ import annotations

import pytest

from fl_sim.cli import main
from fl_sim.options import defaults, option_groups
from tests.conftest import REPO, run_cli


def test_help_lists_every_flag_with_its_default():
    done = run_cli("run", "--help")
    assert done.returncode == 0
    text = " ".join(done.stdout.split())
    for group in option_groups():
        assert group.title in text
        for spec in group.specs():
            if not spec.hidden:  # set by the CLI itself (run-dir, he-keys)
                assert spec.flag in text
    assert "(default: 5)" in text  # --clients
    from tasks import registry

    rounds = ", ".join(f"{name} {registry.DEFAULTS[name]['num-server-rounds']}"
                       for name in registry.names())
    assert f"task defaults: {rounds}" in text and "regression 10" in rounds  # --rounds


def test_run_sh_help_is_the_run_help():
    import subprocess

    done = subprocess.run([str(REPO / "run.sh"), "--help"], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0 and "--ray-address" in done.stdout


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--task", "nope"], "--task: unknown value 'nope'; allowed: "),
        (["--strategy", "nope"],
         "--strategy: unknown value 'nope'; allowed: dp-fedavg, fedadam, fedavg, fedprox"),
        (["--clients", "0"], "--clients: must be >= 1 (got 0)"),
        (["--rounds", "-2"], "--rounds: must be >= 1 (got -2)"),
        (["--fraction-train", "0"], "--fraction-train: must be in (0, 1] (got 0.0)"),
    ],
)
def test_bad_flags_exit_2_with_one_line_and_write_nothing(tmp_path, capsys, args, fragment):
    code = main(["run", *args, "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err == f"fl_sim: error: {fragment}" or (fragment in err and "\n" not in err)
    assert not (tmp_path / "out").exists()


def test_unwritable_out_exits_2(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    code = main(["run", "--out", str(blocker / "sub")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("fl_sim: error: --out: cannot create")


def test_existing_run_name_is_refused_and_left_untouched(tmp_path, capsys):
    existing = tmp_path / "mine"
    existing.mkdir()
    (existing / "clients.csv").write_text("precious\n")
    code = main(["run", "--out", str(tmp_path), "--run-name", "mine"])
    assert code == 2
    assert "--run-name:" in capsys.readouterr().err
    assert (existing / "clients.csv").read_text() == "precious\n"


def test_unknown_flag_is_argparse_exit_2():
    done = run_cli("run", "--no-such-flag")
    assert done.returncode == 2 and "--no-such-flag" in done.stderr


def test_defaults_come_from_the_declarations():
    assert defaults()["out-dir"] == "results"
