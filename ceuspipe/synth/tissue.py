"""Frozen tissue maps in tissue coordinates, warped by breathing every frame.

Maps are rendered once per exam on a canvas padded by ``pad`` pixels on every
side of the panel, so a shift of up to ``pad - 1`` pixels never shows a border.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ceuspipe.synth.anatomy import LesionShape
from ceuspipe.synth.speckle import SpeckleGenerator, log_compress


def smooth_field(rng: np.random.Generator, shape: tuple[int, int], sigma_px: float) -> np.ndarray:
    """Smooth random ``(h, w) float32`` field, zero mean and unit standard deviation."""
    f = rng.standard_normal(shape, dtype=np.float32)
    f = cv2.GaussianBlur(f, (0, 0), max(0.5, sigma_px), borderType=cv2.BORDER_REFLECT_101)
    f -= f.mean()
    sd = float(f.std())
    return f / sd if sd > 0 else f


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return (0.5 * (1.0 + np.tanh(0.5 * z))).astype(np.float32)


@dataclass
class TissueMaps:
    """Per-exam maps on the padded canvas ``(size + 2*pad)^2``.

    ``bmode_grey``: float32 grey levels 0..255 of the B-mode image (frozen speckle).
    ``ceus_maps``: float32 ``(h, w, 2)``: channel 0 the lesion-ROI weight (mean 1
    over the ROI at rest), channel 1 the parenchyma weight (0 inside the ROI).
    """

    pad: int
    bmode_grey: np.ndarray
    ceus_maps: np.ndarray


def territory_weight(xs: np.ndarray, ys: np.ndarray, territory: dict) -> np.ndarray:
    """Perfused territory around the lesion: 1 within ``inner_radius_px`` of
    (``center_x``, ``center_y``), falling smoothly (smoothstep) to exactly 0 at the
    irregular outer boundary ``radius_px * (1 + sum amplitude * cos(k theta + phase))``
    (``harmonics``) and beyond; float32, broadcast over ``xs``, ``ys`` (panel px at rest)."""
    ox, oy = xs - territory["center_x"], ys - territory["center_y"]
    rho, theta = np.hypot(ox, oy), np.arctan2(oy, ox)
    r0 = float(territory["inner_radius_px"])
    r1 = float(territory["radius_px"]) * (1.0 + sum(h["amplitude"] * np.cos(h["k"] * theta + h["phase"])
                                                  for h in territory.get("harmonics", [])))
    u = np.clip((rho - r0) / np.maximum(r1 - r0, 1e-6), 0.0, 1.0)
    return (1.0 - u * u * (3.0 - 2.0 * u)).astype(np.float32)


def render_tissue(rng: np.random.Generator, shape_: LesionShape, panel_size: int, pad: int,
                  dynamic_range_db: float, bmode_params: dict, territory: dict | None = None) -> TissueMaps:
    """Render the B-mode image and the CEUS weight maps for one exam.

    ``bmode_params``: ``background_db`` (mean tissue power, dB re full scale),
    ``lesion_contrast_db`` (negative: hypo-echoic), ``psf_sigma_px`` (lateral, axial).
    ``territory``: when given, the parenchyma weight is restricted to it
    (:func:`territory_weight`): contrast reaches only the tissue around the lesion.
    """
    n = panel_size + 2 * pad
    scale = panel_size / 360.0
    ys = np.arange(n, dtype=np.float64)[:, None] - pad
    xs = np.arange(n, dtype=np.float64)[None, :] - pad
    rho, theta = shape_.polar(xs, ys)
    rb = shape_.radius_at(theta)
    r_roi = shape_.roi_radius_at(theta)

    # --- B-mode: mean power in dB, then frozen speckle ---------------------------
    depth = (ys + pad) / n
    db = (bmode_params["background_db"] + 2.5 * (0.5 - depth) + 1.5 * smooth_field(rng, (n, n), 18 * scale)
          ).astype(np.float32)
    # a couple of anechoic vessels away from the lesion
    vessels = np.zeros((n, n), np.float32)
    for _ in range(int(rng.integers(1, 4))):
        c = (int(rng.uniform(0, n)), int(rng.uniform(0, n)))
        axes = (int(rng.uniform(12, 40) * scale) + 1, int(rng.uniform(4, 9) * scale) + 1)
        cv2.ellipse(vessels, c, axes, float(rng.uniform(0, 180)), 0, 360, 1.0, -1)
    vessels = cv2.GaussianBlur(vessels, (0, 0), 1.0 + scale)
    vessels *= (rho > 1.4 * r_roi).astype(np.float32)
    db -= 14.0 * vessels
    lesion_w = _sigmoid((rb - rho) / shape_.edge_px)
    db += np.float32(bmode_params["lesion_contrast_db"]) * lesion_w
    # inner heterogeneity of the lesion
    db += 2.0 * lesion_w * smooth_field(rng, (n, n), 6 * scale)
    sx, sy = bmode_params["psf_sigma_px"]
    speckle = SpeckleGenerator(sx, sy).draw(rng, (n, n))
    power = np.power(np.float32(10.0), db / np.float32(10.0)) * speckle
    bmode_grey = log_compress(power, dynamic_range_db, rounded=False)

    # --- CEUS weights --------------------------------------------------------------
    roi_w = _sigmoid((r_roi - rho) / shape_.roi_edge_px)
    # enhancing rim between B-mode boundary and ROI boundary, heterogeneous core
    rim = _sigmoid((rho - rb) / max(shape_.edge_px, 1.0))
    texture = (0.9 + 0.45 * rim) * (1.0 + 0.15 * smooth_field(rng, (n, n), 5 * scale))
    texture = np.maximum(texture, 0.2).astype(np.float32)
    lesion_map = roi_w * texture
    hard = rho <= r_roi
    lesion_map /= np.float32(lesion_map[hard].mean())
    vasc = 1.0 + 0.18 * smooth_field(rng, (n, n), 14 * scale) + 0.8 * vessels
    vasc *= (1.0 - 0.25 * depth).astype(np.float32)
    par_map = ((1.0 - roi_w) * np.maximum(vasc, 0.2)).astype(np.float32)
    if territory is not None:
        par_map *= territory_weight(xs, ys, territory)
    ceus_maps = np.dstack([lesion_map, par_map]).astype(np.float32)
    return TissueMaps(pad=pad, bmode_grey=bmode_grey, ceus_maps=ceus_maps)


def warp(image: np.ndarray, pad: int, size: int | tuple[int, int], dx: float, dy: float) -> np.ndarray:
    """Panel view ``(h, w[, c])`` of a padded tissue map shifted by ``(dx, dy)`` px;
    ``size`` is ``(h, w)``, or one int for a square ``(size, size)`` (a panel of ``h``
    rows shows the top ``h`` rows of the square).

    Output pixel ``(x, y)`` samples the map at ``(x + pad - dx, y + pad - dy)`` (bilinear).
    """
    h, w = (size, size) if np.isscalar(size) else size
    m = np.array([[1.0, 0.0, pad - dx], [0.0, 1.0, pad - dy]], dtype=np.float64)
    return cv2.warpAffine(image, m, (int(w), int(h)), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REFLECT_101)
