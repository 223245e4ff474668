"""The DCGAN's generator steps on the server: G moves towards the aggregated D, D never
moves, no client data is read, and the strategy hands the stepped model on."""

from __future__ import annotations

import math

import pytest
import torch
from flwr.app import ArrayRecord, MetricRecord
from flwr.serverapp.strategy import FedAvg

from fl_sim.options import RunConfig
from fl_sim.run import checkpoint
from strategies.server_update import ServerUpdate
from tasks import dp_sgd
from tasks.base import Workspace
from tasks.dcgan.ema import EMA_PREFIX, GeneratorEMA, ema_state
from tasks.dcgan.models import build_pair
from tasks.dcgan.options import DCGANOptions
from tasks.dcgan.server_steps import ServerGenerator
from tasks.dcgan.task import DCGANTask
from tasks.dcgan.training import BETA1
from tasks.dcgan.weights import D_PREFIX, G_PREFIX
from tests.recording_grid import run_in_process


def fooled(generator, discriminator, classes: int = 0) -> float:
    """D's mean non-saturating G loss on 256 fixed fakes (lower: D is fooled more)."""
    noise = torch.Generator().manual_seed(99)
    z = torch.randn(256, generator.latent_dim, generator=noise)
    y = torch.randint(classes, (256,), generator=noise) if classes else None
    generator.eval()
    with torch.no_grad():
        logits = discriminator(generator(z, y), y)
    return float(torch.nn.functional.softplus(-logits).mean())


def steps(count: int, seed: int = 0) -> ServerGenerator:
    """A server stepper at the clients' Adam betas and a learning rate that moves G fast."""
    return ServerGenerator(count, batch=32, lr=2e-3, betas=(BETA1, 0.999), seed=seed)


def test_steps_fool_the_frozen_discriminator_more_and_leave_it_as_it_is():
    torch.manual_seed(0)
    generator, discriminator = build_pair(28, 1, 8, 0, num_classes=10)
    d_before = {k: v.clone() for k, v in discriminator.state_dict().items()}
    g_before = {k: v.clone() for k, v in generator.state_dict().items()}
    loss_before = fooled(generator, discriminator, 10)
    mean_loss = steps(40).run(1, generator, discriminator)
    assert math.isfinite(mean_loss)
    assert fooled(generator, discriminator, 10) < loss_before - 0.05
    for name, value in discriminator.state_dict().items():
        assert torch.equal(value, d_before[name]), name
    assert all(p.requires_grad for p in discriminator.parameters())  # unfrozen again
    assert any(not torch.equal(v, g_before[k]) for k, v in generator.state_dict().items())


def test_zero_steps_change_nothing():
    generator, discriminator = build_pair(28, 1, 8, 0)
    before = {k: v.clone() for k, v in generator.state_dict().items()}
    assert math.isnan(steps(0).run(1, generator, discriminator))
    assert all(torch.equal(v, before[k]) for k, v in generator.state_dict().items())


def snapshot(module) -> dict[str, torch.Tensor]:
    """A copy of ``module``'s state dict."""
    return {k: v.clone() for k, v in module.state_dict().items()}


def test_rounds_are_reproducible_and_a_checkpointed_adam_state_resumes_them():
    generator, discriminator = build_pair(28, 1, 8, 0)
    server = steps(5, seed=3)
    server.run(1, generator, discriminator)
    after_one, saved = snapshot(generator), server.state_dict()
    assert all(v == 5 for k, v in saved["adam"].items() if k.endswith(".step"))
    server.run(2, generator, discriminator)
    uninterrupted = snapshot(generator)

    resumed_g, resumed_d = build_pair(28, 1, 8, 0)
    resumed_g.load_state_dict(after_one)
    resumed = steps(5, seed=3)
    resumed.load_state_dict(saved)  # what a checkpoint after round 1 hands back
    resumed.run(2, resumed_g, resumed_d)
    assert all(torch.equal(v, uninterrupted[k]) for k, v in snapshot(resumed_g).items())

    fresh_g, fresh_d = build_pair(28, 1, 8, 0)
    fresh_g.load_state_dict(after_one)
    steps(5, seed=3).run(2, fresh_g, fresh_d)  # a fresh Adam steps differently
    assert any(not torch.equal(v, uninterrupted[k]) for k, v in snapshot(fresh_g).items()
               if v.is_floating_point())


def small_task(**overrides) -> DCGANTask:
    """A conditional DCGAN task on the small digits set, 2 clients, narrow networks."""
    settings = {"task": "dcgan", "clients": 2, "dataset": "digits", "batch-size": 32,
                "num-server-rounds": 2, "local-epochs": 1, "gan-width": 8,
                "conditional": True, **overrides}
    return DCGANTask(RunConfig.from_mapping(settings), Workspace())


def test_off_by_default():
    assert RunConfig.from_mapping({"task": "dcgan"}).get(DCGANOptions).gan_server_g_steps == 0
    assert small_task().updates_on_server is False


