"""Disguised classifier: train on decoy-looking images, classify the hidden originals.

The data owner wants a model that separates hidden classes (``--hide 0,1``) while the
parties that train it (the federation's clients) must not learn which classes those
are. Who holds what, in this harness:

* **Data owner = the ServerApp side** (this task's server-side methods). It holds the
  real images, trains the translation GAN (:mod:`tasks.disguise.translator`) that maps hidden
  class ``hide[k]`` to decoy class ``decoy[k]``, keeps it in ``<run>/owner/`` and
  publishes only ``<run>/published/disguised.npz``: translated images labelled with
  decoy classes. It also trains the reference classifier and runs the leakage probe
  (:mod:`tasks.disguise.metrics`), and at the end composes translator + federated
  classifier and scores it on held-out *real* hidden-class images.
* **Clients** read their partition of ``disguised.npz`` (path from ``run-dir``) and
  train a decoy classifier with FedAvg, DP-SGD included. Flower messages carry only
  the classifier's weights: the translator is never sent (a test asserts this on the
  messages). In this simulation everyone shares one disk; a deployment would ship
  ``disguised.npz`` alone to the compute parties.

Pipeline at inference: ``hide[argmax classifier(G(x))]``; ``G`` takes no label, so it
works on images whose class is unknown. Because the label map is a bijection, the
pipeline's accuracy on real hidden images equals the classifier's accuracy on their
disguises, which is what ``central_evaluate`` reports as ``accuracy``.
"""

from __future__ import annotations

import time
import zipfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, RecordDict

from fl_core.atomic import replacing, write_json
from fl_core.options import Settings
from fl_core.safe_load import DamagedFile
from tasks.base import Partition, Workspace
from tasks.classifier import ImageClassifierBase
from tasks.disguise import metrics as disguise_metrics
from tasks.disguise import translator as translation
from tasks.disguise.options import DisguiseOptions, dataset_classes, parse_mapping
from tasks.image import cnn

PUBLISHED = Path("published") / "disguised.npz"
OWNER = Path("owner")
SUMMARY = "disguise.json"
GRID_PAIRS = 16


def select(x: np.ndarray, y: np.ndarray, classes: Sequence[int]) -> tuple[np.ndarray,
                                                                          np.ndarray]:
    """Images of ``classes`` and their mapping index (position of their class in it)."""
    classes = np.asarray(classes)
    mask = np.isin(y, classes)
    index = np.argmax(y[mask][:, None] == classes[None, :], axis=1)
    return x[mask], index.astype(np.int64)


@contextmanager
def single_thread() -> Iterator[None]:
    """Run the owner's CPU training on one thread: on a shared, loaded machine two
    threads were measured several times slower than one (thread contention)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def write_published(path: Path, x: np.ndarray, labels: np.ndarray) -> Path:
    """Write the disguised data set (images, decoy labels), atomically."""
    with replacing(path, suffix=".npz") as tmp:
        np.savez(tmp, x=np.asarray(x, np.float32), y=np.asarray(labels, np.int64))
    return path


def read_published(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read the disguised data set; the clients' only input."""
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} does not exist: the disguise task's clients read the data owner's "
            "published data set from the run folder (run it with `python -m fl_sim run`, "
            "which sets run-dir)")
    try:
        with np.load(path, allow_pickle=False) as archive:  # a run folder may come from anyone
            return archive["x"], archive["y"]
    except (ValueError, KeyError, OSError, zipfile.BadZipFile) as error:
        raise DamagedFile(path, f"not a published disguise data set ({error})") from None


