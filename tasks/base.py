"""The contract between a task and the Flower apps that run it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Protocol

from flwr.app import ArrayRecord, RecordDict

from fl_core.cache import Cache
from fl_core.options import Settings


@dataclass(frozen=True)
class Partition:
    """Which slice of the federation's data a client holds.

    Parameters
    ----------
    index : int
        ``partition-id`` from the node config (0-based).
    count : int
        ``num-partitions`` from the node config.
    """

    index: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ValueError(f"partition {self.index} is outside 0..{self.count - 1}")


def _silent(line: str) -> None:
    """Say nothing (clients, tests and in-process loops)."""


@dataclass(frozen=True)
class Workspace:
    """What the app running a task gives it besides the settings.

    Parameters
    ----------
    run_dir : Path, optional
        The run folder, for tasks whose data or caches live there (the disguise task's
        published data set, the DCGAN's round-0 weights on a resume); None in memory.
    say : callable
        Prints one progress line on the server's console (phases that take minutes).
    resuming : bool
        The run continues a checkpoint (``--resume``): round 0 exists on disk.
    cache : fl_core.cache.Cache, optional
        Where fits of public data are kept between runs (the server's, unless
        ``--no-cache``); None: fit them here.
    """

    run_dir: Path | None = None
    say: Callable[[str], None] = _silent
    resuming: bool = False
    cache: Cache | None = None


@dataclass
class TrainResult:
    """What one client's local training hands back to the server.

    Parameters
    ----------
    arrays : ArrayRecord
        The locally updated model.
    num_examples : int
        Examples trained on; the weight of this client in FedAvg.
    metrics : dict
        Scalar metrics: the task's ``client_metrics``, and with DP-SGD what
        :meth:`tasks.dp_sgd.PrivateTrainer.save` returns (``epsilon``, ...).
    """

    arrays: ArrayRecord
    num_examples: int
    metrics: dict[str, float] = field(default_factory=dict)


def fedavg(results: list[TrainResult]) -> ArrayRecord:
    """The example-weighted mean of the clients' models, computed by Flower's own FedAvg.

    For in-process loops (benchmarks, tests) that stand in for the ServerApp: calling
    Flower's ``aggregate_arrayrecords`` keeps them on the arithmetic a real run uses.
    """
    from flwr.app import MetricRecord

    from fl_core.flower import aggregate_arrayrecords

    replies = [RecordDict({"arrays": r.arrays,
                           "metrics": MetricRecord({"num-examples": r.num_examples})})
               for r in results]
    return aggregate_arrayrecords(replies, "num-examples")


@dataclass
class EvalResult:
    """A client's evaluation of the global model on its own held-out data."""

    num_examples: int
    metrics: dict[str, float] = field(default_factory=dict)


class Task(Protocol):
    """A federated learning task.

    A task is built from the run's validated settings (it reads its option groups with
    ``settings.get(...)``) and a :class:`Workspace`, on the server and in every client
    process. It must be cheap to build: data is loaded lazily, per partition, the first
    time a partition trains. Its defaults and option groups are declared in
    :mod:`tasks.registry`, so listing them imports no task.

    Attributes
    ----------
    client_metrics : tuple of str
        Metric names clients report after training (``loss``, ``accuracy`` where the task
        defines one, task-specific ones); each is a column of clients.csv and rounds.csv.
    evaluate_metrics : tuple of str, optional
        Those clients report after evaluation, when not all of ``client_metrics``.
    dp : bool, optional
        Whether clients train with sample-level DP-SGD (adds clients.csv's privacy columns).
    server_metrics : tuple of str
        Metric names that ``central_evaluate`` returns.
    """

    client_metrics: ClassVar[tuple[str, ...]]
    server_metrics: ClassVar[tuple[str, ...]]

    def __init__(self, settings: Settings, workspace: Workspace = ...) -> None: ...

    def initial_arrays(self) -> ArrayRecord:
        """Return the global model before round 1 (seeded, identical everywhere)."""

    def train(
        self, arrays: ArrayRecord, partition: Partition, state: RecordDict, server_round: int,
        proximal_mu: float = 0.0,
    ) -> TrainResult:
        """Train locally from ``arrays``; ``state`` persists per client across rounds.

        ``proximal_mu`` is passed only under FedProx (``--strategy fedprox``): add
        ``tasks.proximal.ProximalAnchor(model, proximal_mu).term(model)`` to the local
        loss. A task without the argument still runs every other strategy.

        A task that defines ``frozen_arrays()`` (called on the server after
        :meth:`initial_arrays`) also receives ``frozen=``, that ArrayRecord: weights its
        clients use but never train (a public classifier). They travel beside the model
        and are neither sent back nor aggregated, so ``train`` must not return them.
        """

    def evaluate(self, arrays: ArrayRecord, partition: Partition) -> EvalResult:
        """Evaluate the global model on the client's held-out data."""

    def central_evaluate(self, server_round: int, arrays: ArrayRecord) -> dict[str, float]:
        """Evaluate the global model on the server's data (round 0 = initial model)."""

    def summary(self, arrays: ArrayRecord) -> dict[str, float]:
        """Headline numbers of the final global model, for the run summary."""
