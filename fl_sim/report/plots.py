"""The report's figures, built from a :class:`~fl_sim.report.data.RunData`.

Each builder returns a matplotlib Figure (or None when the run has no data for it), so
tests can check the plotted data and :mod:`fl_sim.report.build` decides where PNGs go. Up to
``MANY_CLIENTS`` clients get one line each; above that a median line with 10-90 %
and min-max bands keeps 100 clients readable.
"""

from __future__ import annotations

from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from fl_sim.report.data import RunData, higher_is_better  # noqa: E402

MANY_CLIENTS = 12
SAMPLE_TIMELINE = 5  # sample grids side by side
AGGREGATE = {"color": "black", "linewidth": 2.2, "marker": "o", "markersize": 3}
SERVER = {"color": "tab:red", "linewidth": 2.2, "linestyle": "--", "marker": "s", "markersize": 3}
BUDGET = {"color": "tab:red", "linestyle": ":", "linewidth": 1.8}


@dataclass
class Plot:
    """One figure of the report: file stem, caption, the figure and its report section."""

    name: str
    caption: str
    figure: Figure
    section: str = "utility"


def pretty(column: str) -> str:
    """Axis label of a metric column: ``server_fid`` -> ``server fid``."""
    return column.replace("_", " ")


def per_client(ax, table: pd.DataFrame, label: str = "client {}") -> None:
    """Draw one line per column of ``table`` (index = round), or bands when many.

    Lines carry the label ``client <partition>``, bands ``clients median`` etc., so a
    test or a reader can find each series.
    """
    table = table.sort_index()
    if table.shape[1] > 1 and _identical(table):
        suffix = label.partition("{}")[2]  # e.g. " (sample-level)"
        ax.plot(table.index, table.iloc[:, 0].values, color="tab:blue", linewidth=1.2,
                marker=".", label=f"all {table.shape[1]} clients{suffix}, identical")
        return
    if table.shape[1] <= MANY_CLIENTS:
        cmap = plt.get_cmap("tab10" if table.shape[1] <= 10 else "tab20")
        for i, column in enumerate(table.columns):
            values = table[column].dropna()
            ax.plot(values.index, values.values, label=label.format(_int(column)),
                    color=cmap(i % cmap.N), linewidth=1, alpha=0.8, marker=".")
        return
    rounds = table.index.to_numpy()
    q = table.quantile([0.0, 0.1, 0.5, 0.9, 1.0], axis=1).T
    ax.fill_between(rounds, q[0.0], q[1.0], color="tab:blue", alpha=0.15,
                    label=f"clients min-max ({table.shape[1]})")
    ax.fill_between(rounds, q[0.1], q[0.9], color="tab:blue", alpha=0.3,
                    label="clients 10-90 %")
    ax.plot(rounds, q[0.5], color="tab:blue", linewidth=1.5, label="clients median")


def _identical(table: pd.DataFrame) -> bool:
    """Every client's curve equals the first one's (equal-sized IID clients' epsilons).

    One line is drawn instead of N lines stacked on top of each other, whose legend
    would list clients the reader cannot see.
    """
    values = table.to_numpy(dtype=float)
    return bool(np.allclose(values, values[:, :1], rtol=1e-9, atol=0, equal_nan=True))


