"""The report's tables that answer first: what ran, what it guarantees, what it bought.

A privacy engineer opens a report to learn three things: the guarantee (which epsilon,
at which delta, over what unit of data), the utility at that price against the start
(round 0, before any private round), and what the run cost in time. These tables say
them in that order; the settings table lists only the options the run actually used,
so a FedAvg run does not show DP-FedAvg's twelve keys.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from fl_sim.options import option_groups
from fl_sim.report.data import RunData
from fl_sim.report.html import fmt
from fl_sim.report.plots import pretty
from strategies import registry as strategy_registry
from tasks import registry as task_registry

SWITCHES = {"secagg": "secagg", "he": "he", "dp": "dp"}
"""A group whose switch is off shows the switch alone (keyed by the switch's own key)."""
ONLY_WHEN = {
    "dirichlet-alpha": ("partition", "dirichlet"),
    "clipping-norm": ("dp-clip", "fixed"),
    "initial-clipping-norm": ("dp-clip", "adaptive"),
    "target-quantile": ("dp-clip", "adaptive"),
    "clip-lr": ("dp-clip", "adaptive"),
    "clipped-count-stddev": ("dp-clip", "adaptive"),
    "straggler-seconds": ("straggler-rate", None),
}
"""Keys read only under another key's value (None: when that key is non-zero)."""


PHASE_ORDER = ("start-up", "initial model", "round 0 evaluation", "rounds")
"""The phases a run records (config.json ``phases``), in the order they happen."""


def applicable_settings(run: RunData) -> list[tuple[str, Any]]:
    """The settings the run's task, strategy and switches read, in option-group order.

    Keys no group declares (a folder written by another version) are listed last, so
    nothing recorded is hidden.
    """
    settings = run.settings
    task, strategy = settings.get("task"), settings.get("strategy")
    owned = {kind for groups in (*task_registry.GROUPS.values(),
                                 *strategy_registry.GROUPS.values()) for kind in groups}
    used = set(task_registry.GROUPS.get(task, ())) | set(strategy_registry.GROUPS.get(
        strategy, ()))
    rows, declared = [], set()
    for kind in option_groups():
        specs = [spec for spec in kind.specs() if not spec.hidden]
        declared |= {spec.key for spec in kind.specs()}
        if kind in owned and kind not in used:
            continue
        keys = [spec.key for spec in specs]
        switch = next((key for key in keys if key in SWITCHES), None)
        if switch is not None and not settings.get(switch):
            keys = [switch]
        if kind.__name__ == "FaultOptions" and not any(settings.get(k) for k in keys):
            continue
        for key in keys:
            needs = ONLY_WHEN.get(key)
            if needs and (settings.get(needs[0]) != needs[1] if needs[1] is not None
                          else not settings.get(needs[0])):
                continue
            if key in settings:
                rows.append((key, settings[key]))
    rows += sorted((k, v) for k, v in settings.items() if k not in declared)
    return rows


def guarantee(run: RunData) -> str:
    """The run's differential-privacy guarantee in one sentence."""
    settings = run.settings
    parts = []
    if run.has("epsilon_max") or not run.sample_level_epsilon().empty:
        parts.append(f"sample-level DP-SGD (Opacus, {settings.get('accountant', 'rdp')} "
                     "accountant): each client's epsilon protects one of its examples")
    if len(run.client_level_epsilon()) or settings.get("strategy") == "dp-fedavg":
        parts.append(f"client-level DP-FedAvg ({settings.get('dp-clip', 'fixed')} clipping "
                     f"on the {settings.get('dp-clipping', 'server')}): epsilon protects "
                     "a client's whole data set")
    if not parts:
        return "none: no differential privacy; the model is released without noise"
    return "; ".join(parts)


def utility_change(run: RunData) -> tuple[str, str] | None:
    """(metric, ``round 0 -> final``) of the main metric: what the private rounds bought."""
    main = run.main_metric()
    if main is None:
        return None
    series = run.series(main)
    if not len(series):
        return None
    final = f"{fmt(float(series.iloc[-1]))} at round {int(series.index[-1])}"
    if 0 in series.index and series.index[-1] != 0:
        start = float(series.loc[0])
        change = float(series.iloc[-1]) - start
        return pretty(main), f"{fmt(start)} at round 0 -> {final} ({change:+.4g})"
    return pretty(main), final


def wall_time(run: RunData) -> str | None:
    """``231 s: start-up 12 s, public prior 70 s, ...`` from config.json's phases."""
    config = run.config
    total = config.get("total_seconds", config.get("wall_seconds"))
    if total is None:
        return None
    recorded = config.get("phases") or {}  # config.json keeps keys sorted: order them
    names = [*(n for n in PHASE_ORDER if n in recorded), *sorted(set(recorded) - set(PHASE_ORDER))]
    phases = {name: float(recorded[name]) for name in names}
    other = float(total) - sum(phases.values())
    if phases and other >= 0.5:
        phases["shut-down, summary and the rest"] = other
    split = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in phases.items())
    return f"{float(total):.0f} s" + (f": {split}" if split else "")


def privacy_rows(run: RunData) -> list[tuple[str, Any]]:
    """The numbers behind the guarantee: sigma, sample rate, steps, clipping, accountant."""
    rows: list[tuple[str, Any]] = []
    settings, resolved = run.settings, run.config.get("resolved") or {}
    train = run.ok_clients("train")
    if "noise_multiplier" in train and train["noise_multiplier"].notna().any():
        rows += [
            ("DP-SGD noise multiplier (sigma)", _spread(train["noise_multiplier"])),
            ("DP-SGD clipping bound C", settings.get("max-grad-norm")),
            ("DP-SGD Poisson sample rate q per client", _spread(train["sample_rate"])),
            ("DP-SGD steps per client per round", _spread(train["dp_steps"])),
        ]
    elif resolved.get("noise-multiplier") is not None:
        rows += [("DP-SGD noise multiplier (sigma)", resolved["noise-multiplier"]),
                 ("DP-SGD clipping bound C", settings.get("max-grad-norm")),
                 ("DP-SGD Poisson sample rate q per client",
                  _spread(pd.Series(resolved.get("sample-rates", []), dtype=float))),
                 ("DP-SGD planned steps per client, whole run",
                  _spread(pd.Series(resolved.get("planned-steps", []), dtype=float)))]
    if resolved.get("planned-epsilon"):
        rows.append(("DP-SGD planned epsilon per client, whole run",
                     _spread(pd.Series(resolved["planned-epsilon"], dtype=float))))
    privacy = run.privacy
    if not privacy.empty:
        last = privacy.iloc[-1]
        for column, label in (("noise_multiplier", "DP-FedAvg noise multiplier"),
                              ("clipping_norm", "DP-FedAvg clipping norm (last round)"),
                              ("sampled_clients", "DP-FedAvg clients per round (last round)"),
                              ("population", "DP-FedAvg population"),
                              ("accountant", "DP-FedAvg accountant")):
            if column in privacy:
                rows.append((label, last[column]))
    if rows:
        rows.append(("delta", run.delta))
    return rows


def _spread(values: pd.Series) -> str:
    """One value, or ``min .. max`` when clients or rounds differ."""
    values = pd.to_numeric(values, errors="coerce").dropna()
    if values.empty:
        return ""
    low, high = float(values.min()), float(values.max())
    return fmt(low) if low == high else f"{fmt(low)} .. {fmt(high)}"
