"""Preemption-safe stop: SIGINT or SIGTERM (a cluster preempting the job) makes training finish its iteration, write
a snapshot with its training state and stop with exit status 128 + the signal number (130 / 143). During set-up and
metric evaluation, work that loses nothing when dropped, a signal interrupts at once instead (`StopNow`).

The training loop catches the signals itself (`StopRequest`); ranks agree on the iteration to stop after
(`agreed_signal`); a launcher that spawned the ranks forwards signals to them (`join_forwarding_signals`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from typing import Callable, Iterator

import torch

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class TrainingStopped(Exception):
    """Training stopped early on a signal, after writing `snapshot` (and its training state) in `run_dir`."""

    def __init__(self, signum: int, run_dir: str, snapshot: str | None):
        self.signum, self.run_dir, self.snapshot = int(signum), run_dir, snapshot
        super().__init__(f"stopped by {signal_name(signum)}" + (f" after writing {snapshot}" if snapshot else ""))

    @property
    def signal_name(self) -> str:
        return signal_name(self.signum)

    @property
    def exit_code(self) -> int:
        """The shell's convention for a process ended by a signal."""
        return 128 + self.signum


class StopNow(Exception):
    """A stop signal arrived while StopRequest.interrupting: the work in progress is dropped."""

    def __init__(self, signum: int):
        self.signum = int(signum)
        super().__init__(f"interrupted by {signal_name(signum)}")


def signal_name(signum: int) -> str:
    return signal.Signals(signum).name


@contextlib.contextmanager
def _handlers(handler: Callable) -> Iterator[bool]:
    """Install `handler` for SIGINT/SIGTERM while inside (only the main thread can); yields whether it did."""
    if threading.current_thread() is not threading.main_thread():
        yield False
        return
    previous = {s: signal.signal(s, handler) for s in STOP_SIGNALS}
    try:
        yield True
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


class StopRequest:
    """While entered, the first SIGINT/SIGTERM is recorded in `signum` (the loop stops after its iteration); with
    `escalate` a second one raises KeyboardInterrupt at once, otherwise further ones are ignored (a rank whose
    launcher forwards the signal that the terminal also sent it). Inside `interrupting()` (single-process runs
    only: ranks must stop together) the first one raises StopNow at once."""

    def __init__(self, escalate: bool):
        self.escalate = escalate
        self.signum: int | None = None
        self._stack = contextlib.ExitStack()
        self._interrupting = False

    def _handle(self, signum: int, frame) -> None:
        if self.signum is None:
            self.signum = signum
            if self._interrupting:
                raise StopNow(signum)
        elif self.escalate:
            raise KeyboardInterrupt

    def start(self) -> "StopRequest":
        """Catch the signals (in the main thread; elsewhere they keep their handlers)."""
        self._stack.enter_context(_handlers(self._handle))
        return self

    @contextlib.contextmanager
    def interrupting(self, enabled: bool = True) -> Iterator[None]:
        """Inside, a stop signal raises StopNow at once (also one that came before), for work that can be dropped
        and redone (set-up, metric evaluation); `enabled=False` keeps the record-and-finish behaviour."""
        if not enabled:
            yield
            return
        if self.signum is not None:
            raise StopNow(self.signum)
        self._interrupting = True
        try:
            yield
        finally:
            self._interrupting = False

    def close(self) -> None:
        """Put the previous handlers back."""
        self._stack.close()


def ignore_stop_signals(worker_id: int) -> None:
    """DataLoader worker_init_fn: workers leave SIGINT/SIGTERM to the training process, which needs them alive
    until it stops."""
    for s in STOP_SIGNALS:
        signal.signal(s, signal.SIG_IGN)


def agreed_signal(local: int | None, device: torch.device, distributed: bool) -> int | None:
    """The stop signal any rank received (all ranks must call this at the same iteration), else None."""
    if not distributed:
        return local
    flag = torch.tensor([local or 0], dtype=torch.int64, device=device)
    torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
    return int(flag.item()) or None


def join_forwarding_signals(context) -> int | None:
    """Wait for the processes of a torch.multiprocessing ProcessContext, forwarding SIGINT/SIGTERM to them; a
    second signal kills them (KeyboardInterrupt). Returns the first signal received, if any."""
    received: list[int] = []

    def forward(signum: int, frame) -> None:
        received.append(signum)
        for process in context.processes:
            if process.is_alive():
                os.kill(process.pid, signum if len(received) == 1 else signal.SIGKILL)

    with _handlers(forward):
        try:
            while not context.join(timeout=0.5):
                pass
        except Exception:
            if len(received) > 1:
                raise KeyboardInterrupt from None
            raise
    return received[0] if received else None
