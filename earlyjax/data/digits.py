"""The embedded default data: scikit-learn's bundled handwritten digits, MNIST-shaped.

1,797 real 8x8 digits (UCI optdigits test set, 16 grey levels) ship inside scikit-learn, so
this needs no download. They are upsampled to 28x28 (cubic spline, MNIST's size) and scaled to
0..255 uint8, then split once, stratified by class, into 1,347 training and 450 test images
with a fixed seed (the split does not depend on the run's seed). The OOD test set applies the
MNIST-C corruptions at five severities to the test split (`earlyjax.data.corruptions`).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from earlyjax.data.base import Split

DIGITS_SIZE = 28
DIGITS_TEST_FRACTION = 0.25
DIGITS_SPLIT_SEED = 0


def load_digits_splits(size: int = DIGITS_SIZE) -> tuple[Split, Split]:
    """Returns (train, test) as uint8 [N, size, size, 1] images and int32 labels."""
    digits = load_digits()
    images = digits.images.astype(np.float64) / 16.0  # [1797, 8, 8] in 0..1
    zoom = size / images.shape[1]
    upsampled = ndimage.zoom(images, (1, zoom, zoom), order=3)
    pixels = np.clip(np.rint(upsampled * 255.0), 0, 255).astype(np.uint8)[..., None]
    labels = digits.target.astype(np.int32)
    x_train, x_test, y_train, y_test = train_test_split(
        pixels,
        labels,
        test_size=DIGITS_TEST_FRACTION,
        stratify=labels,
        random_state=DIGITS_SPLIT_SEED,
    )
    return Split(x_train, y_train), Split(x_test, y_test)
