"""The adaptive n_D schedule: Bie et al.'s climbing rule, kept across rounds, epsilon unchanged."""

from __future__ import annotations

import pytest
from flwr.app import RecordDict

from fl_sim.options import OptionError, RunConfig
from tasks import dp_sgd
from tasks.base import Partition
from tasks.dcgan.d_schedule import LADDER, DStepSchedule
from tasks.dcgan.task import DCGANTask
from tests import test_dcgan_augment as augment_tests
from tests.test_dp_sgd import independent_rdp_epsilon


def test_the_average_is_the_papers_moving_average_and_climbs_only_after_the_grace():
    schedule = DStepSchedule(0.5, grace=3, beta=0.5)
    schedule.observe(0.75)
    assert (schedule.average, schedule.d_steps) == (0.75, 1)
    schedule.observe(0.25)  # 0.5 * 0.75 + 0.5 * 0.25
    assert (schedule.average, schedule.d_steps) == (0.5, 1)  # at the threshold, 2 < grace
    schedule.observe(0.5)
    assert (schedule.d_steps, schedule.since) == (2, 0)  # third step, average 0.5
    for _ in range(2):
        schedule.observe(0.0)
    assert schedule.d_steps == 2  # a new grace after each rise
    schedule.observe(0.0)
    assert schedule.d_steps == 5


def test_a_d_that_keeps_up_never_climbs_and_the_ladder_ends():
    keeping_up = DStepSchedule(0.6, grace=1)
    for _ in range(50):
        keeping_up.observe(0.9)
    assert keeping_up.d_steps == 1
    losing = DStepSchedule(0.6, d_steps=3, grace=1)  # a start between rungs
    seen = []
    for _ in range(10):
        losing.observe(0.0)
        seen.append(losing.d_steps)
    assert seen[:5] == [5, 10, 20, 50, 50] and max(seen) == LADDER[-1]


def test_the_schedule_survives_the_clients_state():
    state = RecordDict()
    assert DStepSchedule.load(state, 0.6, 2) == DStepSchedule(0.6, 2)
    schedule = DStepSchedule(0.6, d_steps=5, average=0.41, since=2)
    schedule.save(state)
    assert DStepSchedule.load(state, 0.6, 1) == schedule


def task(**overrides) -> DCGANTask:
    return augment_tests.task(**{"batch-size": 16, **overrides})


def test_a_climbing_schedule_keeps_its_rung_across_rounds_and_spends_the_same_epsilon():
    # Ten G steps per D step let G fool this young D (its fake accuracy falls from 1.0
    # to about 0.07 over the first five G steps), and 0.99 climbs as soon as the grace
    # allows.
    t = task(**{"gan-d-steps-adapt": 0.99, "gan-g-steps": 10})
    assert t.client_metrics[-1] == "d_steps_per_g"
    arrays, state = t.initial_arrays(), RecordDict()
    first = t.train(arrays, Partition(2, 16), state, 1)
    reached = first.metrics["d_steps_per_g"]
    assert reached > 1
    kept = DStepSchedule.load(state, 0.99, 1)
    assert kept.d_steps == reached and kept.average is not None
    second = t.train(first.arrays, Partition(2, 16), state, 2)
    assert second.metrics["d_steps_per_g"] >= reached  # continues, never restarts at 1
    rate, steps = dp_sgd.poisson_plan(second.num_examples, 16)
    expected = independent_rdp_epsilon(0.9, rate, 2 * steps, 1e-5)
    assert second.metrics["epsilon"] == pytest.approx(expected, abs=1e-6)


def test_off_by_default_and_the_threshold_is_an_accuracy():
    assert "d_steps_per_g" not in task().client_metrics
    with pytest.raises(OptionError) as error:
        RunConfig.from_mapping({"task": "dcgan", "gan-d-steps-adapt": 1.0})
    assert error.value.flag == "--gan-d-steps-adapt"
