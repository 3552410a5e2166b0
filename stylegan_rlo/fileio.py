"""Files written whole and read back bounded: atomic_write (from dnnlib.atomic, the layer below), the clean-up of
temp files a killed writer left, append_line for logs (locked appends: rewriting a log would lose lines written
concurrently), and readers that open only regular files and never read more than a stated number of bytes (a FIFO,
a device or a link to /dev/zero would otherwise block or be read without end; st_size is not trusted)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
import time
import zipfile
from typing import IO

from dnnlib.atomic import atomic_write
from stylegan_rlo.errors import UserError

__all__ = ["BoundedReadError", "FileTooLargeError", "append_line", "atomic_write", "open_regular", "read_bounded",
           "read_regular_bytes", "read_zip_member", "remove_stale_temp_files"]

_READ_CHUNK = 1 << 20


class BoundedReadError(UserError):
    """A file to read back is not a regular file, is larger than its limit, or cannot be read; the message names
    it."""


class FileTooLargeError(BoundedReadError):
    """A file (or archive member) holds more bytes than its limit."""


def open_regular(path: str | os.PathLike, what: str = "file") -> IO[bytes]:
    """Open `path` for binary reading only if it is a regular file (links are followed): a FIFO, socket or device
    is refused by its type, opened non-blocking so that even a FIFO swapped in after a check cannot block us."""
    path = os.fspath(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        raise BoundedReadError(f"cannot open {what} {path}: {e.strerror or e}") from e
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise BoundedReadError(f"{what} {path} is not a regular file ({_file_kind(mode)}); only regular files "
                                   f"are read")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _file_kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")):
        if test(mode):
            return name
    return "not a plain file"


def read_bounded(f: IO[bytes], max_bytes: int, where: str) -> bytes:
    """All of an open stream, refusing (BoundedReadError) once more than `max_bytes` arrive: the size is what is
    read, never what a header or st_size claims."""
    parts, total = [], 0
    while True:
        chunk = f.read(min(_READ_CHUNK, max_bytes + 1 - total))
        if not chunk:
            return b"".join(parts)
        parts.append(chunk)
        total += len(chunk)
        if total > max_bytes:
            raise FileTooLargeError(f"{where} is larger than {max_bytes} bytes, the most it may hold")


def read_regular_bytes(path: str | os.PathLike, max_bytes: int, what: str = "file") -> bytes:
    """The bytes of the regular file `path` (see open_regular), at most `max_bytes` of them (see read_bounded)."""
    with open_regular(path, what) as f:
        try:
            return read_bounded(f, max_bytes, f"{what} {os.fspath(path)}")
        except OSError as e:
            raise BoundedReadError(f"cannot read {what} {os.fspath(path)}: {e.strerror or e}") from e


# What zipfile raises for a damaged, encrypted or oddly compressed member (CRC mismatch, truncated data, a
# password needed, a compression method it lacks, a corrupt deflate stream).
ZIP_MEMBER_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, RuntimeError, NotImplementedError, EOFError, OSError,
                     ValueError)


def read_zip_member(zf: zipfile.ZipFile, name: str, max_bytes: int, archive: str) -> bytes:
    """The bytes of member `name` of an open archive, at most `max_bytes`; BoundedReadError naming the archive and
    the member for an encrypted, damaged (bad CRC, truncated) or unsupported (compression method) member."""
    where = f"member '{name}' of {archive}"
    try:
        info = zf.getinfo(name)
    except KeyError as e:
        raise BoundedReadError(f"{where} does not exist") from e
    if info.flag_bits & 0x1:
        raise BoundedReadError(f"{where} is encrypted; rebuild the archive without a password")
    try:
        with zf.open(info) as f:
            return read_bounded(f, max_bytes, where)
    except BoundedReadError:
        raise
    except ZIP_MEMBER_ERRORS as e:
        raise BoundedReadError(f"{where} cannot be read (damaged or unsupported archive member: "
                               f"{type(e).__name__}: {e}); rebuild the archive") from e


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
