"""Training statistics: per-name running moments of reported tensors, reduced across ranks on demand.

Reports stay on the device (no synchronization per step); `reduce()` all-reduces the moments once (a collective:
every rank must call it with the same names reported) and returns official-format entries {num, mean, std}.
"""

from __future__ import annotations

import math

import torch


class StatsAccumulator:
    """Sums count, sum and sum of squares per statistic name; `names` restricts which names it keeps."""

    def __init__(self, names: tuple[str, ...] | None = None):
        self.names = names
        self._moments: dict[str, list] = {}  # name -> [count (python int), tensor([sum, sum of squares]) fp64]

    def report(self, name: str, value: torch.Tensor | float) -> None:
        """Add every element of `value` (any shape) as one sample of `name`."""
        if self.names is not None and name not in self.names:
            return
        if not isinstance(value, torch.Tensor):
            value = torch.as_tensor(value)
        elems = value.detach().flatten().to(torch.float64)
        if elems.numel() == 0:
            return
        moments = torch.stack([elems.sum(), elems.square().sum()])
        entry = self._moments.get(name)
        if entry is None:
            self._moments[name] = [elems.numel(), moments]
        else:
            entry[0] += elems.numel()
            entry[1] = entry[1] + moments.to(entry[1].device)

    def state_dict(self) -> dict[str, list]:
        """The moments not yet reduced, as {name: [count, tensor([sum, sum of squares])]} on the CPU."""
        return {name: [int(count), moments.detach().cpu().clone()] for name, (count, moments) in self._moments.items()}

    def load_state_dict(self, state: dict[str, list], device: torch.device | str = "cpu") -> None:
        """Replace the moments with a state_dict()'s."""
        self._moments = {str(name): [int(count), torch.as_tensor(moments, dtype=torch.float64).to(device)]
                         for name, (count, moments) in state.items()}

    def reduce(self, device: torch.device | str = "cpu", distributed: bool = False) -> dict[str, dict]:
        """Entries {num, mean, std} per name (summed over ranks when `distributed`); then start afresh."""
        names = sorted(self._moments)
        if not names:
            self._moments = {}
            return {}
        table = torch.stack([torch.cat([torch.tensor([float(self._moments[n][0])], dtype=torch.float64),
                                        self._moments[n][1].cpu()]) for n in names]).to(device)
        if distributed:
            torch.distributed.all_reduce(table)
        table = table.cpu().tolist()
        self._moments = {}
        result = {}
        for name, (num, total, total_sq) in zip(names, table):
            mean = total / num
            var = max(total_sq / num - mean * mean, 0.0)
            result[name] = dict(num=int(num), mean=mean, std=math.sqrt(var))
        return result


def fan_out(*accumulators: StatsAccumulator):
    """A single report(name, value) callable feeding every accumulator."""
    def report(name: str, value: torch.Tensor | float) -> None:
        for acc in accumulators:
            acc.report(name, value)
    return report
