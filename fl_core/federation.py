"""The options every task and strategy reads: who trains, how long, with what.

Why here: the number of clients, the rounds, the local hyper-parameters, the seed and
the delta of every epsilon are read by the tasks (local training, privacy plans) and by
the strategies (sampling, client-level accounting) alike, so they belong to neither.
"""

from __future__ import annotations

from fl_core.options import Options, at_least, group, open_unit_interval, option, positive


@group("Federation")
class FederationOptions(Options):
    """Population, rounds, local training and the delta at which epsilon is reported.

    The four keys marked ``task_default`` take the selected task's own value when left
    at 0, so one table of defaults serves every task.
    """

    clients: int = option(5, "number of clients (simulated SuperNodes)", check=at_least(1))
    num_server_rounds: int = option(0, "federated rounds (0: task default)", flag="--rounds",
                                    check=at_least(1), task_default=True)
    local_epochs: int = option(0, "local epochs per round (0: task default)",
                               check=at_least(1), task_default=True)
    batch_size: int = option(0, "local batch size (0: task default)", check=at_least(1),
                             task_default=True)
    lr: float = option(0.0, "local learning rate (0: task default)", check=positive,
                       task_default=True)
    seed: int = option(42, "seed of data, model initialisation and sampling",
                       check=at_least(0))
    delta: float = option(1e-5, "delta at which epsilon is reported (sample- and "
                          "client-level)", check=open_unit_interval)


TASK_DEFAULTED = tuple(spec.key for spec in FederationOptions.specs() if spec.task_default)
"""Keys whose 0 means "the task's own default"."""
