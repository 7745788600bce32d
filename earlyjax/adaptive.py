"""Adaptive removal in one run (beyond the paper): remove the next part of an intervention when
the chosen metric has stabilised since the previous removal.

The paper picks one k from a separate signal run (experiments/autok.py). Here the run starts
with the intervention held (`Intervention.held()`: every block frozen, or the LR switch not yet
made) and, at every recording, applies Algorithm 2 (`earlyjax.stabilization`) to the metric's
values recorded since the last removal; once they have stabilised, the next part is removed at
the current step (`Intervention.remove_next`: the next block top-down, or the switch) by
writing the schedule in the optimizer state (no recompilation). Each removal gets its own
interval, so the schedule need not be uniform. Choices:
- the segment needs at least `tau + 3` recordings before it can be judged (Algorithm 2 needs
  tau + 1, and a shorter segment's min-max normalisation makes any wiggle look large);
- the decision uses recordings up to now, so the removal happens at the current step, after
  the detected stabilisation index (Algorithm 2 needs samples up to index + tau);
- when recording ends (`record.until`) with parts still in place, they are all removed then,
  so the run trains without the intervention afterwards.
The state it needs is the schedule (checkpointed in the optimizer state) and the metric log,
so a resumed run continues exactly. Algorithm 2's parameters are the config's `stabilization`
block, the same as auto-k's.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from earlyjax.interventions import Intervention
from earlyjax.stabilization import (
    DEFAULT_EPS,
    DEFAULT_RAPID_EPS,
    DEFAULT_TAU,
    stabilization_point,
)


class AdaptiveRemoval:
    """Decides removals of `intervention` from recorded values of one metric."""

    def __init__(
        self,
        intervention: Intervention,
        metric: str,
        *,
        tau: int = DEFAULT_TAU,
        eps: float = DEFAULT_EPS,
        rapid_eps: float = DEFAULT_RAPID_EPS,
    ):
        self.intervention, self.metric = intervention, metric
        self.tau, self.eps, self.rapid_eps = tau, eps, rapid_eps
        self.steps: list[int] = []
        self.values: list[float] = []

    def restore(self, records: Sequence[dict], schedule: np.ndarray) -> None:
        """Rebuilds the current segment from the metric log after a resume."""
        since = self.intervention.last_removal(schedule)
        recorded = [r for r in records if r["kind"] == "record"]
        segment = [r for r in recorded if r["step"] > since] if since else recorded
        self.steps = [r["step"] for r in segment]
        self.values = [float(r[self.metric]) for r in segment]

    def update(
        self, step: int, value: float, schedule: np.ndarray, *, last_recording: bool
    ) -> np.ndarray | None:
        """Adds a recording; returns the new schedule if a part is removed now."""
        schedule = np.asarray(schedule)
        if not self.intervention.parts_left(schedule):
            return None
        self.steps.append(int(step))
        self.values.append(float(value))
        if last_recording:
            return self.intervention.remove_all(schedule, step)
        if len(self.values) < self.tau + 3:
            return None
        point = stabilization_point(
            self.values, self.steps, tau=self.tau, eps=self.eps, rapid_eps=self.rapid_eps
        )
        if not point.stable:
            return None
        self.steps, self.values = [], []
        return self.intervention.remove_next(schedule, step)
