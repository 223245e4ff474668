"""A task's own step on the aggregate, between aggregation and the next round.

Some tasks can improve the global model on the server with no data: the DCGAN's
generator steps against the aggregated discriminator (:mod:`tasks.dcgan.server_steps`).
Wrapping the strategy puts that step where Flower's round loop hands the aggregate on,
so the central evaluation, the saved weights and the next round's clients all see the
updated model.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from flwr.app import ArrayRecord, Message, MetricRecord
from flwr.serverapp.strategy import Strategy

from strategies.delegating import DelegatingStrategy

Update = Callable[[int, ArrayRecord], ArrayRecord]


class ServerUpdate(DelegatingStrategy):
    """``strategy``, with ``update(server_round, aggregate)`` applied to each aggregate.

    Parameters
    ----------
    strategy : Strategy
        The wrapped strategy (any, DP wrappers included: the update sees only what the
        server sees, the aggregate after any noise).
    update : callable
        Returns the model the round ends with; rounds that aggregate nothing are
        passed through.
    """

    def __init__(self, strategy: Strategy, update: Update) -> None:
        super().__init__(strategy)
        self.update = update

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """The wrapped strategy's aggregate, then the task's update of it."""
        arrays, metrics = self.strategy.aggregate_train(server_round, replies)
        if arrays is None:
            return arrays, metrics
        return self.update(server_round, arrays), metrics
