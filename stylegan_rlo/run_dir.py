"""Run directories: `<outdir>/NNNNN-<description>`, numbered one past the highest existing run."""

from __future__ import annotations

import os
import re

_RUN_ID = re.compile(r"^(\d+)")


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
    os.makedirs(outdir, exist_ok=True)
    while True:
        path = os.path.join(outdir, f"{next_run_id(outdir):05d}-{desc}")
        try:
            os.mkdir(path)
            return path
        except FileExistsError:
            continue
