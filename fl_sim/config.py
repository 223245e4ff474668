"""Run configuration: the only place that knows flag names and run-config keys.

Defaults live in ``pyproject.toml`` under ``[tool.flwr.app.config]`` (what ``flwr run``
reads); the CLI overrides them key by key. Generic training keys left at 0 take the
task's own default (``Task.defaults``), so one table serves every task.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from functools import cache
from pathlib import Path
from typing import Any

from strategies import registry as strategy_registry
from tasks import registry as task_registry
from tasks.data import DATASETS, IMAGE_SIZES, PARTITIONS, DataError, check_source
from tasks.dp_sgd import ACCOUNTANTS, GRAD_SAMPLE_MODES

PROJECT_ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = PROJECT_ROOT / "pyproject.toml"

# Generic keys whose 0 means "the task's own default".
TASK_DEFAULTED = ("num-server-rounds", "local-epochs", "batch-size", "lr")


class ConfigError(ValueError):
    """A setting is invalid; ``str()`` is one line naming the flag and what is allowed."""

    def __init__(self, key: str, message: str) -> None:
        self.key = key
        self.flag = flag_of(key)
        super().__init__(f"{self.flag}: {message}")


@dataclass(frozen=True)
class Option:
    """One setting: its run-config key, its CLI flag and what it means."""

    key: str
    flag: str
    help: str
    check: Callable[[Any], str | None] = lambda value: None
    """Return why ``value`` is invalid (with the allowed values), or None."""


def _at_least(low: float) -> Callable[[Any], str | None]:
    return lambda v: None if v >= low else f"must be >= {low:g} (got {v})"


def _positive(v: Any) -> str | None:
    return None if v > 0 else f"must be > 0 (got {v})"


def _fraction(v: Any) -> str | None:
    return None if 0 < v <= 1 else f"must be in (0, 1] (got {v})"


def _one_of(names: Callable[[], list[str]]) -> Callable[[Any], str | None]:
    def check(v: Any) -> str | None:
        allowed = names()
        return None if v in allowed else f"unknown value {v!r}; allowed: {', '.join(allowed)}"

    return check


def _folder_name(v: Any) -> str | None:
    if v == "" or re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", v):
        return None
    return f"must be a plain folder name (letters, digits, '.', '_', '-'), got {v!r}"


def _task_default_or(check: Callable[[Any], str | None]) -> Callable[[Any], str | None]:
    return lambda v: None if v == 0 else check(v)


OPTIONS: tuple[Option, ...] = (
    Option("task", "--task", "task to train", _one_of(task_registry.names)),
    Option("strategy", "--strategy", "server strategy", _one_of(strategy_registry.names)),
    Option("clients", "--clients", "number of clients (simulated SuperNodes)", _at_least(1)),
    Option(
        "num-server-rounds", "--rounds", "federated rounds (0: task default)",
        _task_default_or(_at_least(1)),
    ),
    Option("fraction-train", "--fraction-train", "fraction of clients sampled to train each round", _fraction),
    Option("fraction-evaluate", "--fraction-evaluate", "fraction of clients sampled to evaluate each round", _fraction),
    Option(
        "local-epochs", "--local-epochs", "local epochs per round (0: task default)",
        _task_default_or(_at_least(1)),
    ),
    Option(
        "batch-size", "--batch-size", "local batch size (0: task default)",
        _task_default_or(_at_least(1)),
    ),
    Option("lr", "--lr", "local learning rate (0: task default)", _task_default_or(_positive)),
    Option("seed", "--seed", "seed of data, model initialisation and sampling", _at_least(0)),
    Option("out-dir", "--out", "folder that receives one sub-folder per run"),
    Option("run-name", "--run-name", "run folder name (default: <time>-<task>-<strategy>)", _folder_name),
    Option("run-dir", "--run-dir", "exact run folder; set by the CLI, empty under `flwr run`"),
    Option("client-cpus", "--client-cpus", "CPUs Ray reserves per client; sets how many run at once", _positive),
    Option("client-gpus", "--client-gpus", "GPU share Ray reserves per client (e.g. 0.25)", _at_least(0)),
    Option("ray-address", "--ray-address", "join this Ray cluster (host:port) instead of starting one"),
    # --- image data and sample-level DP-SGD (issue 3: dcgan; reused by image tasks) ---
    Option("dataset", "--dataset", "image data set (mnist5k and digits ship with the packages)",
           _one_of(lambda: list(DATASETS))),
    Option("data-dir", "--data-dir", "folder of --dataset mnist|fashion-mnist|cifar10|folder"),
    Option("image-size", "--image-size", "side of the square images",
           _one_of(lambda: list(IMAGE_SIZES))),
    Option("partition", "--partition", "how training data is split across clients",
           _one_of(lambda: list(PARTITIONS))),
    Option("dirichlet-alpha", "--dirichlet-alpha",
           "Dirichlet concentration of --partition dirichlet (small = skewed)", _positive),
    Option("dp", "--dp", "DP-SGD (Opacus) on the model that reads real data"),
    Option("noise-multiplier", "--noise-multiplier",
           "DP-SGD noise std / clipping norm (ignored with --target-epsilon)", _at_least(0)),
    Option("max-grad-norm", "--max-grad-norm", "DP-SGD per-sample clipping norm", _positive),
    Option("delta", "--delta", "delta of the reported (epsilon, delta)",
           lambda v: None if 0 < v < 1 else f"must be in (0, 1) (got {v})"),
    Option("target-epsilon", "--target-epsilon",
           "if > 0: noise multiplier chosen so each client's whole run spends at most this",
           _at_least(0)),
    Option("accountant", "--accountant", "Opacus privacy accountant",
           _one_of(lambda: list(ACCOUNTANTS))),
    Option("grad-sample-mode", "--grad-sample-mode", "how Opacus computes per-sample gradients",
           _one_of(lambda: list(GRAD_SAMPLE_MODES))),
    # --- disguise task (issue 5) ---
    Option("hide", "--hide", "disguise task: comma-separated hidden classes (e.g. 0,1)"),
    Option("decoy", "--decoy",
           "disguise task: decoy classes, one per hidden class, disjoint from --hide"),
    Option("translator-steps", "--translator-steps",
           "disguise task: translation-GAN updates on the data owner's side", _at_least(1)),
)

_BY_KEY = {option.key: option for option in OPTIONS}


def flag_of(key: str) -> str:
    """Return the CLI flag for a run-config key (the key itself if it has no flag)."""
    option = _BY_KEY.get(key)
    return option.flag if option else key


@cache
def defaults() -> dict[str, Any]:
    """Return ``[tool.flwr.app.config]`` of pyproject.toml: every key and its default."""
    with PYPROJECT.open("rb") as handle:
        table = tomllib.load(handle)["tool"]["flwr"]["app"]["config"]
    missing = set(_BY_KEY) - set(table)
    if missing:
        raise RuntimeError(f"{PYPROJECT} lacks run-config keys: {sorted(missing)}")
    return dict(table)


def _attr(key: str) -> str:
    return key.replace("-", "_")


@dataclass(frozen=True)
class RunConfig:
    """Every resolved setting of one run, validated.

    Build it with :meth:`from_mapping`; it round-trips through :meth:`to_run_config`
    into the kebab-case keys that Flower hands to the apps as ``context.run_config``.
    """

    task: str
    strategy: str
    clients: int
    num_server_rounds: int
    fraction_train: float
    fraction_evaluate: float
    local_epochs: int
    batch_size: int
    lr: float
    seed: int
    out_dir: str
    run_name: str
    run_dir: str
    client_cpus: float
    client_gpus: float
    ray_address: str
    # --- image data and sample-level DP-SGD (issue 3) ---
    dataset: str
    data_dir: str
    image_size: int
    partition: str
    dirichlet_alpha: float
    dp: bool
    noise_multiplier: float
    max_grad_norm: float
    delta: float
    target_epsilon: float
    accountant: str
    grad_sample_mode: str
    # --- disguise task (issue 5) ---
    hide: str
    decoy: str
    translator_steps: int

    @classmethod
    def from_mapping(cls, overrides: Mapping[str, Any] | None = None) -> RunConfig:
        """Merge ``overrides`` over the pyproject defaults, coerce, resolve and validate.

        Raises
        ------
        ConfigError
            For the first invalid setting, naming its flag.
        """
        base = defaults()
        values = dict(base)
        for key, value in (overrides or {}).items():
            if key not in base:
                raise ConfigError(key, f"unknown setting; known: {', '.join(sorted(base))}")
            values[key] = _coerce(key, value, type(base[key]))
        for key in ("task", "strategy"):
            problem = _BY_KEY[key].check(values[key])
            if problem:
                raise ConfigError(key, problem)
        task_defaults = task_registry.get(values["task"]).defaults
        for key in TASK_DEFAULTED:
            if values[key] == 0:
                values[key] = _coerce(key, task_defaults[key], type(base[key]))
        for option in OPTIONS:
            problem = option.check(values[option.key])
            if problem:
                raise ConfigError(option.key, problem)
        _check_data_source(values)
        _check_disguise_mapping(values)
        names = {f.name for f in fields(cls)}
        return cls(**{_attr(k): v for k, v in values.items() if _attr(k) in names})

    def to_run_config(self) -> dict[str, Any]:
        """Return the kebab-case mapping the apps read from ``context.run_config``."""
        return {key: getattr(self, _attr(key)) for key in defaults()}


def _coerce(key: str, value: Any, kind: type) -> Any:
    """Convert ``value`` to the type of the key's default (strings come from flags/TOML)."""
    if isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
        return value
    try:
        if kind is bool:
            if isinstance(value, str) and value.lower() in ("true", "false", "1", "0"):
                return value.lower() in ("true", "1")
            raise ValueError
        if kind is int and isinstance(value, float) and value.is_integer():
            return int(value)
        return kind(value)
    except (TypeError, ValueError):
        raise ConfigError(key, f"expected {kind.__name__}, got {value!r}") from None


# --- image data and sample-level DP-SGD (issue 3) ---
def _check_data_source(values: Mapping[str, Any]) -> None:
    """File-based data sets must be readable before Ray starts (names the expected files)."""
    try:
        check_source(values["dataset"], values["data-dir"])
    except DataError as error:
        raise ConfigError("data-dir", str(error)) from None


# --- disguise task (issue 5) ---
def _check_disguise_mapping(values: Mapping[str, Any]) -> None:
    """``--hide``/``--decoy`` must be equal-length, disjoint lists of the data set's classes."""
    if values["task"] != "disguise":
        return
    from tasks.disguise import MappingError, dataset_classes, parse_mapping

    try:
        parse_mapping(values["hide"], values["decoy"],
                      dataset_classes(values["dataset"], values["data-dir"]))
    except MappingError as error:
        raise ConfigError(error.key, str(error)) from None
