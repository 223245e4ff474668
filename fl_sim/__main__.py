"""``python -m fl_sim``."""

from fl_sim.cli import entry

entry()
