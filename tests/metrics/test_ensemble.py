"""The ensemble evaluator against a hand computation on 3 members, 4 examples and 3 classes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from earlyjax.metrics import (
    disagreement,
    ensemble_metrics,
    ensemble_probs,
    ensemble_size_curve,
)

# Members' softmax outputs [K=3, N=4, C=3]. Argmax predictions: member 0 [0, 0, 0, 2],
# member 1 [0, 0, 1, 0], member 2 [1, 1, 1, 2].
PROBS = np.array(
    [
        [[0.80, 0.10, 0.10], [0.90, 0.05, 0.05], [0.45, 0.35, 0.20], [0.20, 0.20, 0.60]],
        [[0.60, 0.30, 0.10], [0.54, 0.31, 0.15], [0.05, 0.75, 0.20], [0.40, 0.30, 0.30]],
        [[0.20, 0.50, 0.30], [0.10, 0.80, 0.10], [0.10, 0.80, 0.10], [0.10, 0.10, 0.80]],
    ],
    np.float32,
)
LABELS = np.array([0, 1, 1, 2])
# Members 0 and 1 average to [.70 .20 .10], [.72 .18 .10], [.25 .55 .20], [.30 .25 .45]:
# predictions [0, 0, 1, 2], correct [1, 0, 1, 1], confidences .70, .72, .55, .45.
PAIR = {
    "accuracy": 75.0,
    "mean_class_accuracy": 100 * (1 + 0.5 + 1) / 3,  # class 1: one of two right
    "nll": -np.mean(np.log([0.70, 0.18, 0.55, 0.45])),
    # 15 bins of width 1/15: .70 and .72 share bin (10/15, 11/15], .55 is in (8/15, 9/15],
    # .45 in (6/15, 7/15]. A bin counts as a whole: |(1 - .70) + (0 - .72)| = .42, where a
    # per-example sum would give .30 + .72 = 1.02 (ECE .505 instead of .355).
    "ece": (0.42 + 0.45 + 0.55) / 4,
    "disagreement": 0.5,  # members 0 and 1 differ on examples 2 and 3
}


def assert_metrics(actual, expected):
    assert set(actual) == set(expected)
    for name, value in expected.items():
        np.testing.assert_allclose(float(actual[name]), value, rtol=1e-5, atol=1e-6, err_msg=name)


def test_two_member_ensemble_equals_the_hand_computation():
    assert_metrics(ensemble_metrics(PROBS[:2], LABELS, outputs="probs"), PAIR)


def test_logits_give_the_metrics_of_their_softmax():
    shift = np.arange(24, dtype=np.float32).reshape(2, 4, 3)[..., :1]  # softmax ignores a shift
    assert_metrics(ensemble_metrics(np.log(PROBS[:2]) + shift, LABELS), PAIR)


def test_ensemble_probs_average_the_members_softmax():
    np.testing.assert_allclose(ensemble_probs(np.log(PROBS)), PROBS.mean(0), rtol=1e-6)
    np.testing.assert_allclose(ensemble_probs(PROBS, outputs="probs"), PROBS.mean(0), rtol=1e-6)


def test_ece_with_one_bin_is_the_gap_between_accuracy_and_mean_confidence():
    ece = ensemble_metrics(PROBS[:2], LABELS, outputs="probs", n_bins=1)["ece"]
    np.testing.assert_allclose(float(ece), abs(0.75 - np.mean([0.70, 0.72, 0.55, 0.45])), 1e-6)


def test_disagreement_is_the_mean_over_member_pairs():
    # pairs (0,1): 2/4 differ, (0,2): 3/4, (1,2): 3/4
    np.testing.assert_allclose(float(disagreement(PROBS)), (0.5 + 0.75 + 0.75) / 3, rtol=1e-6)
    assert float(disagreement(PROBS[:1])) == 0.0  # K = 1
    assert float(disagreement(np.stack([PROBS[0]] * 3))) == 0.0  # identical members


def test_size_curve_is_the_metrics_of_the_first_k_members():
    curve = ensemble_size_curve(PROBS, LABELS, outputs="probs")
    assert all(np.shape(v) == (3,) for v in curve.values())
    single = ensemble_metrics(PROBS[:1], LABELS, outputs="probs")
    everyone = ensemble_metrics(PROBS, LABELS, outputs="probs")
    for k, expected in enumerate([single, PAIR, everyone]):
        assert_metrics({name: v[k] for name, v in curve.items()}, expected)
    # member 0 alone: predictions [0, 0, 0, 2], right on examples 0 and 3
    assert float(single["disagreement"]) == 0.0 and float(single["accuracy"]) == 50.0
    np.testing.assert_allclose(float(single["nll"]), -np.mean(np.log([0.8, 0.05, 0.35, 0.6])), 1e-6)


def test_metrics_run_under_jit():
    jitted = jax.jit(lambda p, y: ensemble_metrics(p, y, outputs="probs"))
    assert_metrics(jitted(jnp.asarray(PROBS[:2]), jnp.asarray(LABELS)), PAIR)


@pytest.mark.parametrize(
    ("outputs", "labels", "kwargs", "names"),
    [
        (PROBS[0], LABELS, {}, ["[K, N, C]", "(4, 3)", "outputs[None]"]),
        (PROBS, LABELS[:3], {}, ["labels", "[4]", "(3,)", "(3, 4, 3)"]),
        (PROBS, LABELS.astype(np.float32), {}, ["labels", "float32"]),
        (PROBS, np.array([0, 1, 3, 2]), {}, ["[0, 3)", "[0, 3]"]),
        (np.log(PROBS), LABELS, {"outputs": "probs"}, ["outputs='logits'"]),
        (PROBS, LABELS, {"outputs": "softmax"}, ["outputs", "'softmax'"]),
    ],
    ids=["one-model", "labels-length", "labels-float", "labels-range", "logits-as-probs", "kind"],
)
@pytest.mark.parametrize("fn", [ensemble_metrics, ensemble_size_curve])
def test_bad_arguments_are_one_line_errors_naming_the_shapes(fn, outputs, labels, kwargs, names):
    with pytest.raises(ValueError) as info:
        fn(outputs, labels, **kwargs)
    message = str(info.value)
    assert "\n" not in message, message
    for name in names:
        assert name in message, message
