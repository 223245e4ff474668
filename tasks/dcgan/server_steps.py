"""Generator steps on the server against the aggregated discriminator.

Why: each client's G learns to fool its own D, so the averaged G is the mean of several
generators, each fitted to a different noisy discriminator, while the averaged D is the
federation's consensus (its DP noise averaged over the clients). A few G steps against
that consensus after every aggregation move G towards what all clients' data say at
once. They read no data: the aggregated D is the output of the private mechanism (the
clients' DP-SGD, or DP-FedAvg's noised mean) and any function of it is post-processing,
so the server spends compute, not epsilon. D itself is left exactly as aggregated.

The server's Adam state is kept across rounds, as each client keeps its own (a fresh
Adam's first steps are ``lr`` in every coordinate), and travels with the run's checkpoint,
so a resumed run continues it. The steps run on the CPU, where the server evaluates.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from flwr.app import ArrayRecord
from torch import nn
from torch.nn import functional as F

from tasks import dp_sgd
from tasks.dcgan import public_prior
from tasks.dcgan.ema import GeneratorEMA, ema_state, with_ema
from tasks.dcgan.models import Generator
from tasks.dcgan.training import optimizer_arrays, restore_optimizer
from tasks.dcgan.weights import joint_state

Guide = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class ServerGenerator:
    """``steps`` G steps per round through the frozen aggregated D.

    Parameters
    ----------
    steps : int
        G steps after each aggregation (0: none).
    batch : int
        Fakes per step.
    lr : float
        G's Adam learning rate (the clients' ``--lr``).
    betas : tuple of float
        G's Adam betas (the clients').
    seed : int
        Seeds each round's noise, so a run is reproducible.
    """

    def __init__(self, steps: int, batch: int, lr: float, betas: tuple[float, float],
                 seed: int) -> None:
        self.steps = steps
        self.batch = batch
        self.lr = lr
        self.betas = betas
        self.seed = seed
        self._adam: dict[str, torch.Tensor] = {}

    def state_dict(self) -> dict[str, dict[str, torch.Tensor]]:
        """Adam's per-parameter moments and step counts, for the run's checkpoint."""
        return {"adam": {k: v.clone() for k, v in self._adam.items()}}

    def load_state_dict(self, state: dict[str, dict[str, torch.Tensor]]) -> None:
        """Continue from what :meth:`state_dict` returned (a resumed run)."""
        self._adam = {k: v.clone() for k, v in state["adam"].items()}

    def run(self, server_round: int, generator: Generator, discriminator: nn.Module, *,
            ema: GeneratorEMA | None = None, guide: Guide | None = None) -> float:
        """Step ``generator`` in place through ``discriminator``, which is not changed.

        Parameters
        ----------
        server_round : int
            Seeds the round's noise, so that a resumed run draws what the uninterrupted one
            would.
        generator, discriminator : nn.Module
            The aggregated networks; D is frozen for the whole call.
        ema : GeneratorEMA, optional
            Folds G in after every step, as on a client, so the released average moves too.
        guide : callable, optional
            ``guide(fakes, codes)`` added to the loss, as in a coded G's client steps.

        Returns
        -------
        float
            The mean non-saturating G loss over the steps (NaN without steps).
        """
        if self.steps <= 0:
            return float("nan")
        noise = torch.Generator().manual_seed(self.seed * 1_000_033 + server_round)
        opt = torch.optim.Adam(generator.parameters(), lr=self.lr, betas=self.betas)
        if self._adam:
            restore_optimizer(opt, self._adam)
        generator.train()
        discriminator.eval()
        classes = generator.num_classes
        ones = torch.ones(self.batch)
        total = 0.0
        with dp_sgd.frozen(discriminator):
            for _ in range(self.steps):
                z = torch.randn(self.batch, generator.latent_dim, generator=noise)
                y = (torch.randint(classes, (self.batch,), generator=noise) if classes
                     else None)
                fake = generator(z, y)
                loss = F.binary_cross_entropy_with_logits(discriminator(fake, y), ones)
                opt.zero_grad(set_to_none=True)
                (loss + guide(fake, y) if guide is not None else loss).backward()
                opt.step()
                if ema is not None:
                    ema.update(generator)
                total += float(loss.detach())
        self._adam = optimizer_arrays(opt)
        return total / self.steps


class ServerSteps:
    """The DCGAN task's server side of :class:`ServerGenerator` (a mixin of the task).

    It uses the task's ``server_generator``, ``ema_decay``, ``prior``, ``parts``,
    ``guide_arrays``, ``_load``, ``_guide`` and ``_g_per_round``
    (:class:`tasks.dcgan.task.DCGANTask`).
    """

    server_generator: ServerGenerator

    @property
    def updates_on_server(self) -> bool:
        """Whether :meth:`server_update` changes the aggregate (``--gan-server-g-steps``)."""
        return self.server_generator.steps > 0

    @property
    def server_update_state(self) -> ServerGenerator:
        """What of :meth:`server_update` a checkpoint keeps (the server's Adam state)."""
        return self.server_generator

    def server_update(self, server_round: int, arrays: ArrayRecord) -> ArrayRecord:
        """G (and its EMA) stepped against the aggregated D, which is left as it is.

        The EMA's warm-up counts the G steps of a client of the mean partition size (the
        sizes are public: the privacy plan already uses them), as a client would after
        ``server_round`` rounds; the server's own steps are not counted, so the clients'
        count next round agrees with it.
        """
        generator, discriminator = self._load(arrays)
        state = arrays.to_torch_state_dict()
        mean_size = round(sum(len(part) for part in self.parts) / len(self.parts))
        ema = GeneratorEMA(ema_state(state), self.ema_decay, warmup=self.prior == "none",
                           first_step=server_round * self._g_per_round(mean_size)
                           ) if self.ema_decay else None
        guide = self._guide(self.guide_arrays, state)
        self.server_generator.run(server_round, generator, discriminator, ema=ema, guide=(
            None if guide is None else public_prior.guide_loss(guide)))
        joint = joint_state(generator, discriminator)
        return ArrayRecord(with_ema(joint, ema.state) if ema is not None else joint)
