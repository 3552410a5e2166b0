"""Option helpers shared by the command-line tools, so each kind of option is declared and checked in one place.
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


def bool_option(name: str, help_text: str):
    """A boolean that works both as a flag (`--mirror`) and with a value, as upstream (`--mirror=1`)."""
    return click.option(name, type=bool, is_flag=False, flag_value=True, default=False, show_default=True,
                        metavar="[BOOL]", help=help_text)
