"""Echo power, Rayleigh speckle and the scanner's log compression.

Power is linear and relative to full scale (``P = 1`` is grey 255). The display
maps it to grey levels with dynamic range ``DR`` dB::

    g = 255 * clip(1 + 10*log10(P) / DR, 0, 1)

which the pipeline inverts with ``I_lin = 10 ** ((g/255 - 1) * DR / 10)``.
"""

from __future__ import annotations

import cv2
import numpy as np


def _gaussian_energy(sigma_x: float, sigma_y: float, ksize_x: int, ksize_y: int) -> float:
    """Sum of squared weights of the separable Gaussian kernel cv2 uses."""
    kx = cv2.getGaussianKernel(ksize_x, sigma_x, cv2.CV_64F)
    ky = cv2.getGaussianKernel(ksize_y, sigma_y, cv2.CV_64F)
    return float((kx**2).sum() * (ky**2).sum())


def _ksize(sigma: float) -> int:
    return max(3, 2 * int(np.ceil(3.0 * sigma)) + 1)


class SpeckleGenerator:
    """Fully developed speckle: ``|G * PSF|^2`` of a complex white Gaussian field.

    The result has unit mean (exponential marginal distribution, i.e. Rayleigh
    amplitude) and is spatially correlated over about ``psf_sigma`` pixels.
    ``psf_sigma_x``/``psf_sigma_y`` are the Gaussian PSF widths in pixels
    (lateral, axial).
    """

    def __init__(self, psf_sigma_x: float, psf_sigma_y: float):
        self.sx, self.sy = float(psf_sigma_x), float(psf_sigma_y)
        self.kx, self.ky = _ksize(self.sx), _ksize(self.sy)
        # E|z|^2 for z = (n_re + i n_im) filtered, n ~ N(0, 1): 2 * sum(k^2).
        self._norm = np.float32(1.0 / (2.0 * _gaussian_energy(self.sx, self.sy, self.kx, self.ky)))

    def draw(self, rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
        """Return ``(h, w) float32`` speckle power with mean 1."""
        h, w = shape
        noise = rng.standard_normal((h, w, 2), dtype=np.float32)
        blurred = cv2.GaussianBlur(noise, (self.kx, self.ky), self.sx, sigmaY=self.sy,
                                   borderType=cv2.BORDER_REFLECT_101)
        power = cv2.magnitude(blurred[..., 0], blurred[..., 1])
        np.multiply(power, power, out=power)
        power *= self._norm
        return power


def log_compress(power: np.ndarray, dynamic_range_db: float, *, rounded: bool = True) -> np.ndarray:
    """Map linear power (full scale 1) to grey levels 0..255.

    ``power``: any shape, float, >= 0. Returns ``uint8`` when ``rounded`` else
    ``float32`` grey levels (for images that are warped before rounding).
    Its inverse is the project's own :func:`ceuspipe.tic.linearize.linearize`.
    """
    p = np.maximum(np.asarray(power, dtype=np.float32), np.float32(1e-30))
    g = cv2.log(p) if p.ndim == 2 else np.log(p)
    # 10*log10(P)/DR = ln(P) * 10 / (ln 10 * DR)
    scale = np.float32(255.0 * 10.0 / (np.log(10.0) * float(dynamic_range_db)))
    g = g * scale + np.float32(255.0)
    np.clip(g, 0.0, 255.0, out=g)
    if rounded:
        return np.rint(g).astype(np.uint8)
    return g
