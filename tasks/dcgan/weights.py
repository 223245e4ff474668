"""How the DCGAN's networks are laid out in one state dict, and where rounds are kept.

The global model is one ArrayRecord holding both networks (``generator.*`` and
``discriminator.*``), averaged by the strategy every round; G's EMA travels beside them
(:mod:`tasks.dcgan.ema`). A coded G's frozen guide is not part of it: it travels beside the
model, never aggregated (``fl_sim.app.frozen``), and is kept in ``weights/guide.pt``. Run
folders written before that keep it as ``guide.*`` inside each round's weights.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from fl_core.safe_load import load_tensors

G_PREFIX, D_PREFIX = "generator.", "discriminator."
GUIDE_PREFIX = "guide."
"""The frozen public classifier of a coded G (:mod:`tasks.dcgan.public_prior`)."""
WEIGHTS_DIR = "weights"


def weights_path(run_dir: str | Path, server_round: int) -> Path:
    """Where the global (G, D) of ``server_round`` is kept (round 0: the initialisation).

    Every round's weights are kept (about 2.5 MB per round at the default width), so a
    synthetic release or an audit can be made from any round, not just the last.
    """
    return Path(run_dir) / WEIGHTS_DIR / f"round_{server_round:03d}.pt"


def split_state(state: Mapping[str, torch.Tensor]) -> tuple[dict, dict]:
    """Split a joint state dict into (generator, discriminator) state dicts."""
    g = {k[len(G_PREFIX):]: v for k, v in state.items() if k.startswith(G_PREFIX)}
    d = {k[len(D_PREFIX):]: v for k, v in state.items() if k.startswith(D_PREFIX)}
    return g, d


def joint_state(generator: nn.Module, discriminator: nn.Module) -> dict[str, torch.Tensor]:
    """One state dict holding both networks, as the strategy averages them."""
    state = {f"{G_PREFIX}{k}": v.detach().clone() for k, v in generator.state_dict().items()}
    state.update({f"{D_PREFIX}{k}": v.detach().clone()
                  for k, v in discriminator.state_dict().items()})
    return state


def guide_path(run_dir: str | Path) -> Path:
    """Where a coded G's frozen guide is kept (written once, at round 0)."""
    return Path(run_dir) / WEIGHTS_DIR / "guide.pt"


def guide_state(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The guide's weights inside an older run folder's round weights (else empty)."""
    return {k[len(GUIDE_PREFIX):]: v for k, v in state.items() if k.startswith(GUIDE_PREFIX)}


def round_zero(run_dir: str | Path) -> tuple[dict, dict] | None:
    """(the global model, the guide) a resumed run starts from, or None if not kept.

    The guide comes from ``weights/guide.pt``, or from ``guide.*`` inside the round
    weights of a run folder written before it left the model (empty without a code).
    """
    path = weights_path(run_dir, 0)
    if not path.exists():
        return None
    state = load_tensors(path, "round weights")
    saved = guide_path(run_dir)
    guide = load_tensors(saved, "the guide's weights") if saved.exists() else guide_state(state)
    return {k: v for k, v in state.items() if not k.startswith(GUIDE_PREFIX)}, guide
