"""compare, --sweep planning, progress display and the report/compare sub-commands."""

from __future__ import annotations

import io

import matplotlib.pyplot as plt
import pandas as pd
import pytest

from fl_sim.cli import build_parser, main, overrides_from
from fl_sim.record.progress import RoundProgress, choose_mode, progress_line
from fl_sim.report.compare import compare, labels
from fl_sim.report.data import load_run
from fl_sim.run.sweep import SweepError, parse_sweep, plan, point_name
from tests.conftest import run_cli
from tests.synthetic_run import write_run
from tests.test_report import assert_valid_png


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture
def two_runs(tmp_path):
    # a larger step costs more epsilon here (as a smaller noise multiplier would)
    return [write_run(tmp_path / "runs" / f"lr{lr}", lr=lr, rounds=3, epsilon_scale=lr * 500)
            for lr in (0.002, 0.004)]


def test_compare_two_runs_writes_the_tradeoff_plot(two_runs, tmp_path):
    index = compare(two_runs)
    out = tmp_path / "runs" / "compare"
    assert index == out / "index.html"
    for name in ("tradeoff", "metric_overlay", "epsilon_overlay"):
        assert_valid_png(out / f"{name}.png")
        assert f'href="{name}.png"' in index.read_text()
    table = pd.read_csv(out / "compare.csv")
    assert list(table["label"]) == ["lr=0.002", "lr=0.004"]
    for path, row in zip(two_runs, table.itertuples()):
        rounds = pd.read_csv(path / "rounds.csv")
        assert row.server_accuracy == pytest.approx(rounds["server_accuracy"].iloc[-1])
        assert row.epsilon == pytest.approx(rounds["epsilon_max"].iloc[-1])


def test_tradeoff_points_are_the_final_values(two_runs, tmp_path):
    import fl_sim.report.compare as module

    runs = [load_run(p) for p in two_runs]
    points = module.final_points(runs, labels(runs), "server_accuracy")
    fig = module.tradeoff_figure(points, "server_accuracy")
    line = fig.axes[0].get_lines()[0]
    finals = sorted((r.final("epsilon_max"), r.final("server_accuracy")) for r in runs)
    assert list(line.get_xdata()) == pytest.approx([x for x, _ in finals])
    assert list(line.get_ydata()) == pytest.approx([y for _, y in finals])
    assert finals[0][0] < finals[1][0]


def test_no_dp_run_is_a_reference_line(tmp_path):
    private = write_run(tmp_path / "dp")
    plain = write_run(tmp_path / "plain", sample_dp=False)
    compare([private, plain], tmp_path / "out")
    table = pd.read_csv(tmp_path / "out" / "compare.csv")
    assert table["epsilon"].isna().tolist() == [False, True]


def test_cli_report_and_compare(two_runs, tmp_path, capsys):
    assert main(["report", str(two_runs[0])]) == 0
    assert "report/index.html" in capsys.readouterr().out
    assert main(["compare", *map(str, two_runs), "--out", str(tmp_path / "c")]) == 0
    assert (tmp_path / "c" / "tradeoff.png").exists()
    assert main(["compare", *map(str, two_runs), "--metric", "server_fid"]) == 2
    err = capsys.readouterr().err
    assert "--metric" in err and "server_accuracy" in err


