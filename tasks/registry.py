"""The tasks, by ``--task`` name: where each lives, its defaults and the options it reads.

Explicit on purpose: listing the names, their defaults and their option groups imports
no task module (no torch), so ``--help`` and the option checks stay light. Adding a task
is one entry in each table below, plus its module (see docs/architecture.md).
"""

from __future__ import annotations

from collections.abc import Mapping

from fl_core.options import Options
from fl_core.registry import Registry
from tasks.dcgan.options import DCGANOptions
from tasks.disguise.options import DisguiseOptions
from tasks.image.options import DeviceOptions, ImageDataOptions
from tasks.options import DPSGDOptions

TASKS = Registry("task", {
    "classifier": "tasks.classifier:ClassifierTask",
    "dcgan": "tasks.dcgan.task:DCGANTask",
    "disguise": "tasks.disguise.task:DisguiseTask",
    "regression": "tasks.regression:RegressionTask",
})

_IMAGE_CLASSIFIER = {"num-server-rounds": 5, "local-epochs": 2, "batch-size": 32, "lr": 0.05}
DEFAULTS: Mapping[str, Mapping[str, int | float]] = {
    "classifier": _IMAGE_CLASSIFIER,
    "dcgan": {"num-server-rounds": 10, "local-epochs": 2, "batch-size": 64, "lr": 3e-4},
    "disguise": _IMAGE_CLASSIFIER,
    "regression": {"num-server-rounds": 10, "local-epochs": 5, "batch-size": 16, "lr": 0.01},
}
"""Each task's values of the keys left at 0 (``fl_core.federation.TASK_DEFAULTED``)."""

GROUPS: Mapping[str, tuple[type[Options], ...]] = {
    "classifier": (ImageDataOptions, DPSGDOptions),
    "dcgan": (ImageDataOptions, DPSGDOptions, DeviceOptions, DCGANOptions),
    "disguise": (ImageDataOptions, DPSGDOptions, DisguiseOptions),
    "regression": (),
}
"""The option groups each task reads beyond the federation's (the report shows these)."""

names = TASKS.names
get = TASKS.get


def defaults_of(name: str) -> Mapping[str, int | float]:
    """The task-defaulted values of task ``name`` (KeyError listing the known tasks)."""
    TASKS.target(name)
    return DEFAULTS[name]
