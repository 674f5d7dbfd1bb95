"""Time-intensity curves (TIC) of CEUS clips: linearisation, bolus fits, perfusion parameters.

Pure library, usable without video::

    from ceuspipe.tic import TicAccumulator, analyse_curve, write_tic_outputs

    acc = TicAccumulator(dynamic_range_db=60)
    for index, time_s, gray_panel, mask in frames:          # (H, W) uint8, (H, W) 0/1
        acc.add(index, time_s, gray_panel, mask)
    result = acc.result(model="lognormal")                  # never raises for a bad curve
    write_tic_outputs(result, out_dir, source=clip_path)    # tic.csv, tic.json, tic.png

Modules: :mod:`.linearize` (grey -> linear power), :mod:`.models` (lognormal,
gamma variate), :mod:`.fit` (bounded multi-start least squares, QOF),
:mod:`.parameters` (PE, TTP, RT, mTT, WiR, WoR, AUCs, ... with extrapolation
flags), :mod:`.flags` (flash, destruction, jumps, empty masks), :mod:`.analyse`
(:func:`analyse_curve`, :class:`TicResult`), :mod:`.accumulate`
(:class:`TicAccumulator`), :mod:`.io` (CSV/JSON), :mod:`.plot` (PNG).
"""

from ceuspipe.tic.accumulate import TicAccumulator
from ceuspipe.tic.analyse import TicResult, analyse_curve
from ceuspipe.tic.fit import FitResult, fit_curve
from ceuspipe.tic.io import read_tic_csv, read_tic_json, write_tic_csv, write_tic_json, write_tic_outputs
from ceuspipe.tic.linearize import linearize, mean_gray, mean_linear_power
from ceuspipe.tic.models import MODELS, gamma_variate, lognormal
from ceuspipe.tic.parameters import PARAMETER_UNITS, Parameter, perfusion_parameters

__all__ = [
    "MODELS", "PARAMETER_UNITS", "FitResult", "Parameter", "TicAccumulator", "TicResult", "analyse_curve",
    "fit_curve", "gamma_variate", "linearize", "lognormal", "mean_gray", "mean_linear_power",
    "perfusion_parameters", "read_tic_csv", "read_tic_json", "write_tic_csv", "write_tic_json",
    "write_tic_outputs",
]
