"""Sample quality of a generator, measured without downloaded weights.

FID and the Inception Score are defined in the feature space of Inception-v3 trained on
ImageNet; those weights cannot be downloaded here and would be a poor judge of 28x28
digits anyway. Instead the server trains a small CNN once on its own held-out real
split and uses its penultimate layer (for the Frechet distance) and its class
probabilities (for the Inception-style score). Numbers are therefore comparable
between runs of this harness on the same data set and seed, not with published FIDs.
The classifier's own accuracy on a part of the held-out split it did not train on is
reported as context: a weak reference network makes both scores less meaningful.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from fl_core.atomic import replacing, write_json
from fl_core.cache import Cache, digest, entry_key
from fl_core.safe_load import DamagedFile, load_tensors

FEATURES = 128
REFERENCE_FILE = "reference_classifier.pt"
REFERENCE_EPOCHS = 8
REFERENCE_HOLDOUT = 0.2  # the share of the held-out split that scores the classifier


class ReferenceClassifier(nn.Module):
    """A two-block CNN; ``features`` is the 128-d space of the Frechet distance."""

    def __init__(self, channels: int, num_classes: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(64 * 16, FEATURES), nn.ReLU(),
        )
        self.head = nn.Linear(FEATURES, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


@dataclass
class Reference:
    """A trained reference classifier and its accuracy on unseen held-out images."""

    model: ReferenceClassifier
    accuracy: float

    @torch.no_grad()
    def embed(self, images: np.ndarray | torch.Tensor,
              batch: int = 500) -> tuple[np.ndarray, np.ndarray]:
        """(features, class probabilities) of ``images``, float64."""
        self.model.eval()
        x = torch.as_tensor(images, dtype=torch.float32)
        feats, probs = [], []
        for start in range(0, len(x), batch):
            f = self.model.features(x[start : start + batch])
            feats.append(f)
            probs.append(F.softmax(self.model.head(f), dim=1))
        return torch.cat(feats).double().numpy(), torch.cat(probs).double().numpy()


def train_reference(images: np.ndarray, labels: np.ndarray, num_classes: int, seed: int,
                    epochs: int = REFERENCE_EPOCHS,
                    holdout: float = REFERENCE_HOLDOUT) -> Reference:
    """Train the reference CNN on ``1 - holdout`` of the images; score it on the rest."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(images))
    cut = int(len(images) * (1 - holdout))
    fit, check = order[:cut], order[cut:]
    torch.manual_seed(seed)
    model = ReferenceClassifier(images.shape[1], num_classes)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, y = torch.from_numpy(images), torch.from_numpy(labels)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        perm = torch.from_numpy(fit)[torch.randperm(len(fit), generator=generator)]
        for start in range(0, len(perm), 64):
            batch = perm[start : start + 64]
            optimizer.zero_grad()
            F.cross_entropy(model(x[batch]), y[batch]).backward()
            optimizer.step()
    reference = Reference(model, 0.0)
    _, probs = reference.embed(images[check])
    reference.accuracy = (float((probs.argmax(1) == labels[check]).mean()) if len(check)
                          else float("nan"))
    return reference


def cached_reference(run_dir: str | Path | None, images: np.ndarray, labels: np.ndarray,
                     num_classes: int, seed: int, cache: Cache | None = None) -> Reference:
    """Load the run's reference classifier, or fit it (or read it from ``cache``) and save
    it in ``run_dir``, with ``accuracy``, ``from_cache`` and the fit's ``fit_seconds`` in
    its JSON."""
    path = Path(run_dir) / REFERENCE_FILE if run_dir else None
    if path is not None and path.exists():
        saved = load_tensors(path, "a reference classifier")
        model = ReferenceClassifier(images.shape[1], num_classes)
        try:
            model.load_state_dict(saved["state_dict"])
            return Reference(model, float(saved["accuracy"]))
        except (KeyError, TypeError, ValueError, RuntimeError) as error:
            raise DamagedFile(path, f"not this run's reference classifier "
                                    f"({type(error).__name__})") from None
    reference, record = _fit_or_read(images, labels, num_classes, seed, cache)
    if path is not None:
        with replacing(path) as tmp:
            torch.save({"state_dict": reference.model.state_dict(),
                        "accuracy": reference.accuracy}, tmp)
        write_json(path.with_suffix(".json"), {"accuracy": reference.accuracy, **record})
    return reference