class DisguiseTask(ImageClassifierBase):
    """Decoy classifier trained on disguised hidden-class images; see the module docstring."""

    server_metrics = ("loss", "accuracy", "decoy_accuracy")

    def __init__(self, settings: Settings, workspace: Workspace = Workspace()) -> None:
        super().__init__(settings, workspace)
        options = settings.get(DisguiseOptions)
        self.hide, self.decoy = parse_mapping(options.hide, options.decoy,
                                              dataset_classes(self.dataset, self.data_dir))
        self.translator_steps = options.translator_steps
        self.run_dir = workspace.run_dir
        self.stage_seconds: dict[str, float] = {}
        self.report: dict[str, Any] = {}
        self._owner: dict[str, Any] | None = None
        self._federated_started = 0.0

    @property
    def num_classes(self) -> int:  # type: ignore[override]
        return len(self.decoy)

    def _path(self, relative: Path) -> Path:
        if self.run_dir is None:
            raise RuntimeError("the disguise task needs run-dir (set by `python -m fl_sim run`)")
        return self.run_dir / relative

    # --- what clients see ---------------------------------------------------------------
    @cached_property
    def _published(self) -> tuple[np.ndarray, np.ndarray]:
        x, labels = read_published(self._path(PUBLISHED))
        unexpected = sorted(set(labels.tolist()) - set(self.decoy))
        if unexpected:
            raise ValueError(f"published data set has non-decoy labels {unexpected}")
        index = np.argmax(labels[:, None] == np.asarray(self.decoy)[None, :], axis=1)
        return x, index.astype(np.int64)

    def train_data(self) -> tuple[np.ndarray, np.ndarray]:
        """The published disguised images and their decoy index (clients and server)."""
        return self._published

    def test_data(self) -> tuple[np.ndarray, np.ndarray]:
        """Disguises of the held-out *real* hidden images, with their mapping index."""
        owner = self.prepare()
        return owner["test_disguised"], owner["test_index"]

    # --- the data owner's side ----------------------------------------------------------
    def prepare(self) -> dict[str, Any]:
        """Train the translator, publish the disguised set, measure it (once, server side)."""
        if self._owner is not None:
            return self._owner
        images = self.images
        with single_thread():
            started = time.perf_counter()
            reference = disguise_metrics.reference_classifier(
                images.train_x, images.train_y, images.num_classes, self.seed + 7)
            self.stage_seconds["reference_classifier"] = time.perf_counter() - started
            reference_accuracy = cnn.score(reference, images.test_x, images.test_y)["accuracy"]

            hidden_x, hidden_index = select(images.train_x, images.train_y, self.hide)
            decoy_x, decoy_index = select(images.train_x, images.train_y, self.decoy)
            started = time.perf_counter()
            generator, training = translation.train_translator(
                hidden_x, hidden_index, decoy_x, decoy_index, num_decoys=len(self.decoy),
                steps=self.translator_steps, seed=self.seed)
            translation.save_translator(generator, self._path(OWNER / "translator.pt"))
            self.stage_seconds["translator"] = time.perf_counter() - started

            started = time.perf_counter()
            disguised = translation.disguise(generator, hidden_x)
            write_published(self._path(PUBLISHED), disguised,
                            np.asarray(self.decoy)[hidden_index])
            test_x, test_index = select(images.test_x, images.test_y, self.hide)
            test_disguised = translation.disguise(generator, test_x)
            translation.save_pairs(test_x[_spread(test_index, GRID_PAIRS)],
                                   test_disguised[_spread(test_index, GRID_PAIRS)],
                                   self._path(OWNER / "pairs.png"))
            self.stage_seconds["convert"] = time.perf_counter() - started

            started = time.perf_counter()
            quality = disguise_metrics.decoy_shares(reference, disguised, hidden_index,
                                                    self.hide, self.decoy)
            real_decoys, _ = select(np.concatenate([images.train_x, images.test_x]),
                                    np.concatenate([images.train_y, images.test_y]),
                                    self.decoy)
            probe = disguise_metrics.distinguishability_probe(disguised, real_decoys,
                                                              self.seed + 11)
            self.stage_seconds["disguise_metrics"] = time.perf_counter() - started
        decoy_test_x, decoy_test_index = select(images.test_x, images.test_y, self.decoy)
        self._owner = {
            "test_disguised": test_disguised, "test_index": test_index,
            "test_real_decoys": decoy_test_x, "test_real_decoy_index": decoy_test_index,
        }
        self.report = {
            "mapping": {str(h): d for h, d in zip(self.hide, self.decoy, strict=True)},
            "published": {"path": str(PUBLISHED), "examples": int(len(disguised)),
                          "labels": sorted(set(self.decoy))},
            "translator": {**vars(training), "path": str(OWNER / "translator.pt")},
            "reference_classifier": {"test_accuracy": reference_accuracy,
                                     "epochs": disguise_metrics.REFERENCE_EPOCHS},
            "disguise_quality": quality,
            "leakage_probe": probe,
        }
        self._write_report()
        self._federated_started = time.perf_counter()
        return self._owner

    def _write_report(self) -> None:
        if self.run_dir is None:
            return
        report = {**self.report, "stage_seconds": dict(self.stage_seconds)}
        write_json(self.run_dir / SUMMARY, report, sort_keys=False, default=float)

    def initial_arrays(self) -> ArrayRecord:
        """Prepare the disguise (before any client trains), then the seeded classifier."""
        self.prepare()
        return super().initial_arrays()

    def central_evaluate(self, server_round: int, arrays: ArrayRecord) -> dict[str, float]:
        """Pipeline loss/accuracy on real hidden test images; accuracy on real decoys."""
        owner = self.prepare()
        model = self.load(arrays)
        pipeline = cnn.score(model, owner["test_disguised"], owner["test_index"])
        decoys = cnn.score(model, owner["test_real_decoys"], owner["test_real_decoy_index"])
        return {**pipeline, "decoy_accuracy": decoys["accuracy"]}

    def summary(self, arrays: ArrayRecord) -> dict[str, float]:
        """Pipeline accuracy next to a classifier trained directly on the originals."""
        final = self.central_evaluate(-1, arrays)
        if self._federated_started:
            self.stage_seconds["federated"] = time.perf_counter() - self._federated_started
        started = time.perf_counter()
        with single_thread():
            direct = DirectBaseline(self.settings, self.hide).run()
        self.stage_seconds["direct_baseline"] = time.perf_counter() - started
        self.report["pipeline"] = {
            "accuracy": final["accuracy"], "loss": final["loss"],
            "real_decoy_accuracy": final["decoy_accuracy"],
            "test_examples": int(len(self._owner["test_index"])) if self._owner else 0,
        }
        self.report["direct_baseline"] = direct
        self.report["cost_of_disguise"] = direct["accuracy"] - final["accuracy"]
        if self.dp:
            self.report["noise_multiplier"] = self.noise_multiplier
        self._write_report()
        quality = self.report.get("disguise_quality", {})
        return {
            "loss": final["loss"], "accuracy": final["accuracy"],
            "pipeline_accuracy": final["accuracy"],
            "direct_accuracy": direct["accuracy"],
            "decoy_share": quality.get("decoy_share", float("nan")),
            "hidden_share": quality.get("hidden_share", float("nan")),
            "probe_accuracy": self.report.get("leakage_probe", {}).get("accuracy",
                                                                       float("nan")),
        }


