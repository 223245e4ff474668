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
from tasks import public_prior
from tasks import registry as task_registry
from tasks.data import DATASETS, IMAGE_SIZES, PARTITIONS, DataError, check_source
from tasks.devices import DEVICES
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


def _in_unit_interval(v: Any) -> str | None:
    return None if 0 <= v <= 1 else f"must be in [0, 1] (got {v})"


def _open_unit_interval(v: Any) -> str | None:
    return None if 0 < v < 1 else f"must be in (0, 1) (got {v})"


def _one_of(names: Callable[[], list[str]]) -> Callable[[Any], str | None]:
    def check(v: Any) -> str | None:
        allowed = names()
        return None if v in allowed else f"unknown value {v!r}; allowed: {', '.join(allowed)}"

    return check


def _folder_name(v: Any) -> str | None:
    if v == "" or re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", v):
        return None
    return f"must be a plain folder name (letters, digits, '.', '_', '-'), got {v!r}"


def _probability(v: Any) -> str | None:
    return None if 0 <= v <= 1 else f"must be in [0, 1] (got {v})"


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
    # --- reporting ---
    Option("quiet", "--quiet", "no progress display or summary table; print only the report path"),
    # --- strategies, DP-FedAvg and client-level accounting (issue 4) ---
    Option(
        "clients-per-round", "--clients-per-round",
        "clients sampled per round, train and evaluate (0: use --fraction-*)", _at_least(0),
    ),
    Option("proximal-mu", "--proximal-mu", "FedProx proximal term weight mu", _at_least(0)),
    Option("server-lr", "--server-lr", "FedAdam server learning rate (eta)", _positive),
    Option("adam-beta1", "--adam-beta1", "FedAdam first-moment decay", _in_unit_interval),
    Option("adam-beta2", "--adam-beta2", "FedAdam second-moment decay", _in_unit_interval),
    Option("adam-tau", "--adam-tau", "FedAdam adaptivity (epsilon in the denominator)", _positive),
    Option(
        "dp-clipping", "--dp-clipping", "dp-fedavg: where updates are clipped",
        _one_of(lambda: ["server", "client"]),
    ),
    Option(
        "dp-clip", "--dp-clip", "dp-fedavg: clipping norm fixed or adapted each round",
        _one_of(lambda: ["fixed", "adaptive"]),
    ),
    Option("clipping-norm", "--clipping-norm", "dp-fedavg fixed clipping norm", _positive),
    Option(
        "server-noise-multiplier", "--server-noise-multiplier",
        "dp-fedavg noise multiplier z (server noise std = z * clip / sampled clients)",
        _at_least(0),
    ),
    Option(
        "initial-clipping-norm", "--initial-clipping-norm",
        "dp-fedavg adaptive: clipping norm of round 1", _positive,
    ),
    Option(
        "target-quantile", "--target-quantile",
        "dp-fedavg adaptive: Flower's target_clipped_quantile", _in_unit_interval,
    ),
    Option("clip-lr", "--clip-lr", "dp-fedavg adaptive: clipping-norm learning rate", _positive),
    Option(
        "clipped-count-stddev", "--clipped-count-stddev",
        "dp-fedavg adaptive: noise std of the clipped count (0: Flower's sampled/20)",
        _at_least(0),
    ),
    Option("delta", "--delta", "delta at which epsilon is reported (sample- and client-level)", _open_unit_interval),
    Option(
        "max-epsilon", "--max-epsilon",
        "client-level budget: stop before a round that would exceed it (0: none)", _at_least(0),
    ),
    Option("secagg", "--secagg", "secure aggregation (Flower's SecAgg+): the server sees only the sum"),
    Option(
        "secagg-shares", "--secagg-shares",
        "SecAgg+ key shares per client (0: all clients of the round)", _at_least(0),
    ),
    Option(
        "secagg-threshold", "--secagg-threshold",
        "SecAgg+ shares needed to rebuild a key (0: shares // 2 + 1)", _at_least(0),
    ),
    # --- scale, faults, checkpoint/resume (issue 7) ---
    Option("fail-rate", "--fail-rate", "probability a sampled client raises in a round (seeded)", _probability),
    Option("straggler-rate", "--straggler-rate", "probability a sampled client replies late (seeded)", _probability),
    Option("straggler-seconds", "--straggler-seconds", "delay of a straggler's reply, seconds", _at_least(0)),
    Option(
        "round-timeout", "--round-timeout",
        "seconds the server waits for a phase's replies; later ones count as failed", _positive,
    ),
    Option(
        "min-replies", "--min-replies",
        "fewest successful train replies that make a round; fewer: round skipped", _at_least(1),
    ),
    Option(
        "checkpoint-every", "--checkpoint-every",
        "write a resumable checkpoint every K rounds (0: never)", _at_least(0),
    ),
    Option("resume", "--resume", "continue the killed run in this folder to its planned rounds"),
    # --- image data and sample-level DP-SGD (issue 3: dcgan; reused by image tasks) ---
    Option("dataset", "--dataset", "image data set (mnist5k and digits ship with the packages)",
           _one_of(lambda: list(DATASETS))),
    Option("data-dir", "--data-dir", "folder of --dataset mnist|fashion-mnist|cifar10|folder"),
    Option("image-size", "--image-size", "side of the square images",
           lambda v: None if v in IMAGE_SIZES
           else f"must be one of {', '.join(map(str, IMAGE_SIZES))} (got {v})"),
    Option("partition", "--partition", "how training data is split across clients",
           _one_of(lambda: list(PARTITIONS))),
    Option("dirichlet-alpha", "--dirichlet-alpha",
           "Dirichlet concentration of --partition dirichlet (small = skewed)", _positive),
    Option("dp", "--dp", "DP-SGD (Opacus) on the model that reads real data"),
    Option("noise-multiplier", "--noise-multiplier",
           "DP-SGD noise std / clipping norm (ignored with --target-epsilon)", _at_least(0)),
    Option("max-grad-norm", "--max-grad-norm", "DP-SGD per-sample clipping norm", _positive),
    Option("target-epsilon", "--target-epsilon",
           "if > 0: noise multiplier chosen so each client's whole run spends at most this",
           _at_least(0)),
    Option("accountant", "--accountant", "Opacus privacy accountant",
           _one_of(lambda: list(ACCOUNTANTS))),
    Option("grad-sample-mode", "--grad-sample-mode", "how Opacus computes per-sample gradients",
           _one_of(lambda: list(GRAD_SAMPLE_MODES))),
    Option("device", "--device",
           "where dcgan clients train and the server fits its public prior "
           "(auto: a GPU when the process sees one)", _one_of(lambda: list(DEVICES))),
    # --- disguise task (issue 5) ---
    Option("hide", "--hide", "disguise task: comma-separated hidden classes (e.g. 0,1)"),
    Option("decoy", "--decoy",
           "disguise task: decoy classes, one per hidden class, disjoint from --hide"),
    Option("translator-steps", "--translator-steps",
           "disguise task: translation-GAN updates on the data owner's side", _at_least(1)),
    # --- DP-DCGAN quality knobs (issue 3, quality item) ---
    Option("gan-d-lr", "--gan-d-lr",
           "discriminator Adam learning rate (0: same as --lr, which sets the generator's)",
           _at_least(0)),
    Option("gan-keep-optimizer", "--gan-keep-optimizer",
           "keep each client's Adam states across rounds in its context.state"),
    Option("gan-real-label", "--gan-real-label",
           "D's target for real images (one-sided label smoothing: < 1)",
           lambda v: None if 0.5 < v <= 1 else f"must be in (0.5, 1] (got {v})"),
    Option("gan-width", "--gan-width", "feature maps of G's last and D's first layer",
           _at_least(4)),
    Option("gan-d-steps", "--gan-d-steps",
           "discriminator steps per generator step (privacy is spent per D step)",
           _at_least(1)),
    Option("gan-d-beta1", "--gan-d-beta1",
           "D's Adam beta1 (DCGAN: 0.5); larger averages DP noise over more steps",
           lambda v: None if 0 <= v < 1 else f"must be in [0, 1) (got {v})"),
    Option("gan-g-steps", "--gan-g-steps",
           "generator steps after each D step (free: G is post-processing of D)",
           _at_least(1)),
    Option("gan-ema", "--gan-ema",
           "decay of the EMA of G's weights used for samples and release (0: off)",
           lambda v: None if 0 <= v < 1 else f"must be in [0, 1) (got {v})"),
    Option("gan-public-prior", "--gan-public-prior",
           "public data D's feature layers are trained on (then frozen) and G starts from "
           "(auto: digits for mnist5k/mnist, none otherwise)",
           _one_of(lambda: list(public_prior.PRIORS))),
    Option("gan-class-code", "--gan-class-code",
           "with the digits prior, G draws one of ten digit classes per sample, pulled there "
           "by a frozen public classifier (D stays unconditional; no private label is read)"),
    # --- class-conditional DP-DCGAN (issue 8) ---
    Option("conditional", "--conditional",
           "dcgan: condition G and D on the label (labels are private data too); "
           "reports train-on-synthetic/test-on-real accuracy every round"),
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
    # --- reporting ---
    quiet: bool
    # --- strategies, DP-FedAvg and client-level accounting (issue 4) ---
    clients_per_round: int
    proximal_mu: float
    server_lr: float
    adam_beta1: float
    adam_beta2: float
    adam_tau: float
    dp_clipping: str
    dp_clip: str
    clipping_norm: float
    server_noise_multiplier: float
    initial_clipping_norm: float
    target_quantile: float
    clip_lr: float
    clipped_count_stddev: float
    delta: float
    max_epsilon: float
    secagg: bool
    secagg_shares: int
    secagg_threshold: int
    # --- scale, faults, checkpoint/resume (issue 7) ---
    fail_rate: float
    straggler_rate: float
    straggler_seconds: float
    round_timeout: float
    min_replies: int
    checkpoint_every: int
    resume: str
    # --- image data and sample-level DP-SGD (issue 3) ---
    dataset: str
    data_dir: str
    image_size: int
    partition: str
    dirichlet_alpha: float
    dp: bool
    noise_multiplier: float
    max_grad_norm: float
    target_epsilon: float
    accountant: str
    grad_sample_mode: str
    device: str
    # --- disguise task (issue 5) ---
    hide: str
    decoy: str
    translator_steps: int
    # --- DP-DCGAN quality knobs (issue 3, quality item) ---
    gan_d_lr: float
    gan_keep_optimizer: bool
    gan_real_label: float
    gan_width: int
    gan_d_steps: int
    gan_d_beta1: float
    gan_g_steps: int
    gan_ema: float
    gan_public_prior: str
    gan_class_code: bool
    # --- class-conditional DP-DCGAN (issue 8) ---
    conditional: bool

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
        check_privacy_combinations(values)
        _check_scale(values)
        _check_data_source(values)
        _check_disguise_mapping(values)
        _check_conditional(values)
        _check_public_prior(values)
        names = {f.name for f in fields(cls)}
        return cls(**{_attr(k): v for k, v in values.items() if _attr(k) in names})

    def to_run_config(self) -> dict[str, Any]:
        """Return the kebab-case mapping the apps read from ``context.run_config``."""
        return {key: getattr(self, _attr(key)) for key in defaults()}


