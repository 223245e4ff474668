"""The one writer of a DCGAN run's own files (the task itself writes nothing).

Per round: the fixed-noise sample grid (``samples/round_XXX.png``), the global (G, D)
(``weights/round_XXX.pt``, kept for every round so a release or an audit can use any
round) and the latest ``generator.pt``/``discriminator.pt``. At round 0 also the
partition record (``partitions.json``) and what the public prior's fit found
(``public_prior.json``). Every file is replaced atomically (:mod:`fl_core.atomic`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch
from flwr.app import ArrayRecord

from fl_core.atomic import replacing, write_json
from tasks.dcgan.weights import guide_path, split_state, weights_path
from tasks.image.images import save_grid

if TYPE_CHECKING:
    from tasks.dcgan.task import DCGANTask

GRID_SIZE = 64
"""Samples in an unconditional grid (8 per class, one column each, otherwise)."""


class DCGANArtifacts:
    """Writes what a run keeps of its DCGAN after each evaluated round.

    Parameters
    ----------
    task : DCGANTask
        The server's task (its generator draws the grids).
    run_dir : path
        The run folder.
    """

    def __init__(self, task: DCGANTask, run_dir: str | Path) -> None:
        self.task = task
        self.run_dir = Path(run_dir)

    def after_round(self, server_round: int, arrays: ArrayRecord) -> None:
        """Write round ``server_round``'s grid and weights (and round 0's records)."""
        if server_round == 0:
            write_json(self.run_dir / "partitions.json", self.task.partition_record(),
                       sort_keys=False)
            if self.task.prior_record is not None:
                write_json(self.run_dir / "public_prior.json", self.task.prior_record,
                           sort_keys=False)
            guide = self.task.frozen_arrays()
            if guide is not None:
                path = guide_path(self.run_dir)
                path.parent.mkdir(parents=True, exist_ok=True)
                with replacing(path) as tmp:
                    torch.save(guide.to_torch_state_dict(), tmp)
        classes = self.task.num_classes or self.task.code_classes
        count = 8 * classes if classes else GRID_SIZE
        save_grid(self.task.generate(arrays, count, self.task.seed),
                  self.run_dir / "samples" / f"round_{server_round:03d}.png", classes or None)
        joint = arrays.to_torch_state_dict()
        g_state, d_state = split_state(joint)
        for path, state in ((self.run_dir / "generator.pt", g_state),
                            (self.run_dir / "discriminator.pt", d_state),
                            (weights_path(self.run_dir, server_round), joint)):
            with replacing(path) as tmp:
                torch.save(state, tmp)
