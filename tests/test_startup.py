"""What keeps a small run's start and end short: prompt polling and warm Ray workers.

``benchmarks/startup_breakdown.py`` measures the effect; these tests pin the behaviour.
"""

from __future__ import annotations

import queue
import sys

import pytest

from fl_core import flower
from fl_sim.app import warm
from fl_sim.options import RunConfig
from fl_sim.run.simulation import warm_modules


class _Factory:
    """Stands in for Flower's LinkStateFactory: the grid only asks it for a state."""

    def state(self) -> object:
        return object()


def _flower_simulation():
    import flwr.simulation.run_simulation  # noqa: F401 - the module, not the function
    from flwr.server.superlink.fleet.vce import vce_api

    return sys.modules["flwr.simulation.run_simulation"], vce_api


def test_inside_prompt_polling_the_grid_pulls_every_10_ms_then_flower_comes_back():
    simulation, vce_api = _flower_simulation()
    flowers = vce_api.add_messages_to_queue, simulation.InMemoryGrid
    with flower.prompt_polling():
        grid = simulation.InMemoryGrid(state_factory=_Factory())  # as the engine builds it
        assert isinstance(grid, flower.InMemoryGrid)  # the ServerApp still knows it
        assert grid.pull_interval == flower.PROMPT_POLL == 0.01
        assert vce_api.add_messages_to_queue is not flowers[0]
    assert (vce_api.add_messages_to_queue, simulation.InMemoryGrid) == flowers
    assert simulation.InMemoryGrid(state_factory=_Factory()).pull_interval == 0.1


class _Clock:
    """``time`` for fl_core.flower: each pass over the nodes takes the next scripted span."""

    def __init__(self, spans: list[float]) -> None:
        self.instants = [t for span in spans for t in (0.0, span)]

    def perf_counter(self) -> float:
        return self.instants.pop(0)


class _State:
    """Each node has one message waiting on the first pass, none later."""

    def __init__(self) -> None:
        self.waiting = {7: ["to 7"], 8: ["to 8"], 9: []}

    def get_message_ins(self, node_id: int, limit: int) -> list[str]:
        assert limit == 1
        found, self.waiting[node_id] = self.waiting[node_id], []
        return found


class _Stop:
    """Flower's stop event: records each wait, set after ``passes`` waits."""

    def __init__(self, passes: int) -> None:
        self.waits: list[float] = []
        self.passes = passes

    def is_set(self) -> bool:
        return len(self.waits) >= self.passes

    def wait(self, seconds: float) -> None:
        self.waits.append(seconds)


@pytest.mark.parametrize(("spans", "waits"), [
    ([0.0002, 0.0002], [0.01, 0.01]),  # a few nodes: every 10 ms
    ([0.004, 0.006], [0.04, 0.06]),    # a larger population: ten times the pass
    ([0.05, 0.3], [0.1, 0.1]),         # 100,000 nodes: never less often than Flower
])
def test_the_engine_moves_each_nodes_message_and_waits_ten_times_its_pass(
        monkeypatch, spans, waits):
    monkeypatch.setattr(flower, "time", _Clock(spans))
    _, vce_api = _flower_simulation()
    messages: queue.Queue = queue.Queue()
    stop = _Stop(passes=len(spans))
    with flower.prompt_polling():
        vce_api.add_messages_to_queue(_State(), messages, {7: 0, 8: 1, 9: 2}, stop)
    assert [messages.get_nowait() for _ in range(messages.qsize())] == ["to 7", "to 8"]
    assert stop.waits == pytest.approx(waits)


def test_workers_import_the_clients_modules_and_never_fail_on_one(tmp_path, monkeypatch):
    (tmp_path / "broken_for_warm.py").write_text("raise RuntimeError('broken on import')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert warm.warm("json, no_such_module_for_warm, broken_for_warm,, csv") == [
        "no_such_module_for_warm", "broken_for_warm"]
    assert "json" in sys.modules and "csv" in sys.modules


@pytest.mark.parametrize(("task", "module"), [("regression", "tasks.regression"),
                                              ("dcgan", "tasks.dcgan.task")])
def test_the_warm_modules_are_flowers_actor_the_client_app_and_the_task(task, module):
    assert warm_modules(RunConfig.from_mapping({"task": task})) == [
        "flwr.simulation.ray_transport.ray_actor", "fl_sim.app.client_app", module]


def test_a_preloaded_worker_gets_the_threads_ray_granted_its_actor(monkeypatch):
    import torch

    from fl_sim.app.warm import match_ray_threads

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        monkeypatch.setenv("OMP_NUM_THREADS", "1")  # what Ray sets for a one-CPU actor
        assert match_ray_threads() == 1 and torch.get_num_threads() == 1
        monkeypatch.delenv("OMP_NUM_THREADS")  # a process Ray did not start: untouched
        torch.set_num_threads(2)
        assert match_ray_threads() is None and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
