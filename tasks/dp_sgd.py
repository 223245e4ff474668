"""Sample-level DP-SGD for any client model, with an accountant that outlives a round.

Opacus does the work: ``PrivacyEngine.make_private`` (Poisson sampling, per-sample
clipping, Gaussian noise), its RDP/PRV accountants and ``get_noise_multiplier``. What
this module adds is the federated part: Flower rebuilds simulated clients every round,
so a fresh engine would report only the current round's epsilon. The accountant's
history (noise multiplier, sample rate, steps) is therefore stored in the client's
``context.state`` and loaded into each new engine, so epsilon is cumulative over the
whole run, as it must be for a guarantee about the client's data.

Generic: nothing here knows about GANs; the classifier task uses it as it is.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from flwr.app import ConfigRecord, RecordDict
from torch import nn

from tasks.options import ACCOUNTANTS, GRAD_SAMPLE_MODES, KNOWN_WARNINGS, VERBOSE_ENV


def quiet_known_warnings() -> None:
    """Hide :data:`KNOWN_WARNINGS` in this process, unless ``FL_SIM_VERBOSE`` is set."""
    import os
    import warnings

    if os.environ.get(VERBOSE_ENV):
        return
    for message in KNOWN_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=UserWarning)


quiet_known_warnings()

STATE_KEY = "dp-accountant"


@dataclass(frozen=True)
class DPSettings:
    """How one client privatises its local training.

    Parameters
    ----------
    noise_multiplier : float
        Noise standard deviation relative to ``max_grad_norm`` (sigma).
    max_grad_norm : float
        Per-sample L2 clipping bound C.
    delta : float
        The delta at which epsilon is reported.
    accountant : {"rdp", "prv"}
        Opacus accountant.
    grad_sample_mode : {"hooks", "functorch", "ew"}
        How Opacus computes per-sample gradients.
    """

    noise_multiplier: float
    max_grad_norm: float
    delta: float = 1e-5
    accountant: str = "rdp"
    grad_sample_mode: str = "hooks"

    def __post_init__(self) -> None:
        if self.noise_multiplier < 0:
            raise ValueError(f"noise_multiplier must be >= 0, got {self.noise_multiplier}")
        if self.max_grad_norm <= 0:
            raise ValueError(f"max_grad_norm must be > 0, got {self.max_grad_norm}")
        if not 0 < self.delta < 1:
            raise ValueError(f"delta must be in (0, 1), got {self.delta}")
        if self.accountant not in ACCOUNTANTS:
            raise ValueError(f"unknown accountant {self.accountant!r}; allowed: "
                             f"{', '.join(ACCOUNTANTS)}")
        if self.grad_sample_mode not in GRAD_SAMPLE_MODES:
            raise ValueError(f"unknown grad_sample_mode {self.grad_sample_mode!r}; allowed: "
                             f"{', '.join(GRAD_SAMPLE_MODES)}")


def poisson_plan(num_examples: int, batch_size: int) -> tuple[float, int]:
    """Sample rate and steps per epoch that Opacus's Poisson loader will use.

    ``DPDataLoader.from_data_loader`` sets ``q = 1 / len(loader)`` with
    ``len(loader) = ceil(N / B)`` and runs ``int(1 / q)`` steps per epoch; computing the
    same here lets the server plan a run's privacy before any client exists.
    """
    if num_examples < 1 or batch_size < 1:
        raise ValueError("need at least one example and a batch size >= 1")
    sample_rate = 1 / math.ceil(num_examples / batch_size)
    return sample_rate, int(1 / sample_rate)


def noise_for_target(target_epsilon: float, delta: float, sample_rate: float, steps: int,
                     accountant: str = "rdp") -> float:
    """Noise multiplier for which ``steps`` Poisson-sampled steps spend ``target_epsilon``.

    Opacus's ``get_noise_multiplier`` searches sigma until epsilon is within its
    tolerance (0.01) *below* the target.
    """
    from opacus.accountants.utils import get_noise_multiplier

    return float(get_noise_multiplier(
        target_epsilon=target_epsilon, target_delta=delta, sample_rate=sample_rate,
        steps=steps, accountant=accountant,
    ))


def dp_problems(module: nn.Module) -> list[str]:
    """Opacus ``ModuleValidator`` findings (e.g. BatchNorm); empty if ``module`` is DP-ready."""
    from opacus.validators import ModuleValidator

    return [str(error) for error in ModuleValidator.validate(module, strict=False)]


def require_dp_compatible(module: nn.Module) -> None:
    """Raise ``ValueError`` listing why Opacus cannot privatise ``module``."""
    problems = dp_problems(module)
    if problems:
        raise ValueError(f"{type(module).__name__} is not DP-compatible: {'; '.join(problems)}")


# --- accountant state in context.state ----------------------------------------------
def load_history(state: RecordDict, key: str = STATE_KEY) -> list[tuple[float, float, int]]:
    """The accountant history stored in ``state`` (empty before the first round)."""
    if key not in state:
        return []
    record = state[key]
    return [(float(n), float(q), int(s))
            for n, q, s in zip(record["noise"], record["rate"], record["steps"], strict=True)]


def save_history(state: RecordDict, history: list[tuple[float, float, int]],
                 mechanism: str, key: str = STATE_KEY) -> None:
    """Store an accountant history in ``state`` so the next round continues from it."""
    if not history:
        return
    state[key] = ConfigRecord({
        "mechanism": mechanism,
        "noise": [float(n) for n, _, _ in history],
        "rate": [float(q) for _, q, _ in history],
        "steps": [int(s) for _, _, s in history],
    })


def stored_mechanism(state: RecordDict, key: str = STATE_KEY) -> str | None:
    """Accountant name the stored history was made with, if any."""
    return str(state[key]["mechanism"]) if key in state else None


def epsilon_of(history: list[tuple[float, float, int]], delta: float,
               accountant: str = "rdp") -> float:
    """Epsilon at ``delta`` of an accountant history, with a fresh Opacus accountant."""
    from opacus.accountants import create_accountant

    if not history:
        return 0.0
    fresh = create_accountant(accountant)
    fresh.history = list(history)
    return float(fresh.get_epsilon(delta=delta))


# --- one round of private training ------------------------------------------------------
class PrivateTrainer:
    """Opacus wiring of one client for one round, resuming the client's accountant.

    Parameters
    ----------
    settings : DPSettings
        Noise, clipping and accounting.
    state : RecordDict
        The client's ``context.state``; the accountant history is read from and written
        back to ``state[key]``.
    key : str
        Record name, so one client can privatise several modules independently.

    Notes
    -----
    Build a new module each round: ``make_private`` twice on one module fails.
    """

    def __init__(self, settings: DPSettings, state: RecordDict, key: str = STATE_KEY) -> None:
        from opacus import PrivacyEngine

        self.settings = settings
        self.state = state
        self.key = key
        previous = stored_mechanism(state, key)
        if previous is not None and previous != settings.accountant:
            raise ValueError(f"stored accountant is {previous!r}, not {settings.accountant!r}")
        self.engine = PrivacyEngine(accountant=settings.accountant)
        history = load_history(state, key)
        self._steps_before = sum(steps for _, _, steps in history)
        if history:
            self.engine.accountant.load_state_dict(
                {"history": history, "mechanism": settings.accountant}
            )

    def make_private(
        self, module: nn.Module, optimizer: torch.optim.Optimizer,
        data_loader: torch.utils.data.DataLoader, seed: int | None = None,
    ) -> tuple[nn.Module, torch.optim.Optimizer, torch.utils.data.DataLoader]:
        """Wrap for DP-SGD with Poisson sampling; the loader's batches are Poisson draws."""
        require_dp_compatible(module)
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        return self.engine.make_private(
            module=module, optimizer=optimizer, data_loader=data_loader,
            noise_multiplier=self.settings.noise_multiplier,
            max_grad_norm=self.settings.max_grad_norm,
            poisson_sampling=True, grad_sample_mode=self.settings.grad_sample_mode,
            noise_generator=generator,
        )

    @property
    def history(self) -> list[tuple[float, float, int]]:
        """Every (noise multiplier, sample rate, steps) this client has spent, all rounds."""
        return [(float(n), float(q), int(s)) for n, q, s in self.engine.accountant.history]

    def epsilon(self) -> float:
        """Cumulative epsilon at ``settings.delta`` over every round so far."""
        if not self.engine.accountant.history:
            return 0.0
        return float(self.engine.accountant.get_epsilon(delta=self.settings.delta))

    def save(self) -> dict[str, float]:
        """Write the accountant history back to ``state``; return the round's privacy.

        ``epsilon`` is cumulative over every round so far; ``noise_multiplier``,
        ``sample_rate`` and ``dp_steps`` are this round's (steps counted from the
        history's growth, because Opacus merges consecutive equal entries). All but
        epsilon follow from public settings and the example count, so they may travel.
        """
        history = self.history
        save_history(self.state, history, self.settings.accountant, self.key)
        sigma, rate, _ = history[-1] if history else (self.settings.noise_multiplier, 0.0, 0)
        return {"epsilon": self.epsilon(), "noise_multiplier": sigma, "sample_rate": rate,
                "dp_steps": sum(s for _, _, s in history) - self._steps_before}


@contextmanager
def frozen(module: nn.Module) -> Iterator[None]:
    """Turn off gradients of ``module``'s parameters for a block, then restore them.

    A generator step backpropagates through the private discriminator; with its
    parameters frozen (and, for an Opacus ``GradSampleModule``, its hooks off) no
    per-sample gradients are computed or left behind on it, and nothing is clipped or
    charged to the accountant. The backward pass must run inside the block.
    """
    params = list(module.parameters())
    before = [p.requires_grad for p in params]
    hooked = hasattr(module, "disable_hooks") and hasattr(module, "enable_hooks")
    for p in params:
        p.requires_grad_(False)
    if hooked:
        module.disable_hooks()
    try:
        yield
    finally:
        if hooked:
            module.enable_hooks()
        for p, flag in zip(params, before, strict=True):
            p.requires_grad_(flag)
