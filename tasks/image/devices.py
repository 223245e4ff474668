"""Where a task trains: the GPU this process was given, or the CPU.

Under Ray simulation a client with ``--client-gpus 0`` (the default) sees no GPU: Ray
sets ``CUDA_VISIBLE_DEVICES`` to the empty string for actors that reserved none, so
``torch.cuda.is_available()`` is False there. With ``--client-gpus 0.25`` each client
sees the GPU it shares, and ``auto`` trains on it. On the Deployment Engine a SuperNode
sees whatever its host shows it; ``--device cpu`` keeps it off the GPU.
"""

from __future__ import annotations

import torch

from tasks.image.options import DEVICES


def torch_device(choice: str) -> torch.device:
    """The device for ``--device`` in this process.

    Raises
    ------
    ValueError
        ``choice`` is not one of :data:`DEVICES`, or ``cuda`` in a process that sees
        no GPU (a silent fall-back to the CPU would hide a misconfigured cluster).
    """
    if choice not in DEVICES:
        raise ValueError(f"must be one of {', '.join(DEVICES)} (got {choice!r})")
    available = torch.cuda.is_available()
    if choice == "cuda" and not available:
        raise ValueError("--device cuda, but this process sees no GPU (under Ray simulation "
                         "give clients one with --client-gpus)")
    return torch.device("cuda" if choice != "cpu" and available else "cpu")
