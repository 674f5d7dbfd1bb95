"""Synthetic CEUS phantom: dual-panel exam clips with known masks and bolus curves.

Public entry points: :func:`ceuspipe.synth.generate.generate_phantom`,
:func:`ceuspipe.synth.generate.generate_exam`, :class:`ceuspipe.synth.config.PhantomConfig`,
and the ground-truth readers :func:`ceuspipe.synth.truth.load_truth` and
:func:`ceuspipe.synth.truth.truth_masks_at`.
"""

from ceuspipe.synth.config import PhantomConfig

__all__ = ["PhantomConfig", "generate_exam", "generate_phantom", "load_truth", "truth_masks_at"]


def __getattr__(name: str):
    # Lazy: keep ``import ceuspipe.synth`` light (PyAV is imported only when generating).
    if name in ("generate_exam", "generate_phantom"):
        from ceuspipe.synth import generate

        return getattr(generate, name)
    if name in ("load_truth", "truth_masks_at"):
        from ceuspipe.synth import truth

        return getattr(truth, name)
    raise AttributeError(name)