def _check_scale(values: Mapping[str, Any]) -> None:
    """Checks of the issue-7 keys that involve two settings."""
    per_round = values["clients-per-round"]  # <= clients: check_privacy_combinations
    if per_round and values["min-replies"] > per_round:
        raise ConfigError(
            "min-replies", f"must be <= --clients-per-round ({per_round}), got {values['min-replies']}"
        )


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


# --- strategies, DP-FedAvg and client-level accounting (issue 4) ---
def check_privacy_combinations(values: Mapping[str, Any]) -> None:
    """Refuse setting combinations that Flower would reject mid-run or that cannot be accounted.

    Raises
    ------
    ConfigError
        Naming the flag to change and what is allowed.
    """
    from strategies.sampling import train_sample_size

    clients, per_round = values["clients"], values["clients-per-round"]
    if per_round > clients:
        raise ConfigError(
            "clients-per-round", f"must be <= --clients ({clients}), got {per_round}"
        )
    dp = values["strategy"] == "dp-fedavg"
    if values["secagg"]:
        _check_secagg(values, dp)
    noise = values["server-noise-multiplier"]
    if values["max-epsilon"] > 0 and not dp:
        raise ConfigError("max-epsilon", "a client-level budget needs --strategy dp-fedavg")
    if not dp:
        return
    if values["max-epsilon"] > 0 and noise == 0:
        raise ConfigError(
            "max-epsilon", "needs --server-noise-multiplier > 0 (without noise epsilon is infinite)"
        )
    if values["dp-clip"] == "adaptive":
        if noise == 0:
            raise ConfigError(
                "server-noise-multiplier",
                "adaptive clipping needs a noise multiplier > 0 (got 0); use --dp-clip fixed "
                "to clip without noise",
            )
        sampled = train_sample_size(values)
        stddev = values["clipped-count-stddev"] or sampled / 20
        if noise >= 2 * stddev:
            raise ConfigError(
                "server-noise-multiplier",
                f"adaptive clipping needs it < 2 x clipped-count noise std ({2 * stddev:g} with "
                f"{sampled} sampled clients); lower it or raise --clipped-count-stddev",
            )


