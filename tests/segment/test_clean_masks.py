"""Mask post-processing (--clean-masks) and the reference-region options of SegmentConfig."""

import numpy as np
import pytest

from ceuspipe.configs import ConfigError
from ceuspipe.segment.cleanup import clean_mask
from ceuspipe.segment.run import SegmentConfig


def test_clean_mask_keeps_largest_component_and_fills_holes():
    m = np.zeros((40, 40), np.uint8)
    m[5:25, 5:25] = 1
    m[10:15, 10:15] = 0          # hole
    m[30:33, 30:33] = 1          # speck
    c = clean_mask(m)
    assert c.dtype == np.uint8 and c[12, 12] == 1 and c[31, 31] == 0 and c.sum() == 400
    assert not clean_mask(np.zeros((5, 5), np.uint8)).any()


def test_reference_options_validated():
    assert SegmentConfig().reference is True and SegmentConfig().clean_masks is False
    with pytest.raises(ConfigError, match="reference_mask"):
        SegmentConfig(reference=False, reference_mask="ref.png")
    with pytest.raises(ConfigError, match="reference_width_px"):
        SegmentConfig(reference_width_px=0)
    with pytest.raises(ConfigError, match="reference_distance_mm"):
        SegmentConfig(reference_distance_mm=-1.0)
    with pytest.raises(ConfigError, match="clean_masks"):
        SegmentConfig(clean_masks="yes")
