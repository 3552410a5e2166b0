"""Run directories: `<outdir>/NNNNN-<description>`, numbered one past the highest existing run."""

from __future__ import annotations

import errno
import os
import re

from stylegan_rlo.errors import UserError
from stylegan_rlo.fileio import remove_stale_temp_files

_RUN_ID = re.compile(r"^(\d+)")
STALE_TEMP_AGE_S = 3600  # temp files of interrupted writes older than this are removed when a new run starts
# Errors that say the output location is unusable (not a bug): full, read-only, over quota, not permitted.
OUTPUT_ERRNOS = (errno.ENOSPC, errno.EROFS, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.ENOTDIR)


class RunDirError(UserError):
    """The run directory cannot be created or written (a file in the way, read-only or full disk)."""


def output_error(e: OSError, where: str) -> RunDirError | None:
    """A RunDirError for an OSError about an unusable output location, else None (the error is something else)."""
    if e.errno not in OUTPUT_ERRNOS:
        return None
    return RunDirError(f"cannot write {e.filename or where}: {e.strerror}; choose another --outdir or free space")


def next_run_id(outdir: str) -> int:
    """One more than the largest NNNNN prefix among the entries of `outdir` (0 when there are none)."""
    if not os.path.isdir(outdir):
        return 0
    ids = [int(m.group(1)) for name in os.listdir(outdir) if (m := _RUN_ID.match(name))]
    return max(ids, default=-1) + 1


def create_run_dir(outdir: str, desc: str) -> str:
    """Create and return a fresh `<outdir>/NNNNN-<desc>`; safe against concurrent runs picking the same number."""
    if os.sep in desc or (os.altsep and os.altsep in desc):
        raise ValueError(f"run description must not contain path separators: {desc!r}")
    if os.path.exists(outdir) and not os.path.isdir(outdir):
        raise RunDirError(f"--outdir {outdir} is a file, not a folder; choose a folder for the runs")
    try:
        os.makedirs(outdir, exist_ok=True)
        while True:
            path = os.path.join(outdir, f"{next_run_id(outdir):05d}-{desc}")
            try:
                os.mkdir(path)
                break
            except FileExistsError:
                continue
    except OSError as e:
        raise RunDirError(f"--outdir {outdir}: cannot create a run directory there ({e.strerror}); choose a "
                          f"writable folder") from e
    for name in os.listdir(outdir):  # interrupted writes of earlier runs (kill -9) leave temp files behind
        if os.path.isdir(os.path.join(outdir, name)) and _RUN_ID.match(name):
            remove_stale_temp_files(os.path.join(outdir, name), STALE_TEMP_AGE_S)
    return path
