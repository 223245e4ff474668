"""Strategy selection, per-round sampling, FedProx's term, the DP client mod, bad input."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from flwr.app import ConfigRecord, MetricRecord, RecordDict
from flwr.serverapp.strategy import FedAdam, FedAvg, FedProx

from fl_sim.app.client_mods import privacy_mod
from fl_sim.options import OptionError, RunConfig
from strategies import registry
from strategies.fedavg import fedavg_kwargs
from strategies.sampling import train_sample_size
from tasks.proximal import ProximalAnchor
from tests.conftest import run_cli
from tests.fakes import FakeGrid, arrays, task_identity


def settings(**overrides):
    return RunConfig.from_mapping(overrides)


@pytest.mark.parametrize(
    "clients, per_round", [(20, 5), (100, 29), (100, 57), (7, 3), (10, 10), (3, 1)]
)
def test_clients_per_round_samples_exactly_that_many(clients, per_round):
    # 0.29 * 100 = 28.999...: the fraction alone would sample 28.
    task_identity()
    config = settings(clients=clients, **{"clients-per-round": per_round})
    assert train_sample_size(config) == per_round
    strategy = FedAvg(**fedavg_kwargs(config))
    sampled = list(strategy.configure_train(1, arrays(np.zeros(1)), ConfigRecord(),
                                            FakeGrid(clients)))
    assert len(sampled) == per_round
    assert len({m.metadata.dst_node_id for m in sampled}) == per_round


def test_without_clients_per_round_the_fraction_decides():
    config = settings(clients=10, **{"fraction-train": 0.35})
    assert train_sample_size(config) == 3


@pytest.mark.parametrize("name, kind", [("fedavg", FedAvg), ("fedprox", FedProx),
                                        ("fedadam", FedAdam)])
def test_registry_builds_flower_strategies_with_flag_values(name, kind):
    config = settings(strategy=name, **{"proximal-mu": 0.3, "server-lr": 0.02,
                                        "adam-beta1": 0.8, "adam-tau": 1e-4})
    strategy = registry.build(config)
    assert type(strategy) is kind
    if name == "fedprox":
        assert strategy.proximal_mu == 0.3
    if name == "fedadam":
        assert (strategy.eta, strategy.beta_1, strategy.beta_2, strategy.tau) == (
            0.02, 0.8, 0.99, 1e-4)


def test_fedprox_sends_mu_in_the_train_config():
    task_identity()
    strategy = registry.build(settings(strategy="fedprox", **{"proximal-mu": 0.25}))
    (message, *_) = strategy.configure_train(1, arrays(np.zeros(1)), ConfigRecord(),
                                             FakeGrid(5))
    assert message.content["config"]["proximal-mu"] == 0.25


def test_proximal_term_is_half_mu_squared_distance():
    model = torch.nn.Linear(2, 1)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 2.0]]))
        model.bias.fill_(0.5)
    anchor = ProximalAnchor(model, mu=0.4)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[2.0, 0.0]]))  # moved by (1, -2)
        model.bias.fill_(1.5)  # moved by 1
    assert anchor.term(model).item() == pytest.approx(0.5 * 0.4 * (1 + 4 + 1))
    assert ProximalAnchor(model, 0.0).term(model).item() == 0.0


def test_regression_fedprox_stays_closer_to_the_global_model():
    from tasks.base import Partition
    from tasks.regression import RegressionTask

    task = RegressionTask(settings())
    start = task.initial_arrays()

    def distance(mu: float) -> float:
        result = task.train(start, Partition(0, 5), RecordDict(), 1, proximal_mu=mu)
        return sum(float(np.sum((a - b) ** 2)) for a, b in
                   zip(result.arrays.to_numpy_ndarrays(), start.to_numpy_ndarrays()))

    assert distance(5.0) < 0.5 * distance(0.0)


def _call(strategy: str, message_type: str, clipping: str = "server"):
    """Run privacy_mod around a stand-in ClientApp; return the reply's metrics."""
    reply = SimpleNamespace(
        has_error=lambda: False,
        content=SimpleNamespace(metric_records={"metrics": MetricRecord({"loss": 1.0})}),
    )
    msg = SimpleNamespace(metadata=SimpleNamespace(message_type=message_type))
    context = SimpleNamespace(run_config={"strategy": strategy, "dp-clipping": clipping,
                                          "dp-clip": "fixed"})
    out = privacy_mod(msg, context, lambda m, c: reply)
    return out.content.metric_records["metrics"] if hasattr(out, "content") else out


