"""A default lives in one place: every CLI option named like a field of the command's
config dataclass shows that field's default."""

from __future__ import annotations

import dataclasses

import click
import pytest

from ceuspipe.cli import main
from ceuspipe.keyframes import KeyframeConfig
from ceuspipe.segment.config import SegmentConfig
from ceuspipe.synth.config import PhantomConfig
from ceuspipe.dataset.build import BuildConfig
from ceuspipe.prelabel import PrelabelConfig
from ceuspipe.train.config import TrainConfig


@pytest.mark.parametrize("command,config", [("segment-video", SegmentConfig), ("train", TrainConfig),
                                            ("keyframes", KeyframeConfig), ("synth", PhantomConfig),
                                            ("build-dataset", BuildConfig), ("prelabel", PrelabelConfig)])
def test_cli_defaults_are_the_config_defaults(command, config):
    cmd = main.commands[command]
    fields = {f.name: f for f in dataclasses.fields(config)}
    compared = 0
    for param in cmd.params:
        if not isinstance(param, click.Option) or param.name not in fields:
            continue
        f = fields[param.name]
        want = f.default if f.default is not dataclasses.MISSING else None
        default = param.default
        if type(default).__name__ == "Sentinel":  # click 8.2+: no default given
            default = False if param.is_flag else None
        if default is None and want is not None:
            continue  # None on the command line means "the config's default" (e.g. --scorer)
        assert default == want, (command, param.name, default, want)
        compared += 1
    assert compared >= {"segment-video": 12, "train": 11, "keyframes": 2, "synth": 11, "build-dataset": 8,
                         "prelabel": 9}[command]


@pytest.mark.parametrize("command", ["keyframes", "segment-video", "layout", "export"])
def test_every_ceus_side_choice_is_offered(command):
    from ceuspipe.video.panels import CEUS_SIDES

    option = next(p for p in main.commands[command].params if p.name == "ceus_side")
    assert tuple(option.type.choices) == CEUS_SIDES
