"""``python -m fl_sim report RUN_DIR``: a run folder's files -> ``RUN_DIR/report/``.

Reads only the run folder (see :mod:`fl_sim.report.data`), so it works on finished,
interrupted and still running runs, whichever runtime wrote them. Writes one PNG per
figure the run has data for and ``index.html``, which leads with the answer (summary,
then privacy, utility, per-client detail, the settings used), every figure embedded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from fl_core.atomic import write_text  # noqa: E402
from fl_core.options import UsageError  # noqa: E402
from fl_sim.release import audit_report  # noqa: E402
from fl_sim.report import html as report_html  # noqa: E402
from fl_sim.report import overview  # noqa: E402
from fl_sim.report.data import RunData, higher_is_better, load_run  # noqa: E402
from fl_sim.report.plots import build_plots, pretty  # noqa: E402

REPORT_DIR = "report"
DPI = 110


def final_epsilon(run: RunData) -> list[tuple[str, float | None, float | None]]:
    """(kind, epsilon, delta) of the last round: client-level and the largest sample-level."""
    found = []
    client_level = run.client_level_epsilon()
    if len(client_level):
        found.append(("client-level (DP-FedAvg)", float(client_level.iloc[-1]), run.delta))
    sample_level = run.sample_level_epsilon()
    largest = run.series("epsilon_max")
    if not len(largest) and not sample_level.empty:
        largest = sample_level.max(axis=1)
    if len(largest):
        found.append(("sample-level (largest client)", float(largest.iloc[-1]), run.delta))
    return found


def epsilon_text(epsilon: float | None, delta: float | None) -> str:
    """``epsilon 2.31 at delta 1e-05``."""
    text = f"{epsilon:.4g}" if epsilon is not None else "?"
    return text + (f" at delta = {delta:.3g}" if delta else "")


def key_numbers(run: RunData) -> list[tuple[str, Any]]:
    """The summary block: what ran, its guarantee and epsilon, what it bought, its cost."""
    settings = run.settings
    planned = run.planned_rounds
    strategy = str(settings.get("strategy", ""))
    strategy += " + SecAgg+" if settings.get("secagg") else ""
    strategy += " + CKKS encryption" if settings.get("he") else ""
    rows: list[tuple[str, Any]] = [
        ("run", run.name),
        ("task", settings.get("task", "")),
        ("strategy", strategy),
        ("clients", settings.get("clients", "")),
        ("rounds finished", f"{run.finished_rounds} of {planned}" if planned
         else run.finished_rounds),
        ("status", run.config.get("status", "unknown (no config.json)")),
        ("privacy guarantee", overview.guarantee(run)),
    ]
    for kind, epsilon, delta in final_epsilon(run):
        rows.append((f"final epsilon, {kind}", epsilon_text(epsilon, delta)))
    if not final_epsilon(run):
        rows.append(("final epsilon", "no privacy accounting in this run"))
    if run.budget:
        rows.append(("budget max-epsilon", run.budget))
    change = overview.utility_change(run)
    if change:
        rows.append((f"main metric: {change[0]}", change[1]))
    wall = overview.wall_time(run)
    if wall:
        rows.append(("wall time", wall))
    for phase in ("train", "evaluate"):
        replies = run.series(f"{phase}_replies").sum()
        failures = run.series(f"{phase}_failures").sum()
        if replies or failures:
            rows.append((f"{phase} replies / failures", f"{int(replies)} / {int(failures)}"))
    return rows


def utility_table(run: RunData) -> str:
    """Every server metric at round 0 and at the end: what the federated rounds changed."""
    rows = []
    for column in run.metric_columns():
        if not column.startswith("server_"):
            continue
        series = run.series(column)
        start = float(series.loc[0]) if 0 in series.index else None
        final = float(series.iloc[-1])
        better = "higher" if higher_is_better(column) else "lower"
        rows.append((pretty(column), start, final,
                     "" if start is None else final - start, f"{better} is better"))
    if not rows:
        return ""
    return report_html.table(rows, ("metric", "round 0 (initial model)",
                                    f"round {run.finished_rounds}", "change", ""))


def notes(run: RunData) -> list[str]:
    """Warnings a reader should see before trusting the numbers."""
    found = []
    status = run.config.get("status")
    planned = run.planned_rounds
    if status and status != "finished":
        found.append(f"This run is {status}: the report shows the rounds it recorded.")
    if planned and run.finished_rounds < planned and status in (None, "finished"):
        found.append(f"Only {run.finished_rounds} of {planned} rounds are recorded.")
    if not run.config:
        found.append("config.json is missing: settings are unknown.")
    if run.rounds.empty:
        found.append("rounds.csv has no rows yet.")
    return found


def make_report(run_dir: Path | str, out_dir: Path | str | None = None) -> Path:
    """Write the report of ``run_dir`` and return the path of its index.html.

    Raises
    ------
    RunFolderError
        If ``run_dir`` is missing or not a run folder.
    """
    run = load_run(run_dir)
    out = output_folder(Path(out_dir) if out_dir else run.path / REPORT_DIR)
    for stale in out.glob("*.png"):  # a figure the run no longer has data for
        stale.unlink()
    plots, figures = build_plots(run), []
    for plot in plots:
        path = out / f"{plot.name}.png"
        plot.figure.savefig(path, dpi=DPI)
        plt.close(plot.figure)
        figures.append((path, plot.caption))
    by_section: dict[str, list[tuple[Path, str]]] = {}
    for plot, figure in zip(plots, figures):
        by_section.setdefault(plot.section, []).append(figure)
    privacy = overview.privacy_rows(run)
    if "status" in run.privacy and len(run.privacy):
        privacy.append(("DP-FedAvg accountant status (last round)", run.privacy["status"].iloc[-1]))
    sections = [
        ("summary", "Summary", report_html.table(key_numbers(run), css_class="summary")),
        ("privacy", "Privacy", (report_html.table(privacy) if privacy else "")
         + report_html.figures(by_section.get("privacy", []))),
        ("utility", "Utility", utility_table(run)
         + report_html.figures(by_section.get("utility", []))),
        ("clients", "Per-client detail", (final_models_table(run) if not run.clients.empty
                                          else "")
         + report_html.figures(by_section.get("clients", []))),
    ]
    audit = audit_report.load_audit(run.path)  # fl_sim audit ran: its figure and table
    if audit is not None:
        roc = audit_report.write_roc_figure(audit, out / "audit_roc.png")
        sections.append(("audit", "Membership-inference audit", audit_report.html_table(audit)
                         + report_html.figure(roc, audit_report.caption(audit))))
    sections.append(("settings", "Settings", report_html.table(
        overview.applicable_settings(run), ("key", "value"))))
    page = report_html.page(f"fl-sim run {run.name}", sections, notes(run),
                            config=run.config)
    return write_text(out / "index.html", page)


def output_folder(out: Path) -> Path:
    """``out``, created if missing; refused with the ``--out`` flag named if it cannot be."""
    if out.exists() and not out.is_dir():
        raise UsageError("--out", f"{out} is a file; give a folder for the report")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UsageError("--out", f"cannot create {out}: {error.strerror}") from None
    return out


def final_models_table(run: RunData) -> str:
    """Each client's last recorded training and evaluation metrics."""
    metrics = run.client_metrics()
    rows = []
    for phase in ("train", "evaluate"):
        done = run.ok_clients(phase)
        if done.empty:
            continue
        last = done.sort_values("round").groupby("partition_id").tail(1)
        for _, row in last.sort_values("partition_id").iterrows():
            rows.append((f"client {int(row['partition_id'])}", phase, int(row["round"]),
                         *(row.get(m) for m in metrics)))
    failed = int((run.clients["status"] != "ok").sum()) if "status" in run.clients else 0
    table = report_html.table(rows, ("model", "phase", "round", *metrics))
    if failed:
        table += f"<p class=\"warn\">{failed} client replies failed.</p>"
    return table
