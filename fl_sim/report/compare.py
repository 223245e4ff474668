"""``python -m fl_sim compare RUN_DIR...``: several runs on the same axes.

Overlays a metric and epsilon over rounds and plots each run's final utility against
its final epsilon: the trade-off curve for picking a noise level. Runs without privacy
accounting appear as horizontal reference lines (the utility with no DP). Reads only
the run folders.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from fl_core.atomic import write_text  # noqa: E402
from fl_core.options import UsageError  # noqa: E402
from fl_sim.report import html as report_html  # noqa: E402
from fl_sim.report.build import output_folder  # noqa: E402
from fl_sim.report.data import RunData, higher_is_better, load_run  # noqa: E402
from fl_sim.report.plots import BUDGET, pretty  # noqa: E402

COMPARE_DIR = "compare"
# Settings that differ between runs without changing what they compute.
IGNORED_SETTINGS = {"run-dir", "run-name", "out-dir", "ray-address", "quiet", "cache",
                    "cache-dir"}


class CompareError(UsageError):
    """The runs cannot be compared as asked (e.g. an unknown metric)."""

    def __init__(self, message: str) -> None:
        super().__init__("", message)


def labels(runs: Sequence[RunData]) -> list[str]:
    """Name each run by the settings that differ between the runs (else its folder)."""
    keys = sorted({k for run in runs for k in run.settings} - IGNORED_SETTINGS)
    differing = [k for k in keys if len({repr(run.settings.get(k)) for run in runs}) > 1]
    if not differing:
        return [run.name for run in runs]
    found = [", ".join(f"{k}={run.settings.get(k)}" for k in differing) for run in runs]
    return found if len(set(found)) == len(found) else [f"{run.name}: {x}" for run, x in
                                                        zip(runs, found)]


def choose_metric(runs: Sequence[RunData], metric: str | None) -> str:
    """The given metric (must exist in every run), else the first run's main metric."""
    if metric:
        missing = [run.name for run in runs if not run.has(metric)]
        if missing:
            known = sorted({c for run in runs for c in run.metric_columns()})
            raise CompareError(
                f"--metric: {metric!r} has no values in {', '.join(missing)}; "
                f"available: {', '.join(known) or 'none'}"
            )
        return metric
    for run in runs:
        main = run.main_metric()
        if main and all(other.has(main) for other in runs):
            return main
    common = set.intersection(*(set(run.metric_columns()) for run in runs))
    if not common:
        raise CompareError("--metric: the runs share no metric column in rounds.csv")
    return sorted(common)[0]


def overlay_figure(runs: Sequence[RunData], names: Sequence[str], metric: str) -> Figure:
    """``metric`` over rounds, one line per run."""
    fig, ax = plt.subplots(figsize=(8, 4.8))
    for run, name in zip(runs, names):
        values = run.series(metric)
        ax.plot(values.index, values.values, marker="o", markersize=3, label=name)
    better = "higher" if higher_is_better(metric) else "lower"
    ax.set_xlabel("round")
    ax.set_ylabel(f"{pretty(metric)} ({better} is better)")
    ax.set_title(f"{pretty(metric)} over rounds")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    return fig


def epsilon_overlay_figure(runs: Sequence[RunData], names: Sequence[str]) -> Figure | None:
    """Each run's headline epsilon over rounds (None when no run accounts privacy)."""
    series = [(name, *run.epsilon()) for run, name in zip(runs, names)]
    if not any(len(eps) for _, eps, _ in series):
        return None
    fig, ax = plt.subplots(figsize=(8, 4.8))
    for name, eps, kind in series:
        if len(eps):
            ax.plot(eps.index, eps.values, marker="o", markersize=3, label=f"{name} ({kind})")
    budgets = {run.budget for run in runs if run.budget}
    for budget in sorted(budgets):
        ax.axhline(budget, label=f"budget max-epsilon = {budget:g}", **BUDGET)
    ax.set_xlabel("round")
    ax.set_ylabel("epsilon (cumulative)" + _delta_text(runs))
    ax.set_title("privacy spent over rounds")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    return fig


def _delta_text(runs: Sequence[RunData]) -> str:
    deltas = {run.delta for run in runs if run.delta}
    return f" at delta = {deltas.pop():.3g}" if len(deltas) == 1 else ""