def _check_secagg(values: Mapping[str, Any], dp: bool) -> None:
    """SecAgg+ needs >= 3 clients a round, 3 <= shares <= clients, 2 <= threshold < shares."""
    from strategies.sampling import train_sample_size
    from strategies.secagg import secagg_params

    sampled = train_sample_size(values)
    if sampled < 3:
        raise ConfigError(
            "clients-per-round", f"--secagg needs at least 3 clients per round (got {sampled})"
        )
    shares = values["secagg-shares"]
    if shares and not 3 <= shares <= sampled:
        raise ConfigError(
            "secagg-shares", f"must be 0 or in 3..{sampled} (clients per round), got {shares}"
        )
    shares, threshold = secagg_params(values)
    if not 2 <= threshold < shares:
        raise ConfigError(
            "secagg-threshold",
            f"must be 0 or in 2..{shares - 1} (below --secagg-shares {shares}), got {threshold}",
        )
    if dp and (values["dp-clipping"], values["dp-clip"]) != ("client", "fixed"):
        raise ConfigError(
            "secagg",
            "with dp-fedavg needs --dp-clipping client --dp-clip fixed (the server never sees "
            "single updates to clip, and adaptive clipping's per-client bits would travel in clear)",
        )
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


# --- class-conditional DP-DCGAN (issue 8) ---
def _check_conditional(values: Mapping[str, Any]) -> None:
    """``--conditional`` is a dcgan setting; elsewhere it would be silently ignored."""
    if values["conditional"] and values["task"] != "dcgan":
        raise ConfigError("conditional", f"is for --task dcgan only (got --task {values['task']})")


def _check_public_prior(values: Mapping[str, Any]) -> None:
    """A digits prior needs one-channel private data (the public digits are grey)."""
    if values["task"] != "dcgan":
        return
    try:
        channels = {"cifar10": 3, "folder": None}.get(values["dataset"], 1)
        public_prior.resolve(values["gan-public-prior"], values["dataset"], channels)
    except ValueError as error:
        raise ConfigError("gan-public-prior", str(error)) from None
