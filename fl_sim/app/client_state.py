"""Per-client state (a sample-level DP accountant) that survives a ``--resume``.

A client keeps what must outlive a round in ``context.state``. A resumed run is a new
process with fresh contexts, so without help a client's accountant would restart at zero.
When checkpoints are on (``--checkpoint-every`` > 0):

1. the ClientApp glue copies every record of ``context.state`` into its train reply under
   ``client-state/<name>`` (:func:`export_state`);
2. :class:`ClientStates`, a strategy wrapper, takes those records out of the replies
   before the strategy aggregates (FedAvg refuses replies with extra ArrayRecords) and keeps
   the latest per partition; it is a checkpoint state provider, so they go into
   ``checkpoint.pt``;
3. after a resume, before a node trains for the first time, the wrapper asks it for its
   partition (one ``query`` message, only to sampled nodes whose partition it does not know
   yet) and attaches that partition's saved records to its train messages until one
   succeeds; the glue puts them back into ``context.state`` when the client has none
   (:func:`restore_state`).

Memory on the server is one small record set per partition that ever trained; nothing is
sent when checkpoints are off.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from fl_core.flower import recorddict_bytes, recorddict_of_bytes
from fl_sim.record.run_folder import RunFolderError
from strategies.delegating import DelegatingStrategy

PREFIX = "client-state/"
QUERY_PARTITION = "query"
PARTITION_KEY = "partition-id"


# --- client side (called by fl_sim.client_app) --------------------------------------
def export_state(state: RecordDict) -> dict[str, Any]:
    """Records of ``context.state`` to add to a train reply."""
    return {f"{PREFIX}{name}": record for name, record in state.items()}


def restore_state(content: RecordDict, state: RecordDict) -> int:
    """Put records the server sent back into an empty ``context.state``; return how many."""
    sent = {k[len(PREFIX):]: v for k, v in content.items() if k.startswith(PREFIX)}
    if not sent or len(state):
        return 0  # nothing saved, or this client kept its own state (no restart)
    for name, record in sent.items():
        state[name] = record
    return len(sent)


# --- server side ----------------------------------------------------------------------
class ClientStates(DelegatingStrategy):
    """Collect clients' state records from replies; hand them back after a resume.

    Parameters
    ----------
    strategy : Strategy
        The wrapped strategy (it never sees ``client-state/*`` records).
    partition_key : str
        Metric of every reply that names the client's partition.
    """

    def __init__(self, strategy: Strategy, partition_key: str = PARTITION_KEY) -> None:
        super().__init__(strategy)
        self.partition_key = partition_key
        self.states: dict[int, dict[str, Any]] = {}
        self._restore: set[int] = set()  # partitions whose state a resumed run must send
        self._partition_of: dict[int, int] = {}

    # --- StateProvider -----------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Every partition's latest records, as Flower's protobuf bytes (no pickle)."""
        return {"states": {partition: recorddict_bytes(RecordDict(records))
                           for partition, records in self.states.items()}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Load saved records; each partition gets them back before it next trains.

        Raises
        ------
        RunFolderError
            If a saved entry is not Flower's record bytes (a damaged or foreign checkpoint).
        """
        states = {}
        for partition, data in dict(state["states"]).items():
            try:
                records = recorddict_of_bytes(bytes(data))
            except Exception as error:  # noqa: BLE001 - any parse failure: refuse the file
                raise RunFolderError(f"checkpoint: client state of partition {partition} is "
                                     f"not Flower record bytes ({type(error).__name__})") from None
            states[int(partition)] = dict(records.items())
        self.states = states
        self._restore = set(self.states)

    # --- Strategy ----------------------------------------------------------------
    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Attach saved state to the train messages of partitions that need it."""
        messages = list(self.strategy.configure_train(server_round, arrays, config, grid))
        if not self._restore:
            return messages
        self._learn_partitions(grid, [m.metadata.dst_node_id for m in messages])
        out = []
        for message in messages:
            partition = self._partition_of.get(message.metadata.dst_node_id)
            if partition in self._restore:
                extra = {f"{PREFIX}{k}": v for k, v in self.states[partition].items()}
                message = Message(
                    content=RecordDict({**dict(message.content.items()), **extra}),
                    message_type=message.metadata.message_type,
                    dst_node_id=message.metadata.dst_node_id,
                )
            out.append(message)
        return out

    def _learn_partitions(self, grid: Grid, node_ids: list[int]) -> None:
        unknown = [n for n in node_ids if n not in self._partition_of]
        if not unknown:
            return
        queries = [Message(content=RecordDict(), message_type=QUERY_PARTITION, dst_node_id=n)
                   for n in unknown]
        for reply in grid.send_and_receive(queries, timeout=600):
            if not reply.has_error():
                partition = int(reply.content["metrics"][self.partition_key])
                self._partition_of[reply.metadata.src_node_id] = partition

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Keep and remove each reply's ``client-state/*`` records, then aggregate."""
        replies = list(replies)
        for reply in replies:
            if reply.has_error():
                continue
            names = [k for k in reply.content if k.startswith(PREFIX)]
            partition = int(reply.content["metrics"][self.partition_key])
            self._partition_of[reply.metadata.src_node_id] = partition
            # Sent until a successful reply shows the client has it (a client that
            # fails its first round after the resume gets it again next time).
            self._restore.discard(partition)
            if names:
                self.states[partition] = {k[len(PREFIX):]: reply.content[k] for k in names}
                for name in names:
                    del reply.content[name]
        return self.strategy.aggregate_train(server_round, replies)
