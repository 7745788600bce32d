"""Early-period recording inside the training loop: when, over what, and resumable."""

import os

import pytest
from helpers import metric_records

from earlyjax.periodic import StopAt
from earlyjax.train import train_and_evaluate


def test_records_follow_the_schedule_and_survive_resume(recording_config, tiny_dataset, tmp_path):
    full, split = str(tmp_path / "full"), str(tmp_path / "split")
    results = train_and_evaluate(recording_config, full, dataset=tiny_dataset)
    got = metric_records(full, "record")
    assert [r["step"] for r in got] == [0, 2, 4]
    # k=2, L=5: layer4 is released at step 1, layer3 at step 3.
    assert [r["trainable"] for r in got] == [
        ["head"],
        ["layer4", "head"],
        ["layer3", "layer4", "head"],
    ]
    assert all(r["fisher"] > 0 for r in got)
    assert results["record_seconds_this_session"] > 0

    train_and_evaluate(recording_config, split, dataset=tiny_dataset, extra_actions=[StopAt(3)])
    train_and_evaluate(recording_config, split, dataset=tiny_dataset)
    assert metric_records(split, "record") == got  # same values, no duplicate or missing line

    from experiments.analysis import figure2

    # One of the two: they are the same setting and seed, which Figure 2 (a mean over seeds, as
    # the tables) refuses to count twice.
    paths = figure2(full, str(tmp_path / "figs"))
    assert [os.path.basename(p) for p in paths] == ["fig2.png", "fig2.pdf"]


@pytest.mark.parametrize("bn", [pytest.param("eval", marks=pytest.mark.slow), "batch"])
def test_recorder_equals_direct_metric_calls(recording_config, tiny_dataset, bn, monkeypatch):
    """The recorder computes exactly the library's metrics, over the trainable parameters of
    that step, with the BatchNorm statistics `record.bn` names."""
    import dataclasses

    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    from earlyjax import freezing, metrics
    from earlyjax.data.pipeline import metric_set, normalize
    from earlyjax.recording import KEYED, RECORD_STREAM, make_recorder
    from earlyjax.tasks.image_classification import metric_set_statistics
    from earlyjax.train import make_train_step, setup

    c = recording_config
    c.record.bn = bn
    # S_worst (two more compilations of Auto-PGD, three with the in-jit check) in the slow run;
    # the default run's tests/tasks/test_nli.py records it through the trainer.
    with_worst = bn == "eval"
    c.record.metrics = ("fisher", "avg_sharpness", "worst_sharpness")[: 3 if with_worst else 2]
    c.record.worst_iters = 3
    run_setup, state = setup(c, tiny_dataset)
    task, plan = run_setup.task, run_setup.plan
    step = make_train_step(run_setup, state)
    batch = {k: jnp.asarray(v[:32]) for k, v in tiny_dataset.train._asdict().items()}
    batch = {"image": batch["images"], "label": batch["labels"]}
    for _ in range(3):  # k=2: layer4 is trainable from step 1, layer3 from step 3
        state, _ = step(state, batch)
    batches = metric_set(tiny_dataset.train, c.record.set_size, c.record.batch_size)
    got = make_recorder(task, plan.record, plan.gradual_unfreezing)(state)
    # On a CPU S_worst is computed after the compiled recorder (Auto-PGD driven from Python);
    # computed inside it (as on other backends) it is the same.
    on_host = metrics.apgd_runs_on_host()
    assert on_host == (jax.default_backend() == "cpu")
    if with_worst:
        with monkeypatch.context() as patch:
            patch.setattr(metrics, "apgd_runs_on_host", lambda *args: not on_host)
            worst_only = dataclasses.replace(plan.record, metrics=("worst_sharpness",))
            flipped = make_recorder(task, worst_only, plan.gradual_unfreezing)(state)
        # S_worst is a difference of two losses near 2.3 that float32 resolves to ~2.7e-7:
        # the two programs may round them apart by a few of those.
        np.testing.assert_allclose(
            flipped["worst_sharpness"], got["worst_sharpness"], rtol=1e-5, atol=1e-6
        )

    model = task.model
    images = normalize(jnp.asarray(batches["image"]), task.mean, task.std)
    flat_x = images.reshape(-1, *images.shape[2:])
    stats = state.model_state
    if bn == "batch":
        stats = metric_set_statistics(model, state.params, state.model_state, flat_x)
        train_logits, _ = model.apply(
            {"params": state.params, "batch_stats": state.model_state},
            flat_x,
            train=True,
            mutable=["batch_stats"],
        )
        eval_logits = model.apply({"params": state.params, "batch_stats": stats}, flat_x)
        np.testing.assert_allclose(eval_logits, train_logits, rtol=1e-4, atol=1e-4)

    def logits_fn(p, x):
        return model.apply({"params": p, "batch_stats": stats}, x, train=False)

    def loss_fn(p, b):
        return optax.softmax_cross_entropy_with_integer_labels(
            logits_fn(p, b["image"]), b["label"]
        ).mean()

    release = freezing.get_release_steps(state.opt_state)
    groups = freezing.group_labels(state.params, task.blocks)
    trainable = freezing.trainable_mask(groups, release, state.step)
    assert sorted(k for k, v in trainable.items() if all(bool(x) for x in jax.tree.leaves(v))) == [
        "head",
        "layer3",
        "layer4",
    ]
    rng = jax.random.wrap_key_data(state.rng)
    key = jax.random.fold_in(jax.random.fold_in(rng, RECORD_STREAM), state.step)
    keys = dict(zip(KEYED, jax.random.split(key, len(KEYED)), strict=True))
    want_fisher = metrics.fisher_trace(logits_fn, state.params, flat_x, keys["fisher"],
                                       trainable=trainable)  # fmt: skip
    want_avg = metrics.average_sharpness(
        loss_fn,
        state.params,
        {"image": images, "label": jnp.asarray(batches["label"])},
        keys["avg_sharpness"],
        rho=c.record.rho,
        n_samples=c.record.avg_samples,
        trainable=trainable,
    )
    np.testing.assert_allclose(got["fisher"], float(want_fisher), rtol=1e-4)
    # S_avg is a mean of differences of two losses near 2.3: float32 resolves each loss to about
    # eps * L, and the recorder (one larger compiled program) may round them differently from
    # the direct call (seen: 1.2e-7 apart on one core). The tolerance is that resolution, far
    # below what a wrong key or mask changes (checked with another key).
    batch_metric = {"image": images, "label": jnp.asarray(batches["label"])}
    first = jax.tree.map(lambda v: v[0], batch_metric)
    atol = 4 * float(np.finfo(np.float32).eps) * float(loss_fn(state.params, first))
    np.testing.assert_allclose(got["avg_sharpness"], float(want_avg), rtol=1e-3, atol=atol)
    other_key = metrics.average_sharpness(
        loss_fn, state.params, batch_metric, keys["fisher"], rho=c.record.rho,
        n_samples=c.record.avg_samples, trainable=trainable,
    )  # fmt: skip
    assert abs(float(other_key) - float(want_avg)) > 3 * atol
    if not with_worst:
        return
    want_worst, _ = metrics.worst_sharpness(
        loss_fn, state.params, batch_metric, keys["worst_sharpness"], rho=c.record.rho,
        n_iters=c.record.worst_iters, trainable=trainable,
    )  # fmt: skip
    assert float(want_worst) > 0
    np.testing.assert_allclose(got["worst_sharpness"], float(want_worst), rtol=1e-4, atol=1e-6)
