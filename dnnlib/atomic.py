"""Atomic file writing: every output goes to a temp file in the same folder, then is renamed into place, so a crash
or kill at any moment leaves either the old file or the complete new one, never half of one.

Lives in dnnlib (the bottom layer) so that dnnlib's downloads can use it; stylegan_rlo.fileio re-exports it."""

from __future__ import annotations

import contextlib
import os
import tempfile
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
