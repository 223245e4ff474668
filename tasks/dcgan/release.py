"""What ``fl_sim sample`` and ``fl_sim audit`` ask of a DCGAN run's models.

A mixin of :class:`tasks.dcgan.task.DCGANTask`: the release (images in [0, 1], labels
only where the model was trained on real labels) and the audit's view (D's logits,
members and non-members) read the same networks and data as training, through the
task's ``generate``, ``_load``, ``_labels`` and ``_client_data``.
"""

from __future__ import annotations

import numpy as np
import torch
from flwr.app import ArrayRecord

from tasks.base import Partition


class GeneratorRelease:
    """Release and audit interface of a generative task (see the module docstring)."""

    def synthesize(self, arrays: ArrayRecord, count: int,
                   seed: int) -> tuple[np.ndarray, np.ndarray | None]:
        """``count`` released images, float32 ``N x C x H x W`` in [0, 1], and their labels.

        Labels (int64, balanced over the classes) exist only for a ``--conditional`` model;
        otherwise the second item is None. Deterministic for a given ``seed``.
        """
        images = self.generate(arrays, count, seed)
        labels = self._labels(count)
        return (((images + 1.0) / 2.0).clip(0.0, 1.0).astype(np.float32),
                None if labels is None else labels.numpy().astype(np.int64))

    def discriminator_logits(self, arrays: ArrayRecord, images: np.ndarray,
                             labels: np.ndarray | None = None,
                             batch_size: int = 512) -> np.ndarray:
        """The global D's logit for each image (model range [-1, 1]); high means "real".

        ``labels`` are required for a ``--conditional`` model and ignored otherwise.
        """
        _, discriminator = self._load(arrays)
        discriminator.eval()
        if self.conditional and labels is None:
            raise ValueError("a conditional discriminator needs the images' labels")
        out = []
        with torch.no_grad():
            for start in range(0, len(images), batch_size):
                batch = torch.as_tensor(images[start:start + batch_size])
                y = (torch.as_tensor(labels[start:start + batch_size])
                     if self.conditional else None)
                out.append(discriminator(batch, y).numpy())
        return np.concatenate(out) if out else np.zeros(0, dtype=np.float32)

    def member_data(self, client: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Training (member) images in model range and labels: one client's, or all clients'."""
        chosen = range(self.clients) if client is None else [client]
        parts = [self._client_data(Partition(i, self.clients)) for i in chosen]
        return (np.concatenate([x for x, _ in parts]), np.concatenate([y for _, y in parts]))

    def holdout_data(self) -> tuple[np.ndarray, np.ndarray]:
        """The server's held-out real split (never trained on by G or D): non-members."""
        return self.images.test_x, self.images.test_y
