"""The report on synthetic run folders written by the real ResultsWriter."""

from __future__ import annotations

import json
import re

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from fl_sim.record.run_folder import RunFolderError
from fl_sim.report.build import epsilon_text, make_report
from fl_sim.report.data import load_run
from fl_sim.report.plots import MANY_CLIENTS, build_plots
from tests.synthetic_run import epsilon_of, write_run

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
GAN_FIGURES = {
    "clients_g_loss", "clients_d_loss", "server_metrics", "epsilon",
    "utility_vs_epsilon", "samples_timeline", "samples_final", "durations",
}


def assert_valid_png(path):
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE), path
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        width, height = image.size
        assert width > 200 and height > 200
        # not a blank canvas: a figure has axes, text and lines
        assert len(np.unique(np.asarray(image.convert("L")))) > 10


@pytest.fixture
def gan_run(tmp_path):
    return write_run(tmp_path / "gan", kind="dcgan", clients=3, rounds=4, client_dp=True,
                     samples=True, max_epsilon=3.0)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def plots_by_name(run_dir):
    return {plot.name: plot for plot in build_plots(load_run(run_dir))}


def lines(figure):
    return {line.get_label(): line for ax in figure.axes for line in ax.get_lines()}


def test_every_figure_is_a_png_and_index_references_it(gan_run):
    index = make_report(gan_run)
    assert index == gan_run / "report" / "index.html"
    pngs = {p.stem: p for p in (gan_run / "report").glob("*.png")}
    assert set(pngs) == GAN_FIGURES
    for path in pngs.values():
        assert_valid_png(path)
    page = index.read_text()
    for name in pngs:
        assert f'href="{name}.png"' in page
    # self-contained: every figure is embedded as data
    assert page.count("data:image/png;base64,") == len(pngs)
    # key numbers: final client-level epsilon 0.5 * 4 and the largest sample-level one
    assert epsilon_text(2.0, 1e-5) == "2 at delta = 1e-05"
    assert "<td>2 at delta = 1e-05</td>" in page
    assert f"<td>{epsilon_of(4, 2):.4g} at delta = 1e-05</td>" in page
    for text in ("dcgan", "dp-fedavg", "4 of 4", "server fid", "finished"):
        assert text in page


def test_plotted_epsilon_equals_the_csv_columns(gan_run):
    clients = pd.read_csv(gan_run / "clients.csv")
    privacy = pd.read_csv(gan_run / "privacy.csv")
    plots = plots_by_name(gan_run)
    drawn = lines(plots["epsilon"].figure)
    for cid in range(3):  # every epsilon curve starts at 0 in round 0
        rows = clients[(clients["partition_id"] == cid) & (clients["phase"] == "train")]
        line = drawn[f"client {cid} (sample-level)"]
        assert list(line.get_xdata()) == [0, *rows["round"]]
        assert list(line.get_ydata()) == pytest.approx([0, *rows["epsilon"]])
    client_level = drawn["client-level (DP-FedAvg)"]
    assert list(client_level.get_ydata()) == pytest.approx([0, *privacy["epsilon"]])
    budget = drawn["budget max-epsilon = 3"]
    assert set(budget.get_ydata()) == {3.0}
    # the utility curve pairs each round's epsilon with that round's main metric, from
    # round 0: the initial model at epsilon 0
    utility = plots["utility_vs_epsilon"].figure.axes[0].get_lines()[0]
    rounds = pd.read_csv(gan_run / "rounds.csv").set_index("round")
    assert list(utility.get_xdata()) == pytest.approx([0, *privacy["epsilon"]])
    assert list(utility.get_ydata()) == pytest.approx(list(rounds["server_fid"]))


def test_the_page_leads_with_the_answer(gan_run):
    page = make_report(gan_run).read_text()
    sections = re.findall(r'<section id="([a-z]+)">', page)
    assert sections == ["summary", "privacy", "utility", "clients", "settings"]
    assert '<nav id="contents">' in page and page.index("contents") < page.index("summary")
    summary = page[page.index('id="summary"'):page.index('id="privacy"')]
    rounds = pd.read_csv(gan_run / "rounds.csv")
    start, final = rounds["server_fid"].iloc[0], rounds["server_fid"].iloc[-1]
    assert f"{start:.4g} at round 0 -&gt; {final:.4g} at round 4" in summary
    assert "client-level DP-FedAvg" in summary and "wall time" in summary
    # privacy figures before utility ones
    assert page.index('id="epsilon"') < page.index('id="server_metrics"')
    assert page.index('id="server_metrics"') < page.index('id="clients_g_loss"')


def test_settings_list_only_what_the_run_used(tmp_path):
    run_dir = write_run(tmp_path / "plain", sample_dp=False)
    settings = {"task": "classifier", "strategy": "fedavg", "secagg": False, "he": False,
                "secagg-shares": 3, "proximal-mu": 0.1, "clipping-norm": 1.0, "lr": 0.01,
                "fail-rate": 0.0, "straggler-seconds": 0.0, "dp": False, "max-grad-norm": 1.0}
    config = json.loads((run_dir / "config.json").read_text())
    (run_dir / "config.json").write_text(json.dumps({**config, "settings": settings}))
    page = make_report(run_dir).read_text()
    shown = page[page.index('id="settings"'):]
    for key in ("lr", "secagg", "he", "dp"):
        assert f"<td>{key}</td>" in shown
    for key in ("secagg-shares", "proximal-mu", "clipping-norm", "fail-rate",
                "straggler-seconds", "max-grad-norm"):
        assert f"<td>{key}</td>" not in shown, key


