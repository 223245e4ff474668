"""Where a run's log records go: the terminal at ``--log-level``, and ``run.log`` in full.

The terminal shows what a user can act on. Library messages they cannot act on (Opacus's
"Secure RNG turned off" for a simulation, PyTorch's full-backward-hook note from the
discriminator step, Flower's "Manually terminating ClientAppActor" at shutdown) are held
back from it by :class:`KnownNoise`, unless ``--verbose``; ``run.log`` in the run folder
keeps every record, those included, with time, process and logger, so nothing the
terminal hid is lost. Python warnings are routed through :mod:`logging` for the same
reason. The same set-up runs in the CLI process, in the ServerApp (under ``flwr run`` as
well) and in every ClientApp process (Ray actors, SuperNodes).
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from pathlib import Path

from tasks.options import KNOWN_WARNINGS, VERBOSE_ENV  # light: no torch before Ray

LEVELS = ("debug", "info", "warning", "error")
LEVEL_ENV = "FL_SIM_LOG_LEVEL"
"""Passed to the ClientApp processes so they log at the CLI's ``--log-level``."""
RUN_LOG = "run.log"
KNOWN_NOISE = (*KNOWN_WARNINGS, "Manually terminating ClientAppActor")
"""Library messages with nothing for the user to do (see the module docstring)."""
FORMAT = "%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"


class KnownNoise(logging.Filter):
    """Drops the records of :data:`KNOWN_NOISE` (installed on the terminal only)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(noise in message for noise in KNOWN_NOISE)


def _terminal_handler() -> logging.Handler | None:
    return next((h for h in logging.getLogger().handlers if getattr(h, "fl_sim", "") == "tty"),
                None)


def configure(level: str | None = None, verbose: bool | None = None) -> None:
    """Set up this process's terminal logging (idempotent).

    Parameters
    ----------
    level : str, optional
        One of :data:`LEVELS`; default: ``FL_SIM_LOG_LEVEL``, else ``warning``.
    verbose : bool, optional
        Show the known library noise too; default: whether ``FL_SIM_VERBOSE`` is set.
    """
    import flwr.common.logger  # noqa: F401 - Flower's handler exists before ours is set

    level = (level or os.environ.get(LEVEL_ENV) or "warning").lower()
    verbose = bool(os.environ.get(VERBOSE_ENV)) if verbose is None else verbose
    root = logging.getLogger()
    root.setLevel(logging.DEBUG)  # handlers choose; run.log wants everything
    handler = _terminal_handler()
    if handler is None:
        handler = logging.StreamHandler(sys.stderr)
        handler.fl_sim = "tty"  # type: ignore[attr-defined]
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
    handler.setLevel(level.upper())
    handler.filters.clear()
    if not verbose:
        handler.addFilter(KnownNoise())
    flower = logging.getLogger("flwr")
    # Flower prints through its own handler; propagating as well printed each of its
    # records twice wherever the root logger has a handler (Ray's workers have one).
    flower.propagate = False
    for flower_handler in flower.handlers:  # Flower's own console handler
        flower_handler.filters.clear()
        if not verbose:
            flower_handler.addFilter(KnownNoise())
        if hasattr(flower_handler, "colored"):
            flower_handler.colored = sys.stderr.isatty()  # no colour codes into a pipe
    # Warnings become log records: hidden from the terminal by the filter, kept in run.log.
    logging.captureWarnings(True)
    for message in KNOWN_WARNINGS:
        warnings.filterwarnings("default", message=message, category=UserWarning)


def attach_run_log(run_dir: str | Path) -> logging.Handler | None:
    """Append every record of this process to ``run_dir/run.log``; None if it cannot.

    Several processes append to one file (the server and the clients of a simulation):
    each record is one short append, so lines do not interleave. A client whose run
    folder is on another machine (the Deployment Engine across hosts) logs to its own
    terminal only.
    """
    path = Path(run_dir) / RUN_LOG
    if not path.parent.is_dir():
        return None
    for handler in logging.getLogger().handlers:
        if getattr(handler, "baseFilename", None) == str(path.resolve()):
            return handler
    try:
        handler = logging.FileHandler(path, mode="a", encoding="utf-8", delay=False)
    except OSError:
        return None
    handler.setLevel(logging.DEBUG)
    handler.setFormatter(logging.Formatter(FORMAT))
    logging.getLogger().addHandler(handler)
    flower = logging.getLogger("flwr")
    if not flower.propagate:  # see configure()
        flower.addHandler(handler)
    return handler


def detach(handler: logging.Handler | None) -> None:
    """Close a run's log when the run ends (a sweep runs several in one process)."""
    if handler is None:
        return
    for logger in (logging.getLogger(), logging.getLogger("flwr")):
        if handler in logger.handlers:
            logger.removeHandler(handler)
    handler.close()
