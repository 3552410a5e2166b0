"""The `--device` option of the evaluation tools (calc_fid, generate): its default and its check, in one place.
torch is imported lazily so that `--help` stays fast."""

from __future__ import annotations

import click


def default_device() -> str:
    """`cuda` when a GPU is usable, else `cpu`."""
    import torch
    return "cuda" if torch.cuda.is_available() else "cpu"


def parse_device(text: str):
    """`cpu`, `cuda`, `cuda:N` -> torch.device; a usage error for a malformed name or a missing GPU."""
    import torch
    try:
        dev = torch.device(text)
    except RuntimeError as e:
        raise click.BadParameter(str(e), param_hint="--device") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise click.BadParameter("no CUDA GPU is available; use --device cpu", param_hint="--device")
    return dev
