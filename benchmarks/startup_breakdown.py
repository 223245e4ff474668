"""Where the wall time of a small CLI run goes: a timeline of one ``fl_sim run`` process.

A 10-round regression run trains for a fraction of a second, yet the process takes many
seconds: this script says which part of the harness holds the rest. It runs the CLI's
own ``main`` in a child process (what ``./run.sh --clients 5 --task regression`` execs)
and marks, by the wall clock:

- the interpreter's start, the CLI's parse and the imports before Ray;
- Ray's start (``fl_sim.run.simulation.start_ray``);
- the engine's start up to the round-0 progress line (Flower registering the nodes and
  building the actor pool, the ServerApp building the task, the initial evaluation);
- round 1 (it also pays for the Ray actors starting and importing the ClientApp), the
  later rounds (Flower's in-memory grid and its message queue poll), the summary and the
  report, Flower's teardown (its stop waits, the actors' end, ``ray.shutdown``; the
  report is written meanwhile), and the process's exit.

The marks come from what the run prints, Flower's own DEBUG log records and a timer
around fl-sim's ``start_ray``; nothing in Flower is replaced, and the child imports
nothing the CLI would not import at that point. The same training is
then timed in-process (``harness_overhead.in_process``: the plain FedAvg loop, in a fresh
process) and the ratio printed, both as ``harness_overhead.py`` defines it (the loop's
own timer) and against that fresh process's whole wall time.

Usage::

    PYTHONPATH=. .venv/bin/python benchmarks/startup_breakdown.py --task regression --clients 5
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

PHASES = (
    ("interpreter", "spawn", "child ready"),
    ("CLI and imports before Ray", "child ready", "start_ray begins"),
    ("Ray start", "start_ray begins", "start_ray ends"),
    ("Ray up to the engine's start (imports)", "start_ray ends", "engine begins"),
    ("engine start to round 0", "engine begins", "round 0"),
    ("round 1 (actors start)", "round 0", "round 1"),
    ("later rounds", "round 1", "last round"),
    ("last round to the report written", "last round", "report"),
    ("last round to Ray shut down", "last round", "ray.shutdown ends"),
    ("report to process exit", "report", "exit"),
)


# --- the child: one CLI run with marks ---------------------------------------------
class _Lines:
    """stdout that stamps the moment each progress, summary or report line is written."""

    def __init__(self, stream, marks: dict[str, float]) -> None:
        self.stream, self.marks = stream, marks

    def write(self, text: str) -> int:
        now = time.time()
        for line in text.splitlines():
            if line.startswith("round "):
                number = line.split()[1].split("/")[0]
                self.marks.setdefault(f"round {number}", now)
                self.marks["last round"] = now
            elif line.startswith("report: "):
                self.marks.setdefault("report", now)
        return self.stream.write(text)

    def __getattr__(self, name: str):
        return getattr(self.stream, name)

    def isatty(self) -> bool:
        return False


class _FlowerEvents:
    """A logging handler stamping Flower's DEBUG records of the engine's life."""

    EVENTS = {"Pre-registering run": "engine begins",
              "Constructed ActorPool": "actor pool built",
              "ServerApp finished running": "ServerApp ends",
              "Terminated RayBackend": "ray.shutdown ends"}

    def __init__(self, marks: dict[str, float]) -> None:
        import logging

        self.marks = marks
        self.handler = logging.Handler(logging.DEBUG)
        self.handler.emit = self.emit
        self.handler.setLevel = lambda level: None  # quiet_libraries quiets Flower's console
        self.logger = logging.getLogger("flwr")
        self.logger.setLevel(logging.DEBUG)
        self.logger.setLevel = lambda level: None  # the run's quiet_libraries keeps DEBUG
        self.logger.addHandler(self.handler)

    def quiet_console(self) -> None:
        """Flower's own console handler (added when flwr is imported) prints no DEBUG/INFO."""
        import logging

        for handler in self.logger.handlers:
            if handler is not self.handler:
                handler.setLevel(logging.WARNING)

    def emit(self, record) -> None:
        message = record.getMessage()
        for start, name in self.EVENTS.items():
            if message.startswith(start):
                self.marks.setdefault(name, time.time())


def _timed(module, name: str, marks: dict[str, float], label: str, before=None) -> None:
    """Wrap ``module.name`` (an fl-sim function) with begin/end marks."""
    inner = getattr(module, name)

    def wrapper(*args, **kwargs):
        marks.setdefault(f"{label} begins", time.time())
        if before is not None:
            before()
        try:
            return inner(*args, **kwargs)
        finally:
            marks.setdefault(f"{label} ends", time.time())

    setattr(module, name, wrapper)


