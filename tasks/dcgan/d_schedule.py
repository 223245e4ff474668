"""An adaptive number of D steps per G step (Bie et al., "Private GANs, revisited", 2023).

A DP discriminator learns slowly: each of its steps is clipped and noised, while G's
steps are free. When G outpaces D, D's answers stop carrying signal and G chases noise.
Bie et al. watch D's accuracy on G's fakes, smoothed over G steps, and whenever it has
fallen to a threshold they move n_D (D steps per G step) one rung up a ladder. The
accuracy is read on generated images only, a function of the private D and of noise,
so the schedule is post-processing and costs no privacy; the accountant is unchanged
because privacy is spent per D step, whichever n_D they are grouped by.

In a federation each client keeps its own schedule in its ``context.state`` across
rounds (like its Adam states), so n_D keeps climbing where it left off.
"""

from __future__ import annotations

from dataclasses import dataclass

from flwr.app import ConfigRecord, RecordDict

LADDER = (1, 2, 5, 10, 20, 50)
"""The n_D values the schedule climbs (Bie et al.'s ladder, cut where one client's round
of 13 to 63 D steps would leave G no step at all)."""
STATE_KEY = "dcgan-d-schedule"


@dataclass
class DStepSchedule:
    """n_D for the next G step, raised when D's smoothed fake accuracy falls to ``threshold``.

    Parameters
    ----------
    threshold : float
        D's accuracy on fakes (share of fakes it calls fake) at or below which n_D rises.
    d_steps : int
        n_D now (the run's ``--gan-d-steps`` before the first rise).
    grace : int
        G steps after a rise (or the start) before the next may happen, so the new n_D
        is judged on its own fakes.
    beta : float
        Weight of the past in the accuracy's moving average. A client takes 13 to 63 D
        steps a round here, not the thousands of a centralised run, so the average spans
        about ten G steps rather than Bie et al.'s hundred.
    """

    threshold: float
    d_steps: int = 1
    grace: int = 5
    beta: float = 0.9
    average: float | None = None
    since: int = 0

    def observe(self, fake_accuracy: float) -> None:
        """Fold one G step's fake accuracy into the average; climb a rung if it is due."""
        self.average = fake_accuracy if self.average is None else (
            self.beta * self.average + (1 - self.beta) * fake_accuracy)
        self.since += 1
        higher = [n for n in LADDER if n > self.d_steps]
        if self.since >= self.grace and self.average <= self.threshold and higher:
            self.d_steps = higher[0]
            self.since = 0

    def save(self, state: RecordDict) -> None:
        """Keep the schedule in the client's state for its next round."""
        state[STATE_KEY] = ConfigRecord({"d_steps": self.d_steps, "since": self.since,
                                         "average": -1.0 if self.average is None
                                         else self.average})

    @classmethod
    def load(cls, state: RecordDict, threshold: float, d_steps: int) -> DStepSchedule:
        """The client's kept schedule, or a fresh one at ``d_steps`` in its first round."""
        schedule = cls(threshold, d_steps)
        kept = state.get(STATE_KEY)
        if isinstance(kept, ConfigRecord):
            schedule.d_steps = int(kept["d_steps"])
            schedule.since = int(kept["since"])
            average = float(kept["average"])
            schedule.average = None if average < 0 else average
        return schedule