CACHE_KIND = "dcgan-reference-classifier"


def _fit_or_read(images: np.ndarray, labels: np.ndarray, num_classes: int, seed: int,
                 cache: Cache | None) -> tuple[Reference, dict[str, Any]]:
    """The reference classifier from ``cache`` if an entry has this key, else fitted (and kept).

    The key holds a digest of the held-out images and labels themselves, so it follows the
    data whatever data set, folder or size produced them; a hit also restores torch's
    random state after the fit, so the process goes on as if it had fitted.
    """
    started = time.monotonic()
    key, inputs = None, {}
    if cache is not None:
        inputs = {"data": digest({"images": images, "labels": labels}),
                  "num-classes": num_classes, "seed": seed, "epochs": REFERENCE_EPOCHS,
                  "holdout": REFERENCE_HOLDOUT}
        key = entry_key(CACHE_KIND, inputs, (sys.modules[__name__],))
        kept = cache.load(CACHE_KIND, key)
        if kept is not None:
            model = ReferenceClassifier(images.shape[1], num_classes)
            try:  # the random state last: a wrong entry changes nothing outside ``model``
                model.load_state_dict(kept["state_dict"])
                accuracy, fit_seconds = float(kept["accuracy"]), float(kept["fit_seconds"])
                torch.set_rng_state(kept["rng_state"])
                return Reference(model, accuracy), {"from_cache": True,
                                                    "fit_seconds": fit_seconds}
            except (KeyError, TypeError, ValueError, RuntimeError):
                cache.say(f"cache: {cache.paths(CACHE_KIND, key)[1]}: not a reference "
                          "classifier of these images; fitting again")
    reference = train_reference(images, labels, num_classes, seed, epochs=REFERENCE_EPOCHS,
                                holdout=REFERENCE_HOLDOUT)
    seconds = round(time.monotonic() - started, 1)
    if cache is not None and key is not None:
        cache.store(CACHE_KIND, key, {"state_dict": reference.model.state_dict(),
                                      "accuracy": reference.accuracy, "fit_seconds": seconds,
                                      "rng_state": torch.get_rng_state()}, inputs)
    return reference, {"from_cache": False, "fit_seconds": seconds}


def statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance of feature rows."""
    features = np.asarray(features, dtype=np.float64)
    return features.mean(axis=0), np.cov(features, rowvar=False)


def frechet_distance(mu1: np.ndarray, cov1: np.ndarray, mu2: np.ndarray, cov2: np.ndarray) -> float:
    """Frechet distance of two Gaussians: |mu1 - mu2|^2 + tr(C1 + C2 - 2 (C1 C2)^1/2).

    ``tr((C1 C2)^1/2)`` is the sum of square roots of the eigenvalues of ``C1 C2``,
    which are real and non-negative because ``C1 C2`` is similar to the PSD matrix
    ``C1^1/2 C2 C1^1/2``; rounding makes them slightly complex, so they are clipped.
    """
    eigenvalues = np.linalg.eigvals(cov1 @ cov2)
    root_trace = np.sqrt(np.clip(eigenvalues.real, 0, None)).sum()
    distance = float(((mu1 - mu2) ** 2).sum() + np.trace(cov1) + np.trace(cov2) - 2 * root_trace)
    return max(distance, 0.0)


def inception_score(probs: np.ndarray, eps: float = 1e-12) -> float:
    """exp(E_x KL(p(y|x) || p(y))): from 1 (one class, or unsure) to K (K confident, balanced)."""
    probs = np.asarray(probs, dtype=np.float64)
    marginal = probs.mean(axis=0, keepdims=True)
    kl = (probs * (np.log(probs + eps) - np.log(marginal + eps))).sum(axis=1)
    return float(np.exp(kl.mean()))


TSTR_EPOCHS = 5
TSTR_METRICS = ("tstr_accuracy", "real_data_accuracy")
LABEL_AGREEMENT = "label_agreement"
"""Under ``--conditional``: the share of fakes the reference CNN reads as their label."""
TSTR_SPREAD = "tstr_accuracy_std"
"""With more than one TSTR classifier: the sample standard deviation of their accuracies."""


class Scorer:
    """Scores generated images against a data set's held-out real split (server side).

    Parameters
    ----------
    images : tasks.image.data.ImageData
        The server's data: the reference classifier and the real statistics come from
        its held-out split, the TSTR ceiling from its training split.
    seed : int
        Seeds the reference classifier and every TSTR classifier.
    cache_dir : Path, optional
        Where the trained reference classifier is kept between processes (the run folder).
    cache : Cache, optional
        Where it is kept between runs (:mod:`fl_core.cache`): it depends only on the
        held-out split, the seed and the code.
    tstr_seeds : int, optional
        TSTR classifiers per score, seeded ``seed``, ``seed + 1``, ...: one small CNN's
        accuracy moves by several points with its seed alone, more than many training
        choices do, so comparisons average over classifiers.
    """

    def __init__(self, images: Any, seed: int, cache_dir: Path | None = None,
                 cache: Cache | None = None, tstr_seeds: int = 1) -> None:
        self.images = images
        self.seed = seed
        self.cache_dir = cache_dir
        self.cache = cache
        self.tstr_seeds = tstr_seeds

    @cached_property
    def reference(self) -> Reference:
        """The classifier whose features and predictions FID and IS read."""
        return cached_reference(self.cache_dir, self.images.test_x, self.images.test_y,
                                self.images.num_classes, self.seed, self.cache)

    @cached_property
    def _real_stats(self) -> tuple[np.ndarray, np.ndarray]:
        features, _ = self.reference.embed(self.images.test_x)
        return statistics(features)

    def quality(self, fakes: np.ndarray) -> tuple[float, float, np.ndarray]:
        """(FID, Inception-style score, class probabilities) of ``fakes`` (model range)."""
        features, probs = self.reference.embed(fakes)
        fid = frechet_distance(*statistics(features), *self._real_stats)
        return fid, inception_score(probs), probs

    def accuracies(self, x: np.ndarray, y: np.ndarray) -> list[float]:
        """Accuracy on the real held-out split of each TSTR classifier trained on ``x, y``
        (seeds ``seed``, ``seed + 1``, ...): the figures behind :meth:`tstr`'s mean."""
        from tasks.image import cnn

        scores = []
        for k in range(self.tstr_seeds):
            model = cnn.fit(x, y, self.images.num_classes, epochs=TSTR_EPOCHS,
                            seed=self.seed + k)
            scores.append(cnn.score(model, self.images.test_x, self.images.test_y)["accuracy"])
        return scores

    @cached_property
    def real_data_accuracy(self) -> float:
        """The non-private ceiling: the TSTR classifiers trained on the real training data."""
        return float(np.mean(self.accuracies(self.images.train_x, self.images.train_y)))

    def tstr(self, x: np.ndarray, y: np.ndarray) -> dict[str, float]:
        """Train on synthetic, test on real: the release's usefulness for classification.

        Fresh small CNNs learn only from the generated labelled images ``x, y``, with the
        same recipe and seeds as the ceiling, and are scored on the server's real held-out
        split; the mean is reported, and the spread when there are several.
        """
        scores = self.accuracies(x, y)
        out = {"tstr_accuracy": float(np.mean(scores)),
               "real_data_accuracy": self.real_data_accuracy}
        if len(scores) > 1:
            out[TSTR_SPREAD] = float(np.std(scores, ddof=1))
        return out
