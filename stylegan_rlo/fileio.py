"""File writing that never leaves half a file: atomic_write (from dnnlib.atomic, the layer below), the clean-up of
temp files a killed writer left, and append_line for logs (locked appends: rewriting a log would lose lines written
concurrently)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import time

from dnnlib.atomic import atomic_write

__all__ = ["append_line", "atomic_write", "remove_stale_temp_files"]


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
