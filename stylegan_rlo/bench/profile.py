"""Where the training iteration's time goes: a torch.profiler run of the timed iterations, summed per phase (Gmain,
Greg, Dmain, Dreg, and the rest: non-finite guard, Adam steps, G_ema update) and per operator (self CPU time)."""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch.profiler import ProfilerActivity, profile, record_function

ITERATION_LABEL = "bench:iteration"
PHASE_PREFIX = "bench:phase:"


class LabelledLoss:
    """The loss with each `accumulate_gradients` call inside a profiler range named after its phase."""

    def __init__(self, loss) -> None:
        self.loss = loss

    def accumulate_gradients(self, phase: str, **kwargs) -> dict[str, torch.Tensor]:
        with record_function(PHASE_PREFIX + phase):
            return self.loss.accumulate_gradients(phase=phase, **kwargs)


class Profile:
    """Collects one profiler run; `summary(iters, top)` turns it into per-iteration milliseconds."""

    def __init__(self) -> None:
        self._profiler: profile | None = None

    @contextlib.contextmanager
    def recording(self) -> Iterator[None]:
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            yield
        self._profiler = prof

    def summary(self, iters: int, top: int = 25) -> dict:
        """{"phases": {name: ms per iteration}, "ops": [[op, self ms, % of self time, calls]]}, all per iteration."""
        assert self._profiler is not None, "nothing recorded"
        events = self._profiler.key_averages()
        total_self = sum(e.self_cpu_time_total for e in events) or 1.0
        by_name = {e.key: e for e in events}
        phases = {name[len(PHASE_PREFIX):]: e.cpu_time_total / 1e3 / iters
                  for name, e in by_name.items() if name.startswith(PHASE_PREFIX)}
        iteration = by_name[ITERATION_LABEL].cpu_time_total / 1e3 / iters if ITERATION_LABEL in by_name else 0.0
        phases["guard+Adam+EMA"] = max(iteration - sum(phases.values()), 0.0)
        phases["iteration"] = iteration
        ops = [e for e in events if not e.key.startswith("bench:")]
        ops.sort(key=lambda e: -e.self_cpu_time_total)
        table = [[e.key, e.self_cpu_time_total / 1e3 / iters, 100 * e.self_cpu_time_total / total_self, e.count / iters]
                 for e in ops[:top]]
        return dict(phases=phases, ops=table)


def format_summary(summary: dict) -> str:
    """The summary as two plain-text tables (phases, then operators by self CPU time)."""
    lines = ["phase                 ms/iter"]
    lines += [f"{name:20s} {ms:8.1f}" for name, ms in summary["phases"].items()]
    lines += ["", f"{'operator (self CPU time)':44s} {'ms/iter':>8s} {'share':>6s} {'calls':>7s}"]
    lines += [f"{name[:44]:44s} {ms:8.2f} {share:5.1f}% {calls:7.1f}" for name, ms, share, calls in summary["ops"]]
    return "\n".join(lines)
