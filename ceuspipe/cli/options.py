"""Options shared by several commands (panel layout overrides), and option defaults read
from the config dataclasses, so that a default lives in one place."""

from __future__ import annotations

import click

from ceuspipe.video.panels import CEUS_SIDES, Box


def default_of(config_cls, name: str):
    """The default of field ``name`` of the dataclass ``config_cls`` (a stage's config),
    for a click option's ``default=``; ``KeyError`` for a field without one."""
    import dataclasses

    for f in dataclasses.fields(config_cls):
        if f.name == name:
            if f.default is not dataclasses.MISSING:
                return f.default
            if f.default_factory is not dataclasses.MISSING:
                return f.default_factory()
            break
    raise KeyError(f"{config_cls.__name__}.{name} has no default")


def _parse_box(ctx, param, value):
    if value is None:
        return None
    try:
        x, y, w, h = (int(v) for v in value.split(","))
        return Box(x, y, w, h)
    except ValueError:
        raise click.BadParameter(f"expected x,y,w,h in pixels, got {value!r}") from None


def layout_options(fn):
    """Add ``--layout``, ``--ceus-box``, ``--us-box``, ``--ceus-side`` to a command."""
    fn = click.option("--ceus-side", type=click.Choice(CEUS_SIDES),
                      help="Force which detected panel is CEUS (top/bottom for stacked panels).")(fn)
    fn = click.option("--us-box", callback=_parse_box, metavar="X,Y,W,H",
                      help="B-mode panel box in full-frame pixels (with --ceus-box).")(fn)
    fn = click.option("--ceus-box", callback=_parse_box, metavar="X,Y,W,H",
                      help="CEUS panel box in full-frame pixels (with --us-box).")(fn)
    fn = click.option("--layout", "layout_file", type=click.Path(dir_okay=False),
                      help="Layout JSON file (boxes of both panels) instead of detection.")(fn)
    return fn


def layout_overrides(kwargs: dict) -> dict:
    """Pick the layout keyword arguments added by :func:`layout_options`."""
    keys = ("layout_file", "ceus_box", "us_box", "ceus_side")
    if (kwargs.get("ceus_box") is None) != (kwargs.get("us_box") is None):
        raise click.UsageError("--ceus-box and --us-box go together")
    if kwargs.get("layout_file"):
        from ceuspipe.video.panels import load_layout

        load_layout(kwargs["layout_file"])  # a bad layout file is one error, not one per exam
    return {k: kwargs.get(k) for k in keys}
