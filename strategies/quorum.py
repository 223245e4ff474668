"""A wrapper that skips a round whose training replies are too few.

Flower's FedAvg aggregates whatever valid replies arrive, even one out of a hundred. Under
injected or real faults a run may prefer to keep the previous global model than to
average a handful of clients: with fewer than ``min_replies`` successful training
replies, the round's aggregation is skipped (``Strategy.start`` then keeps the previous
arrays) and the run goes on. Wrapping keeps this usable around any strategy.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from flwr.app import ArrayRecord, Message, MetricRecord
from flwr.serverapp.strategy import Strategy

from strategies.delegating import DelegatingStrategy

LOG = logging.getLogger(__name__)


def successful(replies: Iterable[Message]) -> int:
    """Number of replies that carry content rather than an error."""
    return sum(not reply.has_error() for reply in replies)


class Quorum(DelegatingStrategy):
    """Delegate to ``strategy`` but skip aggregation below ``min_replies`` successes.

    Parameters
    ----------
    strategy : Strategy
        The strategy that samples and aggregates.
    min_replies : int
        Fewest successful training replies that make a round (>= 1).
    """

    def __init__(self, strategy: Strategy, min_replies: int = 1) -> None:
        if min_replies < 1:
            raise ValueError(f"min_replies must be >= 1, got {min_replies}")
        super().__init__(strategy)
        self.min_replies = min_replies
        self.skipped: list[int] = []

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Aggregate, unless fewer than ``min_replies`` replies succeeded."""
        replies = list(replies)
        ok = successful(replies)
        if ok < self.min_replies:
            LOG.warning("round %s skipped: %d successful replies < min-replies %d",
                        server_round, ok, self.min_replies)
            self.skipped.append(server_round)
            return None, None
        return self.strategy.aggregate_train(server_round, replies)
