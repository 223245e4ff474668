"""``python -m fl_sim audit RUN_DIR``: an empirical membership-inference check of a DCGAN run.

Why: an accounted epsilon is a proof about the training algorithm; an audit asks what
an attacker actually gets from the released artefacts. Members are training images
(of one client, or of all clients), non-members the server's held-out split, which
neither G nor D ever trained on. Two attacks:

``d_score`` (white-box)
    The chosen round's global discriminator logit on the real image (a conditional
    model is given the true label). D is trained to call training images real, so an
    overfitted D scores members higher.
``distance`` (black-box)
    Minus the L2 distance, in [0, 1] pixel space, from the image to its nearest
    released synthetic sample (the nearest one of the same label when the release has
    labels). A generator that memorised its training images releases near-copies.

Per attack: ROC AUC, TPR at 1% FPR and the empirical epsilon lower bound (with a
Clopper-Pearson confidence interval, see :mod:`fl_sim.release.mia`), next to the accounted
epsilon of the audited round. Results go to ``RUN_DIR/audit.json`` and the ROC plot to
``RUN_DIR/report/audit_roc.png``; the run's report shows both.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from fl_core.atomic import write_json
from fl_core.options import UsageError
from fl_sim.record.run_folder import RunFolder, RunFolderError
from fl_sim.release import mia

AUDIT_FILE = "audit.json"
ROC_FIGURE = "audit_roc.png"
ATTACKS = {"d_score": "discriminator score (white-box)",
           "distance": "distance to nearest synthetic (black-box)"}


class AuditError(UsageError):
    """An audit argument that cannot be used; the message names the flag."""

    def __init__(self, message: str) -> None:
        super().__init__("", message)


def load_synthetic(path: str | Path, image_shape: tuple[int, ...]) -> tuple[np.ndarray,
                                                                             np.ndarray | None]:
    """(images in [0, 1], labels or None) of an ``fl_sim sample`` npz file.

    Raises
    ------
    AuditError
        If the file is missing, unreadable, or its images are not ``N x C x H x W`` with
        the run's C, H, W.
    """
    path = Path(path)
    if not path.is_file():
        raise AuditError(f"--synthetic-file: {path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as data:
            names = list(data.files)
            key = "images" if "images" in names else (names[0] if len(names) == 1 else None)
            if key is None:
                raise AuditError(f"--synthetic-file: {path} has no 'images' array "
                                 f"(arrays: {', '.join(names)})")
            images = np.asarray(data[key], np.float32)
            labels = np.asarray(data["labels"]) if "labels" in names else None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        if isinstance(error, AuditError):
            raise
        raise AuditError(f"--synthetic-file: cannot read {path} as .npz ({error})") from None
    if images.ndim != 4 or tuple(images.shape[1:]) != tuple(image_shape) or not len(images):
        raise AuditError(f"--synthetic-file: images of shape {images.shape}; this run's are "
                         f"N x {' x '.join(map(str, image_shape))}")
    if labels is not None and labels.shape != (len(images),):
        raise AuditError(f"--synthetic-file: labels of shape {labels.shape} for "
                         f"{len(images)} images")
    return images, labels


def _subset(x: np.ndarray, y: np.ndarray, count: int,
            rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    rows = np.sort(rng.choice(len(x), size=count, replace=False))
    return x[rows], y[rows]


def check_arguments(run_dir: Path, server_round: int | None, client: int | None, members: int,
                    synthetic: int, synthetic_file: str | None) -> dict[str, Any]:
    """Everything that can be refused without loading data; returns the run's settings.

    Raises
    ------
    RunFolderError, AuditError
        With a message naming the problem (missing run, non-dcgan run, missing round,
        client out of range, counts <= 0, missing synthetic file).
    """
    if members < 2:  # each half (threshold choice, evaluation) needs one of each side
        raise AuditError(f"--members must be >= 2, got {members}")
    if synthetic <= 0:
        raise AuditError(f"--synthetic must be > 0, got {synthetic}")
    folder = RunFolder(run_dir)
    settings = folder.settings()
    if settings.get("task") != "dcgan":
        raise RunFolderError(f"{run_dir} is a {settings.get('task')!r} run; only dcgan runs "
                             f"have a discriminator and a generator to audit")
    rounds = folder.rounds_with_weights()
    if not rounds:
        raise RunFolderError(f"{run_dir} keeps no per-round weights (weights/round_XXX.pt)")
    if server_round is not None and server_round not in rounds:
        raise RunFolderError(f"--round {server_round} does not exist in {run_dir}; kept "
                             f"rounds: {rounds[0]}..{rounds[-1]}")
    clients = int(settings["clients"])
    if client is not None and not 0 <= client < clients:
        raise AuditError(f"--client must be in 0..{clients - 1} (the run has {clients} "
                         f"clients), got {client}")
    if synthetic_file is not None and not Path(synthetic_file).is_file():
        raise AuditError(f"--synthetic-file: {synthetic_file} does not exist")
    return settings


def run_audit(run_dir: str | Path, server_round: int | None = None, client: int | None = None,
              members: int = 1000, synthetic: int = 10000, synthetic_file: str | None = None,
              seed: int = 0, task: Any = None) -> dict[str, Any]:
    """Audit one round of a DCGAN run; write ``audit.json`` and the ROC plot; return the record.

    Parameters
    ----------
    members : int
        Examples of each side: ``min(members, available)`` members and as many
        non-members (balanced, seeded random subsets).
    synthetic : int
        Samples drawn from the round's generator for the distance attack (ignored with
        ``synthetic_file``).
    task : optional
        The run's task, already built (tests pass one to swap the data); default: rebuilt
        from the run folder.
    """
    run_dir = Path(run_dir)
    settings = check_arguments(run_dir, server_round, client, members, synthetic,
                               synthetic_file)
    delta = float(settings["delta"])
    folder = RunFolder(run_dir)
    task = task if task is not None else folder.load_task(need="discriminator_logits")
    chosen, arrays = folder.arrays_at(server_round)
    in_x, in_y = task.member_data(client)
    out_x, out_y = task.holdout_data()
    count = min(members, len(in_x), len(out_x))
    if count < 2:
        raise AuditError(f"--client {client}: only {len(in_x)} training images and "
                         f"{len(out_x)} held-out images; the audit needs 2 of each")
    rng = np.random.default_rng(seed)
    in_x, in_y = _subset(in_x, in_y, count, rng)
    out_x, out_y = _subset(out_x, out_y, count, rng)
    conditional = bool(getattr(task, "conditional", False))

    def d_score(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return np.asarray(task.discriminator_logits(arrays, x, y if conditional else None),
                          np.float64).reshape(-1)

    if synthetic_file is not None:
        fake_x, fake_y = load_synthetic(synthetic_file, tuple(in_x.shape[1:]))
        source = str(synthetic_file)
    else:
        fake_x, fake_y = task.synthesize(arrays, synthetic, seed)
        source = f"generator of round {chosen}, seed {seed}"

    def distance(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        pixels = (x + 1.0) / 2.0  # model range [-1, 1] -> [0, 1], as released
        if fake_y is not None:
            return -mia.nearest_distances_by_class(pixels, y, fake_x, fake_y)
        return -mia.nearest_distances(pixels, fake_x)

    accounted = folder.epsilon_at(chosen)
    attacks = {}
    for name, score in (("d_score", d_score), ("distance", distance)):
        result = mia.attack_summary(score(in_x, in_y), score(out_x, out_y), delta, seed)
        attacks[name] = {"description": ATTACKS[name], **result,
                         "accounted_epsilon": accounted, "delta": delta}
    record = {
        "run_id": run_dir.name,
        "round": chosen,
        "settings": {"round": chosen, "client": client, "members": count,
                     "nonmembers": count, "synthetic": len(fake_x), "synthetic_source": source,
                     "seed": seed, "confidence": mia.CONFIDENCE, "low_fpr": mia.LOW_FPR,
                     "conditional": conditional},
        "accounted_epsilon": accounted,
        "delta": delta,
        "dp": bool(settings.get("dp", False)),
        "attacks": attacks,
    }
    write_json(run_dir / AUDIT_FILE, record, sort_keys=False)
    from fl_sim.release.audit_report import write_roc_figure

    write_roc_figure(record, run_dir / "report" / ROC_FIGURE)
    return record