def _log_if_wide(ax, values: pd.Series | np.ndarray) -> None:
    """A log y-axis when positive values span over two decades (a loss from round 0)."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if len(values) and (values > 0).all() and values.max() / values.min() > 100:
        ax.set_yscale("log")


def _int(value) -> object:
    try:
        return int(value)
    except (TypeError, ValueError):
        return value


def _legend(ax) -> None:
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        ax.legend(fontsize="small", ncol=2 if len(handles) > 6 else 1, loc="best")


def _finish(ax, ylabel: str, title: str) -> None:
    ax.set_xlabel("round")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.xaxis.get_major_locator().set_params(integer=True)
    _legend(ax)


def client_metric_figure(run: RunData, metric: str) -> Figure | None:
    """``metric`` per client for training and evaluation, with aggregate and server."""
    phases = [p for p in ("train", "evaluate")
              if metric in run.ok_clients(p) and run.ok_clients(p)[metric].notna().any()]
    if not phases:
        return None
    fig, axes = plt.subplots(1, len(phases), figsize=(6.5 * len(phases), 4.2), squeeze=False)
    for ax, phase in zip(axes[0], phases):
        rows = run.ok_clients(phase).dropna(subset=[metric])
        table = rows.pivot_table(index="round", columns="partition_id", values=metric,
                                 aggfunc="last")
        per_client(ax, table)
        aggregate = run.series(f"{phase}_{metric}")
        if len(aggregate):
            ax.plot(aggregate.index, aggregate.values, label="aggregate (strategy)", **AGGREGATE)
        server = run.series(f"server_{metric}")
        if len(server):
            ax.plot(server.index, server.values, label="server evaluation (global model)",
                    **SERVER)
        where = "local model after training" if phase == "train" else "global model on client data"
        _log_if_wide(ax, np.concatenate([table.to_numpy(dtype=float).ravel(),
                                         aggregate.to_numpy(), server.to_numpy()]))
        _finish(ax, pretty(metric), f"{pretty(metric)}: {phase} ({where})")
    fig.tight_layout()
    return fig


def server_metrics_figure(run: RunData, skip: set[str]) -> Figure | None:
    """Server-only metrics of the global model (e.g. FID, inception score), one panel each."""
    columns = [c for c in run.metric_columns() if c.startswith("server_") and c not in skip]
    if not columns:
        return None
    cols = min(3, len(columns))
    rows = -(-len(columns) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.6 * rows), squeeze=False)
    for ax, column in zip(axes.flat, columns):
        values = run.series(column)
        ax.plot(values.index, values.values, label="global model", **SERVER)
        _log_if_wide(ax, values)
        better = "higher" if higher_is_better(column) else "lower"
        _finish(ax, pretty(column), f"{pretty(column)} ({better} is better)")
    for ax in list(axes.flat)[len(columns):]:
        ax.set_visible(False)
    fig.tight_layout()
    return fig


def epsilon_figure(run: RunData) -> Figure | None:
    """Sample-level epsilon per client and client-level epsilon, with the budget line."""
    sample_level = run.sample_level_epsilon()
    client_level = run.client_level_epsilon()
    if sample_level.empty and client_level.empty:
        return None
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    if not sample_level.empty:
        sample_level = _from_zero(sample_level)
        per_client(ax, sample_level, label="client {} (sample-level)")
        if sample_level.shape[1] > 1 and not _identical(sample_level):
            largest = run.series("epsilon_max")
            largest = (_from_zero(largest) if len(largest) else sample_level.max(axis=1))
            ax.plot(largest.index, largest.values, label="largest client (sample-level)",
                    **AGGREGATE)
    if len(client_level):
        client_level = _from_zero(client_level)
        ax.plot(client_level.index, client_level.values, label="client-level (DP-FedAvg)",
                **SERVER)
    if run.budget:
        ax.axhline(run.budget, label=f"budget max-epsilon = {run.budget:g}", **BUDGET)
    delta = run.delta
    _finish(ax, "epsilon (cumulative)",
            "privacy spent" + (f" at delta = {delta:.3g}" if delta else ""))
    ax.set_ylim(bottom=0)
    fig.tight_layout()
    return fig


def _from_zero(table):
    """``table`` with round 0 at epsilon 0: the initial model spent no privacy."""
    if 0 in table.index:
        return table
    zero = (pd.DataFrame(0.0, index=[0], columns=table.columns)
            if isinstance(table, pd.DataFrame) else pd.Series([0.0], index=[0]))
    return pd.concat([zero, table]).sort_index()


def utility_epsilon_figure(run: RunData) -> Figure | None:
    """The run's privacy/utility curve: the main metric against epsilon, round by round."""
    metric = run.main_metric()
    epsilon, kind = run.epsilon()
    if metric is None or not len(epsilon):
        return None
    joined = pd.concat([_from_zero(epsilon).rename("epsilon"), run.series(metric).rename(metric)],
                       axis=1, join="inner").dropna()
    if joined.empty:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot(joined["epsilon"], joined[metric], marker="o", color="tab:purple",
            label=f"{pretty(metric)} per round")
    step = max(1, len(joined) // 15)  # at most ~15 round labels
    for i, (rnd, row) in enumerate(joined.iterrows()):
        if i % step and i != len(joined) - 1:
            continue
        ax.annotate(str(rnd), (row["epsilon"], row[metric]), fontsize="x-small",
                    textcoords="offset points", xytext=(3, 3))
    if run.budget:
        ax.axvline(run.budget, label=f"budget max-epsilon = {run.budget:g}", **BUDGET)
    better = "higher" if higher_is_better(metric) else "lower"
    delta = run.delta
    ax.set_xlabel(f"epsilon, {kind}" + (f" (delta = {delta:.3g})" if delta else ""))
    ax.set_ylabel(f"{pretty(metric)} ({better} is better)")
    ax.set_title("utility vs privacy spent (labels: round)")
    ax.grid(alpha=0.3)
    _legend(ax)
    fig.tight_layout()
    return fig


def durations_figure(run: RunData) -> Figure | None:
    """Round wall time and each client's training time: who holds the round up."""
    rounds = run.series("seconds")
    rounds = rounds[rounds.index > 0]
    train = run.ok_clients("train")
    has_clients = not train.empty and "seconds" in train and train["seconds"].notna().any()
    if not len(rounds) and not has_clients:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.2))
    ax = axes[0]
    if len(rounds):
        ax.bar(rounds.index, rounds.values, color="tab:gray", label="round wall time")
        failures = run.series("train_failures")
        failed = failures[failures > 0]
        if len(failed):
            ax.bar(failed.index, rounds.reindex(failed.index).values, color="tab:red",
                   label="round with failed clients")
    _finish(ax, "seconds", "round duration (train + evaluate + server evaluation)")
    ax = axes[1]
    if has_clients:
        table = train.pivot_table(index="round", columns="partition_id", values="seconds",
                                  aggfunc="last")
        per_client(ax, table)
        slowest = table.max(axis=1)
        usual = _int(table.idxmax(axis=1).mode().iloc[0])
        ax.plot(slowest.index, slowest.values,
                label=f"slowest client (most often client {usual})", **AGGREGATE)
    _finish(ax, "seconds", "local training time per client (stragglers stand out)")
    fig.tight_layout()
    return fig