def test_task_update_moves_g_and_its_ema_reads_no_client_data(monkeypatch):
    t = small_task(**{"gan-server-g-steps": 6})
    assert t.updates_on_server
    arrays = t.initial_arrays()

    def no_private_data(*_):
        raise AssertionError("the server's G steps read a client's data")

    monkeypatch.setattr(t, "_client_data", no_private_data)
    before = arrays.to_torch_state_dict()
    after = t.server_update(1, arrays).to_torch_state_dict()
    assert after.keys() == before.keys()
    for name, value in before.items():
        if name.startswith(D_PREFIX):
            assert torch.equal(after[name], value), name
    moved = {prefix: any(not torch.equal(after[k], v) for k, v in before.items()
                         if k.startswith(prefix) and v.is_floating_point())
             for prefix in (G_PREFIX, EMA_PREFIX)}
    assert moved == {G_PREFIX: True, EMA_PREFIX: True}


def test_the_ema_continues_where_a_client_of_the_mean_size_would_be():
    t = small_task(**{"gan-server-g-steps": 3})
    arrays = t.initial_arrays()
    out = ema_state(t.server_update(2, arrays).to_torch_state_dict())
    sizes = [len(part) for part in t.parts]
    _, per_epoch = dp_sgd.poisson_plan(round(sum(sizes) / len(sizes)), 32)
    g_steps_so_far = 2 * per_epoch * 3  # two rounds of one epoch, 3 G steps per D step
    state = arrays.to_torch_state_dict()
    generator, discriminator = small_task()._load(arrays)
    ema = GeneratorEMA(ema_state(state), 0.999, first_step=g_steps_so_far, warmup=True)
    ServerGenerator(3, 32, t.lr, (BETA1, 0.999), t.seed).run(2, generator, discriminator,
                                                            ema=ema)
    assert all(torch.equal(out[k], v) for k, v in ema.state.items())
    late = GeneratorEMA(ema_state(state), 0.999, first_step=0, warmup=True)
    generator, discriminator = small_task()._load(arrays)
    ServerGenerator(3, 32, t.lr, (BETA1, 0.999), t.seed).run(2, generator, discriminator,
                                                            ema=late)
    assert any(not torch.equal(out[k], v) for k, v in late.state.items()
               if v.is_floating_point())


class Fixed(FedAvg):
    """A strategy whose aggregate is fixed, to see what the wrapper does with it."""

    def __init__(self, arrays):
        super().__init__()
        self.arrays = arrays

    def aggregate_train(self, server_round, replies):
        return self.arrays, MetricRecord({"n": 1.0})


@pytest.mark.parametrize("aggregate", [None, "model"])
def test_the_wrapper_hands_on_the_updated_aggregate(aggregate):
    model = ArrayRecord({"w": torch.zeros(2)}) if aggregate else None
    seen = []

    def update(server_round, arrays):
        seen.append(server_round)
        return ArrayRecord({"w": arrays.to_torch_state_dict()["w"] + 1})

    arrays, metrics = ServerUpdate(Fixed(model), update).aggregate_train(4, [])
    assert metrics["n"] == 1.0
    if aggregate is None:
        assert arrays is None and seen == []
    else:
        assert seen == [4]
        assert torch.equal(arrays.to_torch_state_dict()["w"], torch.ones(2))


@pytest.mark.slow
def test_the_server_app_sends_the_stepped_model_into_the_next_round(tmp_path):
    grid = run_in_process({"task": "dcgan", "dataset": "digits", "clients": 2, "dp": False,
                           "num-server-rounds": 2, "local-epochs": 1, "batch-size": 32,
                           "gan-width": 8, "gan-server-g-steps": 4, "checkpoint-every": 1},
                          tmp_path / "run")
    adam = checkpoint.load(tmp_path / "run").states["server-update"]["adam"]
    assert all(v == 8 for k, v in adam.items() if k.endswith(".step"))  # two rounds of 4
    trains = [(m, r) for m, r in zip(grid.sent, grid.replies, strict=True)
              if m.metadata.message_type.startswith("train")]
    assert len(trains) == 4  # two clients, two rounds, in order
    first = [r for _, r in trains[:2]]
    second = [m for m, _ in trains[2:]]
    weights = [float(r.content["metrics"]["num-examples"]) for r in first]
    states = [r.content["arrays"].to_torch_state_dict() for r in first]
    mean = {k: sum(w * s[k].double() for w, s in zip(weights, states, strict=True))
            / sum(weights) for k in states[0]}
    sent = second[0].content["arrays"].to_torch_state_dict()
    floats = [k for k in mean if sent[k].is_floating_point()]
    for name in floats:
        if name.startswith(D_PREFIX):  # D as aggregated
            assert torch.allclose(sent[name].double(), mean[name], atol=1e-6), name
    assert any(not torch.allclose(sent[k].double(), mean[k], atol=1e-4)
               for k in floats if k.startswith(G_PREFIX))
