"""How busy a run keeps the machine's cores: CPU-seconds / (wall seconds x cores).

Runs one command (by default the default DP-DCGAN run) and samples ``/proc`` every 0.5 s:

- the process tree's CPU-seconds: every descendant's user + system time, kept at its
  largest sample, so a Ray worker that has exited still counts (less at most its last
  half second);
- the whole machine's busy fraction from ``/proc/stat``, which on a quiet machine should
  agree with the tree's and shows when it does not.

It prints both, and the busy fraction per 5-second window, so the idle stretches can be
matched to the run's phases (``config.json``'s ``phases``, ``rounds.csv``'s ``seconds``).
Linux only.

Usage::

    PYTHONPATH=. python benchmarks/core_usage.py -- --clients 5 --task dcgan --run-name cores
    PYTHONPATH=. python benchmarks/core_usage.py -- --clients 5 --task dcgan --client-cpus 2
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TICK = os.sysconf("SC_CLK_TCK")
WINDOW = 10  # samples per printed window (5 s)


def machine_jiffies() -> tuple[int, int]:
    """Total and idle (idle + iowait) jiffies of all cores since boot."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    values = [int(v) for v in fields]
    return sum(values), values[3] + values[4]


def tree_cpu(root: int, seen: dict[int, float]) -> float:
    """CPU-seconds of ``root``'s descendants, each kept at the largest value seen."""
    children: dict[int, list[tuple[int, float]]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        rest = stat[stat.rfind(")") + 2:].split()
        cpu = (int(rest[11]) + int(rest[12])) / TICK
        children.setdefault(int(rest[1]), []).append((int(entry.name), cpu))
    stack = [root]
    while stack:
        for pid, cpu in children.get(stack.pop(), []):
            seen[pid] = max(seen.get(pid, 0.0), cpu)
            stack.append(pid)
    return sum(seen.values())


def measure(argv: list[str]) -> dict[str, object]:
    """Run ``argv`` to its end, sampling; returns wall, CPU-seconds and busy fractions."""
    cores = os.cpu_count() or 1
    samples: list[tuple[float, int, int, float]] = []
    seen: dict[int, float] = {}
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            samples.append((time.time(), *machine_jiffies(), tree_cpu(os.getpid(), seen)))
            done.wait(0.5)

    started = time.time()
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    result = subprocess.run(argv, cwd=REPO, capture_output=True, text=True)
    done.set()
    sampler.join()
    samples.append((time.time(), *machine_jiffies(), tree_cpu(os.getpid(), seen)))
    wall = time.time() - started
    (t0, total0, idle0, _), (_, total1, idle1, cpu) = samples[0], samples[-1]
    windows = []
    for i in range(0, len(samples) - WINDOW, WINDOW):
        a, b = samples[i], samples[i + WINDOW]
        windows.append((a[0] - t0, (b[3] - a[3]) / ((b[0] - a[0]) * cores)))
    return {"returncode": result.returncode, "stderr": result.stderr, "wall": wall,
            "cpu": cpu, "cores": cores, "tree_busy": cpu / (wall * cores),
            "machine_busy": 1 - (idle1 - idle0) / max(1, total1 - total0),
            "windows": windows}


def main(argv: list[str]) -> int:
    args = argv[argv.index("--") + 1:] if "--" in argv else ["--clients", "5", "--task", "dcgan"]
    command = [sys.executable, "-m", "fl_sim", "run", *args, "--quiet"]
    report = measure(command)
    if report["returncode"]:
        print(report["stderr"][-3000:], file=sys.stderr)
        return int(report["returncode"])
    print(f"command: {' '.join(command[1:])}")
    print(f"wall {report['wall']:.1f} s, CPU {report['cpu']:.1f} s on {report['cores']} cores: "
          f"busy {report['tree_busy']:.3f} (process tree), {report['machine_busy']:.3f} (machine)")
    print("busy per 5 s:", " ".join(f"{t:.0f}s:{b:.2f}" for t, b in report["windows"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
