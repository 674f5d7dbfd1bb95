"""The PNG writer of the key-frame exports is lossless, read back by two decoders, with
either deflate implementation."""

from __future__ import annotations

import io
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image

from ceuspipe import png


def shapes():
    return [(1, 1, 3), (1, 7, 3), (5, 1, 3), (45, 80, 3), (31, 17), (1, 1), (450, 800, 3)]


def images(rng):
    for shape in shapes():
        yield rng.integers(0, 256, shape, dtype=np.uint8)  # noise: every byte difference occurs
    smooth = np.zeros((60, 90, 3), np.uint8)
    smooth[..., 0] = np.arange(90, dtype=np.uint8)[None, :] * 3
    smooth[10:40, 20:50] = 255
    yield smooth
    yield np.zeros((20, 30), np.uint8)


@pytest.fixture(params=["default", "zlib"])
def backend(request, monkeypatch):
    if request.param == "zlib":
        monkeypatch.setattr(png, "_deflater", zlib)
        monkeypatch.setattr(png, "_LEVEL", 1)
    return request.param


def test_round_trip_is_exact(backend, tmp_path):
    rng = np.random.default_rng(3)
    for i, img in enumerate(images(rng)):
        path = tmp_path / f"{i}.png"
        png.write_png(path, img)
        back_cv = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if img.ndim == 3:
            back_cv = back_cv[..., ::-1]  # OpenCV reads BGR
        assert back_cv.shape == img.shape and np.array_equal(back_cv, img), img.shape
        back_pil = np.asarray(Image.open(io.BytesIO(path.read_bytes())))
        assert np.array_equal(back_pil, img), img.shape


def test_views_and_crops_are_encoded_as_shown(backend):
    rng = np.random.default_rng(4)
    frame = rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)
    for view in (frame[5:30, 7:50], frame[::-1], frame[:, ::2], frame[..., 0]):
        back = np.asarray(Image.open(io.BytesIO(png.encode_png(view))))
        assert np.array_equal(back, view)


def test_sub_filter_rows():
    img = np.array([[[10, 20, 30], [5, 25, 40]]], np.uint8)
    assert png.sub_filtered(img).tolist() == [[1, 10, 20, 30, 251, 5, 10]]


@pytest.mark.parametrize("bad", [np.zeros((4, 4, 4), np.uint8), np.zeros((4, 4, 3), np.uint16),
                                 np.zeros((0, 4, 3), np.uint8), np.zeros(5, np.uint8)])
def test_rejects_what_it_cannot_write(bad):
    with pytest.raises(ValueError):
        png.encode_png(bad)
