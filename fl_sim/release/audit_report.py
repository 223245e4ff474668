"""Show an audit: the ROC figure, the table (terminal and report page).

Reads only the record of ``audit.json`` (see :mod:`fl_sim.release.audit`), so ``fl_sim report``
redraws the figure of an earlier audit without recomputing it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

HEADER = ("attack", "ROC AUC", "TPR@1%FPR", "eps lower bound .. CI upper",
          "accounted eps", "delta")


def load_audit(run_dir: str | Path) -> dict[str, Any] | None:
    """The run's audit record, or None when it was never audited."""
    path = Path(run_dir) / "audit.json"
    return json.loads(path.read_text()) if path.exists() else None


def _num(value: float | None, digits: int = 3) -> str:
    return "inf" if value is None else f"{value:.{digits}g}"


def rows(record: dict[str, Any]) -> list[tuple[str, ...]]:
    """One row per attack, formatted (``HEADER`` columns)."""
    accounted = record.get("accounted_epsilon")
    out = []
    for name, attack in record["attacks"].items():
        low, high = attack["eps_lower_bound_ci"]
        out.append((
            name, f"{attack['auc']:.3f}",
            f"{attack['tpr_at_1pct_fpr']:.3f}",
            f"{low:.2f} .. {_num(high)}",
            "no DP (infinite)" if accounted is None else f"{accounted:.3g}",
            f"{record['delta']:.3g}",
        ))
    return out


def caption(record: dict[str, Any]) -> str:
    """What the audit compared, in one sentence."""
    s = record["settings"]
    who = "all clients" if s["client"] is None else f"client {s['client']}"
    return (f"Membership-inference ROC, round {record['round']}: {s['members']} training "
            f"images of {who} vs {s['nonmembers']} held-out images; {s['synthetic']} "
            f"synthetic samples ({s['synthetic_source']}). d_score: the global "
            f"discriminator's logit (white-box); distance: minus the distance to the nearest "
            f"synthetic sample (black-box). Diagonal = random guessing.")


def write_roc_figure(record: dict[str, Any], path: str | Path) -> Path:
    """Both attacks' ROC curves, linear and log FPR axes, diagonal for reference."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure, axes = plt.subplots(1, 2, figsize=(10, 4.4))
    for ax, log in zip(axes, (False, True)):
        for name, attack in record["attacks"].items():
            fpr, tpr = zip(*attack["roc"])
            ax.plot(fpr, tpr, label=f"{name} (AUC {attack['auc']:.3f})")
        ax.plot([1e-4, 1], [1e-4, 1], "k--", lw=0.8, label="random guess")
        ax.set_xlabel("false positive rate" + (" (log)" if log else ""))
        ax.set_ylabel("true positive rate" + (" (log)" if log else ""))
        if log:
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlim(1e-3, 1)
            ax.set_ylim(1e-3, 1.02)
            ax.axvline(0.01, color="grey", lw=0.6, ls=":")
        else:
            ax.set_xlim(0, 1)
            ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    accounted = record.get("accounted_epsilon")
    figure.suptitle(f"Membership inference, round {record['round']} (accounted epsilon "
                    f"{'none: no DP' if accounted is None else f'{accounted:.3g}'})")
    axes[0].legend(loc="lower right", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def html_table(record: dict[str, Any]) -> str:
    """The audit table for the report page."""
    from fl_sim.report import html as report_html

    return (report_html.table(rows(record), HEADER)
            + f"<p>{report_html.html.escape(caption(record))} The lower bound holds with 95% "
            "confidence; a bound near 0 is not a proof of privacy.</p>")


def print_audit(record: dict[str, Any]) -> None:
    """A short table on the terminal."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Membership-inference audit of {record['run_id']}, round "
                        f"{record['round']}")
    for column in HEADER:
        table.add_column(column)
    for row in rows(record):
        table.add_row(*row)
    console = Console()
    console.print(table)
    console.print(caption(record))