def test_identical_clients_are_one_line_and_a_wide_loss_gets_a_log_axis(tmp_path):
    run_dir = write_run(tmp_path / "same", clients=3, rounds=3)
    clients = pd.read_csv(run_dir / "clients.csv")
    clients["epsilon"] = clients["round"] * 1.5  # equal-sized IID clients
    clients.to_csv(run_dir / "clients.csv", index=False)
    rounds = pd.read_csv(run_dir / "rounds.csv")
    rounds.loc[rounds["round"] == 0, "server_loss"] = 1000.0  # an untrained start
    rounds.to_csv(run_dir / "rounds.csv", index=False)
    plots = plots_by_name(run_dir)
    assert set(lines(plots["epsilon"].figure)) == {"all 3 clients (sample-level), identical"}
    assert plots["clients_loss"].figure.axes[0].get_yscale() == "log"
    assert plots["clients_accuracy"].figure.axes[0].get_yscale() == "linear"


def test_per_client_lines_aggregate_and_server(tmp_path):
    run_dir = write_run(tmp_path / "cls", clients=2, rounds=3)
    clients = pd.read_csv(run_dir / "clients.csv")
    rounds = pd.read_csv(run_dir / "rounds.csv")
    plots = plots_by_name(run_dir)
    train, evaluate = plots["clients_loss"].figure.axes
    drawn = lines(plots["clients_loss"].figure)
    assert {"client 0", "client 1", "aggregate (strategy)",
            "server evaluation (global model)"} <= set(drawn)
    client1 = clients[(clients["partition_id"] == 1) & (clients["phase"] == "evaluate")]
    got = {line.get_label(): line for line in evaluate.get_lines()}["client 1"]
    assert list(got.get_ydata()) == pytest.approx(list(client1["loss"]))
    server = {line.get_label(): line
              for line in train.get_lines()}["server evaluation (global model)"]
    assert list(server.get_ydata()) == pytest.approx(list(rounds["server_loss"]))
    # the synthetic client 1 trains 0.1 s longer than client 0 every round
    slowest = lines(plots["durations"].figure)["slowest client (most often client 1)"]
    train_rows = clients[clients["phase"] == "train"]
    assert list(slowest.get_ydata()) == pytest.approx(
        list(train_rows.groupby("round")["seconds"].max()))
    for ax in plots["clients_loss"].figure.axes:
        assert ax.get_xlabel() == "round" and ax.get_ylabel() == "loss"
        assert ax.get_legend() is not None


def test_many_clients_get_bands_not_lines(tmp_path):
    run_dir = write_run(tmp_path / "many", clients=MANY_CLIENTS + 28, rounds=2)
    plots = plots_by_name(run_dir)
    for name in ("clients_loss", "epsilon", "durations"):
        labels = {t.get_text() for ax in plots[name].figure.axes
                  for t in (ax.get_legend().get_texts() if ax.get_legend() else [])}
        assert not any(re.fullmatch(r"client \d+.*", label) for label in labels), name
        assert any(label.startswith("clients median") for label in labels), name
        assert len(labels) < 10


def test_interrupted_run_with_missing_last_round(tmp_path):
    run_dir = write_run(tmp_path / "cut", rounds=5, recorded_rounds=2, status="interrupted")
    # round 3's clients replied, the run died before its rounds.csv row; then a torn line
    extra = pd.read_csv(run_dir / "clients.csv").query("round == 2").assign(round=3)
    with (run_dir / "clients.csv").open("a") as handle:
        extra.to_csv(handle, header=False, index=False)
        handle.write("cut,3,train,0,10")
    index = make_report(run_dir)
    page = index.read_text()
    assert "interrupted" in page and "2 of 5" in page
    assert (run_dir / "report" / "clients_loss.png").exists()
    run = load_run(run_dir)
    assert run.finished_rounds == 2 and run.sample_level_epsilon().index.max() == 3


def test_run_without_privacy_has_no_epsilon_figures(tmp_path):
    run_dir = write_run(tmp_path / "plain", sample_dp=False)
    page = make_report(run_dir).read_text()
    assert not (run_dir / "report" / "epsilon.png").exists()
    assert not (run_dir / "report" / "utility_vs_epsilon.png").exists()
    assert "no privacy accounting in this run" in page


def test_stale_figures_are_removed(tmp_path):
    run_dir = write_run(tmp_path / "plain", sample_dp=False)
    (run_dir / "report").mkdir()
    (run_dir / "report" / "epsilon.png").write_bytes(b"old")
    make_report(run_dir)
    assert not (run_dir / "report" / "epsilon.png").exists()


@pytest.mark.parametrize(("kind", "drop", "expected"), [
    ("classifier", [], "server_accuracy"),
    ("dcgan", [], "server_fid"),
    ("classifier", ["server_accuracy"], "server_loss"),
    ("classifier", ["server_accuracy", "server_loss"], "evaluate_accuracy"),
])
def test_main_metric(tmp_path, kind, drop, expected):
    run = load_run(write_run(tmp_path / "r", kind=kind))
    run.rounds = run.rounds.drop(columns=drop)
    assert run.main_metric() == expected


def test_not_a_run_folder(tmp_path):
    with pytest.raises(RunFolderError, match="no such folder"):
        load_run(tmp_path / "missing")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(RunFolderError, match="not a run folder"):
        load_run(tmp_path)
