"""ODConv's attention-temperature annealing, as ODConv's reference training does it.

The temperature falls linearly per training step from ``initial`` to ``final`` over the
first ``steps`` steps and then stays at ``final`` (the reference: from 30 to 1 over the
first 10 epochs' iterations). The step that brings the count of completed steps to
``k`` runs at :meth:`TemperatureSchedule.after` ``(k)``; before the first step the
network is at ``after(0) = initial``. The temperature is a function of the step count
alone, so a resumed run recomputes it from the checkpoint's step.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TemperatureSchedule:
    """A linear fall from ``initial`` to ``final`` over ``steps`` optimization steps."""

    initial: float
    final: float
    steps: int

    def __post_init__(self) -> None:
        if self.steps < 1 or not self.initial > 0 or not self.final > 0:
            raise ValueError(f"temperature schedule needs steps >= 1 and positive "
                             f"temperatures, got {self}")

    def after(self, completed: int) -> float:
        """The temperature once ``completed`` steps are done (the one that step ran at)."""
        remaining = max(0, self.steps - completed) / self.steps
        return self.final + (self.initial - self.final) * remaining
