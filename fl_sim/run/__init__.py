"""Running a run: its folder's life, the launchers (simulation, deployment), sweeps, checkpoints."""