def child(spawned: float, out: Path, cli_args: list[str]) -> None:
    """Run ``fl_sim run`` as the CLI does, write the marks to ``out``, exit like it."""
    marks = {"spawn": spawned, "child ready": time.time()}
    sys.stdout = _Lines(sys.stdout, marks)
    events = _FlowerEvents(marks)
    import fl_sim.run.simulation as simulation  # what `run` imports first anyway
    from fl_sim.cli import main

    _timed(simulation, "start_ray", marks, "start_ray", before=events.quiet_console)
    code = main(["run", *cli_args])
    marks["main returns"] = time.time()
    cpu = os.times()
    marks["driver cpu seconds"] = cpu.user + cpu.system
    out.write_text(json.dumps(marks))
    sys.stdout.flush()
    os._exit(code)


# --- the parent ----------------------------------------------------------------------
def machine_cpu_seconds() -> float:
    """Busy CPU seconds of the whole machine since boot (every process, others' too)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    idle = fields[3] + fields[4]
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def cli_run(task: str, clients: int, tmp: Path, name: str) -> dict[str, float]:
    """One child CLI run; its marks (seconds since spawn) and the whole process's wall."""
    marks_file = tmp / f"{name}.json"
    busy = machine_cpu_seconds()
    spawned = time.time()
    done = subprocess.run(
        [sys.executable, __file__, "--child", str(spawned), str(marks_file), "--",
         "--task", task, "--clients", str(clients), "--out", str(tmp), "--run-name", name],
        cwd=REPO, capture_output=True, text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    ended = time.time()
    if done.returncode != 0 or not marks_file.exists():
        raise RuntimeError(f"the run failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    marks = json.loads(marks_file.read_text())
    cpu = marks.pop("driver cpu seconds")
    timeline = {key: value - spawned for key, value in marks.items()}
    timeline["exit"] = ended - spawned
    timeline["driver cpu seconds"] = cpu
    timeline["machine cpu seconds"] = machine_cpu_seconds() - busy
    summary = json.loads((tmp / name / "summary.json").read_text())
    timeline["prediction_at_5"] = summary.get("prediction_at_5", float("nan"))
    return timeline


def in_process_run(task: str, clients: int) -> tuple[float, float]:
    """(the loop's own timer, the fresh process's whole wall) for the same training."""
    code = ("import sys, time; sys.path.insert(0, 'benchmarks');"
            "from harness_overhead import in_process;"
            f"print(in_process({task!r}, {clients})[0])")
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                          text=True, check=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    return float(done.stdout.split()[-1]), time.perf_counter() - started


def phases(timeline: dict[str, float]) -> list[tuple[str, float | None]]:
    """Each phase's seconds (None when a mark is missing)."""
    return [(name, timeline[end] - timeline[begin]
             if begin in timeline and end in timeline else None)
            for name, begin, end in PHASES]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="regression")
    parser.add_argument("--clients", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=3,
                        help="runs of each kind; the median of each figure is shown")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument("--child", nargs=2, metavar=("SPAWNED", "OUT"), help=argparse.SUPPRESS)
    args, rest = parser.parse_known_args()
    if args.child:
        child(float(args.child[0]), Path(args.child[1]), [a for a in rest if a != "--"])
    print(f"load before: {os.getloadavg()[0]:.2f}", flush=True)
    runs, loops = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeat):
            runs.append(cli_run(args.task, args.clients, Path(tmp), f"run{i}"))
            loops.append(in_process_run(args.task, args.clients))
    median = {key: statistics.median(run[key] for run in runs)
              for key in runs[0] if all(key in run for run in runs)}
    print(f"task {args.task}, {args.clients} clients; median of {args.repeat} runs, "
          f"seconds since the process was spawned")
    for key, value in sorted(median.items(), key=lambda kv: kv[1]):
        if key not in ("driver cpu seconds", "machine cpu seconds", "prediction_at_5"):
            print(f"  {value:7.2f}  {key}")
    print("phases (seconds):")
    for name, seconds in phases(median):
        print(f"  {name:<40} {'-' if seconds is None else f'{seconds:.2f}'}")
    loop = statistics.median(a for a, _ in loops)
    fresh = statistics.median(b for _, b in loops)
    wall = median["exit"]
    print(f"CLI process wall {wall:.2f} s; driver CPU {median['driver cpu seconds']:.2f} s; "
          f"machine CPU during the run {median['machine cpu seconds']:.2f} s")
    print(f"in-process loop {loop:.2f} s (its own timer), {fresh:.2f} s (fresh process)")
    print(f"ratio wall(simulation) / wall(in-process): {wall / loop:.1f}x "
          f"({wall / fresh:.1f}x against the fresh process)")
    print(f"prediction_at_5: {sorted({round(r['prediction_at_5'], 5) for r in runs})}")
    print(f"load after: {os.getloadavg()[0]:.2f}")
    if args.json:
        args.json.write_text(json.dumps({"runs": runs, "in_process": loops}, indent=1))


if __name__ == "__main__":
    main()
