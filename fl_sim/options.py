"""The run's settings: every option group composed, validated, typed.

Each option is declared once, in its group beside the component that reads it (this
module declares the harness's own groups). :class:`RunConfig` holds one validated group
of each kind; from the same declarations come the CLI flags (``fl_sim.cli``), the
configuration reference (``docs/configuration.md``) and the Flower-facing defaults in
``pyproject.toml [tool.flwr.app.config]`` (``tests/test_options.py`` keeps them in sync).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, TypeVar, get_type_hints

from fl_core.federation import TASK_DEFAULTED, FederationOptions
from fl_core.options import (
    OptionError,
    Options,
    Settings,
    at_least,
    coerce,
    flag_of,
    folder_name,
    group,
    one_of,
    option,
    positive,
    spec_of,
    unit_interval,
)
from strategies import registry as strategy_registry
from strategies.options import (
    DPFedAvgOptions,
    FedAdamOptions,
    FedProxOptions,
    HEOptions,
    QuorumOptions,
    SamplingOptions,
    SecAggOptions,
)
from tasks import registry as task_registry
from tasks.dcgan.options import DCGANOptions
from tasks.disguise.options import DisguiseOptions
from tasks.image.options import DeviceOptions, ImageDataOptions
from tasks.options import DPSGDOptions

PROJECT_ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = PROJECT_ROOT / "pyproject.toml"
G = TypeVar("G", bound=Options)

__all__ = ["PROJECT_ROOT", "PYPROJECT", "TASK_DEFAULTED", "OptionError", "RunConfig",
           "RunOptions", "ResourceOptions", "FaultOptions", "ReplyOptions", "CacheOptions",
           "defaults", "flag_of"]


@group("Run")
class RunOptions(Options):
    """What runs and where its folder goes (``fl_sim.run.lifecycle``, ``app.server_app``)."""

    task: str = option("regression", "task to train", check=one_of(task_registry.names))
    strategy: str = option("fedavg", "server strategy", check=one_of(strategy_registry.names))
    out_dir: str = option("results", "folder that receives one sub-folder per run",
                          flag="--out")
    run_name: str = option("", "run folder name (default: <time>-<task>-<strategy>)",
                           check=folder_name)
    run_dir: str = option("", "exact run folder; set by the CLI, empty under `flwr run`",
                          hidden=True)
    quiet: bool = option(False, "no progress display or summary table; print only the "
                         "report path")
    round_timeout: float = option(3600.0, "seconds the server waits for a phase's replies; "
                                  "later ones count as failed", check=positive)
    checkpoint_every: int = option(0, "write a resumable checkpoint every K rounds (0: never)",
                                   check=at_least(0))
    resume: str = option("", "continue the killed run in this folder to its planned rounds")
    tensorboard: bool = option(False, "also write the round metrics as TensorBoard event files "
                               "in RUN_DIR/tensorboard (tensorboard --logdir RUN_DIR)")

    def validate(self, settings: Settings) -> None:
        """Checkpoints need each client's saved state in its train reply; SecAgg+ drops it."""
        if self.checkpoint_every and settings.get(SecAggOptions).secagg:
            raise OptionError(
                "checkpoint-every", "cannot be combined with --secagg: SecAgg+'s client mod "
                "replaces the whole train reply, so clients' saved state (their accountant "
                "history) could not reach the checkpoint, and a resume would restart every "
                "client's epsilon at zero")


@group("Resources (Ray)")
class ResourceOptions(Options):
    """What Ray reserves per client, the cluster, sweep runs at once (``fl_sim.run``)."""

    client_cpus: float = option(1.0, "CPUs Ray reserves per client; sets how many run at "
                                "once", check=positive)
    client_gpus: float = option(0.0, "GPU share Ray reserves per client (e.g. 0.25)",
                                check=at_least(0))
    ray_address: str = option("", "join this Ray cluster (host:port) instead of starting one")
    sweep_parallel: int = option(
        0, "--sweep runs at once, each in its own process and Ray with its share of the CPUs "
        "(0: as many as the CPUs hold at --client-cpus each, 1 with --ray-address; "
        "1: one after another)", check=at_least(0))


@group("Injected faults")
class FaultOptions(Options):
    """Seeded failures and stragglers (``fl_sim.app.faults``)."""

    fail_rate: float = option(0.0, "probability a sampled client raises in a round (seeded)",
                              check=unit_interval)
    straggler_rate: float = option(0.0, "probability a sampled client replies late (seeded)",
                                   check=unit_interval)
    straggler_seconds: float = option(0.0, "delay of a straggler's reply, seconds",
                                      check=at_least(0))


CLIENT_METRICS = ("all", "none")


@group("What clients send")
class ReplyOptions(Options):
    """What leaves a client beside its update (``fl_sim.app.client_mods.metrics_mod``)."""

    client_metrics: str = option(
        "all", "client metrics sent to the server: all (losses, accuracies, evaluation on "
        "private data) or none (only example count, epsilon and timing)",
        check=one_of(CLIENT_METRICS))


