"""The DCGAN's public prior and FID reference from the cache: the same bits as a fit, or a fit."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from fl_core import cache as cache_module
from fl_core.cache import Cache
from fl_sim.options import OptionError, RunConfig
from fl_sim.report.compare import IGNORED_SETTINGS
from fl_sim.run.lifecycle import RESUME_MAY_CHANGE
from fl_sim.run.sweep import NOT_SWEPT
from tasks.base import Workspace
from tasks.dcgan import metrics, prior_cache, public_prior
from tasks.dcgan.task import DCGANTask
from tests.recording_grid import run_in_process

SMALL = {"task": "dcgan", "clients": 2, "batch-size": 64, "num-server-rounds": 1,
         "local-epochs": 1, "gan-width": 8}


@pytest.fixture
def fits(monkeypatch) -> list[int]:
    """Counts the public prior's fits."""
    counted = []
    real = public_prior.pretrain

    def counting(*args, **kwargs):
        counted.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(public_prior, "pretrain", counting)
    return counted


def start(cache: Cache | None, **overrides) -> tuple[dict, dict | None, DCGANTask]:
    """Round 0's weights and guide of a fresh task (fitted, or from ``cache``)."""
    task = DCGANTask(RunConfig.from_mapping({**SMALL, **overrides}), Workspace(cache=cache))
    arrays = task.initial_arrays().to_torch_state_dict()
    guide = task.frozen_arrays()
    return arrays, (guide.to_torch_state_dict() if guide is not None else None), task