def test_missing_or_non_run_folder_exits_2(tmp_path, capsys):
    assert main(["report", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "RUN_DIR" in err and "no such folder" in err
    (tmp_path / "notes.txt").write_text("not a run")
    assert main(["compare", str(tmp_path), str(tmp_path)]) == 2
    assert "not a run folder" in capsys.readouterr().err


def test_report_exit_code_through_python_m(tmp_path):
    done = run_cli("report", str(tmp_path), timeout=120)
    assert done.returncode == 2 and "not a run folder" in done.stderr
    assert "Traceback" not in done.stderr


# --- sweep -------------------------------------------------------------------------
def test_parse_sweep_keys_flags_and_values():
    assert parse_sweep(["lr=0.005,0.01", "rounds=2, 3"]) == [
        ("lr", ["0.005", "0.01"]), ("num-server-rounds", ["2", "3"])]
    assert point_name({"lr": "0.005", "seed": "1"}) == "lr-0.005_seed-1"
    for bad, why in [("lr", "KEY=V1"), ("lr=", "KEY=V1"), ("nope=1", "unknown key"),
                     ("out-dir=a,b", "cannot be swept")]:
        with pytest.raises(SweepError, match=why):
            parse_sweep([bad])
    with pytest.raises(SweepError, match="twice"):
        parse_sweep(["lr=0.1", "lr=0.2"])


def test_plan_builds_the_grid_and_validates_every_point(tmp_path):
    parser = build_parser()
    args = parser.parse_args(["run", "--clients", "2", "--out", str(tmp_path), "--run-name",
                              "sw", "--sweep", "lr=0.005,0.01", "--sweep", "seed=1,2"])
    sweep_dir, configs = plan(args.sweep, overrides_from(args))
    assert sweep_dir == tmp_path / "sw" and not sweep_dir.exists()
    assert [(c.federation.lr, c.federation.seed, c.federation.clients) for c in configs] == [
        (0.005, 1, 2), (0.005, 2, 2), (0.01, 1, 2), (0.01, 2, 2)]
    assert {c.run.out_dir for c in configs} == {str(sweep_dir)}
    assert configs[0].run.run_name == "lr-0.005_seed-1"


def test_bad_sweep_value_exits_2_before_any_run(tmp_path, capsys):
    code = main(["run", "--out", str(tmp_path), "--sweep", "lr=0.01,-1"])
    assert code == 2
    assert "--lr: must be > 0" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())
    assert main(["run", "--lr", "0.1", "--sweep", "lr=0.2"]) == 2


# --- progress ----------------------------------------------------------------------
ROW = {"round": 2, "train_loss": 0.5, "server_accuracy": 0.81234, "epsilon_max": 1.5,
       "train_replies": 4, "train_failures": 1, "seconds": 2.25}


def test_plain_progress_line():
    line = progress_line(ROW, 5)
    assert line.startswith("round 2/5")
    for text in ("train_loss 0.5", "server_accuracy 0.8123", "epsilon_max 1.5",
                 "replies 4 ok/1 failed", "2.2s"):
        assert text in line
    assert progress_line({"round": 0, "server_loss": 3.0}, 5) == "round 0/5  server_loss 3"
    assert "epsilon_client_level 0.75" in progress_line({**ROW, "epsilon_client_level": 0.75}, 5)
    client = progress_line({**ROW, "epsilon": 0.75, "epsilon_level": "client"}, 5)
    assert "epsilon 0.75" in client and "epsilon_max 1.5" in client
    sample = progress_line({**ROW, "epsilon": 1.5, "epsilon_level": "sample"}, 5)
    assert "epsilon 1.5" not in sample.replace("epsilon_max 1.5", "")  # shown once


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_modes():
    assert choose_mode(True, Tty()) == "quiet"
    assert choose_mode(False, Tty()) == "rich"
    assert choose_mode(False, io.StringIO()) == "plain"
    quiet = io.StringIO()
    with RoundProgress(5, "quiet", quiet) as progress:
        progress.on_round(ROW)
    assert quiet.getvalue() == ""
    plain = io.StringIO()
    with RoundProgress(5, "plain", plain) as progress:
        progress.on_round(ROW)
    assert plain.getvalue() == progress_line(ROW, 5) + "\n"
    tty = Tty()
    with RoundProgress(5, "rich", tty) as progress:
        progress.on_round(ROW)
    assert "round 2/5" in tty.getvalue() and "replies 4 ok/1 failed" in tty.getvalue()