def _spread(index: np.ndarray, count: int) -> np.ndarray:
    """Up to ``count`` positions, taken evenly from every mapping class."""
    chosen = []
    for k in np.unique(index):
        members = np.flatnonzero(index == k)
        chosen.extend(members[: max(1, count // len(np.unique(index)))].tolist())
    return np.asarray(chosen[:count], dtype=np.int64)


class DirectBaseline(ImageClassifierBase):
    """The same federated budget spent on the original hidden-class images.

    Same partition method, clients, rounds, local epochs, batch size, learning rate and
    DP settings as the disguised run, with plain FedAvg (example-weighted mean, every
    client every round) computed in-process: the cost of disguise without a second
    Ray simulation.
    """

    def __init__(self, settings: Settings, hide: Sequence[int]) -> None:
        super().__init__(settings)
        self.hide = tuple(hide)

    @property
    def num_classes(self) -> int:  # type: ignore[override]
        return len(self.hide)

    def train_data(self) -> tuple[np.ndarray, np.ndarray]:
        return select(self.images.train_x, self.images.train_y, self.hide)

    def test_data(self) -> tuple[np.ndarray, np.ndarray]:
        return select(self.images.test_x, self.images.test_y, self.hide)

    def run(self) -> dict[str, Any]:
        """Train ``rounds`` of in-process FedAvg; return the test figures."""
        arrays = self.initial_arrays()
        states = [RecordDict() for _ in range(self.clients)]
        epsilons: list[float] = []
        for server_round in range(1, self.rounds + 1):
            total, summed = 0, None
            for index in range(self.clients):
                result = self.train(arrays, Partition(index, self.clients), states[index],
                                    server_round)
                weights = result.arrays.to_torch_state_dict()
                total += result.num_examples
                scaled = {k: v.double() * result.num_examples for k, v in weights.items()}
                summed = scaled if summed is None else {k: summed[k] + scaled[k]
                                                        for k in summed}
                if "epsilon" in result.metrics:
                    epsilons.append(float(result.metrics["epsilon"]))
            arrays = ArrayRecord({k: (v / total).float() for k, v in summed.items()})
        scores = self.central_evaluate(-1, arrays)
        out: dict[str, Any] = {**scores, "rounds": self.rounds, "clients": self.clients,
                               "test_examples": int(len(self.test_data()[1]))}
        if epsilons:
            out["epsilon_max"] = max(epsilons[-self.clients:])
        return out