def final_points(runs: Sequence[RunData], names: Sequence[str], metric: str) -> list[dict]:
    """One row per run: its label, final metric and final epsilon (None without DP)."""
    rows = []
    for run, name in zip(runs, names):
        eps, kind = run.epsilon()
        rows.append({
            "run": run.name, "label": name, "rounds": run.finished_rounds,
            "status": run.config.get("status", ""), metric: run.final(metric),
            "epsilon": float(eps.iloc[-1]) if len(eps) else None, "epsilon_kind": kind,
            "delta": run.delta, "path": str(run.path),
        })
    return rows


def tradeoff_figure(points: Sequence[dict], metric: str) -> Figure:
    """Final utility against final epsilon, one point per run; no-DP runs as lines."""
    fig, ax = plt.subplots(figsize=(8, 5))
    private = sorted((p for p in points if p["epsilon"] is not None and p[metric] is not None),
                     key=lambda p: p["epsilon"])
    if private:
        ax.plot([p["epsilon"] for p in private], [p[metric] for p in private], marker="o",
                color="tab:purple", label="DP runs (final round)")
        for i, p in enumerate(private):
            last = i == len(private) - 1 and len(private) > 1  # keep its label inside
            ax.annotate(p["label"], (p["epsilon"], p[metric]), fontsize="x-small",
                        textcoords="offset points", xytext=(-4 if last else 4, 4),
                        ha="right" if last else "left")
    colors = iter(plt.get_cmap("tab10").colors[1:] * 100)
    for p in points:
        if p["epsilon"] is None and p[metric] is not None:
            ax.axhline(p[metric], linestyle="--", color=next(colors),
                       label=f"no DP: {p['label']}")
    if not private:
        ax.text(0.5, 0.5, "no run reports epsilon: dashed lines are runs without DP",
                transform=ax.transAxes, ha="center", color="tab:gray")
        ax.set_xlim(0, 1)
    better = "higher" if higher_is_better(metric) else "lower"
    kinds = {p["epsilon_kind"] for p in private}
    deltas = {p["delta"] for p in private if p["delta"]}
    xlabel = "final epsilon" + (f", {kinds.pop()}" if len(kinds) == 1 else "")
    xlabel += f" (delta = {deltas.pop():.3g})" if len(deltas) == 1 else ""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(f"final {pretty(metric)} ({better} is better)")
    ax.set_title("privacy/utility trade-off, one point per run")
    ax.margins(x=0.2, y=0.1)
    if private:
        ax.set_xlim(left=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    return fig


def default_out(paths: Sequence[Path]) -> Path:
    """``<common parent of the runs>/compare``."""
    parents = {Path(p).resolve().parent for p in paths}
    return (parents.pop() if len(parents) == 1 else Path.cwd()) / COMPARE_DIR


def compare(paths: Sequence[Path | str], out_dir: Path | str | None = None,
            metric: str | None = None) -> Path:
    """Write the comparison of ``paths`` and return its index.html.

    Raises
    ------
    RunFolderError
        If a path is not a run folder.
    CompareError
        If ``metric`` is missing from a run, or the runs share none.
    """
    runs = [load_run(p) for p in paths]
    names = labels(runs)
    metric = choose_metric(runs, metric)
    out = output_folder(Path(out_dir) if out_dir else default_out([run.path for run in runs]))
    points = final_points(runs, names, metric)
    figures = [
        ("tradeoff", "final utility against final epsilon (one point per run)",
         tradeoff_figure(points, metric)),
        ("metric_overlay", f"{pretty(metric)} over rounds per run",
         overlay_figure(runs, names, metric)),
        ("epsilon_overlay", "epsilon over rounds per run", epsilon_overlay_figure(runs, names)),
    ]
    written = []
    for name, caption, fig in figures:
        if fig is None:
            continue
        path = out / f"{name}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append((path, caption))
    with (out / "compare.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(points[0]))
        writer.writeheader()
        writer.writerows(points)
    rows: list[tuple[Any, ...]] = [
        (p["label"], p["rounds"], p["status"], p[metric],
         "" if p["epsilon"] is None else p["epsilon"], p["epsilon_kind"] or "no DP",
         _report_link(Path(p["path"]), out)) for p in points
    ]
    table = report_html.table(rows, ("run", "rounds", "status", f"final {pretty(metric)}",
                                     "final epsilon", "epsilon", "report"))
    page = report_html.page(
        f"fl-sim comparison of {len(runs)} runs",
        [("summary", "Summary", report_html.table([("metric", pretty(metric)),
                                                   ("runs", len(runs))])),
         ("runs", "Runs", table), ("figures", "Figures", report_html.figures(written))],
    )
    return write_text(out / "index.html", page)


def _report_link(run_path: Path, out: Path) -> str:
    import os

    return os.path.relpath(run_path / "report" / "index.html", out)
