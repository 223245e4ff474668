"""How much one run's TSTR figure moves, and whether public data could pick its best round.

Why: a frontier compares settings by one TSTR figure per run. This reads a finished
``--conditional`` DCGAN run folder (its kept round weights) and measures, without training
anything new: the TSTR of a round's release with several classifier seeds and with more
synthetic images (20,000 and 60,000, the published protocol's count), and, for every kept
round, the agreement of G's labels with a classifier of the public font digits, the only
yardstick that reads no private data, beside the run's own recorded TSTR and FID.

Usage::

    PYTHONPATH=. python benchmarks/tstr_spread.py RUN_DIR [ROUNDS]

``ROUNDS`` (comma-separated, default ``0`` and the last kept round) get the TSTR spread.
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


def tstr(task, arrays, count: int, seeds: int) -> dict[str, float]:
    """The run's TSTR recipe on ``count`` released images, over ``seeds`` classifiers."""
    images = task.generate(arrays, count, task.seed + 2)
    return Scorer(task.images, task.seed, tstr_seeds=seeds).tstr(
        images, task._labels(count).numpy())


def main(run_dir: str, rounds: str | None) -> None:
    torch.set_num_threads(1)
    folder = RunFolder(run_dir).require()
    task = folder.load_task("synthesize")
    if not task.conditional:
        raise SystemExit(f"{run_dir}: not a --conditional run (no labels, no TSTR)")
    kept = folder.rounds_with_weights()
    run = load_run(run_dir)
    public = public_prior.guide_classifier(task.image_size, task.seed)
    labels = task._labels(AGREEMENT_SAMPLES).numpy()
    print("round  public_agreement  recorded_tstr  recorded_fid")
    for server_round in kept:
        _, arrays = folder.arrays_at(server_round)
        fakes = task.generate(arrays, AGREEMENT_SAMPLES, task.seed + 3)
        agreement = float((cnn.predict(public, fakes) == labels).mean())
        tstr_at = run.series("server_tstr_accuracy").get(server_round, np.nan)
        fid_at = run.series("server_fid").get(server_round, np.nan)
        print(f"{server_round:5d}  {agreement:16.3f}  {tstr_at:13.3f}  {fid_at:12.1f}",
              flush=True)
    chosen = [int(r) for r in rounds.split(",")] if rounds else [kept[0], kept[-1]]
    count = len(task.images.train_y)
    for server_round in chosen:
        _, arrays = folder.arrays_at(server_round)
        spread = tstr(task, arrays, count, SEEDS)
        print(f"round {server_round}: {count} images, {SEEDS} classifiers: "
              f"{spread['tstr_accuracy']:.3f} +- {spread['tstr_accuracy_std']:.3f}", flush=True)
        for larger in LARGER:
            print(f"round {server_round}: {larger} images, 1 classifier: "
                  f"{tstr(task, arrays, larger, 1)['tstr_accuracy']:.3f}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None)
