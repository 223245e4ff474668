"""Images/s of one client's local DCGAN training, without DP and with DP per grad-sample mode.

Measures exactly the task's local loop (``tasks.dcgan.task.gan_round``: one D step on a real
Poisson batch plus the task's count of fakes, then ``--g-steps`` G steps through a frozen D,
3 by default as in a run) on the default data
(mnist5k, 28x28, 800 images = one of five IID clients), after one warm-up epoch.
Every configuration is measured in this one process, back to back, so the ratios are
comparable; absolute figures depend on the machine's load.

``--device cuda`` runs the same loop on a GPU (the loader's batches are moved there, as
``gan_round`` does in a run); ``--batch-sizes 64,256,1024`` measures several batch sizes,
and ``--images`` must then be at least the largest (Poisson sampling needs q <= 1).

Usage::

    PYTHONPATH=. python benchmarks/dcgan_throughput.py [--epochs 2] [--threads 1] \
        [--public-prior] [--g-steps 3] [--device cuda] [--batch-sizes 64,256,1024] \
        [--images 4000]
"""

from __future__ import annotations

import argparse
import platform
import time

import torch
from flwr.app import RecordDict
from torch.utils.data import DataLoader, TensorDataset

from fl_sim.options import defaults
from tasks import dp_sgd
from tasks.dcgan import public_prior
from tasks.dcgan.models import build_pair
from tasks.dcgan.training import BETA1, GANSteps, balanced_fakes, gan_round
from tasks.image.cnn import SmallCNN
from tasks.image.data import load_images

WIDTH = 32
"""The default of ``--gan-width`` (tasks/dcgan/options.py)."""

MODES = ("none", *dp_sgd.GRAD_SAMPLE_MODES)


def measure(mode: str, images: torch.Tensor, batch: int, epochs: int, size: int,
            prior: bool = False, g_steps: int = 1, device: str = "cpu") -> float:
    """Real images per second of local training in ``mode`` ("none" = no DP).

    ``prior``: as under ``--gan-public-prior digits`` (the default for MNIST data): D's
    public feature layers frozen, G with the class code, and the guide classifier's loss
    in every G step (only the shapes matter for speed, not pretrained values). Each D step
    takes as many fakes as the task's (:func:`tasks.dcgan.task.balanced_fakes`) and is
    followed by ``g_steps`` G steps. On a GPU the clock is read after a synchronise,
    so queued kernels are counted.
    """
    code = public_prior.CODE_CLASSES if prior else 0
    generator, discriminator = (net.to(device) for net in build_pair(
        size, images.shape[1], WIDTH, 0, code_classes=code))
    guide = None
    if prior:
        public_prior.freeze(discriminator)
        guide = public_prior.guide_loss(public_prior.frozen_guide(
            SmallCNN(images.shape[1], code).to(device)))
    loader = DataLoader(TensorDataset(images), batch_size=batch, shuffle=True)
    g_opt = torch.optim.Adam(generator.parameters(), 2e-4, betas=(BETA1, 0.999))
    d_opt = torch.optim.Adam(discriminator.parameters(), 2e-4, betas=(BETA1, 0.999))
    module = discriminator
    if mode != "none":
        settings = dp_sgd.DPSettings(1.0, 1.0, grad_sample_mode=mode)
        module, d_opt, loader = dp_sgd.PrivateTrainer(settings, RecordDict()).make_private(
            discriminator, d_opt, loader)
    fakes = balanced_fakes(len(images), batch, mode != "none")
    gan_round(generator, module, loader, g_opt, d_opt,
              GANSteps(epochs=1, fakes=fakes, g_steps=g_steps), guide=guide)  # warm-up
    _synchronise(device)
    started = time.perf_counter()
    stats = gan_round(generator, module, loader, g_opt, d_opt,
                      GANSteps(epochs=epochs, fakes=fakes, g_steps=g_steps), guide=guide)
    _synchronise(device)
    return stats["images"] / (time.perf_counter() - started)


def _synchronise(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-sizes", default="64",
                        help="comma-separated batch sizes, each measured for every mode")
    parser.add_argument("--images", type=int, default=800,
                        help="training images (800 = one of five IID clients)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1 = what one Ray client gets with --client-cpus 1)")
    parser.add_argument("--image-size", type=int, default=28)
    parser.add_argument("--public-prior", action="store_true",
                        help="freeze D's public feature layers and give G the class code "
                             "and its guide (the default for MNIST data)")
    parser.add_argument("--g-steps", type=int, default=int(defaults()["gan-g-steps"]),
                        help="G steps per D step (default: the run default, --gan-g-steps)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    data = load_images("mnist5k", "", args.image_size, 42)
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    if len(data.train_x) < max(args.images, *batch_sizes):
        parser.error(f"--images and --batch-sizes must be at most {len(data.train_x)}")
    if max(batch_sizes) > args.images:
        parser.error("--images must be at least the largest of --batch-sizes")
    images = torch.from_numpy(data.train_x[:args.images])
    where = (torch.cuda.get_device_name() if args.device.startswith("cuda")
             else platform.processor() or platform.machine())
    print(f"# {where}, torch {torch.__version__}, {args.threads} thread(s), "
          f"{args.images} images, {args.image_size}x{args.image_size}"
          f"{', public prior (frozen D features, coded G, guide)' if args.public_prior else ''}, "
          f"{args.g_steps} G step(s) per D step")
    print("| batch | mode | images/s | DP / no-DP |")
    print("|---|---|---|---|")
    for batch in batch_sizes:
        baseline = None
        for mode in MODES:
            try:
                rate = measure(mode, images, batch, args.epochs, args.image_size,
                               args.public_prior, args.g_steps, args.device)
            except Exception as error:  # a mode Opacus cannot run for these layers
                reason = f"{type(error).__name__}: {str(error).splitlines()[0][:90]}"
                print(f"| {batch} | DP, {mode} | fails: {reason} | |", flush=True)
                continue
            baseline = rate if mode == "none" else baseline
            ratio = f"{rate / baseline:.2f}" if baseline and mode != "none" else ""
            label = "no DP" if mode == "none" else f"DP, {mode}"
            print(f"| {batch} | {label} | {rate:.0f} | {ratio} |", flush=True)


if __name__ == "__main__":
    main()
