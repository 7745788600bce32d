"""Adaptive unfreezing in one run (beyond the paper): release the next block when the chosen
metric has stabilised since the previous release.

The paper picks one k from a separate head-only run (experiments/autok.py). Here the run starts
head-only and, at every recording, applies Algorithm 2 (`earlyjax.stabilization`) to the metric's
values recorded since the last release; once they have stabilised, the next block top-down is
released at the current step by writing the release-step array in the optimizer state
(`freezing.set_release_steps`: no recompilation). Each release gets its own interval, so the
schedule need not be uniform. Choices:
- the segment needs at least `tau + 3` recordings before it can be judged (Algorithm 2 needs
  tau + 1, and a shorter segment's min-max normalisation makes any wiggle look large);
- the decision uses recordings up to now, so the release happens at the current step, after
  the detected stabilisation index (Algorithm 2 needs samples up to index + tau);
- when recording ends (`record.until`) with blocks still frozen, they are all released then,
  so the run trains the whole network afterwards.
The state it needs is the release-step array (checkpointed in the optimizer state) and the
metric log, so a resumed run continues exactly. Algorithm 2's parameters come from the config's
`stabilization` block, the same as auto-k's.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from earlyjax.freezing import NEVER
from earlyjax.stabilization import (
    DEFAULT_EPS,
    DEFAULT_RAPID_EPS,
    DEFAULT_TAU,
    stabilization_point,
)


class AdaptiveUnfreezing:
    """Decides releases from recorded values of one metric. `num_blocks` excludes the head."""

    def __init__(
        self,
        metric: str,
        num_blocks: int,
        *,
        tau: int = DEFAULT_TAU,
        eps: float = DEFAULT_EPS,
        rapid_eps: float = DEFAULT_RAPID_EPS,
    ):
        self.metric, self.num_blocks = metric, num_blocks
        self.tau, self.eps, self.rapid_eps = tau, eps, rapid_eps
        self.steps: list[int] = []
        self.values: list[float] = []

    @staticmethod
    def last_release(release_steps: np.ndarray) -> int:
        """The step of the newest block release so far (0: none, the head trains from 0)."""
        blocks = np.asarray(release_steps)[:-1]
        released = blocks[blocks != NEVER]
        return int(released.max()) if released.size else 0

    def restore(self, records: Sequence[dict], release_steps: np.ndarray) -> None:
        """Rebuilds the current segment from the metric log after a resume."""
        since = self.last_release(release_steps)
        segment = [r for r in records if r["kind"] == "record" and r["step"] > since]
        if not any(np.asarray(release_steps)[:-1] != NEVER):  # no release yet: from step 0
            segment = [r for r in records if r["kind"] == "record"]
        self.steps = [r["step"] for r in segment]
        self.values = [float(r[self.metric]) for r in segment]

    def update(
        self, step: int, value: float, release_steps: np.ndarray, *, last_recording: bool
    ) -> np.ndarray | None:
        """Adds a recording; returns the new release-step array if a block is released now."""
        release = np.asarray(release_steps).copy()
        frozen = [j for j in range(self.num_blocks) if release[j] == NEVER]
        if not frozen:
            return None
        self.steps.append(int(step))
        self.values.append(float(value))
        if last_recording:
            release[frozen] = step
            return release
        if len(self.values) < self.tau + 3:
            return None
        point = stabilization_point(
            self.values, self.steps, tau=self.tau, eps=self.eps, rapid_eps=self.rapid_eps
        )
        if not point.stable:
            return None
        release[max(frozen)] = step  # the next block top-down
        self.steps, self.values = [], []
        return release
