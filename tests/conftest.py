"""Fixtures shared by every test folder, and the one way tests reach shared helpers.

``tests/`` is put on ``sys.path`` here, so a test in any folder imports helpers as
``from support.builders import write_checkpoint`` (see ``tests/support/``). The test
folders mirror the package (``tests/video/`` for ``ceuspipe/video/``, ...).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from support.builders import write_checkpoint  # noqa: E402


@pytest.fixture
def tiny_checkpoint(tmp_path) -> Path:
    """An untrained width-1/8 CEUSegNet checkpoint at 64x64 input."""
    return write_checkpoint(tmp_path / "tiny.pt")
