"""Options of ``ceuspipe keyframes`` (and of a pipeline's ``keyframes`` stage)."""

from __future__ import annotations

from dataclasses import dataclass

from ceuspipe.keyframes.scorers import DEFAULT_SCORER, get_scorer
from ceuspipe.video.layout import LayoutOptions


@dataclass(frozen=True)
class KeyframeConfig(LayoutOptions):
    """Options of ``ceuspipe keyframes``: ``sample_fps`` (samples per second of
    presentation time), ``k`` (key frames kept per exam), ``scorer`` (a name from
    :mod:`ceuspipe.keyframes.scorers`, the paper's grey change by default); the panel-layout ones
    come from :class:`~ceuspipe.video.layout.LayoutOptions`. ``pseudonymize``: a key
    file (:mod:`ceuspipe.pseudonym`, outside the output folder): patient and exam ids
    become pseudonyms and no source path or folder name is written. Checked on creation."""

    sample_fps: float = 1.0
    k: int = 40
    scorer: str = DEFAULT_SCORER
    overwrite: bool = False
    pseudonymize: str | None = None

    def __post_init__(self) -> None:
        from ceuspipe import configs

        super().__post_init__()
        configs.number("sample_fps", self.sample_fps, above=0, unit="samples per second")
        configs.number("k", self.k, minimum=1, integer=True)
        try:
            get_scorer(self.scorer)
        except ValueError as err:
            raise configs.ConfigError("scorer", str(err)) from None
        configs.path_or_none("pseudonymize", self.pseudonymize)
