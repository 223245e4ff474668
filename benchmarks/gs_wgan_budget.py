"""How many generator steps GS-WGAN's accounting allows one client, by shard count.

Why: GS-WGAN (Chen et al., NeurIPS 2020) trains k discriminators non-privately, each on a
disjoint shard of the data, and sanitises only the gradient each fake sample passes from
the chosen discriminator to G (clipped to C, Gaussian noise sigma * C). Because one record
moves every fake sample's gradient in a batch, its accounting (the authors' code) charges
every fake sample of every G step as one Gaussian query subsampled at rate 1/k. On one
client's few hundred images the shards are tiny, so this prints, per k and sigma, how many
such queries and G steps of 32 or 64 fakes fit in epsilon 10 at delta 1e-5 (Opacus's RDP
accountant), beside a 60,000-image setting of 1,000 shards.

Usage::

    PYTHONPATH=. python benchmarks/gs_wgan_budget.py [IMAGES_PER_CLIENT]
"""

from __future__ import annotations

import sys

from tasks import dp_sgd

DELTA, TARGET = 1e-5, 10.0


def epsilon(rate: float, sigma: float, queries: int) -> float:
    """The harness's own Opacus RDP accounting of ``queries`` subsampled Gaussian queries."""
    return dp_sgd.epsilon_of([(sigma, rate, queries)], DELTA)


def most_queries(rate: float, sigma: float) -> int:
    """The largest number of queries whose epsilon stays within TARGET (bisection)."""
    low, high = 0, 1
    while epsilon(rate, sigma, high) <= TARGET:
        low, high = high, 2 * high
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if epsilon(rate, sigma, middle) <= TARGET else (low, middle)
    return low


def main(images: int) -> None:
    print(f"60,000 images in 1,000 shards (sigma 1.07, 20,000 steps of 32): "
          f"epsilon {epsilon(1 / 1000, 1.07, 20_000 * 32):.2f}")
    print("| shards k | images per shard | sigma | queries at epsilon 10 | G steps of 32 | "
          "G steps of 64 |\n|---|---|---|---|---|---|")
    for shards in (10, 20, 50, 100):
        for sigma in (1.07, 2.0):
            queries = most_queries(1 / shards, sigma)
            print(f"| {shards} | {images // shards} | {sigma} | {queries} | {queries // 32} | "
                  f"{queries // 64} |")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 800)