def sample_timeline_figure(run: RunData) -> Figure | None:
    """A few fixed-noise sample grids side by side, evenly spread up to the last round."""
    if not run.samples:
        return None
    rounds = list(run.samples)
    if len(rounds) > SAMPLE_TIMELINE:
        picks = np.linspace(0, len(rounds) - 1, SAMPLE_TIMELINE).round().astype(int)
        rounds = [rounds[i] for i in sorted(set(picks))]
    fig, axes = plt.subplots(1, len(rounds), figsize=(3.2 * len(rounds), 3.6), squeeze=False)
    for ax, rnd in zip(axes[0], rounds):
        _show_grid(ax, run.samples[rnd])
        ax.set_title(f"round {rnd}")
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("generator samples from the same fixed noise")
    fig.tight_layout()
    return fig


def final_samples_figure(run: RunData) -> Figure | None:
    """The last round's sample grid, large."""
    if not run.samples:
        return None
    rnd = max(run.samples)
    fig, ax = plt.subplots(figsize=(6, 6.3))
    _show_grid(ax, run.samples[rnd])
    ax.set_title(f"final samples (round {rnd}, fixed noise)")
    ax.set_xticks([])
    ax.set_yticks([])
    fig.tight_layout()
    return fig


def _show_grid(ax, path) -> None:
    """Show a PNG as written: grayscale without rescaling its contrast."""
    image = plt.imread(path)
    if image.ndim == 2:
        ax.imshow(image, cmap="gray", vmin=0, vmax=1)
    else:
        ax.imshow(image)


def build_plots(run: RunData) -> list[Plot]:
    """Every figure the run has data for, in report order, each with its section."""
    plots: list[Plot] = []

    def add(name: str, caption: str, figure: Figure | None, section: str) -> None:
        if figure is not None:
            plots.append(Plot(name, caption, figure, section))

    client_metrics = run.client_metrics()
    main = run.main_metric()
    epsilon, kind = run.epsilon()
    budget = f"; the dotted line is the --max-epsilon budget {run.budget:g}" if run.budget else ""
    add("epsilon", f"cumulative epsilon over rounds ({_epsilon_lines(run)}), from 0 at round "
        f"0{budget}", epsilon_figure(run), "privacy")
    if main is not None:
        add("utility_vs_epsilon", f"{pretty(main)} against the {kind} epsilon spent, one "
            "point per round; round 0 (epsilon 0) is the initial model"
            + (", i.e. the public prior alone" if run.samples else ""),
            utility_epsilon_figure(run), "privacy")
    add("server_metrics", "the server's evaluation of the global model, round 0 (the "
        "initial model) included", server_metrics_figure(
            run, {f"server_{m}" for m in client_metrics}), "utility")
    add("samples_timeline", "fixed-noise sample grids over training, round 0 first",
        sample_timeline_figure(run), "utility")
    add("samples_final", "the final sample grid", final_samples_figure(run), "utility")
    # The main metric's client panels first, then the others.
    ordered = sorted(client_metrics, key=lambda m: (main is None or not main.endswith(f"_{m}"),
                                                    m != "loss", m))
    for metric in ordered:
        drawn = [what for column, what in (
            (f"train_{metric}", "the strategy's aggregate (black)"),
            (f"server_{metric}", "the server's evaluation of the global model (red)"))
            if run.has(column)]
        add(f"clients_{metric}", f"{pretty(metric)} per client over rounds"
            + (", with " + " and ".join(drawn) if drawn else ""),
            client_metric_figure(run, metric), "clients")
    add("durations", "round wall time and each client's training time (stragglers stand "
        "out)", durations_figure(run), "clients")
    return plots


def _epsilon_lines(run: RunData) -> str:
    """What the epsilon figure draws, for its caption."""
    found = []
    if not run.sample_level_epsilon().empty:
        found.append("sample-level DP-SGD per client")
    if len(run.client_level_epsilon()):
        found.append("client-level DP-FedAvg")
    return " and ".join(found)
