"""Atomic outputs: complete or absent, with ordinary permissions, names sanitised."""

import os
import stat

import numpy as np
import pytest

from ceuspipe.fsutil import atomic_dir, atomic_write_text, safe_name
from ceuspipe.video.writer import VideoWriter


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_atomic_dir_failure_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic_dir(tmp_path / "out") as tmp:
            (tmp / "half.txt").write_text("x")
            raise RuntimeError("crash")
    assert list(tmp_path.iterdir()) == []


def test_atomic_dir_refuses_existing_unless_overwrite(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "old.txt").write_text("old")
    with pytest.raises(FileExistsError):
        with atomic_dir(tmp_path / "out") as tmp:
            (tmp / "new.txt").write_text("new")
    assert (tmp_path / "out" / "old.txt").exists()
    with atomic_dir(tmp_path / "out", overwrite=True) as tmp:
        (tmp / "new.txt").write_text("new")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["new.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_outputs_get_umask_permissions_not_private_temp_ones(tmp_path, umask_022):
    with atomic_dir(tmp_path / "d") as tmp:
        pass
    atomic_write_text(tmp_path / "f.txt", "hello")
    with VideoWriter(tmp_path / "v.mkv", 16, 16, codec="ffv1", pix_fmt="gray") as w:
        w.write(np.zeros((16, 16), np.uint8), 0.0)
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "f.txt").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "v.mkv").stat().st_mode) == 0o644


def test_writer_abort_leaves_nothing(tmp_path):
    with pytest.raises(ValueError):
        with VideoWriter(tmp_path / "v.mp4", 32, 32) as w:
            w.write(np.zeros((32, 32, 3), np.uint8), 0.0)
            w.write(np.zeros((8, 8, 3), np.uint8), 0.1)  # wrong size
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name,expected", [("P001", "P001"), ("../../etc", "etc"), ("..", "unnamed"),
                                           ("a b/c", "a_b_c"), ("", "unnamed"), ("Jöhn Doe", "J_hn_Doe")])
def test_safe_name(name, expected):
    assert safe_name(name) == expected
