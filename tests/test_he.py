"""--he: FedAvg over CKKS ciphertexts equals plain FedAvg; the server holds no secret key."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from flwr.app import RecordDict

from fl_core.flower import recorddict_bytes, recorddict_of_bytes
from fl_sim.options import OptionError, RunConfig
from strategies import he, registry
from tests.fakes import task_identity
from tests.recording_grid import run_in_process

pytest.importorskip("tenseal")


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    folder = tmp_path_factory.mktemp("keys")
    he.provision(folder, 8192)
    return folder


def _final_model(run_dir) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "model.pt", weights_only=True)


@pytest.mark.parametrize("settings", [
    {"task": "regression", "clients": 3, "num-server-rounds": 3},
    # One round: the aggregate differs from plain FedAvg's by one float32 step (1.2e-7),
    # and a second round of CNN training amplifies any such step to about 4e-3, as it
    # would a change of summation order.
    {"task": "classifier", "dataset": "digits", "clients": 2, "num-server-rounds": 1,
     "dp": False},
])
def test_the_encrypted_global_model_equals_plain_fedavg(settings, keys, tmp_path):
    runs = {}
    for mode, extra in (("plain", {}), ("he", {"he": True, "he-keys": str(keys)})):
        run_dir = tmp_path / mode
        run_dir.mkdir()
        grid = run_in_process({**settings, **extra}, run_dir, through_mods=True)
        runs[mode] = (grid, _final_model(run_dir))
    grid, encrypted = runs["he"]
    plain = runs["plain"][1]
    assert encrypted.keys() == plain.keys()
    for key in plain:
        scale = float(plain[key].abs().max()) or 1.0
        assert float((encrypted[key] - plain[key]).abs().max()) <= 1e-4 * scale, key
    # what the server received of each update: ciphertext bytes only
    trains = [r for r in grid.replies if "arrays" in r.content and "metrics" in r.content
              and any(k.startswith(he.CIPHER_PREFIX) for k in r.content["arrays"])]
    assert len(trains) == settings["clients"] * settings["num-server-rounds"]
    for r in trains:
        assert all(k.startswith(he.CIPHER_PREFIX) and r.content["arrays"][k].numpy().dtype
                   == np.uint8 for k in r.content["arrays"])
    # and it asked a key holder to decrypt exactly one sum a round
    sums = [m for m in grid.sent if he.SUM_KEY in m.content]
    assert len(sums) == settings["num-server-rounds"]


def test_the_server_side_context_holds_no_secret_key(keys):
    task_identity()
    strategy = registry.build_for_run(RunConfig.from_mapping(
        {"clients": 3, "he": True, "he-keys": str(keys)}))
    inner = strategy
    while not isinstance(inner, he.HomomorphicFedAvg):
        inner = inner.strategy
    assert not inner.context.is_private()
    assert not he.load_context(str(keys / he.PUBLIC_FILE)).is_private()
    assert he.load_context(str(keys / he.SECRET_FILE)).is_private()
    with pytest.raises(ValueError, match="secret key"):
        he.HomomorphicFedAvg(inner.strategy, (keys / he.SECRET_FILE).read_bytes(), "x")


def test_a_serialised_ciphertext_round_trips(keys):
    secret = he.load_context(str(keys / he.SECRET_FILE))
    vector = np.random.default_rng(0).normal(0, 3, 10_000)
    record = he.encrypt(vector, secret, 4096)
    assert len(record) == 3  # 10,000 values in ciphertexts of 4,096
    travelled = recorddict_of_bytes(recorddict_bytes(RecordDict({"c": record})))["c"]
    np.testing.assert_allclose(he.decrypt(travelled, secret), vector, atol=1e-6)


def test_dp_fedavg_noise_goes_on_the_encrypted_sum_with_flowers_std(keys):
    task_identity()
    overrides = {"clients": 4, "strategy": "dp-fedavg", "dp-clipping": "client",
                 "clipping-norm": 0.5, "server-noise-multiplier": 0.8}
    encrypted = registry.build(RunConfig.from_mapping(
        {**overrides, "he": True, "he-keys": str(keys)}))
    plain = registry.build(RunConfig.from_mapping(overrides))
    wrapper = encrypted.strategy
    assert isinstance(wrapper, he.EncryptedNoiseClientSideFixedClipping)
    assert wrapper.strategy.noise_std_of_mean == pytest.approx(0.8 * 0.5 / 4)
    # the same accounting as Flower's own wrapper
    assert wrapper.accountant is not None and type(wrapper.accountant) is type(
        plain.strategy.accountant)


def test_dp_fedavg_over_ciphertexts_matches_plain_and_accounts_the_same(keys, tmp_path):
    """Noise this small leaves the mean visible: both runs end at the same model."""
    import pandas as pd

    settings = {"task": "regression", "clients": 3, "num-server-rounds": 2,
                "strategy": "dp-fedavg", "dp-clipping": "client", "clipping-norm": 5.0,
                "server-noise-multiplier": 1e-4}
    models, epsilons = {}, {}
    for mode, extra in (("plain", {}), ("he", {"he": True, "he-keys": str(keys)})):
        run_dir = tmp_path / mode
        run_dir.mkdir()
        run_in_process({**settings, **extra}, run_dir, through_mods=True)
        models[mode] = _final_model(run_dir)
        epsilons[mode] = pd.read_csv(run_dir / "privacy.csv")["epsilon"].tolist()
    assert epsilons["he"] == epsilons["plain"] and len(epsilons["he"]) == 2
    for key, value in models["plain"].items():
        # noise std on the mean: 1e-4 x 5 / 3, about 2e-4 per round in each run
        assert float((models["he"][key] - value).abs().max()) < 5e-3, key


@pytest.mark.parametrize(("overrides", "words"), [
    ({"strategy": "fedadam"}, "fedavg, fedprox and dp-fedavg"),
    ({"secagg": True, "clients": 4}, "choose one"),
    ({"strategy": "dp-fedavg"}, "--dp-clipping client --dp-clip fixed"),
    ({"he-poly-degree": 4096}, "allowed: 8192, 16384"),
])
def test_what_cannot_run_over_ciphertexts_is_refused(overrides, words):
    with pytest.raises(OptionError) as error:
        RunConfig.from_mapping({"he": True, **overrides})
    assert words in str(error.value)


def test_without_provisioned_keys_the_server_says_how_to_start(tmp_path):
    with pytest.raises(ValueError, match="no CKKS keys"):
        registry.build_for_run(RunConfig.from_mapping({"he": True,
                                                       "he-keys": str(tmp_path / "x")}))



def test_a_key_holder_that_does_not_answer_is_passed_over(keys):
    """The first client asked to decrypt is gone; the next one of the round answers."""
    from types import SimpleNamespace

    from flwr.app import Array, ArrayRecord

    secret = he.load_context(str(keys / he.SECRET_FILE))
    vector = np.arange(5.0)
    summed = he.encrypt(vector, secret, 4096)
    asked = []

    class Grid:
        def send_and_receive(self, messages, *, timeout=None):
            (query,) = messages
            asked.append(query.metadata.dst_node_id)
            if query.metadata.dst_node_id == 7:
                return []  # dropped out
            plain = he.decrypt(query.content[he.SUM_KEY], secret)
            content = RecordDict({he.PLAIN_KEY: ArrayRecord({"sum": Array(plain)})})
            return [SimpleNamespace(content=content, has_error=lambda: False)]

    holders = [SimpleNamespace(metadata=SimpleNamespace(src_node_id=n)) for n in (7, 8)]
    task_identity()
    plain = he.HomomorphicFedAvg._decrypted(Grid(), holders, summed)
    assert asked == [7, 8]
    np.testing.assert_allclose(plain[:5], vector, atol=1e-6)
    with pytest.raises(RuntimeError, match="no key holder"):
        he.HomomorphicFedAvg._decrypted(Grid(), holders[:1], summed)
