"""File writing that never leaves half a file: atomic_write (from dnnlib.atomic, the layer below) and append_line."""

from __future__ import annotations

import os

from dnnlib.atomic import atomic_write

__all__ = ["append_line", "atomic_write"]


def append_line(path: str | os.PathLike, line: str) -> None:
    """Append one line to a text log (e.g. JSONL) by rewriting it atomically, so readers never see a torn line."""
    path = os.fspath(path)
    previous = ""
    if os.path.exists(path):
        with open(path, "r", encoding="utf-8") as f:
            previous = f.read()
    with atomic_write(path, "w") as f:
        f.write(previous + line.rstrip("\n") + "\n")
