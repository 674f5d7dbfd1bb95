"""Time-intensity curves (TIC) of CEUS clips: linearisation, bolus fits, perfusion parameters.

Pure library, usable without video::

    from ceuspipe.tic import TicAccumulator, analyse_curve, write_tic_outputs

    acc = TicAccumulator(dynamic_range_db=60)
    for index, time_s, gray_panel, mask in frames:          # (H, W) uint8, (H, W) 0/1
        acc.add(index, time_s, gray_panel, mask)
    result = acc.result(model="lognormal")                  # never raises for a bad curve
    write_tic_outputs(result, out_dir, source=clip_path)    # tic.csv, tic.json, tic.png

Modules: :mod:`.linearize` (grey -> linear power), :mod:`.models` (the model registry:
lognormal, gamma variate), :mod:`.fit` (bounded multi-start, noise-weighted, robust
fit, QOF),
:mod:`.parameters` (PE, TTP, RT, mTT, WiR, WoR, AUCs, ... with extrapolation
flags), :mod:`.flags` (flash, destruction, jumps, empty masks), :mod:`.analyse`
(:func:`analyse_curve`, :class:`TicResult`), :mod:`.accumulate`
(:class:`TicAccumulator`), :mod:`.io` (CSV/JSON), :mod:`.plot` (PNG),
:mod:`.simulate` (noisy curves of known parameters for tests and benchmarks).
"""

import importlib

# numpy-only modules, imported at once: ``linearize`` must name the function, not its module
from ceuspipe.tic.linearize import linearize, mean_gray, mean_linear_power
from ceuspipe.tic.models import MODELS, gamma_variate, lognormal

# Names are imported on first use (PEP 562), so that reading the model registry
# (``ceuspipe.tic.models.MODELS``, e.g. for the CLI's ``--tic-model`` choices) does not
# load scipy.
_EXPORTS = {
    "TicAccumulator": "accumulate", "TicResult": "analyse", "analyse_curve": "analyse",
    "FitResult": "fit", "fit_curve": "fit", "read_tic_csv": "io", "read_tic_json": "io",
    "write_tic_csv": "io", "write_tic_json": "io", "write_tic_outputs": "io", "linearize": "linearize",
    "mean_gray": "linearize", "mean_linear_power": "linearize", "MODELS": "models",
    "gamma_variate": "models", "lognormal": "models", "PARAMETER_UNITS": "parameters",
    "Parameter": "parameters", "perfusion_parameters": "parameters",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f"ceuspipe.tic.{_EXPORTS[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'ceuspipe.tic' has no attribute {name!r}")
