"""Ticks: the run's reporting interval. When one is due, the statistics it closes with (reduced over ranks, plus
progress, timing and resources, as stats.jsonl stores them), its status line and its TensorBoard points."""

from __future__ import annotations

import os
import time
from typing import Any, Callable

import numpy as np
import torch

from stylegan_rlo.training.stats import StatsAccumulator


class TickClock:
    """Where a tick starts (images, time) and the maintenance time before it: snapshots, metrics and logs since the
    previous tick's last iteration (for the first tick, the set-up since `start_time`)."""

    def __init__(self, start_time: float, cur_nimg: int, kimg_per_tick: float):
        self.start_time = start_time
        self.kimg_per_tick = kimg_per_tick
        self.start_nimg = cur_nimg
        self.start = time.time()
        self.maintenance = self.start - start_time
        self.end = self.start

    def due(self, cur_nimg: int) -> bool:
        """Whether the current tick is over after `cur_nimg` images."""
        return cur_nimg >= self.start_nimg + self.kimg_per_tick * 1000

    def end_tick(self) -> None:
        """The current tick ends now (its last iteration is done)."""
        self.end = time.time()

    def next_tick(self, cur_nimg: int) -> None:
        """Start the next tick now; the time since the last one ended counts as maintenance."""
        self.start_nimg, self.start = cur_nimg, time.time()
        self.maintenance = self.start - self.end


def _cpu_mem_gb() -> float:
    """Resident memory of this process in GiB (0 where /proc is unavailable)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 30
    except (OSError, ValueError, IndexError):
        return 0.0


def close_tick(tick_stats: StatsAccumulator, clock: TickClock, *, cur_tick: int, cur_nimg: int,
               augment_pipe: torch.nn.Module | None, device: torch.device, distributed: bool) -> dict[str, dict]:
    """End the tick: its reported statistics (a collective over ranks) and the Progress/, Timing/ and Resources/
    scalars, all as {num, mean, std}; the peak GPU memory starts afresh."""
    clock.end_tick()
    stats = tick_stats.reduce(device=device, distributed=distributed)
    tick_sec = clock.end - clock.start
    gpu_mem = torch.cuda.max_memory_allocated(device) / 2 ** 30 if device.type == "cuda" else 0.0
    scalars = {
        "Progress/tick": cur_tick,
        "Progress/kimg": cur_nimg / 1e3,
        "Progress/augment": float(augment_pipe.p.cpu()) if augment_pipe is not None else 0.0,
        "Timing/total_sec": clock.end - clock.start_time,
        "Timing/sec_per_tick": tick_sec,
        "Timing/sec_per_kimg": tick_sec / max(cur_nimg - clock.start_nimg, 1) * 1e3,
        "Timing/maintenance_sec": clock.maintenance,
        "Timing/total_hours": (clock.end - clock.start_time) / 3600,
        "Resources/cpu_mem_gb": _cpu_mem_gb(),
        "Resources/peak_gpu_mem_gb": gpu_mem,
    }
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for name, value in scalars.items():
        stats[name] = dict(num=1, mean=float(value), std=0.0)
    return stats


def _format_time(seconds: float) -> str:
    s = int(np.rint(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h {(s // 60) % 60:02d}m {s % 60:02d}s"
    return f"{s // 86400}d {(s // 3600) % 24:02d}h {(s // 60) % 60:02d}m"


def kimg_decimals(kimg_per_tick: float) -> int:
    """Decimals of kimg in the tick line: 1 as upstream, more when ticks are shorter than 0.1 kimg."""
    return max(1, int(np.ceil(-np.log10(kimg_per_tick) - 1e-9)))


def status_line(stats: dict[str, dict], decimals: int) -> str:
    """The tick's line in log.txt: upstream's columns, then how many non-finite gradient entries G and D had."""
    def value(name: str) -> float:
        return stats[name]["mean"]

    nonfinite = {net: int(round(stats[f"Grad/nonfinite_{net}"]["mean"] * stats[f"Grad/nonfinite_{net}"]["num"]))
                 if f"Grad/nonfinite_{net}" in stats else 0 for net in ("G", "D")}
    return " ".join([
        f"tick {int(value('Progress/tick')):<5d}",
        f"kimg {value('Progress/kimg'):<8.{decimals}f}",
        f"time {_format_time(value('Timing/total_sec')):<12s}",
        f"sec/tick {value('Timing/sec_per_tick'):<7.1f}",
        f"sec/kimg {value('Timing/sec_per_kimg'):<7.2f}",
        f"maintenance {value('Timing/maintenance_sec'):<6.1f}",
        f"cpumem {value('Resources/cpu_mem_gb'):<6.2f}",
        f"gpumem {value('Resources/peak_gpu_mem_gb'):<6.2f}",
        f"augment {value('Progress/augment'):.3f}",
        f"nonfinite G/D {nonfinite['G']}/{nonfinite['D']}",
    ])


def open_tensorboard(run_dir: str, log: Callable[[str], None]) -> Any:
    """A TensorBoard writer into `run_dir`, or None (with a note in the log) when tensorboard is not installed."""
    try:
        import torch.utils.tensorboard as tensorboard  # optional package: training runs without it
        return tensorboard.SummaryWriter(run_dir)
    except ImportError as err:
        log(f"Skipping TensorBoard export: {err}")
        return None


def export_tensorboard(writer: Any, stats: dict, metrics: dict, *, kimg: int, walltime: float) -> None:
    """One TensorBoard point per tick statistic (its mean) and per metric (under Metrics/), at the whole kimg."""
    scalars = {name: value["mean"] for name, value in stats.items()}
    scalars.update({f"Metrics/{name}": value for name, value in metrics.items()})
    for tag, scalar in scalars.items():
        writer.add_scalar(tag, scalar, global_step=kimg, walltime=walltime)
    writer.flush()
