"""The frontier's table and plot from its run folders (``fl_sim frontier``).

Reads only the run folders (:mod:`fl_sim.report.data`), so a frontier stopped part-way, or
one assembled from runs made elsewhere, tabulates the same way. Per run: TSTR and FID at
round 0 (the initial model: the public prior alone, or a random G) and at the last round
(with ``--tstr-seeds`` above 1, the spread over classifiers too), their gain, the epsilon
spent (largest over clients) and the wall time. The plot draws final TSTR against epsilon
spent, one line per (clients, prior) setting, runs without DP at the right edge, and
round 0 as hollow markers: what the private rounds bought.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fl_sim.report.data import load_run

COLUMNS = ("run", "clients", "public_prior", "target_epsilon", "epsilon", "delta", "rounds",
           "tstr_round0", "tstr_final", "tstr_final_std", "tstr_gain", "fid_round0", "fid_final",
           "real_data_accuracy", "seconds", "status")
TSTR = "server_tstr_accuracy"
TSTR_STD = "server_tstr_accuracy_std"  # with --tstr-seeds above 1
FID = "server_fid"


def _at(series: Any, round_: int) -> float | None:
    return float(series.loc[round_]) if round_ in series.index else None


def _gain(start: float | None, end: float | None) -> float | None:
    return None if start is None or end is None else end - start


def frontier_rows(runs: Sequence[Path]) -> list[dict[str, Any]]:
    """One row per run folder with a ``config.json`` (a point that never started has none)."""
    rows = []
    for path in runs:
        if not (Path(path) / "config.json").exists():
            continue
        run = load_run(path)
        settings = run.settings
        eps, _ = run.epsilon()
        tstr, fid = run.series(TSTR), run.series(FID)
        last = run.finished_rounds
        dp = bool(settings.get("dp", True))
        rows.append({
            "run": run.name, "clients": settings.get("clients"),
            "public_prior": settings.get("gan-public-prior"),
            "target_epsilon": settings.get("target-epsilon") if dp else "none",
            "epsilon": float(eps.iloc[-1]) if dp and len(eps) else None,
            "delta": run.delta if dp else None, "rounds": last,
            "tstr_round0": _at(tstr, 0), "tstr_final": run.final(TSTR),
            "tstr_final_std": run.final(TSTR_STD),
            "tstr_gain": _gain(_at(tstr, 0), run.final(TSTR)),
            "fid_round0": _at(fid, 0), "fid_final": run.final(FID),
            "real_data_accuracy": run.final("server_real_data_accuracy"),
            "seconds": run.config.get("total_seconds"), "status": run.config.get("status", ""),
        })
    return rows


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def markdown(rows: Sequence[dict[str, Any]]) -> str:
    """The table for BENCHMARKS.md: percentages for TSTR, one decimal for FID."""
    head = ("| clients | prior | target epsilon | epsilon spent | rounds | TSTR round 0 -> last "
            "| gain | FID round 0 -> last | wall |\n|---|---|---|---|---|---|---|---|---|\n")

    def pct(v: float | None) -> str:
        return "" if v is None else f"{100 * v:.1f}%"

    def spread(v: float | None) -> str:
        return "" if v is None else f" ± {100 * v:.1f}"

    def fid(v: float | None) -> str:
        return "" if v is None else f"{v:.1f}"

    lines = []
    for r in rows:
        gain = "" if r["tstr_gain"] is None else f"{100 * r['tstr_gain']:+.1f}"
        lines.append(
            f"| {r['clients']} | {r['public_prior']} | {r['target_epsilon']} | "
            f"{'' if r['epsilon'] is None else format(r['epsilon'], '.3g')} | {r['rounds']} | "
            f"{pct(r['tstr_round0'])} -> {pct(r['tstr_final'])}{spread(r['tstr_final_std'])} "
            f"| {gain} | "
            f"{fid(r['fid_round0'])} -> {fid(r['fid_final'])} | "
            f"{'' if r['seconds'] is None else format(r['seconds'], '.0f') + ' s'} |")
    return head + "\n".join(lines) + "\n"


def figure(rows: Sequence[dict[str, Any]]) -> Any:
    """Final TSTR against epsilon spent, one line per setting; round 0 hollow."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    private = [r["epsilon"] for r in rows if r["epsilon"]]
    right = 3 * max(private) if private else 10.0  # where runs without DP are drawn
    settings = sorted({(r["clients"], r["public_prior"]) for r in rows}, key=str)
    for colour, (clients, prior) in zip(plt.get_cmap("tab10").colors, settings):
        mine = [r for r in rows if (r["clients"], r["public_prior"]) == (clients, prior)
                and r["tstr_final"] is not None]
        mine.sort(key=lambda r: r["epsilon"] or right)
        xs = [r["epsilon"] or right for r in mine]
        label = f"{clients} client{'s' if clients != 1 else ''}, prior {prior}"
        ax.plot(xs, [r["tstr_final"] for r in mine], marker="o", color=colour, label=label)
        ax.scatter(xs, [r["tstr_round0"] if r["tstr_round0"] is not None else math.nan
                        for r in mine], facecolors="none", edgecolors=colour)
    ax.set_xscale("log")
    if private:
        ax.axvline(right / 1.7, color="tab:gray", linewidth=0.5)
        ax.annotate("no DP", (right, 0), xycoords=("data", "axes fraction"),
                    textcoords="offset points", xytext=(0, 4), ha="center", fontsize="small")
    ax.set_xlabel("epsilon spent per client (largest over clients)")
    ax.set_ylabel("TSTR accuracy on real held-out images (higher is better)")
    ax.set_title("privacy-utility frontier: last round (filled), round 0 (hollow)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    return fig


def write_frontier(runs: Sequence[Path], out_dir: Path) -> Path:
    """Write ``frontier.csv``, ``frontier.md`` and ``frontier.png``; returns the CSV."""
    rows = frontier_rows(runs)
    out_dir.mkdir(parents=True, exist_ok=True)
    table = out_dir / "frontier.csv"
    with table.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows({key: _cell(row[key]) for key in COLUMNS} for row in rows)
    (out_dir / "frontier.md").write_text(markdown(rows))
    if any(row["tstr_final"] is not None for row in rows):  # points that all failed: no plot
        import matplotlib.pyplot as plt

        fig = figure(rows)
        fig.savefig(out_dir / "frontier.png", dpi=120)
        plt.close(fig)
    return table
