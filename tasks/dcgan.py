"""Federated DCGAN with sample-level DP-SGD on the discriminator.

Privacy model. Only the discriminator D reads real images, so only D is trained with
DP-SGD (Opacus: Poisson sampling, per-sample clipping, Gaussian noise). The generator G
learns from D's answers on generated images: a function of D and of noise, i.e.
post-processing, which costs no privacy. Each D step feeds one Poisson batch of real
images *and* a batch of fakes (as many as the batch's expected real count, see
:meth:`DCGANTask.fakes_per_step`) through D together and takes one clipped, noised step;
a fake row's gradient does not depend on any real example, so adding or removing one
real image changes the summed clipped gradient by at most C and each step is one
subsampled-Gaussian step of the accountant (fakes are not charged a second step).
During the G step D's parameters are frozen and its per-sample hooks are off, so no
per-sample gradients are left behind on D.

Federation. The global model is one ArrayRecord holding both networks (keys
``generator.*`` and ``discriminator.*``), averaged by the strategy every round. Each
client's accountant history lives in its ``context.state`` (see ``tasks.dp_sgd``), so
the reported epsilon is cumulative over the run. With ``--gan-keep-optimizer`` (default)
the client's two Adam states are kept there too: D's moments are functions of its noised
gradients (post-processing), and they never leave the client.

What is *not* covered by the guarantee: the per-client training diagnostics (losses, D
accuracy on real images) are computed on private data and sent in clear, as Opacus's
own examples print them. Client-side evaluation uses generated images only.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, RecordDict
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from tasks import data as image_data
from tasks import cnn, dp_sgd, gan_metrics, public_prior
from tasks.base import EvalResult, Partition, TrainResult
from tasks.dcgan_models import Discriminator, Generator, build_pair
from tasks.devices import torch_device
from tasks.gan_ema import GeneratorEMA, ema_state, with_ema
from tasks.image_task import PrivateImageTask
from tasks.images import save_grid
from tasks.proximal import ProximalAnchor
from tasks.registry import register

BETA1 = 0.5
GRID_SIZE = 64
EVAL_FAKES = 256
G_PREFIX, D_PREFIX = "generator.", "discriminator."
GUIDE_PREFIX = "guide."  # the frozen public classifier of a coded G (tasks/public_prior.py)
OPTIMIZER_KEY = "dcgan-optimizers"
WIDTH = 32  # the default of --gan-width (benchmarks/dcgan_throughput.py uses it)
TSTR_EPOCHS = 5
TSTR_METRICS = ("tstr_accuracy", "real_data_accuracy")


def weights_path(run_dir: str | Path, server_round: int) -> Path:
    """Where the global (G, D) of ``server_round`` is kept (round 0: the initialisation).

    Every round's weights are kept (about 2.5 MB per round at the default width), so a
    synthetic release or an audit can be made from any round, not just the last.
    """
    return Path(run_dir) / "weights" / f"round_{server_round:03d}.pt"


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


def with_guide(state: Mapping[str, torch.Tensor], guide: nn.Module) -> dict[str, torch.Tensor]:
    """``state`` plus the guide's weights under :data:`GUIDE_PREFIX` (as ``with_ema`` does)."""
    joint = dict(state)
    joint.update({f"{GUIDE_PREFIX}{k}": v for k, v in guide.state_dict().items()})
    return joint


