"""Training, evaluation and segment-video feed the model identically prepared pixels."""

import cv2
import numpy as np

from ceuspipe.dataset.torch_dataset import to_input
from ceuspipe.preprocess import panel_to_input
from ceuspipe.segment.predictor import prepare_panel


def test_training_and_segmentation_inputs_are_identical():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (97, 131, 3), dtype=np.uint8)
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)  # what build-dataset stores
    for size in (64, 128, 160):
        seg = prepare_panel(rgb, size)
        assert seg.shape == (size, size) and seg.dtype == np.float32
        assert np.array_equal(to_input(gray, size), seg)


def test_shrinking_averages_speckle_instead_of_aliasing():
    rng = np.random.default_rng(1)
    speckle = rng.integers(0, 256, (360, 360), dtype=np.uint8)
    small = panel_to_input(speckle, 128)
    # area averaging over ~2.8x2.8 pixels cuts the variance; point sampling would not
    assert small.std() < 0.6 * (speckle / 255.0).std()
    assert abs(small.mean() - speckle.mean() / 255) < 0.01
