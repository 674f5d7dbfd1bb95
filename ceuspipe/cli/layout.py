"""``ceuspipe layout CLIP [-o layout.json] [--preview preview.png]``: one clip's panel layout."""

from __future__ import annotations

import click

from ceuspipe.video.panels import CEUS_SIDES


@click.command("layout")
@click.argument("clip", type=click.Path(exists=True, dir_okay=False, path_type=str))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=str), default=None,
              help="Layout JSON to write (use it as --layout, or as layout_file in pipelines); "
                   "without it the layout is only printed.")
@click.option("--preview", type=click.Path(dir_okay=False, path_type=str), default=None,
              help="Preview PNG: boxes, labels, cues; burned-in text outside the panels blurred.")
@click.option("--ceus-side", type=click.Choice(CEUS_SIDES),
              help="Force which panel is CEUS (top/bottom for stacked panels).")
@click.option("--span-s", type=click.FloatRange(min=1), default=60.0, show_default=True,
              help="Seconds from the clip start sampled at 1 fps.")
def layout_cmd(clip, output, preview, ceus_side, span_s):
    """Find the CEUS and B-mode panels of CLIP (video or DICOM cine) and print them;
    with -o, write them as a layout file.

    Samples 1 fps over the first minute; DICOM ultrasound regions are used when
    present and consistent with the pixels. Make one layout file per scanner and
    give it to the other commands with --layout when detection is unsure.
    """
    from ceuspipe.video.layout_preview import geometry_line, write_layout_files

    layout = write_layout_files(clip, output, preview, ceus_side=ceus_side, span_s=span_s)
    conf = "n/a" if layout.confidence is None else f"{layout.confidence:.2f}"
    wrote = [p for p in (output, preview) if p]
    click.echo(f"CEUS {layout.ceus_side} {layout.ceus.as_list()}, US {layout.us.as_list()} "
               f"({layout.origin}, confidence {conf}); {geometry_line(layout)}"
               + (f"; wrote {' and '.join(wrote)}" if wrote else ""))


def register(group: click.Group) -> None:
    group.add_command(layout_cmd)