def test_privacy_mod_adds_uniform_weight_only_under_dp_fedavg():
    assert dict(_call("dp-fedavg", "train")) == {"loss": 1.0, "dp-weight": 1.0}
    assert dict(_call("dp-fedavg", "evaluate")) == {"loss": 1.0, "dp-weight": 1.0}
    assert dict(_call("fedavg", "train")) == {"loss": 1.0}


@pytest.mark.parametrize(
    "overrides, key, words",
    [
        ({"clients": 3, "clients-per-round": 4}, "clients-per-round", "<= --clients (3)"),
        ({"strategy": "dp-fedavg", "dp-clip": "adaptive", "server-noise-multiplier": 0.0},
         "server-noise-multiplier", "needs a noise multiplier > 0"),
        ({"strategy": "dp-fedavg", "dp-clip": "adaptive", "clients": 5,
          "server-noise-multiplier": 1.0}, "server-noise-multiplier", "clipped-count"),
        ({"max-epsilon": 3.0}, "max-epsilon", "needs --strategy dp-fedavg"),
        ({"strategy": "dp-fedavg", "server-noise-multiplier": 0.0, "max-epsilon": 3.0},
         "max-epsilon", "server-noise-multiplier > 0"),
        ({"delta": 0.0}, "delta", "(0, 1)"),
        ({"dp-clipping": "both"}, "dp-clipping", "allowed: server, client"),
        ({"dp-clip": "auto"}, "dp-clip", "allowed: fixed, adaptive"),
        ({"clipping-norm": 0.0}, "clipping-norm", "> 0"),
        ({"target-quantile": 1.5}, "target-quantile", "[0, 1]"),
        ({"secagg": True, "clients": 5, "secagg-shares": 4, "secagg-threshold": 5},
         "secagg-threshold", "below --secagg-shares 4"),
        ({"secagg": True, "clients": 5, "secagg-shares": 6}, "secagg-shares", "3..5"),
        ({"secagg": True, "clients": 2}, "clients-per-round", "at least 3 clients"),
        ({"secagg": True, "strategy": "dp-fedavg"}, "secagg", "--dp-clipping client"),
    ],
)
def test_invalid_combinations_name_the_flag(overrides, key, words):
    with pytest.raises(OptionError) as error:
        RunConfig.from_mapping(overrides)
    assert error.value.key == key
    assert str(error.value).startswith(error.value.flag) and words in str(error.value)


@pytest.mark.parametrize("args, flag", [
    (["--clients", "20", "--clients-per-round", "21"], "--clients-per-round"),
    (["--strategy", "dp-fedavg", "--dp-clip", "adaptive", "--server-noise-multiplier", "0"],
     "--server-noise-multiplier"),
    (["--secagg", "--clients", "5", "--secagg-shares", "3", "--secagg-threshold", "4"],
     "--secagg-threshold"),
])
def test_cli_exits_2_with_one_line_before_ray(args, flag, tmp_path):
    done = run_cli("run", "--out", str(tmp_path), *args, timeout=120)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"fl_sim: error: {flag}:")
    assert not any(tmp_path.iterdir())  # nothing written, Ray never started


def test_privacy_mod_clips_train_updates_with_flowers_mod_under_client_clipping():
    from flwr.app import Message

    task_identity()
    config = settings(strategy="dp-fedavg", clients=4, **{
        "dp-clipping": "client", "clipping-norm": 1.0})
    strategy = registry.build(config)
    current = arrays(np.zeros(2))
    (message, *_) = strategy.configure_train(1, current, ConfigRecord(), FakeGrid(4))
    assert message.content["config"]["clipping_norm"] == 1.0  # set by Flower's wrapper

    def client(msg, context):  # an update of norm 5
        content = RecordDict({"arrays": arrays(np.array([3.0, 4.0])),
                              "metrics": MetricRecord({"num-examples": 8})})
        return Message(content, reply_to=msg)

    out = privacy_mod(message, SimpleNamespace(run_config=config.to_run_config()), client)
    assert not out.has_error()
    np.testing.assert_allclose(out.content["arrays"].to_numpy_ndarrays()[0], [0.6, 0.8],
                               rtol=1e-6)
    assert out.content["metrics"]["dp-weight"] == 1.0


def test_aggregated_metrics_leave_out_what_describes_one_client():
    from flwr.app import MetricRecord, RecordDict

    from strategies.fedavg import aggregate_model_metrics

    replies = [RecordDict({"metrics": MetricRecord({"loss": loss, "num-examples": n,
                                                   "partition-id": pid, "seconds": 1.0})})
               for loss, n, pid in ((1.0, 10, 0), (3.0, 30, 1))]
    aggregated = aggregate_model_metrics(replies, "num-examples")
    assert aggregated["loss"] == pytest.approx(2.5)
    assert "partition-id" not in aggregated and "seconds" not in aggregated
