"""What every image task with sample-level DP-SGD reads from the run config, once.

Why: the classifier (and the disguise task built on it) and the DCGAN read the same
image-data and DP-SGD keys and choose sigma for ``--target-epsilon`` the same way; only
their per-client privacy plans differ (the classifier keeps an evaluation split on each
client). Keeping that here means a new key or a change to the target search is made once.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cached_property
from typing import Any

from tasks import data as image_data
from tasks import dp_sgd


class PrivateImageTask:
    """Shared settings, data and DP-SGD planning of the image tasks.

    Subclasses implement :meth:`_plans`: every client's (sample rate, planned steps).
    """

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.config = dict(config)
        self.seed = int(config["seed"])
        self.rounds = int(config["num-server-rounds"])
        self.local_epochs = int(config["local-epochs"])
        self.batch_size = int(config["batch-size"])
        self.lr = float(config["lr"])
        self.clients = int(config["clients"])
        self.dataset = str(config["dataset"])
        self.data_dir = str(config["data-dir"])
        self.image_size = int(config["image-size"])
        self.partition = str(config["partition"])
        self.alpha = float(config["dirichlet-alpha"])
        self.dp = bool(config["dp"])
        self.target_epsilon = float(config["target-epsilon"])

    # --- data (lazy: the task is built in every process) ------------------------------
    @cached_property
    def images(self) -> image_data.ImageData:
        return image_data.load_images(self.dataset, self.data_dir, self.image_size, self.seed)

    # --- privacy ----------------------------------------------------------------------
    def _plans(self) -> list[tuple[float, int]]:
        """(sample rate, total planned steps) of every client's whole run."""
        raise NotImplementedError

    @cached_property
    def noise_multiplier(self) -> float:
        """``--noise-multiplier``, or the one ``--target-epsilon`` implies for the run.

        With a target, every client's planned run gets the smallest sigma that keeps its
        epsilon at ``--delta`` under the target; the largest of these is used, so no
        client exceeds the target.
        """
        if not self.dp or self.target_epsilon <= 0:
            return float(self.config["noise-multiplier"])
        return max(dp_sgd.noise_for_target(self.target_epsilon, float(self.config["delta"]),
                                           rate, steps, str(self.config["accountant"]))
                   for rate, steps in set(self._plans()))

    @property
    def dp_settings(self) -> dp_sgd.DPSettings | None:
        """How each client privatises its training; None without ``--dp``."""
        if not self.dp:
            return None
        return dp_sgd.DPSettings(
            noise_multiplier=self.noise_multiplier,
            max_grad_norm=float(self.config["max-grad-norm"]),
            delta=float(self.config["delta"]), accountant=str(self.config["accountant"]),
            grad_sample_mode=str(self.config["grad-sample-mode"]),
        )
