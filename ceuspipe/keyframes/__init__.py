"""Key frames: 1 fps samples of each exam, scored, the top k kept (the paper's step 2).

- :mod:`~ceuspipe.keyframes.config`: :class:`KeyframeConfig`, the options;
- :mod:`~ceuspipe.keyframes.scorers`: how a sample is scored; a new scorer is one
  function registered by name (:func:`register_scorer`, or an entry point);
- :mod:`~ceuspipe.keyframes.select`: top-k selection, on arrays and streaming;
- :mod:`~ceuspipe.keyframes.run`: the exam driver and the output folder.

Sampling by presentation time lives with the video readers (:mod:`ceuspipe.video.sampling`).
"""

from ceuspipe.keyframes.config import KeyframeConfig
from ceuspipe.keyframes.run import extract_exam, run_keyframes, write_manifest
from ceuspipe.keyframes.scorers import DEFAULT_SCORER, get_scorer, register_scorer, scorer_names
from ceuspipe.keyframes.select import TopK, select_top_k

__all__ = ["DEFAULT_SCORER", "KeyframeConfig", "TopK", "extract_exam", "get_scorer", "register_scorer",
           "run_keyframes", "scorer_names", "select_top_k", "write_manifest"]
