"""Atomic writes: complete-or-nothing replacement, no temp files left behind, ordinary file permissions."""

import os
import stat

import pytest

from stylegan_rlo.fileio import append_line, atomic_write


def mode_of(path):
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def umask_027():
    """Run with umask 027 (a value different from the usual 022), restored afterwards."""
    saved = os.umask(0o027)
    yield 0o027
    os.umask(saved)


def test_new_file_gets_0666_minus_umask(tmp_path, umask_027):
    path = tmp_path / "sub" / "a.bin"
    with atomic_write(path, "wb") as f:
        f.write(b"abc")
    assert path.read_bytes() == b"abc"
    assert mode_of(path) == 0o666 & ~umask_027 == 0o640
    os.umask(0o002)
    with atomic_write(tmp_path / "b.txt", "w") as f:
        f.write("x")
    assert mode_of(tmp_path / "b.txt") == 0o664


def test_replacing_keeps_the_existing_permissions(tmp_path, umask_027):
    path = tmp_path / "a.txt"
    path.write_text("old")
    os.chmod(path, 0o604)
    with atomic_write(path, "w") as f:
        f.write("new")
    assert path.read_text() == "new" and mode_of(path) == 0o604


def test_failure_leaves_the_old_file_and_no_temp_file(tmp_path):
    path = tmp_path / "snap.pkl"
    path.write_bytes(b"complete old snapshot")
    with pytest.raises(RuntimeError, match="disk on fire"):
        with atomic_write(path, "wb") as f:
            f.write(b"half of a new sna")
            raise RuntimeError("disk on fire")
    assert path.read_bytes() == b"complete old snapshot"
    assert sorted(os.listdir(tmp_path)) == ["snap.pkl"]


def test_append_line_adds_exactly_one_line(tmp_path):
    path = tmp_path / "stats.jsonl"
    append_line(path, '{"a": 1}')
    append_line(path, '{"a": 2}\n')
    assert path.read_text(encoding="utf-8") == '{"a": 1}\n{"a": 2}\n'
    assert sorted(os.listdir(tmp_path)) == ["stats.jsonl"]
