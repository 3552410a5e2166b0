"""The metrics cache: named float tensors (dataset features, FID statistics) in files that cannot run code.

Files are written with torch.save (atomically) and read only with torch.load(weights_only=True), from bytes read
once from a regular file (a FIFO or device is refused by type, never opened for blocking reads) with a byte limit,
after checking that the archive is uncompressed and no larger than the caller's bound, so a planted or damaged file
can neither execute code nor make us allocate more than it could legitimately hold. Such a file is reported, by
name, and recomputed. torch-fidelity's own cache (which unpickles freely) is never used.
"""

from __future__ import annotations

import io
import os
import pickle
import sys
import zipfile
from typing import Callable

import torch

from stylegan_rlo.fileio import BoundedReadError, FileTooLargeError, atomic_write, read_regular_bytes

_ARCHIVE_OVERHEAD = 2**20  # headers, pickled tensor records and alignment padding of a small torch.save archive


def _warn(message: str) -> None:
    print(message, file=sys.stderr)


def read_tensors(path: str, max_data_bytes: int) -> dict[str, torch.Tensor]:
    """The dict of tensors in a cache file; ValueError (saying what is wrong) for anything else."""
    try:
        raw = read_regular_bytes(path, max_data_bytes + 2 * _ARCHIVE_OVERHEAD, "metrics cache file")
    except FileTooLargeError as e:
        raise ValueError(f"holds more than the {max_data_bytes} bytes of data expected ({e})") from e
    except BoundedReadError as e:
        raise ValueError(str(e)) from e
    try:
        with zipfile.ZipFile(io.BytesIO(raw)) as zf:
            members = zf.infolist()
    except (zipfile.BadZipFile, OSError) as e:
        raise ValueError(f"not a torch.save archive ({e})") from e
    if any(m.compress_type != zipfile.ZIP_STORED for m in members):
        raise ValueError("compressed archive members (torch.save never compresses)")
    if sum(m.file_size for m in members) > max_data_bytes + _ARCHIVE_OVERHEAD:
        raise ValueError(f"holds more than the {max_data_bytes} bytes of data expected")
    try:
        data = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"refused by torch's weights-only loader ({type(e).__name__}: {str(e)[:200]})") from e
    if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                             for k, v in data.items()):
        raise ValueError("not a dict of tensors")
    return data


def cached_tensors(path: str, max_data_bytes: int, check: Callable[[dict[str, torch.Tensor]], None],
                   compute: Callable[[], dict[str, torch.Tensor]],
                   warn: Callable[[str], None] = _warn) -> dict[str, torch.Tensor]:
    """The tensors cached in `path` if it holds valid ones (`check` raises ValueError otherwise), else `compute()`
    written to `path`. An unusable file is named in a warning and replaced."""
    if os.path.exists(path):
        try:
            data = read_tensors(path, max_data_bytes)
            check(data)
            return data
        except ValueError as e:
            warn(f"Ignoring the metrics cache file {path}: {e}. Recomputing it.")
    data = compute()
    try:
        with atomic_write(path, "wb") as f:
            torch.save({k: v.detach().cpu().contiguous() for k, v in data.items()}, f)
    except OSError as e:  # a full or read-only cache folder costs time, not the result
        warn(f"Could not write the metrics cache file {path} ({e.strerror or e}); continuing without it (the "
             f"next run computes it again: free space, or set DNNLIB_CACHE_DIR to a writable folder, to keep it).")
    return data