def guide_state(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The guide's weights stored in a joint state dict (empty without a class code)."""
    return {k[len(GUIDE_PREFIX):]: v for k, v in state.items() if k.startswith(GUIDE_PREFIX)}


def save_optimizers(state: RecordDict, g_opt: torch.optim.Optimizer,
                    d_opt: torch.optim.Optimizer, key: str = OPTIMIZER_KEY) -> None:
    """Keep both Adam states (moments, step counts) in the client's ``context.state``.

    Flower rebuilds simulated clients every round; a fresh Adam restarts its moment
    estimates, and its first bias-corrected steps are as large as ``lr`` in every
    coordinate: under DP noise on D that is a burst of noise-driven steps each round.
    The state never leaves the client (only the weights are sent).
    """
    arrays: dict[str, torch.Tensor] = {}
    for prefix, opt in (("g", g_opt), ("d", d_opt)):
        for index, values in opt.state_dict()["state"].items():
            for name, value in values.items():
                arrays[f"{prefix}.{index}.{name}"] = torch.as_tensor(value).detach().clone()
    if arrays:
        state[key] = ArrayRecord(arrays)


def load_optimizers(state: RecordDict, g_opt: torch.optim.Optimizer,
                    d_opt: torch.optim.Optimizer, key: str = OPTIMIZER_KEY) -> bool:
    """Restore what :func:`save_optimizers` stored; False when nothing was stored."""
    if key not in state:
        return False
    saved = state[key].to_torch_state_dict()
    for prefix, opt in (("g", g_opt), ("d", d_opt)):
        per_param: dict[int, dict[str, torch.Tensor]] = {}
        for name, value in saved.items():
            owner, index, field = name.split(".", 2)
            if owner == prefix:
                per_param.setdefault(int(index), {})[field] = value
        current = opt.state_dict()
        current["state"] = per_param
        opt.load_state_dict(current)
    return True


def balanced_fakes(num_examples: int, batch_size: int, dp: bool) -> int:
    """Fakes in each D step: as many as the real images a step sees on average.

    Under DP every example's gradient is clipped to the same norm C, so each row of
    the D step is one equal vote, and the component all votes share (move every
    logit up or down) grows with the difference of the counts. Opacus's Poisson
    batches hold ``N q`` real images on average (61.5 for 800 images at batch 64),
    so the batch-size-many fakes used before outvoted them by 2.5 every step: a
    steady drift to "everything is fake" that the noised discriminative signal could
    not undo (48 fakes drifted to "everything is real"). ``N q`` depends only on the
    client's data-set size and batch size, which the privacy plan already treats as
    public. Without DP the batches are exactly ``batch_size`` real images.
    """
    if not dp:
        return batch_size
    rate, _ = dp_sgd.poisson_plan(num_examples, batch_size)
    return max(1, round(num_examples * rate))


def gan_round(
    generator: Generator, discriminator: nn.Module, loader: DataLoader,
    g_opt: torch.optim.Optimizer, d_opt: torch.optim.Optimizer, epochs: int, fakes: int,
    real_label: float = 1.0, after_step: Callable[[], None] | None = None,
    d_steps: int = 1, ema: GeneratorEMA | None = None, g_steps: int = 1,
    guide: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> dict[str, float]:
    """Local GAN training; ``discriminator`` may be an Opacus-wrapped module.

    Each D step: one batch of [real; ``fakes`` detached fakes] through D (one clipped
    step under DP). After every ``d_steps`` D steps, one G step through a frozen D with
    the non-saturating loss, reusing the last fakes; ``ema`` (if any) then folds G into
    its average. More D steps per G step let a noisy private D keep up with G; they cost
    no extra privacy per epoch (privacy is spent per D step, i.e. per Poisson batch).
    ``real_label`` < 1 is one-sided label smoothing. ``after_step`` runs after each D
    step (FedProx's proximal pull). ``g_steps`` > 1 takes that many G steps each time
    (the first on the last fakes, the others on fresh ones): G's steps are
    post-processing of the private D, so they add progress without spending privacy.
    A generator with classes (``num_classes > 0``) draws uniform labels for its fakes; a
    conditional D also takes the loader's labels with the real images (a coded G's D is
    unconditional, and the loader then holds images only). ``guide(fakes, labels)``, if
    given, is added to each G loss: the public classifier's pull towards the coded class
    (:func:`tasks.public_prior.guide_loss`), post-processing like the rest of G's step.

    Returns
    -------
    dict
        Mean d_loss, d_fake_accuracy over D steps, g_loss over G steps, d_real_accuracy
        over real images; ``images`` (real images seen), ``steps`` (D) and ``g_steps``.
    """
    generator.train()
    discriminator.train()
    classes = generator.num_classes
    device = next(generator.parameters()).device  # the loader's batches are moved there
    sums = {"d_loss": 0.0, "g_loss": 0.0, "d_real_accuracy": 0.0, "d_fake_accuracy": 0.0}
    real_seen = steps = g_taken = 0
    ones = torch.ones(fakes, device=device)

    def draw() -> tuple[torch.Tensor, torch.Tensor | None]:
        """``fakes`` generated images and their (uniform) labels, None if unconditional."""
        y = torch.randint(classes, (fakes,), device=device) if classes else None
        return generator(torch.randn(fakes, generator.latent_dim, device=device), y), y

    for _ in range(epochs):
        for batch in loader:
            real = batch[0].to(device)
            b = len(real)
            fake, y_fake = draw()
            y_both = torch.cat([batch[1].to(device).long(), y_fake]) if len(batch) > 1 else None
            d_opt.zero_grad(set_to_none=True)
            logits = discriminator(torch.cat([real, fake.detach()]), y_both)
            targets = torch.cat([torch.full((b,), real_label, device=device),
                                 torch.zeros(fakes, device=device)])
            d_loss = F.binary_cross_entropy_with_logits(logits, targets)
            d_loss.backward()
            d_opt.step()
            steps += 1
            for repeat in range(g_steps if steps % d_steps == 0 else 0):
                if repeat:
                    fake, y_fake = draw()
                with dp_sgd.frozen(discriminator):
                    g_opt.zero_grad(set_to_none=True)
                    g_loss = F.binary_cross_entropy_with_logits(
                        discriminator(fake, y_fake), ones)
                    (g_loss + guide(fake, y_fake) if guide is not None else g_loss).backward()
                g_opt.step()
                if ema is not None:
                    ema.update(generator)
                sums["g_loss"] += float(g_loss.detach())
                g_taken += 1
            if after_step is not None:
                after_step()
            with torch.no_grad():
                if b:
                    sums["d_real_accuracy"] += float((logits[:b] > 0).float().sum())
                sums["d_fake_accuracy"] += float((logits[b:] < 0).float().mean())
            sums["d_loss"] += float(d_loss.detach())
            real_seen += b
    result = {k: sums[k] / max(steps, 1) for k in ("d_loss", "d_fake_accuracy")}
    result["g_loss"] = sums["g_loss"] / max(g_taken, 1)
    result["d_real_accuracy"] = sums["d_real_accuracy"] / max(real_seen, 1)
    result["images"] = float(real_seen)
    result["steps"] = float(steps)
    result["g_steps"] = float(g_taken)
    return result


@register("dcgan")
class DCGANTask(PrivateImageTask):
    """DP-DCGAN across clients; see the module docstring for the privacy argument."""

    defaults: Mapping[str, float | int] = {
        "num-server-rounds": 10, "local-epochs": 2, "batch-size": 64, "lr": 3e-4,
    }
    client_metrics = ("g_loss", "d_loss", "d_real_accuracy", "d_fake_accuracy")
    server_metrics = ("fid", "inception_score", "reference_accuracy")

    def __init__(self, config: Mapping[str, Any]) -> None:
        super().__init__(config)
        self.d_lr = float(config["gan-d-lr"]) or self.lr
        self.d_beta1 = float(config["gan-d-beta1"])
        self.keep_optimizer = bool(config["gan-keep-optimizer"])
        self.real_label = float(config["gan-real-label"])
        self.width = int(config["gan-width"])
        self.run_dir = Path(config["run-dir"]) if config.get("run-dir") else None
        self.conditional = bool(config["conditional"])
        self.d_steps = int(config["gan-d-steps"])
        self.g_steps = int(config["gan-g-steps"])
        self.ema_decay = float(config["gan-ema"])
        self.prior = public_prior.resolve(str(config["gan-public-prior"]), self.dataset)
        self.coded = (bool(config["gan-class-code"]) and self.prior == "digits"
                      and not self.conditional)
        self.device_choice = str(config["device"])
        if self.conditional:
            self.server_metrics = (*type(self).server_metrics, *TSTR_METRICS)
        if self.coded:
            self.server_metrics = (*type(self).server_metrics, "code_agreement")

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
        """Values derived from the flags, for config.json (the noise a target implies)."""
        if not self.dp:
            return {"dp": False}
        settings = self.dp_settings
        sigma = settings.noise_multiplier
        planned = [dp_sgd.epsilon_of([(sigma, rate, steps)], settings.delta,
                                     settings.accountant)
                   for rate, steps in self._plans()]
        return {
            "noise-multiplier": sigma,
            "sample-rates": [rate for rate, _ in self._plans()],
            "planned-steps": [steps for _, steps in self._plans()],
            "planned-epsilon": planned,
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
        """What G reads beside z for ``count`` images: the labels, or balanced class codes.

        A coded G's codes are not released as labels: they name the public class G was
        pulled towards, which no private label has confirmed.
        """
        if self.coded:
            return torch.arange(count) % self.code_classes
        return self._labels(count)

    def _guide(self, state: Mapping[str, torch.Tensor]) -> nn.Module | None:
        """The frozen public classifier carried in the global model (coded G only)."""
        if not self.coded:
            return None
        guide = cnn.SmallCNN(self.images.channels, self.code_classes)
        guide.load_state_dict(guide_state(state))
        return public_prior.frozen_guide(guide)

    def initial_arrays(self) -> ArrayRecord:
        """Seeded DCGAN initialisation; D is checked by Opacus's ModuleValidator here.

        With a public prior, the pretraining on public data happens here, once, on the
        server (see tasks/public_prior.py); what it found is kept in ``public_prior.json``.
        """
        generator, discriminator = build_pair(self.image_size, self.images.channels,
                                              self.width, self.seed, self.num_classes,
                                              self.code_classes)
        if self.dp:  # checked before the public pretraining's seconds are spent
            dp_sgd.require_dp_compatible(discriminator)
            if self.config["grad-sample-mode"] == "ew":
                # Expanded weights accumulate wrongly when D is called twice per step
                # (D step, then the G step through D); fail once, on the server.
                raise ValueError("--grad-sample-mode ew cannot train the DCGAN discriminator "
                                 "(it is called twice per step); use hooks or functorch")
        kept = self._resumed_start()
        if kept is not None:
            return kept
        guide = None
        if self.prior != "none":
            public_prior.resolve(self.prior, self.dataset, self.images.channels)
            started = time.monotonic()
            self._say("public prior: training G and D on public font digits before round 1")
            device = torch_device(self.device_choice)
            guide = (public_prior.guide_classifier(self.image_size, self.seed)
                     if self.coded else None)
            record = {"prior": self.prior, "device": device.type, "class_code": self.coded,
                      **public_prior.pretrain(generator, discriminator, self.image_size,
                                              self.seed, device, guide)}
            record["seconds"] = round(time.monotonic() - started, 1)
            self._say(f"public prior: done in {record['seconds']:.0f} s")
            if self.run_dir is not None:
                self.run_dir.mkdir(parents=True, exist_ok=True)
                (self.run_dir / "public_prior.json").write_text(
                    json.dumps(record, indent=2) + "\n")
        joint = joint_state(generator, discriminator)
        if self.ema_decay:
            joint = with_ema(joint, generator.state_dict())
        if guide is not None:
            joint = with_guide(joint, guide)
        return ArrayRecord(joint)

    def _say(self, line: str) -> None:
        """One progress line on the server's console (minutes pass before round 1)."""
        if not self.config.get("quiet"):
            print(line, flush=True)

    def _resumed_start(self) -> ArrayRecord | None:
        """A resumed run's round-0 weights, so that its public prior is not trained again.

        The checkpoint restores the global model anyway; the server only needs round 0's
        arrays to start from, and the prior costs minutes, not the milliseconds of a
        seeded initialisation.
        """
        if not self.config.get("resume") or self.run_dir is None:
            return None
        path = weights_path(self.run_dir, 0)
        return ArrayRecord(torch.load(path)) if path.exists() else None

    # --- client ----------------------------------------------------------------------
    def train(
        self, arrays: ArrayRecord, partition: Partition, state: RecordDict, server_round: int,
        proximal_mu: float = 0.0,
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
            _, per_epoch = dp_sgd.poisson_plan(len(x), self.batch_size)
            g_per_round = self.local_epochs * per_epoch // self.d_steps * self.g_steps
            start = {k: v.to(device) for k, v in ema_state(received).items()}
            ema = GeneratorEMA(start, self.ema_decay, first_step=(server_round - 1) * g_per_round,
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

        guide = self._guide(received)
        stats = gan_round(generator, d_module, loader, g_opt, d_opt, self.local_epochs,
                          self.fakes_per_step(len(x)), self.real_label,
                          pull if proximal_mu else None, self.d_steps, ema, self.g_steps,
                          None if guide is None else public_prior.guide_loss(guide.to(device)))
        if self.keep_optimizer:
            save_optimizers(state, g_opt, d_opt)
        metrics = {k: stats[k] for k in self.client_metrics}
        metrics["loss"] = stats["d_loss"]
        if trainer is not None:
            metrics["epsilon"] = trainer.save()
        joint = joint_state(generator, discriminator)
        if ema is not None:
            joint = with_ema(joint, ema.state)
        if guide is not None:  # sent back unchanged, so the average keeps it
            joint = with_guide(joint, guide)
        return TrainResult(ArrayRecord(joint), len(x), metrics)

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
        return EvalResult(EVAL_FAKES, {"loss": float(g_loss), "g_loss": float(g_loss),
                                       "d_fake_accuracy": float((logits < 0).float().mean())})

    # --- server ----------------------------------------------------------------------
    @cached_property
    def _reference(self) -> gan_metrics.Reference:
        return gan_metrics.cached_reference(self.run_dir, self.images.test_x,
                                            self.images.test_y, self.images.num_classes,
                                            self.seed)

    @cached_property
    def _real_stats(self) -> tuple[np.ndarray, np.ndarray]:
        features, _ = self._reference.embed(self.images.test_x)
        return gan_metrics.statistics(features)

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
        """FID / Inception-style score of the global G; sample grid and weights saved."""
        if server_round == 0:
            self._write_partitions()
        fakes = self.generate(arrays, len(self.images.test_x), self.seed + 1)
        features, probs = self._reference.embed(fakes)
        fid = gan_metrics.frechet_distance(*gan_metrics.statistics(features), *self._real_stats)
        if self.run_dir is not None and server_round >= 0:
            classes = self.num_classes or self.code_classes
            per_row = classes or None  # conditional or coded: one column per class
            count = 8 * classes if classes else GRID_SIZE
            save_grid(self.generate(arrays, count, self.seed),
                      self.run_dir / "samples" / f"round_{server_round:03d}.png", per_row)
            joint = arrays.to_torch_state_dict()
            g_state, d_state = split_state(joint)
            for path, state in ((self.run_dir / "generator.pt", g_state),
                                (self.run_dir / "discriminator.pt", d_state),
                                (weights_path(self.run_dir, server_round), joint)):
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_name(path.name + ".tmp")
                torch.save(state, tmp)
                tmp.replace(path)
        metrics = {"fid": fid, "inception_score": gan_metrics.inception_score(probs),
                   "reference_accuracy": self._reference.accuracy}
        if self.coded:
            # How often a classifier of *real* digits reads a coded fake as its code: the
            # share of samples recognisable as the digit G was asked for.
            codes = self._codes(len(fakes)).numpy()
            metrics["code_agreement"] = float((probs.argmax(1) == codes).mean())
        if self.conditional:
            metrics.update(self._tstr(arrays))
        return metrics

    @cached_property
    def _real_data_accuracy(self) -> float:
        """The non-private ceiling: the TSTR classifier trained on the real training data."""
        model = cnn.fit(self.images.train_x, self.images.train_y, self.images.num_classes,
                        epochs=TSTR_EPOCHS, seed=self.seed)
        return cnn.score(model, self.images.test_x, self.images.test_y)["accuracy"]

    def _tstr(self, arrays: ArrayRecord) -> dict[str, float]:
        """Train on synthetic, test on real: the release's usefulness for classification.

        A fresh small CNN learns only from as many generated labelled images as there
        are real training images, with the same recipe as the ceiling, and is scored on
        the server's real held-out split.
        """
        count = len(self.images.train_y)
        x = self.generate(arrays, count, self.seed + 2)
        y = self._labels(count).numpy()
        model = cnn.fit(x, y, self.images.num_classes, epochs=TSTR_EPOCHS, seed=self.seed)
        accuracy = cnn.score(model, self.images.test_x, self.images.test_y)["accuracy"]
        return {"tstr_accuracy": accuracy, "real_data_accuracy": self._real_data_accuracy}

    # --- release and audit (fl_sim sample / fl_sim audit) ------------------------------
    def synthesize(self, arrays: ArrayRecord, count: int,
                   seed: int) -> tuple[np.ndarray, np.ndarray | None]:
        """``count`` released images, float32 ``N x C x H x W`` in [0, 1], and their labels.

        Labels (int64, balanced over the classes) exist only for a ``--conditional`` model;
        otherwise the second item is None. Deterministic for a given ``seed``.
        """
        images = self.generate(arrays, count, seed)
        labels = self._labels(count)
        return (((images + 1.0) / 2.0).clip(0.0, 1.0).astype(np.float32),
                None if labels is None else labels.numpy().astype(np.int64))

    def discriminator_logits(self, arrays: ArrayRecord, images: np.ndarray,
                             labels: np.ndarray | None = None,
                             batch_size: int = 512) -> np.ndarray:
        """The global D's logit for each image (model range [-1, 1]); high means "real".

        ``labels`` are required for a ``--conditional`` model and ignored otherwise.
        """
        _, discriminator = self._load(arrays)
        discriminator.eval()
        if self.conditional and labels is None:
            raise ValueError("a conditional discriminator needs the images' labels")
        out = []
        with torch.no_grad():
            for start in range(0, len(images), batch_size):
                batch = torch.as_tensor(images[start:start + batch_size])
                y = (torch.as_tensor(labels[start:start + batch_size])
                     if self.conditional else None)
                out.append(discriminator(batch, y).numpy())
        return np.concatenate(out) if out else np.zeros(0, dtype=np.float32)

    def member_data(self, client: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Training (member) images in model range and labels: one client's, or all clients'."""
        chosen = range(self.clients) if client is None else [client]
        parts = [self._client_data(Partition(i, self.clients)) for i in chosen]
        return (np.concatenate([x for x, _ in parts]), np.concatenate([y for _, y in parts]))

    def holdout_data(self) -> tuple[np.ndarray, np.ndarray]:
        """The server's held-out real split (never trained on by G or D): non-members."""
        return self.images.test_x, self.images.test_y

    def _write_partitions(self) -> None:
        if self.run_dir is None:
            return
        counts = image_data.class_counts(self.images.train_y, self.parts,
                                         self.images.num_classes)
        record = {"method": self.partition, "dirichlet_alpha": self.alpha,
                  "sizes": [len(p) for p in self.parts], "class_counts": counts,
                  "held_out_test": len(self.images.test_y)}
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "partitions.json").write_text(json.dumps(record, indent=2) + "\n")

    def summary(self, arrays: ArrayRecord) -> dict[str, float]:
        """Final FID and Inception-style score of the global generator."""
        return self.central_evaluate(-1, arrays)
