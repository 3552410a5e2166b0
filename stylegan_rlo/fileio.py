"""Atomic file writing: every output goes to a temp file in the same folder, then is renamed into place,
so a crash or kill at any moment leaves either the old file or the complete new one, never half of one.
Logs grow by locked appends instead (rewriting them would lose lines written concurrently)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
import time
from typing import IO, Iterator


def _new_file_mode(path: str) -> int:
    """Permissions a plain open() would give: those of the file being replaced, else 0666 minus the umask."""
    try:
        return os.stat(path).st_mode & 0o7777
    except FileNotFoundError:
        umask = os.umask(0o022)  # the only portable way to read the umask is to set it and put it back
        os.umask(umask)
        return 0o666 & ~umask


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open a temp file beside `path` for writing; on success fsync it and rename it onto `path`.

    The file gets ordinary permissions (not the private 0600 of a temp file): see _new_file_mode.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp_path = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=folder)
    try:
        encoding = None if "b" in mode else "utf-8"
        with os.fdopen(fd, mode, encoding=encoding) as f:
            os.fchmod(f.fileno(), _new_file_mode(path))
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp_path)
        raise


def remove_stale_temp_files(folder: str | os.PathLike, min_age_s: float) -> list[str]:
    """Delete the temp files atomic_write leaves when killed (`.<name>.<random>.tmp`) that are older than
    `min_age_s` (younger ones may belong to a write in progress); returns their names."""
    removed = []
    now = time.time()
    for entry in os.scandir(folder):
        if entry.name.startswith(".") and entry.name.endswith(".tmp") and entry.is_file(follow_symlinks=False):
            with contextlib.suppress(FileNotFoundError):
                if now - entry.stat(follow_symlinks=False).st_mtime > min_age_s:
                    os.remove(entry.path)
                    removed.append(entry.name)
    return removed


def append_line(path: str | os.PathLike, line: str) -> None:
    """Append one line to a text log (e.g. JSONL) in a single O_APPEND write under an exclusive lock.

    Concurrent writers (processes or threads) never lose or interleave lines. If the file ends in a torn line (a
    writer killed mid-write), the new line starts on a line of its own.
    """
    data = (line.rstrip("\n") + "\n").encode("utf-8")
    fd = os.open(os.fspath(path), os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            data = b"\n" + data
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)  # also releases the lock
