"""Child processes for parallel runs (compare_objectives --jobs N): at most N at a time, each with its share of the
CPU threads (or its own GPUs) and its own log file, stopped together with the parent.

Children run in their own session, so a terminal's Ctrl-C reaches only the parent, which forwards the first SIGINT or
SIGTERM once (training finishes its iteration and writes a snapshot) and kills them on a second one; a child whose
parent dies is sent SIGTERM by the kernel (Linux: PR_SET_PDEATHSIG, see `die_with_parent`).
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import os
import signal
import subprocess
import sys
import time
from typing import Sequence

import torch

from stylegan_rlo import PACKAGE_DIR

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


class JobsStopped(Exception):
    """SIGINT/SIGTERM stopped the parallel runs (each running child after its snapshot)."""

    def __init__(self, signum: int, stopped: Sequence[str]):
        self.signum, self.stopped = int(signum), list(stopped)
        super().__init__(f"stopped by {self.signal_name}")

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def threads_per_job(jobs: int) -> int:
    """CPU threads of each of `jobs` children: this process's torch thread count (which honours OMP_NUM_THREADS)
    split between them, at least one."""
    return max(1, torch.get_num_threads() // jobs)


def gpu_groups(device: str, gpus_per_run: int) -> list[str]:
    """CUDA_VISIBLE_DEVICES values, one per group of `gpus_per_run` visible GPUs, for runs on `device` 'cuda' (no
    index given: the runs are spread over the GPUs, several per GPU when there are more jobs); [] otherwise."""
    if device != "cuda" or not torch.cuda.is_available():
        return []
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = [i.strip() for i in visible.split(",")] if visible else [str(i) for i in range(torch.cuda.device_count())]
    ids = ids[:torch.cuda.device_count()]
    return [",".join(ids[i:i + gpus_per_run]) for i in range(0, len(ids) - gpus_per_run + 1, gpus_per_run)]


def child_env(slot: int, jobs: int, gpu_sets: Sequence[str]) -> dict[str, str]:
    """The environment of the child in `slot` (0..jobs-1): its CPU threads, its GPUs, this package importable."""
    threads = str(threads_per_job(jobs))
    root = os.path.dirname(PACKAGE_DIR)
    path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
    env = dict(os.environ, OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads, PYTHONPATH=path)
    if gpu_sets:
        env["CUDA_VISIBLE_DEVICES"] = gpu_sets[slot % len(gpu_sets)]
    return env


def die_with_parent(parent_pid: int) -> None:
    """In a child: ask the kernel for SIGTERM when the parent dies (Linux), and exit if it already has."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    if os.getppid() != parent_pid:
        sys.exit(128 + signal.SIGTERM)


@dataclasses.dataclass
class _Child:
    key: object
    slot: int
    process: subprocess.Popen


class ProcessPool:
    """Up to `limit` child processes (`python -m MODULE ARGS...`), each writing to its log file. Use as a context
    manager: inside it SIGINT/SIGTERM are forwarded to the children once (`signum` remembers the first) and kill
    them the second time (KeyboardInterrupt); leaving it with children still running (an error in the parent)
    forwards SIGTERM and waits for them, so none is left behind."""

    def __init__(self, limit: int, gpu_sets: Sequence[str] = ()):
        self.limit, self.gpu_sets = int(limit), list(gpu_sets)
        self.children: list[_Child] = []
        self.signum: int | None = None
        self._signals = 0
        self._previous: dict = {}

    @property
    def full(self) -> bool:
        return len(self.children) >= self.limit

    def start(self, key: object, module: str, args: Sequence[str], log_path: str) -> None:
        """Start `python -m module args...` in a free slot, its output appended to `log_path`."""
        slot = min(set(range(self.limit)) - {c.slot for c in self.children})
        with open(log_path, "ab") as log:
            process = subprocess.Popen([sys.executable, "-m", module, *args], stdin=subprocess.DEVNULL, stdout=log,
                                       stderr=subprocess.STDOUT, start_new_session=True,
                                       env=child_env(slot, self.limit, self.gpu_sets))
        self.children.append(_Child(key, slot, process))

    def wait(self) -> tuple[object, int]:
        """Wait for any child to exit: (its key, its exit status; -N when killed by signal N)."""
        while True:
            for child in self.children:
                code = child.process.poll()
                if code is not None:
                    self.children.remove(child)
                    return child.key, code
            time.sleep(0.2)

    def _forward(self, signum: int, frame) -> None:
        self._signals += 1
        if self.signum is None:
            self.signum = signum
        for child in self.children:
            with contextlib.suppress(ProcessLookupError):
                child.process.send_signal(signum if self._signals == 1 else signal.SIGKILL)
        if self._signals > 1:
            raise KeyboardInterrupt

    def __enter__(self) -> "ProcessPool":
        with contextlib.suppress(ValueError):  # only the main thread may set handlers; elsewhere they stay
            self._previous = {s: signal.signal(s, self._forward) for s in STOP_SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        try:
            if self.children:
                if self._signals == 0:
                    self._forward(signal.SIGTERM, None)
                while self.children:
                    self.wait()
        finally:
            for s, handler in self._previous.items():
                signal.signal(s, handler)
