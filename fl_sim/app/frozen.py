"""Arrays every client needs but none trains, sent beside the model, never aggregated.

A task may hold public, frozen weights its clients use in training (the DCGAN's guide, a
classifier of public digits). Carried inside the global model they would be averaged by
FedAvg, noised by DP-FedAvg's server and quantised by SecAgg+, and written into
``model.pt`` as if trained. So they travel in the train message's ConfigRecord instead,
as Flower's own protobuf bytes of an ArrayRecord: every strategy passes its train config
to the clients unchanged (SecAgg+ too, through the legacy FitIns config), and a client
sends nothing of it back.
"""

from __future__ import annotations

from flwr.app import ArrayRecord, ConfigRecord, RecordDict

from fl_core.flower import recorddict_bytes, recorddict_of_bytes

FROZEN_KEY = "frozen-arrays"


def train_config(frozen: ArrayRecord | None) -> ConfigRecord:
    """The train config of every round: the frozen arrays, if the task has any."""
    if frozen is None or not len(frozen):
        return ConfigRecord()
    return ConfigRecord({FROZEN_KEY: recorddict_bytes(RecordDict({"frozen": frozen}))})


def frozen_of(config: ConfigRecord) -> ArrayRecord | None:
    """The frozen arrays a train message carries, or None."""
    if FROZEN_KEY not in config:
        return None
    return recorddict_of_bytes(bytes(config[FROZEN_KEY]))["frozen"]
