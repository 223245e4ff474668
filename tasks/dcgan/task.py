"""Federated DCGAN with sample-level DP-SGD on the discriminator.

Only D reads real images, so only D is trained with DP-SGD; G is post-processing of D
(the argument is in :mod:`tasks.dcgan.training`). Each client's accountant history lives
in its ``context.state`` (see ``tasks.dp_sgd``), so the reported epsilon is cumulative
over the run. With ``--gan-keep-optimizer`` (default) the client's two Adam states are
kept there too; they never leave the client.

What is *not* covered by the guarantee: the per-client training diagnostics (losses, D
accuracy on real images) are computed on private data and sent in clear, as Opacus's
own examples print them. Client-side evaluation uses generated images only.

The task computes; it writes no file. What a run keeps of it (sample grids, per-round
weights, the partition and prior records) is written by :mod:`tasks.dcgan.artifacts`.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cached_property
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, RecordDict
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from fl_core.options import Settings
from tasks import dp_sgd
from tasks.base import EvalResult, Partition, TrainResult, Workspace
from tasks.dcgan import metrics as gan_metrics
from tasks.dcgan import public_prior
from tasks.dcgan.augment import Augment
from tasks.dcgan.d_schedule import DStepSchedule
from tasks.dcgan.ema import GeneratorEMA, ema_state, with_ema
from tasks.dcgan.models import Discriminator, Generator, build_pair
from tasks.dcgan.options import DCGANOptions, resolve_prior, resolve_shift
from tasks.dcgan.prior_cache import fit_prior
from tasks.dcgan.release import GeneratorRelease
from tasks.dcgan.server_steps import ServerGenerator, ServerSteps
from tasks.dcgan.training import (
    BETA1,
    GANSteps,
    balanced_fakes,
    gan_round,
    load_optimizers,
    save_optimizers,
)
from tasks.dcgan.weights import guide_state, joint_state, round_zero, split_state
from tasks.image import cnn
from tasks.image import data as image_data
from tasks.image.devices import torch_device
from tasks.image.options import DeviceOptions
from tasks.image.task import PrivateImageTask
from tasks.proximal import ProximalAnchor

EVAL_FAKES = 256


class DCGANTask(GeneratorRelease, ServerSteps, PrivateImageTask):
    """DP-DCGAN across clients; see the module docstring for the privacy argument."""

    client_metrics = ("g_loss", "d_loss", "d_real_accuracy", "d_fake_accuracy")
    evaluate_metrics = ("g_loss", "d_fake_accuracy")  # generated images only, no real data
    server_metrics = ("fid", "inception_score", "reference_accuracy")

    def __init__(self, settings: Settings, workspace: Workspace = Workspace()) -> None:
        super().__init__(settings, workspace)
        gan = settings.get(DCGANOptions)
        self.d_lr = gan.gan_d_lr or self.lr
        self.d_beta1 = gan.gan_d_beta1
        self.keep_optimizer = gan.gan_keep_optimizer
        self.real_label = gan.gan_real_label
        self.width = gan.gan_width
        self.conditional, self.tstr_seeds = gan.conditional, gan.tstr_seeds
        self.d_steps, self.d_adapt = gan.gan_d_steps, gan.gan_d_steps_adapt
        self.g_steps = gan.gan_g_steps
        self.ema_decay = gan.gan_ema
        self.prior = resolve_prior(gan.gan_public_prior, self.dataset)
        shift = resolve_shift(gan.gan_aug_shift, self.prior)
        self.augment = Augment(gan.gan_aug_mult, shift) if shift else None
        self.coded = gan.gan_class_code and self.prior == "digits" and not self.conditional
        self.device_choice = settings.get(DeviceOptions).device
        self.server_generator = ServerGenerator(gan.gan_server_g_steps, self.batch_size,
                                                self.lr, (BETA1, 0.999), self.seed)
        self.prior_record: dict[str, Any] | None = None  # public_prior.json, once fitted
        self.guide_arrays: ArrayRecord | None = None
        if self.conditional:
            spread = (gan_metrics.TSTR_SPREAD,) * (self.tstr_seeds > 1)
            self.server_metrics = (*type(self).server_metrics, *gan_metrics.TSTR_METRICS,
                                   gan_metrics.LABEL_AGREEMENT, *spread)
        if self.coded:
            self.server_metrics = (*type(self).server_metrics, "code_agreement")
        if self.d_adapt:  # the n_D each client's schedule reached
            self.client_metrics = (*type(self).client_metrics, "d_steps_per_g")

    # --- data and plan (``images``, ``noise_multiplier``: PrivateImageTask) ------------
    def _client_data(self, partition: Partition) -> tuple[np.ndarray, np.ndarray]:
        return image_data.client_partition(
            self.dataset, self.data_dir, self.image_size, self.seed, partition.count,
            self.partition, self.alpha, partition.index,
        )

    def _client_images(self, partition: Partition) -> np.ndarray:
        return self._client_data(partition)[0]

    @cached_property
    def parts(self) -> list[np.ndarray]:
        return image_data.partition_indices(self.images.train_y, self.clients, self.partition,
                                            self.alpha, self.seed)

    def _plans(self) -> list[tuple[float, int]]:
        """Each client's sample rate and rounds x local epochs x Poisson steps per epoch."""
        plans = []
        for part in self.parts:
            rate, per_epoch = dp_sgd.poisson_plan(len(part), self.batch_size)
            plans.append((rate, self.rounds * self.local_epochs * per_epoch))
        return plans

    @property
    def resolved(self) -> dict[str, Any]:
        """Values derived from the flags, for config.json (the noise a target implies, the
        shift ``-1`` chose)."""
        shift = {"gan-aug-shift": self.augment.shift if self.augment is not None else 0}
        if not self.dp:
            return {"dp": False, **shift}
        return {
            **shift, "noise-multiplier": self.dp_settings.noise_multiplier,
            "sample-rates": [rate for rate, _ in self.plans],
            "planned-steps": [steps for _, steps in self.plans],
            "planned-epsilon": self.planned_epsilons(),
        }

    # --- models ----------------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        """Label classes the networks are conditioned on (0: unconditional)."""
        return self.images.num_classes if self.conditional else 0

    @property
    def code_classes(self) -> int:
        """Classes of G's public class code (0: none; D is unconditional either way)."""
        return public_prior.CODE_CLASSES if self.coded else 0

    def _pair(self) -> tuple[Generator, Discriminator]:
        """A fresh (G, D); with a public prior, D's public feature layers are frozen."""
        generator, discriminator = build_pair(self.image_size, self.images.channels,
                                              self.width, self.seed, self.num_classes,
                                              self.code_classes)
        if self.prior != "none":
            public_prior.freeze(discriminator)
        return generator, discriminator

    def _load(self, arrays: ArrayRecord,
              released: bool = False) -> tuple[Generator, Discriminator]:
        """(G, D) from the joint weights; ``released``: G carries the EMA weights if kept.

        Whether an EMA was kept is read from the weights, not the settings: a run folder
        from before ``--gan-ema`` existed has none, whatever today's default is.
        """
        generator, discriminator = self._pair()
        state = arrays.to_torch_state_dict()
        g_state, d_state = split_state(state)
        ema = ema_state(state) if released else {}
        generator.load_state_dict(ema or g_state)
        discriminator.load_state_dict(d_state)
        return generator, discriminator

    def _labels(self, count: int) -> torch.Tensor | None:
        """Balanced labels for ``count`` released images (class ``i % K``), or None."""
        return torch.arange(count) % self.num_classes if self.conditional else None

    def _codes(self, count: int) -> torch.Tensor | None:
        """What G reads beside z for ``count`` images: the labels, or balanced class codes
        (never released as labels: no private label confirmed the class G was pulled to)."""
        if self.coded:
            return torch.arange(count) % self.code_classes
        return self._labels(count)

    def _guide(self, frozen: ArrayRecord | None,
               received: Mapping[str, torch.Tensor]) -> nn.Module | None:
        """The frozen public classifier of a coded G, from the frozen arrays; older run
        folders kept it as ``guide.*`` in ``received`` (the round weights)."""
        if not self.coded:
            return None
        guide = cnn.SmallCNN(self.images.channels, self.code_classes)
        guide.load_state_dict(frozen.to_torch_state_dict() if frozen is not None
                              else guide_state(received))
        return public_prior.frozen_guide(guide)

    def frozen_arrays(self) -> ArrayRecord | None:
        """The guide's weights (set by :meth:`initial_arrays`), sent beside the model and
        never aggregated (coded G only)."""
        return self.guide_arrays

    def initial_arrays(self) -> ArrayRecord:
        """Seeded DCGAN initialisation; D is checked by Opacus's ModuleValidator here.

        With a public prior, the pretraining on public data happens here, once, on the
        server (see :mod:`tasks.dcgan.public_prior`), or its result is read from the
        workspace's cache (:mod:`tasks.dcgan.prior_cache`); what it found is kept in
        :attr:`prior_record`.
        """
        generator, discriminator = build_pair(self.image_size, self.images.channels,
                                              self.width, self.seed, self.num_classes,
                                              self.code_classes)
        if self.dp:  # checked before the public pretraining's seconds are spent
            dp_sgd.require_dp_compatible(discriminator)
            if self.private.grad_sample_mode == "ew":
                # Expanded weights accumulate wrongly when D is called twice per step
                # (D step, then the G step through D); fail once, on the server.
                raise ValueError("--grad-sample-mode ew cannot train the DCGAN discriminator "
                                 "(it is called twice per step); use hooks or functorch")
        kept = self._resumed_start()
        if kept is not None:
            return kept
        guide = None
        if self.prior != "none":  # fitted, or read from the cache (tasks/dcgan/prior_cache.py)
            resolve_prior(self.prior, self.dataset, self.images.channels)
            guide, self.prior_record = fit_prior(
                generator, discriminator, prior=self.prior, image_size=self.image_size,
                seed=self.seed, coded=self.coded, device=torch_device(self.device_choice),
                cache=self.workspace.cache, say=self.workspace.say)
        joint = joint_state(generator, discriminator)
        if self.ema_decay:
            joint = with_ema(joint, generator.state_dict())
        if guide is not None:
            self.guide_arrays = ArrayRecord(
                {k: v.detach().clone() for k, v in guide.state_dict().items()})
        return ArrayRecord(joint)

    def _resumed_start(self) -> ArrayRecord | None:
        """A resumed run's round-0 weights: the checkpoint restores the global model, and
        refitting the prior only to be overwritten would cost minutes."""
        if not self.workspace.resuming or self.workspace.run_dir is None:
            return None
        kept = round_zero(self.workspace.run_dir)
        if kept is None:
            return None
        model, guide = kept
        if self.coded:
            self.guide_arrays = ArrayRecord(guide)
        return ArrayRecord(model)

    # --- client ----------------------------------------------------------------------
    def train(
        self, arrays: ArrayRecord, partition: Partition, state: RecordDict, server_round: int,
        proximal_mu: float = 0.0, frozen: ArrayRecord | None = None,
    ) -> TrainResult:
        """``local-epochs`` of GAN training; D privatised when ``--dp``.

        Under FedProx both networks take the proximal step towards the global weights
        after every step (decoupled from D's privatised gradient: see tasks/proximal.py).
        Training runs on ``--device`` (a GPU Ray gave this client, with ``auto``); the
        weights and Adam states go back to the CPU when they are packed for the server.
        """
        device = torch_device(self.device_choice)
        generator, discriminator = (net.to(device) for net in self._load(arrays))
        received = arrays.to_torch_state_dict()
        g_anchor = ProximalAnchor(generator, proximal_mu)
        d_anchor = ProximalAnchor(discriminator, proximal_mu)
        torch.manual_seed(self.seed * 1_000_003 + server_round * 1_009 + partition.index)
        x, y = self._client_data(partition)
        tensors = (torch.from_numpy(x), torch.from_numpy(y)) if self.conditional else (
            torch.from_numpy(x),)
        loader = DataLoader(TensorDataset(*tensors), batch_size=self.batch_size, shuffle=True)
        ema = None
        if self.ema_decay:
            start = {k: v.to(device) for k, v in ema_state(received).items()}
            ema = GeneratorEMA(start, self.ema_decay,
                               first_step=(server_round - 1) * self._g_per_round(len(x)),
                               warmup=self.prior == "none")  # a prior is no random start
        betas = (BETA1, 0.999)
        g_opt = torch.optim.Adam(generator.parameters(), lr=self.lr, betas=betas)
        d_opt = torch.optim.Adam(discriminator.parameters(), lr=self.d_lr,
                                 betas=(self.d_beta1, 0.999))
        if self.keep_optimizer:
            load_optimizers(state, g_opt, d_opt)
        trainer = None
        d_module: nn.Module = discriminator
        if self.dp:
            trainer = dp_sgd.PrivateTrainer(self.dp_settings, state)
            d_module, d_opt, loader = trainer.make_private(discriminator, d_opt, loader)

        def pull() -> None:
            g_anchor.pull(generator, self.lr)
            d_anchor.pull(discriminator, self.d_lr)

        # In one process (the in-process probes) the task's own guide serves as well.
        guide = self._guide(frozen if frozen is not None else self.guide_arrays, received)
        schedule = DStepSchedule.load(state, self.d_adapt, self.d_steps) if self.d_adapt else None
        steps = GANSteps(epochs=self.local_epochs, fakes=self.fakes_per_step(len(x)),
                         real_label=self.real_label, d_steps=self.d_steps, g_steps=self.g_steps,
                         augment=self.augment, dp=self.dp, schedule=schedule)
        stats = gan_round(generator, d_module, loader, g_opt, d_opt, steps,
                          after_step=pull if proximal_mu else None, ema=ema,
                          guide=None if guide is None
                          else public_prior.guide_loss(guide.to(device)))
        if self.keep_optimizer:
            save_optimizers(state, g_opt, d_opt)
        if schedule is not None:
            schedule.save(state)
        metrics = {k: stats[k] for k in self.client_metrics}
        if trainer is not None:
            metrics.update(trainer.save())
        joint = joint_state(generator, discriminator)
        if ema is not None:
            joint = with_ema(joint, ema.state)
        return TrainResult(ArrayRecord(joint), len(x), metrics)

    def _g_per_round(self, num_examples: int) -> int:
        """G steps one client of ``num_examples`` takes per round (sets the EMA's warm-up;
        with an adaptive n_D, the steps at the run's starting n_D)."""
        _, per_epoch = dp_sgd.poisson_plan(num_examples, self.batch_size)
        return self.local_epochs * per_epoch // self.d_steps * self.g_steps

    def fakes_per_step(self, num_examples: int) -> int:
        """Fakes in each of this client's D steps (see :func:`balanced_fakes`)."""
        return balanced_fakes(num_examples, self.batch_size, self.dp)

    def evaluate(self, arrays: ArrayRecord, partition: Partition) -> EvalResult:
        """The global G against the global D on generated images only (no real data)."""
        generator, discriminator = self._load(arrays)
        generator.eval()
        discriminator.eval()
        torch.manual_seed(self.seed + 7919 * partition.index)
        with torch.no_grad():
            classes = generator.num_classes  # a conditional or a coded G
            y = torch.randint(classes, (EVAL_FAKES,)) if classes else None
            logits = discriminator(generator(torch.randn(EVAL_FAKES, generator.latent_dim), y),
                                   y)
            g_loss = F.binary_cross_entropy_with_logits(logits, torch.ones(EVAL_FAKES))
        return EvalResult(EVAL_FAKES, {"g_loss": float(g_loss),
                                       "d_fake_accuracy": float((logits < 0).float().mean())})

    # --- server ----------------------------------------------------------------------
    @cached_property
    def scorer(self) -> gan_metrics.Scorer:
        """Scores generated images against the server's held-out real images."""
        return gan_metrics.Scorer(self.images, self.seed, self.workspace.run_dir,
                                  self.workspace.cache, self.tstr_seeds)

    def generate(self, arrays: ArrayRecord, count: int, seed: int) -> np.ndarray:
        """``count`` images (model range) of the released G for a fixed noise seed.

        The released G is the EMA generator when ``--gan-ema`` is on; conditional and
        coded models draw class ``i % K`` for image ``i``.
        """
        generator, _ = self._load(arrays, released=True)
        generator.eval()
        z = torch.randn(count, generator.latent_dim, generator=torch.Generator().manual_seed(seed))
        out = []
        with torch.no_grad():
            labels = self._codes(count)
            for start in range(0, count, 1000):
                y = None if labels is None else labels[start:start + 1000]
                out.append(generator(z[start:start + 1000], y).numpy())
        return np.concatenate(out) if out else np.zeros((0,), dtype=np.float32)

    def central_evaluate(self, server_round: int, arrays: ArrayRecord) -> dict[str, float]:
        """FID / Inception-style score of the global G (the round does not change them)."""
        return self.measure(arrays)

    def measure(self, arrays: ArrayRecord) -> dict[str, float]:
        """FID, Inception-style score and, where they apply, code or label agreement and TSTR."""
        fakes = self.generate(arrays, len(self.images.test_x), self.seed + 1)
        fid, inception, probs = self.scorer.quality(fakes)
        metrics = {"fid": fid, "inception_score": inception,
                   "reference_accuracy": self.scorer.reference.accuracy}
        if self.coded or self.conditional:
            # How often a classifier of *real* images reads a fake as the class G was asked
            # for (its code, or its label): a release can look real and carry wrong labels.
            codes = self._codes(len(fakes)).numpy()
            agreement = "code_agreement" if self.coded else gan_metrics.LABEL_AGREEMENT
            metrics[agreement] = float((probs.argmax(1) == codes).mean())
        if self.conditional:
            count = len(self.images.train_y)
            metrics.update(self.scorer.tstr(self.generate(arrays, count, self.seed + 2),
                                            self._labels(count).numpy()))
        return metrics

    def partition_record(self) -> dict[str, Any]:
        """How the training data was split (public: computed from the seed alone)."""
        counts = image_data.class_counts(self.images.train_y, self.parts,
                                         self.images.num_classes)
        return {"method": self.partition, "dirichlet_alpha": self.alpha,
                "sizes": [len(p) for p in self.parts], "class_counts": counts,
                "held_out_test": len(self.images.test_y)}

    def artifacts(self, run_dir: Any) -> Any:
        """The writer of this run's sample grids, weights and records (the server app's)."""
        from tasks.dcgan.artifacts import DCGANArtifacts

        return DCGANArtifacts(self, run_dir)

    def summary(self, arrays: ArrayRecord) -> dict[str, float]:
        """Final FID and Inception-style score of the global generator."""
        return self.measure(arrays)