def identical(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_cached_prior_gives_the_bits_of_a_fresh_fit(tmp_path, quick, fits):
    cache = Cache(tmp_path / "cache")
    fresh, fresh_guide, _ = start(None)
    after_fit = torch.get_rng_state()
    first, first_guide, first_task = start(cache)
    second, second_guide, second_task = start(cache)
    assert len(fits) == 2  # the fit without a cache and the one that filled it
    assert identical(fresh, first) and identical(fresh, second)
    assert identical(fresh_guide, first_guide) and identical(fresh_guide, second_guide)
    assert torch.equal(torch.get_rng_state(), after_fit)  # a hit leaves torch's state as a fit
    assert first_task.prior_record["from_cache"] is False
    record = second_task.prior_record
    assert record["from_cache"] is True
    assert record["fit_seconds"] == first_task.prior_record["seconds"]
    assert record["public_feature_accuracy"] == first_task.prior_record["public_feature_accuracy"]


@pytest.mark.parametrize("change", [
    {"seed": 1}, {"gan-width": 16}, {"gan-class-code": False}, "recipe", "code",
])
def test_changing_any_input_fits_again(tmp_path, quick, fits, monkeypatch, change):
    cache = Cache(tmp_path / "cache")
    kept, _, _ = start(cache)
    overrides = change if isinstance(change, dict) else {}
    if change == "recipe":
        monkeypatch.setattr(public_prior, "GAN_EPOCHS", 2)
    if change == "code":
        real = cache_module.source_hash
        monkeypatch.setattr(cache_module, "source_hash",
                            lambda modules: "edited " + real(modules))
    again, _, task = start(cache, **overrides)
    assert len(fits) == 2 and task.prior_record["from_cache"] is False
    assert change == "code" or not identical(kept, again)  # the same code refits the same
    assert len(list((tmp_path / "cache" / prior_cache.KIND).glob("*.pt"))) == 2


def entry_of(cache: Cache) -> tuple:
    (manifest,) = (cache.root / prior_cache.KIND).glob("*.json")
    return manifest, manifest.with_suffix(".pt")


@pytest.mark.parametrize("damage", ["flip", "truncate", "no manifest"])
def test_a_damaged_or_partial_entry_is_fitted_again_and_replaced(tmp_path, quick, fits,
                                                                  damage):
    said = []
    cache = Cache(tmp_path / "cache", said.append)
    kept, _, _ = start(cache)
    manifest, payload = entry_of(cache)
    data = bytearray(payload.read_bytes())
    if damage == "flip":  # inside the weights: unpickling alone would not notice
        data[len(data) // 2] ^= 0x01
        payload.write_bytes(bytes(data))
    elif damage == "truncate":
        payload.write_bytes(bytes(data[: len(data) // 2]))
    else:
        manifest.unlink()
    again, _, task = start(cache)
    assert len(fits) == 2 and task.prior_record["from_cache"] is False and len(said) == 1
    assert identical(kept, again)  # what was used is the fit, not the damaged entry
    assert start(cache)[2].prior_record["from_cache"] is True  # replaced by a valid entry
    assert len(fits) == 2


def test_an_entry_for_other_networks_is_not_loaded(tmp_path, quick, fits, monkeypatch):
    """A valid entry that does not fit the networks leaves them seeded and is refitted."""
    said = []
    cache = Cache(tmp_path / "cache", said.append)
    kept, _, _ = start(cache)
    manifest, payload = entry_of(cache)
    key = manifest.stem
    entry = cache.load(prior_cache.KIND, key)
    entry["discriminator"] = {k: v.reshape(-1)[:1] for k, v in entry["discriminator"].items()}
    cache.store(prior_cache.KIND, key, entry, {})
    again, _, task = start(cache)
    assert len(fits) == 2 and identical(kept, again) and "not a public prior" in said[0]


def test_the_reference_classifier_comes_from_the_cache_with_the_same_bits(tmp_path,
                                                                         monkeypatch):
    from tasks.image.data import load_images

    images = load_images("digits", "", 28, 0)
    cache = Cache(tmp_path / "cache")
    args = (images.test_x, images.test_y, 10, 0)
    first = metrics.cached_reference(tmp_path / "a", *args, cache=cache)
    trained = []
    real = metrics.train_reference
    monkeypatch.setattr(metrics, "train_reference",
                        lambda *a, **k: trained.append(1) or real(*a, **k))
    second = metrics.cached_reference(tmp_path / "b", *args, cache=cache)
    assert trained == [] and second.accuracy == first.accuracy
    assert identical(first.model.state_dict(), second.model.state_dict())
    record = json.loads((tmp_path / "b" / "reference_classifier.json").read_text())
    assert record["from_cache"] is True and record["fit_seconds"] > 0
    assert (tmp_path / "b" / metrics.REFERENCE_FILE).exists()
    other = metrics.cached_reference(None, images.test_x[1:], images.test_y[1:], 10, 0,
                                     cache=cache)  # other data: another key, a fit
    assert trained == [1] and other.accuracy >= 0


RUN = {**SMALL, "dataset": "digits", "gan-public-prior": "digits", "batch-size": 32,
       "quiet": True}


def entries(folder) -> list[str]:
    return sorted(p.parent.name for p in folder.rglob("*.json")) if folder.exists() else []


def test_a_run_fills_the_flags_folder_and_then_reads_it(tmp_path, quick, fits, monkeypatch):
    monkeypatch.setenv("FL_SIM_CACHE_DIR", str(tmp_path / "env"))
    run_in_process({**RUN, "cache-dir": str(tmp_path / "flag")}, tmp_path / "cold")
    assert entries(tmp_path / "flag") == ["dcgan-public-prior", "dcgan-reference-classifier"]
    assert entries(tmp_path / "env") == []  # the flag wins over the variable
    run_in_process({**RUN, "cache-dir": str(tmp_path / "flag")}, tmp_path / "warm")
    assert len(fits) == 1
    cold = json.loads((tmp_path / "cold" / "public_prior.json").read_text())
    warm = json.loads((tmp_path / "warm" / "public_prior.json").read_text())
    assert (cold["from_cache"], warm["from_cache"]) == (False, True)
    assert warm["fit_seconds"] == cold["seconds"]
    assert json.loads((tmp_path / "warm" / "reference_classifier.json").read_text())[
        "from_cache"] is True
    scores = ["round", "server_fid", "server_inception_score", "server_code_agreement"]
    cold_rounds, warm_rounds = (pd.read_csv(tmp_path / name / "rounds.csv")[scores]
                                for name in ("cold", "warm"))
    assert cold_rounds.equals(warm_rounds)  # the cache changes no number of the run


def test_without_the_flag_the_variable_chooses_and_no_cache_writes_nothing(
        tmp_path, quick, fits, monkeypatch):
    monkeypatch.setenv("FL_SIM_CACHE_DIR", str(tmp_path / "env"))
    run_in_process({**RUN, "cache": False, "cache-dir": str(tmp_path / "flag")},
                   tmp_path / "off")
    assert not (tmp_path / "flag").exists() and not (tmp_path / "env").exists()
    assert json.loads((tmp_path / "off" / "public_prior.json").read_text())[
        "from_cache"] is False
    run_in_process(RUN, tmp_path / "on")
    assert entries(tmp_path / "env") == ["dcgan-public-prior", "dcgan-reference-classifier"]


def test_a_cache_dir_that_is_a_file_names_the_flag(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(OptionError) as error:
        RunConfig.from_mapping({"task": "dcgan", "cache-dir": str(tmp_path / "file")})
    assert error.value.flag == "--cache-dir" and "not a folder" in str(error.value)
    assert "\n" not in str(error.value)


def test_the_cache_settings_change_nothing_a_run_computes():
    for key in ("cache", "cache-dir"):
        assert key in RESUME_MAY_CHANGE and key in IGNORED_SETTINGS and key in NOT_SWEPT