def _cache_folder(v: Any) -> str | None:
    """A folder or a path where one can be made: not an existing file."""
    if v and Path(v).expanduser().exists() and not Path(v).expanduser().is_dir():
        return f"{v!r} exists and is not a folder"
    return None


@group("Cache")
class CacheOptions(Options):
    """Fits of public data kept between runs (``fl_core.cache``, read by ``app.server_app``).

    What is kept depends only on public or held-out data, the seed and the code: the
    DCGAN's public prior and its FID reference classifier.

    Neither option changes what a run computes: an entry is reused only where its key
    (every input, the code, the library versions, the thread count) says a fit would give
    the same bits. So both may change on ``--resume`` and neither tells runs apart.
    """

    cache: bool = option(True, "reuse fits of public data (the dcgan's public prior and FID "
                         "reference) from the cache folder; --no-cache fits them every run "
                         "and writes nothing there")
    cache_dir: str = option("", "cache folder (empty: $FL_SIM_CACHE_DIR, else "
                            "$XDG_CACHE_HOME/fl-sim, else ~/.cache/fl-sim)",
                            check=_cache_folder)


@dataclass(frozen=True)
class RunConfig:
    """Every resolved setting of one run: one validated group per field.

    Build it with :meth:`from_mapping`; it round-trips through :meth:`to_run_config`
    into the kebab-case keys that Flower hands to the apps as ``context.run_config``.
    Components ask for their group: ``cfg.get(DCGANOptions)`` or ``cfg.dcgan``.
    The field order is the order of ``--help``, of the reference and of the checks.
    """

    run: RunOptions
    federation: FederationOptions
    sampling: SamplingOptions
    resources: ResourceOptions
    fedprox: FedProxOptions
    fedadam: FedAdamOptions
    secagg: SecAggOptions
    encryption: HEOptions
    dp_fedavg: DPFedAvgOptions
    quorum: QuorumOptions
    faults: FaultOptions
    replies: ReplyOptions
    cache: CacheOptions
    image: ImageDataOptions
    dp_sgd: DPSGDOptions
    device: DeviceOptions
    disguise: DisguiseOptions
    dcgan: DCGANOptions

    # --- fl_core.options.Settings ---------------------------------------------------
    @property
    def task(self) -> str:
        """The ``--task`` name."""
        return self.run.task

    @property
    def strategy(self) -> str:
        """The ``--strategy`` name."""
        return self.run.strategy

    def get(self, kind: type[G]) -> G:
        """The validated values of the option group ``kind``."""
        return getattr(self, _FIELD_OF[kind])

    # --- building -------------------------------------------------------------------
    @classmethod
    def from_mapping(cls, overrides: Mapping[str, Any] | None = None) -> RunConfig:
        """Merge ``overrides`` (kebab-case) over the defaults, coerce, resolve, validate.

        Keys of :data:`TASK_DEFAULTED` left at 0 take the selected task's own default.

        Raises
        ------
        OptionError
            For the first invalid setting, naming its flag.
        """
        table = defaults()
        values = dict(table)
        for key, value in (overrides or {}).items():
            spec = spec_of(key)
            if spec is None or key not in table:
                raise OptionError(key, f"unknown setting; known: {', '.join(sorted(table))}")
            values[key] = coerce(key, value, spec.kind)
        for key in ("task", "strategy"):
            problem = spec_of(key).check(values[key])
            if problem:
                raise OptionError(key, problem)
        for key, value in task_registry.defaults_of(values["task"]).items():
            if values[key] == 0:
                values[key] = coerce(key, value, spec_of(key).kind)
        cfg = cls(**{name: kind.from_values(values) for name, kind in _GROUPS})
        for _, kind in _GROUPS:
            cfg.get(kind).validate(cfg)
        return cfg

    def preflight(self) -> RunConfig:
        """Check the files the run will read (its task's groups), once, before it is claimed.

        Raises
        ------
        OptionError
            Naming the flag and the file at fault (a truncated IDX file, a hostile pickle).
        """
        for kind in task_registry.GROUPS[self.task]:
            self.get(kind).preflight(self)
        return self

    def to_run_config(self) -> dict[str, Any]:
        """The kebab-case mapping the apps read from ``context.run_config``."""
        return {key: value for _, kind in _GROUPS for key, value in self.get(kind).values().items()}

    def groups(self) -> Iterator[Options]:
        """Every group, in field order."""
        return (self.get(kind) for _, kind in _GROUPS)


_GROUPS: tuple[tuple[str, type[Options]], ...] = tuple(
    (f.name, get_type_hints(RunConfig)[f.name]) for f in fields(RunConfig))
_FIELD_OF = {kind: name for name, kind in _GROUPS}


def option_groups() -> tuple[type[Options], ...]:
    """Every option group of a run, in the order of ``--help`` and of the reference."""
    return tuple(kind for _, kind in _GROUPS)


def toml_value(value: Any) -> str:
    """One run-config value as TOML (bool before int: ``True`` is an int)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(str(value))  # a JSON string is a valid TOML basic string


def defaults() -> dict[str, Any]:
    """Every run-config key and its declared default (what ``[tool.flwr.app.config]`` copies)."""
    return {spec.key: spec.default for kind in option_groups() for spec in kind.specs()}
