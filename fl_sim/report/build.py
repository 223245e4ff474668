"""``python -m fl_sim report RUN_DIR``: a run folder's files -> ``RUN_DIR/report/``.

Reads only the run folder (see :mod:`fl_sim.report.data`), so it works on finished,
interrupted and still running runs, whichever runtime wrote them. Writes one PNG per
figure the run has data for and ``index.html`` with the key numbers, the settings and
every figure embedded.
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
from fl_sim.report.data import RunData, load_run  # noqa: E402
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
    """The headline table: what ran, how far it got, how good and how private it is."""
    settings = run.settings
    planned = run.planned_rounds
    rows: list[tuple[str, Any]] = [
        ("run", run.name),
        ("task", settings.get("task", "")),
        ("strategy", settings.get("strategy", "")),
        ("clients", settings.get("clients", "")),
        ("rounds finished", f"{run.finished_rounds} of {planned}" if planned
         else run.finished_rounds),
        ("status", run.config.get("status", "unknown (no config.json)")),
    ]
    if run.config.get("wall_seconds") is not None:
        rows.append(("wall time (s)", run.config["wall_seconds"]))
    for phase in ("train", "evaluate"):
        replies = run.series(f"{phase}_replies").sum()
        failures = run.series(f"{phase}_failures").sum()
        if replies or failures:
            rows.append((f"{phase} replies / failures", f"{int(replies)} / {int(failures)}"))
    main = run.main_metric()
    if main:
        rows.append(("main metric", f"{pretty(main)} = {report_html.fmt(run.final(main))}"))
    for column in run.metric_columns():
        if column.startswith(("server_", "evaluate_")) and column != main:
            rows.append((f"final {pretty(column)}", run.final(column)))
    for kind, epsilon, delta in final_epsilon(run):
        rows.append((f"final epsilon, {kind}", epsilon_text(epsilon, delta)))
    if not final_epsilon(run):
        rows.append(("final epsilon", "no privacy accounting in this run"))
    if run.budget:
        rows.append(("budget max-epsilon", run.budget))
    if "status" in run.privacy and len(run.privacy):
        rows.append(("accountant status", run.privacy["status"].iloc[-1]))
    return rows


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
    figures = []
    for plot in build_plots(run):
        path = out / f"{plot.name}.png"
        plot.figure.savefig(path, dpi=DPI)
        plt.close(plot.figure)
        figures.append((path, plot.caption))
    extra = [("Final models", final_models_table(run))] if not run.clients.empty else []
    audit = audit_report.load_audit(run.path)  # fl_sim audit ran: its figure and table
    if audit is not None:
        figures.append((audit_report.write_roc_figure(audit, out / "audit_roc.png"),
                        audit_report.caption(audit)))
        extra.append(("Membership-inference audit", audit_report.html_table(audit)))
    title = f"fl-sim run {run.name}"
    page = report_html.page(
        title, key_numbers(run), figures, run.settings, notes(run),
        extra_tables=extra, config=run.config,
    )
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
