"""How much one run's TSTR figure moves, and whether public data could pick its best round.

Why: a frontier compares settings by one TSTR figure per run. This reads a finished
``--conditional`` DCGAN run folder (its kept round weights) and measures, without training
anything new: the TSTR of a round's release with several classifier seeds and with more
synthetic images (20,000 and 60,000, the published protocol's count), and, for every kept
round, the agreement of G's labels with a classifier of the public font digits, the only
yardstick that reads no private data, beside the reference CNN's reading of the same
labels (``label_agreement``) and the run's own recorded TSTR and FID.

Usage::

    PYTHONPATH=. python benchmarks/tstr_spread.py RUN_DIR [ROUNDS] [THREADS]

``ROUNDS`` (comma-separated, default ``0`` and the last kept round) get the TSTR spread;
``THREADS`` (default 1, what a frontier point has) sets torch's threads, which change a
classifier's fit, hence its accuracy, as much as its seed does.
"""

from __future__ import annotations

import sys

import numpy as np
import torch

from fl_sim.record.run_folder import RunFolder
from fl_sim.report.data import load_run
from tasks.dcgan import public_prior
from tasks.dcgan.metrics import Scorer
from tasks.image import cnn

SEEDS = 3
LARGER = (20_000, 60_000)
AGREEMENT_SAMPLES = 2_000


def label_agreement(task, arrays) -> float:
    """The server's ``label_agreement``: the reference CNN reads a fake as its label."""
    fakes = task.generate(arrays, len(task.images.test_x), task.seed + 1)
    _, _, probs = task.scorer.quality(fakes)
    return float((probs.argmax(1) == task._labels(len(fakes)).numpy()).mean())


def main(run_dir: str, rounds: str | None, threads: int) -> None:
    torch.set_num_threads(threads)
    folder = RunFolder(run_dir).require()
    task = folder.load_task("synthesize")
    if not task.conditional or task.prior != "digits":
        raise SystemExit(f"{run_dir}: needs a --conditional run with the digits prior")
    kept = folder.rounds_with_weights()
    if not kept:
        raise SystemExit(f"{run_dir}: keeps no round weights")
    run = load_run(run_dir)
    public = public_prior.guide_classifier(task.image_size, task.seed)
    labels = task._labels(AGREEMENT_SAMPLES).numpy()
    print("round  public_agreement  label_agreement  recorded_tstr  recorded_fid")
    for server_round in kept:
        _, arrays = folder.arrays_at(server_round)
        fakes = task.generate(arrays, AGREEMENT_SAMPLES, task.seed + 3)
        agreement = float((cnn.predict(public, fakes) == labels).mean())
        tstr_at = run.series("server_tstr_accuracy").get(server_round, np.nan)
        fid_at = run.series("server_fid").get(server_round, np.nan)
        print(f"{server_round:5d}  {agreement:16.3f}  {label_agreement(task, arrays):15.3f}  "
              f"{tstr_at:13.3f}  {fid_at:12.1f}", flush=True)
    chosen = [int(r) for r in rounds.split(",")] if rounds else [kept[0], kept[-1]]
    count = len(task.images.train_y)
    several, one = (Scorer(task.images, task.seed, tstr_seeds=n) for n in (SEEDS, 1))
    for server_round in chosen:
        _, arrays = folder.arrays_at(server_round)
        images = task.generate(arrays, count, task.seed + 2)
        scores = several.accuracies(images, task._labels(count).numpy())
        print(f"round {server_round}: {count} images, seeds {task.seed}..{task.seed + SEEDS - 1}: "
              f"{', '.join(f'{a:.3f}' for a in scores)}; mean {np.mean(scores):.3f} "
              f"+- {np.std(scores, ddof=1):.3f}", flush=True)
        for larger in LARGER:
            images = task.generate(arrays, larger, task.seed + 2)
            accuracy = one.accuracies(images, task._labels(larger).numpy())[0]
            print(f"round {server_round}: {larger} images, seed {task.seed}: {accuracy:.3f}",
                  flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None,
         int(sys.argv[3]) if len(sys.argv) > 3 else 1)
