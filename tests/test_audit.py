"""``fl_sim audit`` on a real (tiny) DCGAN run folder, no Ray.

The run folder is trained once per module (``tests/dcgan_run.py``, DP on, 2 clients,
digits). The overfitted case swaps in a deliberately memorising toy: a real DCGAN
discriminator trained non-DP for many epochs to call 40 members real, and a generator
that releases near-copies of them. (A federated GAN trained non-DP with 30 local
epochs on the toy data did not overfit measurably: D-score AUC 0.52-0.58, so the test
overfits on purpose instead.)
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from fl_sim.cli import main
from fl_sim.record.run_folder import RunFolder
from fl_sim.release.audit import run_audit
from tasks.dcgan.models import build_pair
from tasks.dcgan.weights import joint_state, split_state, weights_path
from tests.dcgan_run import make_dcgan_run

SIZE = 28  # the smallest image size the DCGAN supports


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dcgan_run(tmp_path_factory.mktemp("audit") / "run", **{"image-size": SIZE})


def _copy(run_dir: Path, tmp_path: Path) -> Path:
    target = tmp_path / "run"
    shutil.copytree(run_dir, target)
    return target


def _max_epsilon(run_dir: Path) -> float:
    with (run_dir / "clients.csv").open() as handle:
        return max(float(r["epsilon"]) for r in csv.DictReader(handle) if r["epsilon"])


def test_audit_writes_json_plot_and_report(run_dir: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture) -> None:
    run = _copy(run_dir, tmp_path)
    assert main(["audit", str(run), "--members", "120", "--synthetic", "300"]) == 0
    record = json.loads((run / "audit.json").read_text())
    assert record["round"] == 1 and record["dp"] is True
    assert record["settings"]["members"] == record["settings"]["nonmembers"] == 120
    assert record["settings"]["synthetic"] == 300
    assert record["accounted_epsilon"] == pytest.approx(_max_epsilon(run))
    assert record["delta"] == 1e-5
    for name in ("d_score", "distance"):
        attack = record["attacks"][name]
        assert 0.0 <= attack["auc"] <= 1.0 and 0.0 <= attack["tpr_at_1pct_fpr"] <= 1.0
        low, high = attack["eps_lower_bound_ci"]
        assert low == attack["eps_lower_bound"] >= 0.0
        assert high is None or high >= low
        assert attack["eps_bound_detail"]["members"] == 60  # threshold chosen on the other 60
        assert attack["accounted_epsilon"] == record["accounted_epsilon"]
    assert (run / "report" / "audit_roc.png").stat().st_size > 10_000
    page = (run / "report" / "index.html").read_text()
    assert "Membership-inference audit" in page and "audit_roc.png" in page
    out = capsys.readouterr().out
    assert "d_score" in out and "distance" in out
    # a later `fl_sim report` keeps the audit figure (it clears stale PNGs)
    assert main(["report", str(run)]) == 0
    assert (run / "report" / "audit_roc.png").exists()


def test_audit_is_deterministic_and_reads_an_exported_file(run_dir: Path,
                                                           tmp_path: Path) -> None:
    run = _copy(run_dir, tmp_path)
    first = run_audit(run, members=80, synthetic=200, seed=3)
    again = run_audit(run, members=80, synthetic=200, seed=3)
    assert first == again
    # the same samples exported to a file give the same distance attack
    task = RunFolder(run).load_task(need="synthesize")
    images, _ = task.synthesize(RunFolder(run).arrays_at()[1], 200, 3)
    np.savez(tmp_path / "synthetic.npz", images=images)
    from_file = run_audit(run, members=80, synthetic_file=str(tmp_path / "synthetic.npz"),
                          seed=3)
    assert from_file["attacks"]["distance"]["auc"] == first["attacks"]["distance"]["auc"]
    assert from_file["attacks"]["d_score"] == first["attacks"]["d_score"]
    assert from_file["settings"]["synthetic_source"].endswith("synthetic.npz")


def test_round_zero_and_one_client(run_dir: Path, tmp_path: Path) -> None:
    run = _copy(run_dir, tmp_path)
    record = run_audit(run, server_round=0, client=1, members=50, synthetic=100)
    assert record["round"] == 0 and record["settings"]["client"] == 1
    assert record["accounted_epsilon"] is None  # nothing trained before round 1


def test_members_against_members_is_random_guessing(run_dir: Path, tmp_path: Path) -> None:
    """Non-members replaced by more members (client 1's): no attack can tell them apart.

    n = 719 per side: the null AUC's standard deviation is about 0.015, so 0.07 is over
    4 sigma for each attack.
    """
    run = _copy(run_dir, tmp_path)
    task = RunFolder(run).load_task(need="discriminator_logits")
    task.holdout_data = lambda: task.member_data(1)
    record = run_audit(run, client=0, members=5000, synthetic=1000, task=task)
    assert record["settings"]["members"] > 700
    for attack in record["attacks"].values():
        assert abs(attack["auc"] - 0.5) < 0.07
        assert attack["eps_lower_bound"] < 0.3


class MemorisingTask:
    """The real task, but its D and G have memorised 40 members (a deliberate overfit)."""

    conditional = False

    def __init__(self, task, members: np.ndarray, holdout: np.ndarray) -> None:
        self.task, self.members, self.holdout = task, members, holdout

    def member_data(self, client=None):
        return self.members, np.zeros(len(self.members), np.int64)

    def holdout_data(self):
        return self.holdout, np.zeros(len(self.holdout), np.int64)

    def discriminator_logits(self, arrays, images, labels=None):
        return self.task.discriminator_logits(arrays, images, labels)

    def synthesize(self, arrays, count, seed):
        """Near-copies of the members: a generator that memorised its training set."""
        rng = np.random.default_rng(seed)
        picks = self.members[rng.integers(len(self.members), size=count)]
        noisy = (picks + 1) / 2 + rng.normal(0, 0.05, picks.shape)
        return noisy.clip(0, 1).astype(np.float32), None


def test_overfitted_non_dp_toy_is_caught(run_dir: Path, tmp_path: Path) -> None:
    run = _copy(run_dir, tmp_path)
    task = RunFolder(run).load_task(need="discriminator_logits")
    train_x, _ = task.member_data()
    members, others = train_x[:40], train_x[40:200]
    holdout = task.holdout_data()[0][:200]
    # D of the last round, trained non-DP for 300 full-batch epochs to call the 40
    # members real and 160 other training images fake (members weighted 4x to balance)
    state = RunFolder(run).arrays_at()[1].to_torch_state_dict()
    generator, discriminator = build_pair(SIZE, 1, 8, 0)
    g_state, d_state = split_state(state)
    generator.load_state_dict(g_state)
    discriminator.load_state_dict(d_state)
    torch.manual_seed(0)
    optimiser = torch.optim.Adam(discriminator.parameters(), lr=2e-3)
    x = torch.from_numpy(np.concatenate([members, others]))
    y = torch.cat([torch.ones(40), torch.zeros(160)])
    weight = torch.cat([torch.full((40,), 4.0), torch.ones(160)])
    for _ in range(300):
        optimiser.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(discriminator(x), y,
                                                                    weight=weight)
        loss.backward()
        optimiser.step()
    assert loss.item() < 0.3  # it fits its training set
    torch.save(joint_state(generator, discriminator), weights_path(run, 2))
    record = run_audit(run, server_round=2, synthetic=500,
                       task=MemorisingTask(task, members, holdout))
    assert record["settings"]["members"] == 40
    d_score, distance = record["attacks"]["d_score"], record["attacks"]["distance"]
    # null AUC sd with 40 per side is 0.065: 0.8 is far above chance
    assert d_score["auc"] > 0.8  # measured 0.91
    assert distance["auc"] > 0.95
    assert distance["tpr_at_1pct_fpr"] > 0.5
    assert distance["eps_lower_bound"] > 1.0  # 20 per half caps it near ln(20 / ln 40)


def _fails(argv: list[str], capsys: pytest.CaptureFixture, *needles: str) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    for needle in needles:
        assert needle in err, err


def test_bad_arguments_exit_2_with_one_clear_line(run_dir: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture) -> None:
    run = str(run_dir)
    _fails(["audit", str(tmp_path / "nope")], capsys, "does not exist")
    _fails(["audit", run, "--round", "7"], capsys, "--round 7 does not exist", "0..1")
    _fails(["audit", run, "--client", "2"], capsys, "--client", "0..1")
    _fails(["audit", run, "--client", "-1"], capsys, "--client")
    _fails(["audit", run, "--members", "0"], capsys, "--members must be >= 2")
    _fails(["audit", run, "--members", "1"], capsys, "--members must be >= 2")
    _fails(["audit", run, "--synthetic", "-5"], capsys, "--synthetic must be > 0")
    _fails(["audit", run, "--synthetic-file", str(tmp_path / "x.npz")], capsys,
           "--synthetic-file", "does not exist")
    np.savez(tmp_path / "flat.npz", images=np.zeros((10, SIZE * SIZE), np.float32))
    _fails(["audit", run, "--members", "20", "--synthetic-file", str(tmp_path / "flat.npz")],
           capsys, "--synthetic-file", "N x 1 x 28 x 28")
    (tmp_path / "junk.npz").write_text("not a zip")
    _fails(["audit", run, "--members", "20", "--synthetic-file", str(tmp_path / "junk.npz")],
           capsys, "--synthetic-file", "cannot read")
    (tmp_path / "empty.npz").write_bytes(b"")
    _fails(["audit", run, "--members", "20", "--synthetic-file", str(tmp_path / "empty.npz")],
           capsys, "--synthetic-file", "cannot read")
    other = tmp_path / "regression"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"settings": {"task": "regression"}}))
    _fails(["audit", str(other)], capsys, "'regression' run", "only dcgan")
    assert not (run_dir / "audit.json").exists()


def test_conditional_model_gets_labels_and_class_matched_distances(tmp_path: Path) -> None:
    """A conditional D is scored with the true labels; distances stay within a class."""
    from fl_sim.release import mia
    from fl_sim.release.audit import _subset

    run = make_dcgan_run(tmp_path / "cond", conditional=True)
    task = RunFolder(run).load_task(need="discriminator_logits")
    fakes, labels = task.synthesize(RunFolder(run).arrays_at()[1], 300, 1)
    assert labels is not None
    np.savez(tmp_path / "release.npz", images=fakes, labels=labels)
    record = run_audit(run, members=100, synthetic_file=str(tmp_path / "release.npz"), seed=5)
    assert record["settings"]["conditional"] is True
    # the distance attack measured to the nearest synthetic image of the same label
    rng = np.random.default_rng(5)
    in_x, in_y = _subset(*task.member_data(), 100, rng)
    out_x, out_y = _subset(*task.holdout_data(), 100, rng)
    expected = mia.auc(-mia.nearest_distances_by_class((in_x + 1) / 2, in_y, fakes, labels),
                       -mia.nearest_distances_by_class((out_x + 1) / 2, out_y, fakes, labels))
    assert record["attacks"]["distance"]["auc"] == pytest.approx(expected)
