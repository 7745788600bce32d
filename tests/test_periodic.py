"""The periodic actions (earlyjax/periodic.py): when an action is due, and user actions run by
the loop, `StopAt` ending a run with a checkpoint."""

import os

import pytest

from earlyjax.periodic import PeriodicAction, StopAt
from earlyjax.train import train_and_evaluate


class Calls(PeriodicAction):
    """Notes the steps it runs at."""

    def __init__(self, **when):
        super().__init__(**when)
        self.steps_run = []

    def __call__(self, run, step):
        self.steps_run.append(step)


@pytest.mark.parametrize(
    "when,due",
    [
        ({"every": 3}, [3, 6, 9]),  # never at step 0
        ({"steps": (0, 4, 7)}, [0, 4, 7]),
        ({"at_end": True}, [10]),
        ({"every": 5, "steps": (2,), "at_end": True}, [2, 5, 10]),
        ({}, []),
    ],
)
def test_an_action_is_due_exactly_at_its_steps(when, due):
    action = Calls(**when)
    assert [step for step in range(11) if action.due(step, num_steps=10)] == due


def test_stop_at_ends_the_run_after_its_step_with_a_checkpoint(tiny_config, tiny_dataset, tmp_path):
    workdir = str(tmp_path / "run")
    seen = Calls(every=1)
    results = train_and_evaluate(
        tiny_config, workdir, dataset=tiny_dataset, extra_actions=[seen, StopAt(4)]
    )
    assert results is None  # as an interruption: no results
    assert seen.steps_run == [1, 2, 3, 4]  # a user action runs after every step it is due
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["4"]
    assert not os.path.exists(os.path.join(workdir, "results.json"))
