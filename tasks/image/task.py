"""What every image task with sample-level DP-SGD reads from the run config, once.

Why: the classifier (and the disguise task built on it) and the DCGAN read the same
image-data and DP-SGD keys and choose sigma for ``--target-epsilon`` the same way; only
their per-client privacy plans differ (the classifier keeps an evaluation split on each
client). Keeping that here means a new key or a change to the target search is made once.
"""

from __future__ import annotations

from functools import cached_property

from fl_core.federation import FederationOptions
from fl_core.options import Settings
from tasks import dp_sgd
from tasks.base import Workspace
from tasks.image import data as image_data
from tasks.image.options import ImageDataOptions
from tasks.options import DPSGDOptions


class PrivateImageTask:
    """Shared settings, data and DP-SGD planning of the image tasks.

    Subclasses implement :meth:`_plans`: every client's (sample rate, planned steps).
    """

    def __init__(self, settings: Settings, workspace: Workspace = Workspace()) -> None:
        self.settings = settings
        self.workspace = workspace
        federation = settings.get(FederationOptions)
        image = settings.get(ImageDataOptions)
        self.private = settings.get(DPSGDOptions)
        self.seed = federation.seed
        self.rounds = federation.num_server_rounds
        self.local_epochs = federation.local_epochs
        self.batch_size = federation.batch_size
        self.lr = federation.lr
        self.clients = federation.clients
        self.delta = federation.delta
        self.dataset = image.dataset
        self.data_dir = image.data_dir
        self.image_size = image.image_size
        self.partition = image.partition
        self.alpha = image.dirichlet_alpha
        self.dp = self.private.dp
        self.target_epsilon = self.private.target_epsilon

    # --- data (lazy: the task is built in every process) ------------------------------
    @cached_property
    def images(self) -> image_data.ImageData:
        return image_data.load_images(self.dataset, self.data_dir, self.image_size, self.seed)

    # --- privacy ----------------------------------------------------------------------
    def _plans(self) -> list[tuple[float, int]]:
        """(sample rate, total planned steps) of every client's whole run."""
        raise NotImplementedError

    @cached_property
    def plans(self) -> list[tuple[float, int]]:
        """:meth:`_plans`, computed once."""
        return self._plans()

    def planned_epsilons(self) -> list[float]:
        """Each client's planned epsilon for the whole run, at ``--delta``.

        Computed once per distinct plan: clients of equal size share one, so a population
        of 100,000 costs what its few distinct sizes cost, not 100,000 accountant calls.
        """
        settings = self.dp_settings
        by_plan = {plan: dp_sgd.epsilon_of([(settings.noise_multiplier, *plan)],
                                           settings.delta, settings.accountant)
                   for plan in set(self.plans)}
        return [by_plan[plan] for plan in self.plans]

    @cached_property
    def noise_multiplier(self) -> float:
        """``--noise-multiplier``, or the one ``--target-epsilon`` implies for the run.

        With a target, every client's planned run gets the smallest sigma that keeps its
        epsilon at ``--delta`` under the target; the largest of these is used, so no
        client exceeds the target.
        """
        if not self.dp or self.target_epsilon <= 0:
            return self.private.noise_multiplier
        return max(dp_sgd.noise_for_target(self.target_epsilon, self.delta, rate, steps,
                                           self.private.accountant)
                   for rate, steps in set(self.plans))

    @property
    def dp_settings(self) -> dp_sgd.DPSettings | None:
        """How each client privatises its training; None without ``--dp``."""
        if not self.dp:
            return None
        return dp_sgd.DPSettings(
            noise_multiplier=self.noise_multiplier,
            max_grad_norm=self.private.max_grad_norm,
            delta=self.delta, accountant=self.private.accountant,
            grad_sample_mode=self.private.grad_sample_mode,
        )
