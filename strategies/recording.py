"""A wrapper that reports every round's messages and replies to a callback.

Flower's strategies aggregate replies and drop them; a results writer needs each
client's reply (metrics, failures, timing). Wrapping rather than subclassing keeps this
working around any strategy, Flower's DP wrappers included.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from strategies.delegating import DelegatingStrategy


class RoundObserver(Protocol):
    """Receives what a :class:`RecordingStrategy` sees."""

    def on_configure(self, server_round: int, phase: str, node_ids: list[int]) -> None:
        """Called with the nodes sampled for ``phase`` (``"train"`` or ``"evaluate"``)."""

    def accepts(self, server_round: int, phase: str, reply: Message) -> bool:
        """Whether ``reply`` may be aggregated (False: it came too late, say)."""

    def on_replies(
        self,
        server_round: int,
        phase: str,
        replies: list[Message],
        aggregated: MetricRecord | None,
    ) -> None:
        """Called with every reply of ``phase`` and the strategy's aggregated metrics."""

class RecordingStrategy(DelegatingStrategy):
    """Delegate to ``strategy``, reporting sampled nodes and replies to ``observer``.

    Only the replies the observer accepts reach the wrapped strategy; the observer still
    hears of all of them.

    Parameters
    ----------
    strategy : Strategy
        Any Flower strategy; its behaviour is unchanged.
    observer : RoundObserver
        Told about each phase of each round.
    """

    def __init__(self, strategy: Strategy, observer: RoundObserver) -> None:
        super().__init__(strategy)
        self.observer = observer

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Configure training with the wrapped strategy and report the sampled nodes."""
        messages = list(self.strategy.configure_train(server_round, arrays, config, grid))
        # A strategy that exchanges messages itself (SecAgg+) says whom it sampled.
        sampled = getattr(self.strategy, "sampled_nodes", None)
        nodes = (sampled.pop(server_round, _destinations(messages)) if isinstance(sampled, dict)
                 else _destinations(messages))
        self.observer.on_configure(server_round, "train", nodes)
        return messages

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Aggregate with the wrapped strategy, then report the replies."""
        replies = list(replies)
        kept = [r for r in replies if self.observer.accepts(server_round, "train", r)]
        arrays, metrics = self.strategy.aggregate_train(server_round, kept)
        # A strategy that exchanges messages itself (SecAgg+) says what it received.
        gathered = getattr(self.strategy, "received_replies", {})
        replies = gathered.pop(server_round, replies) if isinstance(gathered, dict) else replies
        self.observer.on_replies(server_round, "train", replies, metrics)
        return arrays, metrics

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Configure evaluation with the wrapped strategy and report the sampled nodes."""
        messages = list(self.strategy.configure_evaluate(server_round, arrays, config, grid))
        self.observer.on_configure(server_round, "evaluate", _destinations(messages))
        return messages

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        """Aggregate with the wrapped strategy, then report the replies."""
        replies = list(replies)
        kept = [r for r in replies if self.observer.accepts(server_round, "evaluate", r)]
        metrics = self.strategy.aggregate_evaluate(server_round, kept)
        self.observer.on_replies(server_round, "evaluate", replies, metrics)
        return metrics


def _destinations(messages: list[Message]) -> list[int]:
    return [message.metadata.dst_node_id for message in messages]
