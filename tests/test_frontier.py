"""``fl_sim frontier``: its grid, its errors and its table, without running Ray."""

from __future__ import annotations

import argparse
import csv
import json

import pytest

from fl_core.options import UsageError
from fl_sim.cli import build_parser, main
from fl_sim.report.frontier import frontier_rows, markdown, write_frontier
from fl_sim.run import frontier


def planned(tmp_path, *argv):
    args = build_parser().parse_args(["frontier", "--out", str(tmp_path), *argv])
    from fl_sim.cli import overrides_from

    return frontier.plan(args, overrides_from(args))


def test_default_grid_is_epsilon_by_clients_by_prior(tmp_path):
    folder, configs = planned(tmp_path, "--run-name", "f", "--rounds", "3")
    assert folder == tmp_path / "f" and len(configs) == 16
    seen = set()
    for cfg in configs:
        values = cfg.to_run_config()
        assert values["conditional"] is True and values["num-server-rounds"] == 3
        assert values["tstr-seeds"] == frontier.TSTR_SEEDS == 3
        eps = values["target-epsilon"] if values["dp"] else "none"
        seen.add((values["clients"], values["gan-public-prior"], eps))
        assert cfg.run.run_name == frontier.point_name(eps, values["clients"],
                                                       values["gan-public-prior"])
    assert seen == {(c, p, e) for c in (5, 1) for p in ("digits", "none")
                    for e in (1.0, 3.0, 10.0, "none")}
    no_dp = [c.to_run_config() for c in configs if not c.to_run_config()["dp"]]
    assert len(no_dp) == 4 and all(v["target-epsilon"] == 0 for v in no_dp)


def test_grid_flags_narrow_it(tmp_path):
    _, configs = planned(tmp_path, "--epsilons", "2.5", "--client-counts", "3",
                         "--priors", "none", "--no-conditional", "--tstr-seeds", "1")
    (values,) = [c.to_run_config() for c in configs]
    assert (values["target-epsilon"], values["clients"], values["gan-public-prior"],
            values["conditional"], values["tstr-seeds"]) == (2.5, 3, "none", False, 1)


@pytest.mark.parametrize(("argv", "flag"), [
    (["--epsilons", "1,0"], "--epsilons"),
    (["--epsilons", "1,1"], "--epsilons"),
    (["--epsilons", "ten"], "--epsilons"),
    (["--client-counts", "0"], "--client-counts"),
    (["--priors", "fonts"], "--priors"),
    (["--task", "regression"], "--task"),
])
def test_bad_grid_values_name_the_flag(tmp_path, argv, flag):
    with pytest.raises(UsageError, match=flag):
        planned(tmp_path, *argv)


def test_flags_the_grid_sets_are_not_offered(tmp_path, capsys):
    with pytest.raises(SystemExit) as stopped:
        main(["frontier", "--out", str(tmp_path), "--clients", "3"])
    assert stopped.value.code == 2 and "--clients 3" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_bad_point_exits_2_before_any_run(tmp_path, capsys):
    code = main(["frontier", "--out", str(tmp_path), "--epsilons", "1,x"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "--epsilons" in err[0]
    assert not any(tmp_path.iterdir())


def test_existing_folder_is_refused(tmp_path):
    (tmp_path / "f").mkdir()
    with pytest.raises(UsageError, match="already exists"):
        planned(tmp_path, "--run-name", "f")


def fake_run(folder, clients, prior, dp, eps_curve, tstr, fid):
    folder.mkdir(parents=True)
    settings = {"clients": clients, "gan-public-prior": prior, "dp": dp,
                "target-epsilon": 10.0 if dp else 0.0, "delta": 1e-5}
    (folder / "config.json").write_text(json.dumps(
        {"run_id": folder.name, "settings": settings, "status": "finished",
         "total_seconds": 42.0}))
    lines = ["round,server_tstr_accuracy,server_fid,server_real_data_accuracy,epsilon_max"]
    for r, (t, f) in enumerate(zip(tstr, fid)):
        eps = "" if not dp or r == 0 else str(eps_curve[r - 1])
        lines.append(f"{r},{t},{f},0.95,{eps}")
    (folder / "rounds.csv").write_text("\n".join(lines) + "\n")
    return folder


def test_table_reads_round_zero_last_round_and_epsilon(tmp_path):
    runs = [fake_run(tmp_path / "a", 5, "digits", True, [4.0, 9.9], [0.40, 0.5, 0.71],
                     [60.0, 40.0, 30.0]),
            fake_run(tmp_path / "b", 5, "digits", False, [], [0.40, 0.9], [60.0, 12.0]),
            tmp_path / "never-started"]
    (tmp_path / "never-started").mkdir()
    rows = frontier_rows(runs)
    assert [r["run"] for r in rows] == ["a", "b"]
    a, b = rows
    assert (a["epsilon"], a["rounds"], a["tstr_round0"], a["tstr_final"]) == (9.9, 2, 0.40, 0.71)
    assert a["tstr_gain"] == pytest.approx(0.31) and a["fid_final"] == 30.0
    assert (b["epsilon"], b["target_epsilon"], b["delta"], b["tstr_gain"]) == (
        None, "none", None, pytest.approx(0.5))
    table = markdown(rows)
    assert "| 5 | digits | 10.0 | 9.9 | 2 | 40.0% -> 71.0% | +31.0 | 60.0 -> 30.0 | 42 s |" in table
    out = write_frontier(runs, tmp_path / "out")
    written = list(csv.DictReader(out.open()))
    assert [w["tstr_final"] for w in written] == ["0.71", "0.9"] and written[1]["epsilon"] == ""
    assert (tmp_path / "out" / "frontier.png").stat().st_size > 0


def test_points_that_all_failed_give_a_table_and_no_plot(tmp_path):
    failed = fake_run(tmp_path / "failed", 5, "digits", True, [], [], [])
    config = json.loads((failed / "config.json").read_text())
    (failed / "config.json").write_text(json.dumps({**config, "status": "failed"}))
    out = write_frontier([failed], tmp_path / "out")
    written = list(csv.DictReader(out.open()))
    assert [(w["run"], w["tstr_final"], w["status"]) for w in written] == [
        ("failed", "", "failed")]
    assert not (tmp_path / "out" / "frontier.png").exists()


def test_help_lists_the_grid_and_run_flags():
    parser = build_parser()
    sub = parser.commands["frontier"]
    flags = {flag for action in sub._actions for flag in action.option_strings}
    assert {"--epsilons", "--client-counts", "--priors", "--rounds", "--sweep-parallel",
            "--conditional"} <= flags
    assert not flags & {"--target-epsilon", "--gan-public-prior", "--dp", "--clients"}
    assert isinstance(sub, argparse.ArgumentParser)


def test_several_tstr_classifiers_add_their_spread_to_the_last_round(tmp_path):
    run = fake_run(tmp_path / "a", 5, "digits", True, [9.9], [0.40, 0.71], [60.0, 30.0])
    rounds = (run / "rounds.csv").read_text().splitlines()
    spread = ["server_tstr_accuracy_std", "0.05", "0.02"]
    (run / "rounds.csv").write_text("\n".join(f"{line},{s}" for line, s in zip(rounds, spread)))
    (row,) = frontier_rows([run])
    assert row["tstr_final_std"] == 0.02
    assert "40.0% -> 71.0% ± 2.0 | +31.0 |" in markdown([row])
    written = next(csv.DictReader(write_frontier([run], tmp_path / "out").open()))
    assert written["tstr_final_std"] == "0.02"
