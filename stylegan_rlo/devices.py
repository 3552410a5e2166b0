"""The one device parser every command uses: `auto`, `cpu`, `cuda` or `cuda:N`, checked against what PyTorch sees.
torch is imported on use, so that the commands' --help stays fast."""

from __future__ import annotations

from typing import TYPE_CHECKING

from stylegan_rlo.errors import UserError

if TYPE_CHECKING:
    import torch

DEVICE_HELP = "auto (cuda if available, else cpu), cpu, cuda or cuda:N"


def parse_device(text: str | torch.device, num_processes: int = 1) -> torch.device:
    """`text` as a torch.device; a UserError naming --device for a malformed name, a missing GPU or too few GPUs.

    `auto` picks cuda when a GPU is usable. `cuda:N` names one GPU, so it needs num_processes == 1.
    """
    import torch  # start-up: the commands parse --device without torch until they run (fast --help)
    if str(text) == "auto":
        text = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(text)
    except (RuntimeError, TypeError) as e:
        raise UserError(f"--device {text}: not a device name ({e}); use {DEVICE_HELP}") from None
    if device.type not in ("cpu", "cuda"):
        raise UserError(f"--device {text}: unsupported device type {device.type!r}; use {DEVICE_HELP}")
    if device.type == "cpu":
        return device
    if not torch.cuda.is_available():
        raise UserError(f"--device {text}: no CUDA GPU is available to PyTorch; use --device cpu (slow) or install "
                        f"a CUDA build of PyTorch")
    visible = torch.cuda.device_count()
    if device.index is not None:
        if num_processes != 1:
            raise UserError(f"--device {text} names one GPU but {num_processes} processes were asked for; use "
                            f"--device cuda (processes take GPUs 0..{num_processes - 1})")
        if device.index >= visible:
            raise UserError(f"--device {text}: only {visible} CUDA GPU(s) are visible (0..{visible - 1})")
    elif num_processes > visible:
        raise UserError(f"--gpus {num_processes}: only {visible} CUDA GPU(s) visible")
    return device
