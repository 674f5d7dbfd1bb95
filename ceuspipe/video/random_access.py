"""Which compressed packets start a closed group of pictures, read from the bitstream.

A decoder fed from such a packet on needs nothing that came before it, so the
frames between the last wanted frame of a group and the next such packet can be
left out without changing any later frame. The container's key-frame flag is not
enough: an MP4 sync sample or a Matroska key frame can be an H.264 non-IDR I
frame (open GOP, recovery point), after which P frames may still refer to frames
before it. So the packet's own headers are read:

* H.264: every slice of the picture is an IDR slice (NAL type 5);
* HEVC: every slice is an IDR picture (NAL types 19, 20). In a stream without
  reordering also BLA and CRA pictures (16-21): only their leading pictures
  (displayed before them, decoded after) may refer further back, and there are
  none then;
* MPEG-4 Part 2, only in a stream without reordering: the VOP is intra coded
  (``vop_coding_type`` 0). With B-VOPs, the B-VOPs after an I-VOP refer to the
  VOP before it.

The caller says whether the stream reorders and checks, as it decodes, that it
does not where it said so.

Packets are in the container's own layout: length-prefixed NAL units (MP4,
Matroska; the prefix size comes from the ``avcC``/``hvcC`` extradata) or Annex B
start codes (MPEG-TS, raw streams).
"""

from __future__ import annotations

from typing import Callable, Iterator

#: Codecs whose clean starts this module can tell.
CODECS = frozenset({"h264", "hevc", "mpeg4"})

_H264_IDR = 5
_H264_VCL = range(1, 6)
_HEVC_IRAP = range(16, 22)
_HEVC_IDR = range(19, 21)
_HEVC_VCL = range(0, 32)
_MPEG4_VOP_START = b"\x00\x00\x01\xb6"


def clean_start_test(codec: str, extradata: bytes | None, *,
                     reordering: bool) -> Callable[[bytes], bool] | None:
    """``test(packet_bytes) -> bool`` for ``codec``: True when the packet starts a closed
    group (see the module text) in a stream with or without ``reordering`` (B-frames);
    ``None`` where this module cannot tell."""
    if codec == "mpeg4":
        return None if reordering else _mpeg4_intra
    if codec not in ("h264", "hevc"):
        return None
    length_size = _nal_length_size(codec, extradata or b"")
    if codec == "h264":
        def header_type(nal: bytes) -> int:
            return nal[0] & 0x1F
        vcl, clean = _H264_VCL, range(_H264_IDR, _H264_IDR + 1)
    else:
        def header_type(nal: bytes) -> int:
            return (nal[0] >> 1) & 0x3F
        vcl, clean = _HEVC_VCL, (_HEVC_IDR if reordering else _HEVC_IRAP)

    def test(data: bytes) -> bool:
        types = [header_type(nal) for nal in _nal_units(data, length_size) if nal]
        slices = [t for t in types if t in vcl]
        return bool(slices) and all(t in clean for t in slices)

    return test


def _nal_length_size(codec: str, extradata: bytes) -> int | None:
    """Bytes of each NAL unit's length prefix, or ``None`` for Annex B (start codes)."""
    if not extradata or extradata[:3] == b"\x00\x00\x01" or extradata[:4] == b"\x00\x00\x00\x01":
        return None
    if codec == "h264" and len(extradata) >= 5 and extradata[0] == 1:
        return (extradata[4] & 0x03) + 1
    if codec == "hevc" and len(extradata) >= 23 and extradata[0] == 1:
        return (extradata[21] & 0x03) + 1
    return None


def _nal_units(data: bytes, length_size: int | None) -> Iterator[bytes]:
    """The NAL units of one packet (without prefixes or start codes). A length prefix
    that runs past the packet ends the walk (what was read so far is kept)."""
    if length_size is None:
        yield from _annexb_units(data)
        return
    pos, n = 0, len(data)
    while pos + length_size <= n:
        size = int.from_bytes(data[pos:pos + length_size], "big")
        pos += length_size
        if size == 0 or pos + size > n:
            return
        yield data[pos:pos + size]
        pos += size


def _annexb_units(data: bytes) -> Iterator[bytes]:
    starts = []
    i = data.find(b"\x00\x00\x01")
    while i >= 0:
        starts.append(i + 3)
        i = data.find(b"\x00\x00\x01", i + 3)
    for k, s in enumerate(starts):
        end = starts[k + 1] - 3 if k + 1 < len(starts) else len(data)
        yield data[s:end].rstrip(b"\x00") if k + 1 < len(starts) else data[s:end]


def _mpeg4_intra(data: bytes) -> bool:
    """An MPEG-4 Part 2 packet whose (first) VOP is intra coded."""
    i = data.find(_MPEG4_VOP_START)
    return 0 <= i and i + 4 < len(data) and data[i + 4] >> 6 == 0
