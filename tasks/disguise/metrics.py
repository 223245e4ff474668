"""How good, and how leaky, a disguise is: figures that do not trust the translator.

* :func:`decoy_shares`: an independent reference classifier of every class, trained on
  real images only (never on disguises, never with the translator's auxiliary
  classifier), labels each disguised image. The share labelled as the intended decoy
  class is the disguise quality; the share labelled as the hidden source class is
  direct leakage.
* :func:`distinguishability_probe`: an adversary who holds the published disguised
  data set and real public digits trains a classifier to tell disguised images from
  real images of the decoy classes. Held-out accuracy near 50% means the disguise is
  indistinguishable from real decoys to this adversary; near 100% means the
  adversary can tell the data set is synthetic, and so that *something* was hidden.
  It bounds nothing: a stronger adversary may do better (see docs/tasks/disguise.md).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tasks.image import cnn

REFERENCE_EPOCHS = 3
PROBE_EPOCHS = 3
PROBE_TEST_FRACTION = 0.3


def reference_classifier(train_x: np.ndarray, train_y: np.ndarray, num_classes: int,
                         seed: int) -> cnn.SmallCNN:
    """A classifier of every class, trained centrally on real images (not disguises)."""
    return cnn.fit(train_x, train_y, num_classes, epochs=REFERENCE_EPOCHS, seed=seed)


def decoy_shares(reference: cnn.SmallCNN, disguised_x: np.ndarray, index: np.ndarray,
                 hide: Sequence[int], decoy: Sequence[int]) -> dict[str, object]:
    """Shares of disguised images the reference labels as the intended decoy / the source.

    Parameters
    ----------
    index : array of int
        Mapping index ``k`` of each disguised image (hidden ``hide[k]`` -> ``decoy[k]``).

    Returns
    -------
    dict
        ``decoy_share``, ``hidden_share`` (leakage), ``other_share`` and
        ``label_counts`` (how many disguises the reference gave each class).
    """
    predicted = cnn.predict(reference, disguised_x)
    index = np.asarray(index)
    intended = np.asarray(decoy)[index]
    source = np.asarray(hide)[index]
    n = max(len(predicted), 1)
    decoy_share = float(np.sum(predicted == intended) / n)
    hidden_share = float(np.sum(predicted == source) / n)
    counts = np.bincount(predicted, minlength=int(reference.head[-1].out_features))
    return {
        "decoy_share": decoy_share,
        "hidden_share": hidden_share,
        "other_share": 1.0 - decoy_share - hidden_share,
        "label_counts": counts.astype(int).tolist(),
    }


def distinguishability_probe(disguised_x: np.ndarray, real_decoy_x: np.ndarray,
                             seed: int) -> dict[str, float]:
    """Held-out accuracy of a CNN separating disguised images from real decoy images.

    Both sets are cut to the same size, so chance is 50%; ``PROBE_TEST_FRACTION`` of
    each is held out.
    """
    rng = np.random.default_rng(seed)
    n = min(len(disguised_x), len(real_decoy_x))
    fake = disguised_x[rng.permutation(len(disguised_x))[:n]]
    real = real_decoy_x[rng.permutation(len(real_decoy_x))[:n]]
    held = int(round(n * PROBE_TEST_FRACTION))
    train_x = np.concatenate([fake[held:], real[held:]])
    train_y = np.concatenate([np.ones(n - held, np.int64), np.zeros(n - held, np.int64)])
    test_x = np.concatenate([fake[:held], real[:held]])
    test_y = np.concatenate([np.ones(held, np.int64), np.zeros(held, np.int64)])
    probe = cnn.fit(train_x, train_y, 2, epochs=PROBE_EPOCHS, seed=seed)
    return {
        "accuracy": cnn.score(probe, test_x, test_y)["accuracy"],
        "train_examples": int(len(train_x)),
        "test_examples": int(len(test_x)),
    }
