"""One run of a comparison (experiments.compare): fine-tune, evaluate every snapshot against the reference set, keep
the best snapshot and draw the before/after grid. A run happens in the comparing process (--jobs 1) or, with
`run_in_children`, in child processes, N at a time: `python -m stylegan_rlo.experiments.compare_run JOB.json`.

A run's numbers depend only on its job (options, seed, metric seed), never on the process it runs in.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import signal
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw

from stylegan_rlo.checkpoints.pickles import load_network_pkl
from stylegan_rlo.errors import UserError
from stylegan_rlo.evaluation.generate import generate_images, seed_latents
from stylegan_rlo.evaluation.memorization import METRIC_NAME as MEM_METRIC
from stylegan_rlo.evaluation.metrics import append_records, evaluate_snapshot
from stylegan_rlo.experiments.jobs import JobsStopped, ProcessPool, die_with_parent
from stylegan_rlo.fileio import atomic_write
from stylegan_rlo.images import make_grid, save_png, to_uint8
from stylegan_rlo.training.best_snapshot import read_best, update_best
from stylegan_rlo.training.launch import launch_training
from stylegan_rlo.training.preemption import TrainingStopped

METRIC_LABELS = {"fid50k_full": "FID", "kid50k_full": "KID", "pr50k3_inception_precision": "precision",
                 "pr50k3_inception_recall": "recall", "pr50k3_full_precision": "precision (VGG16)",
                 "pr50k3_full_recall": "recall (VGG16)", MEM_METRIC: "memorization"}
LOG_TAIL_LINES = 8  # lines of a failed child's log quoted in the error


class RunFailed(UserError):
    """A run of the comparison failed; the message names the run (and its log file when it ran in a child)."""


@dataclass
class RunJob:
    """Everything one run needs (JSON-ready, so that a child process can read it): its arm and seed, the training
    options from setup_training_options, and the comparison's evaluation settings and shared start point."""
    index: int
    total: int
    arm: dict  # Arm.to_json()
    seed: int
    desc: str
    options: dict
    kimg: float  # fine-tuning length (on top of the start network's own progress)
    outdir: str
    names: list
    ref: str
    metrics_num: int | None
    device: str
    metric_seed: int
    start_nimg: int
    trust: bool
    inception_weights: str | None
    best_metric: str | None
    grid: list
    start_records: list
    start_point: dict

    @property
    def name(self) -> str:
        return f"{self.arm['label']}, seed {self.seed}"

    @property
    def prefix(self) -> str:
        return f"[run {self.index + 1}/{self.total}]"

    @property
    def slug(self) -> str:
        """For file names: 'rlo8-seed0'."""
        return f"{self.arm['label']}-seed{self.seed}"

    @property
    def training_data(self) -> tuple[str, bool]:
        """(path, x-flips added) of the run's training set: what the memorization metric searches."""
        kwargs = self.options["training_set_kwargs"]
        return kwargs["path"], bool(kwargs.get("xflip", False))

    def memorization_kwargs(self, nn_picture: str | None = None) -> dict:
        """evaluate_snapshot's training-set keywords: the training set when the memorization metric is asked for
        (with the nearest-neighbour picture `nn_picture`, if given), else none."""
        if MEM_METRIC not in self.names:
            return {}
        path, mirror = self.training_data
        return dict(training_data=path, training_mirror=mirror, nn_picture=nn_picture)


@dataclass
class RunResult:
    """One finished run: its arm, objective and seed, where it lives, its metric points (kimg since the start)."""
    arm: str
    loss: str
    k: float | None
    options: dict  # the arm's per-arm options
    seed: int
    run_dir: str
    points: list[dict]
    train_sec: float = 0.0
    eval_sec: float = 0.0
    best: dict | None = None  # best-<metric>.json of the run: its best snapshot by the tracked metric


# ---- small pieces --------------------------------------------------------------------------------------------------

def format_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(round(seconds))
    return f"{s} s" if s < 60 else f"{s // 60}m {s % 60:02d}s"


def format_values(values: dict) -> str:
    return ", ".join(f"{METRIC_LABELS.get(n, n)} {values[n]:.4g}" for n in METRIC_LABELS if n in values)


def _grid_labels(G: torch.nn.Module, n: int) -> torch.Tensor:
    """Labels for n grid images: none for unconditional networks, classes in turn for conditional ones."""
    c_dim = int(G.c_dim)
    c = torch.zeros([n, c_dim])
    if c_dim:
        c[torch.arange(n), torch.arange(n) % c_dim] = 1
    return c


def grid_images(G: torch.nn.Module, grid: Sequence[int], device: torch.device) -> np.ndarray:
    """uint8 NHWC images of seeds 0..cols*rows-1 (official seed -> z, constant noise): the same z for every network."""
    n = grid[0] * grid[1]
    G = G.eval().requires_grad_(False).to(device)
    return to_uint8(generate_images(G, seed_latents(range(n), int(G.z_dim)), _grid_labels(G, n), batch=64))


def save_labelled_blocks(blocks: Sequence[tuple[str, np.ndarray]], grid: Sequence[int], path: str) -> None:
    """One PNG: for each (title, uint8 NHWC images) a title strip above a cols x rows grid of the images; images
    smaller than 64 pixels are enlarged (nearest neighbour) to at least 64 so that they can be seen."""
    parts = []
    for title, images in blocks:
        zoom = max(1, 64 // images.shape[1])
        tiles = make_grid(images.repeat(zoom, axis=1).repeat(zoom, axis=2), *grid)
        strip = Image.new("L" if tiles.shape[2] == 1 else "RGB", (tiles.shape[1], 14), 255)
        ImageDraw.Draw(strip).text((2, 1), title, fill=0)
        strip_arr = np.asarray(strip).reshape(14, tiles.shape[1], tiles.shape[2])
        parts += [strip_arr, tiles]
    save_png(np.concatenate(parts), path)


def _stats_by_kimg(run_dir: str) -> dict[float, dict]:
    """stats.jsonl of a run keyed by Progress/kimg (rounded to 1e-3)."""
    out = {}
    with open(os.path.join(run_dir, "stats.jsonl"), encoding="utf-8") as f:
        for line in f:
            if line.strip():
                rec = json.loads(line)
                out[round(rec["Progress/kimg"]["mean"], 3)] = rec
    return out


def snapshots(run_dir: str) -> list[str]:
    return sorted(glob.glob(os.path.join(run_dir, "network-snapshot-*.pkl")))


# ---- one run -------------------------------------------------------------------------------------------------------

def run_one(job: RunJob, before: np.ndarray, log: Callable[[str], Any] = print,
            show_progress: bool = True) -> RunResult:
    """Train the job's run, evaluate its snapshots, keep its best snapshot, draw grid-<label>-seed<seed>.png (the
    start network's grid `before` above the final one). A UserError comes back as RunFailed naming the run."""
    try:
        return _run(job, before, log, show_progress)
    except RunFailed:
        raise
    except UserError as e:
        raise RunFailed(f"run {job.name}: {e}") from e


def _run(job: RunJob, before: np.ndarray, log: Callable[[str], Any], show_progress: bool) -> RunResult:
    device = torch.device(job.device)
    log(f"{job.prefix} {job.name}: fine-tuning for {job.kimg:g} kimg...")
    t0 = time.time()
    run_dir = launch_training(job.desc, job.options, os.path.join(job.outdir, "runs"), show_progress=show_progress)
    train_sec = time.time() - t0
    log(f"{job.prefix} trained in {format_seconds(train_sec)}: {run_dir}")
    t0 = time.time()
    append_records(job.start_records, run_dir)
    arm = job.arm
    result = RunResult(arm=arm["label"], loss=arm["options"]["loss"], k=arm["options"].get("k"),
                       options=dict(arm["options"]), seed=job.seed, run_dir=run_dir, points=[dict(job.start_point)],
                       train_sec=train_sec)
    result.points += _evaluate_run(job, run_dir, device, log, show_progress)
    for point in result.points[1:] if job.best_metric else ():
        update_best(run_dir, job.best_metric, point[job.best_metric], os.path.join(run_dir, point["snapshot"]),
                    point["kimg"])
    result.best = read_best(run_dir, job.best_metric) if job.best_metric else None
    final = load_network_pkl(snapshots(run_dir)[-1], trust_pickle=job.trust)
    after = grid_images(final["G_ema"], job.grid, device)
    save_labelled_blocks([("before (start network)", before),
                          (f"after {result.points[-1]['kimg']:g} kimg, {job.name}", after)], job.grid,
                         os.path.join(job.outdir, f"grid-{job.slug}.png"))
    result.eval_sec = time.time() - t0
    return result


def _evaluate_run(job: RunJob, run_dir: str, device: torch.device, log: Callable[[str], Any],
                  show_progress: bool) -> list[dict]:
    """The metrics of every snapshot of a finished run (except one taken after a fresh run's first iteration),
    appended to its metric-<name>.jsonl with the kimg since the start; returns the points. With the memorization
    metric, the final snapshot's nearest-neighbour picture is written beside the grids (nn-<label>-seed<seed>.png)."""
    stats = _stats_by_kimg(run_dir)
    points = []
    paths = snapshots(run_dir)
    for path in paths:
        snap = load_network_pkl(path, trust_pickle=job.trust)
        progress = snap.get("progress") or {}
        if progress.get("cur_tick") == 0:
            continue  # a fresh run's tick 0 comes after one iteration: the shared start evaluation stands for it
        kimg = (int(progress["cur_nimg"]) - job.start_nimg) / 1000
        log(f"{job.prefix} evaluating {os.path.basename(path)} (kimg {kimg:g})...")
        records = evaluate_snapshot(snap["G_ema"], metrics=job.names, data=job.ref, num_gen=job.metrics_num,
                                    device=device, seed=job.metric_seed, snapshot_pkl=os.path.basename(path),
                                    verbose=show_progress, inception_weights=job.inception_weights,
                                    **job.memorization_kwargs(nn_picture_path(job) if path == paths[-1] else None))
        records = [dict(r, kimg=kimg) for r in records]
        append_records(records, run_dir)
        tick = stats.get(round(int(progress["cur_nimg"]) / 1000, 3))
        point = dict(kimg=kimg, wall_sec=tick["Timing/total_sec"]["mean"] if tick else None,
                     snapshot=os.path.basename(path), **{k: v for r in records for k, v in r["results"].items()})
        log(f"{job.prefix} kimg {kimg:g}: " + format_values(point))
        points.append(point)
    return points


# ---- runs in child processes ---------------------------------------------------------------------------------------

def run_in_children(jobs: Sequence[RunJob], limit: int, before: np.ndarray, gpu_sets: Sequence[str],
                    on_result: Callable[[RunJob, RunResult], Any], log: Callable[[str], Any]) -> None:
    """Run `jobs` in child processes, at most `limit` at a time, each logging to <outdir>/logs/<label>-seed<seed>.log;
    `on_result` gets each run as it finishes. After a failure no new run starts, those running finish, then the
    first failure is raised (RunFailed); SIGINT/SIGTERM stops the running ones after their snapshots (JobsStopped)."""
    pending = list(jobs)
    failures: list[str] = []
    stopped: list[str] = []
    with tempfile.TemporaryDirectory(prefix="compare-jobs-") as temp, ProcessPool(limit, gpu_sets) as pool:
        np.save(os.path.join(temp, "before.npy"), before)
        by_key: dict[int, tuple[RunJob, str, str]] = {}

        def accepting() -> bool:  # no new run after a failure or a signal
            return not failures and pool.signum is None

        while pool.children or (pending and accepting()):
            while pending and not pool.full and accepting():
                job = pending.pop(0)
                spec, log_path = os.path.join(temp, f"job{job.index}.json"), _log_path(job)
                with atomic_write(spec, "w") as f:
                    json.dump(dict(job=asdict(job), parent=os.getpid(), before=os.path.join(temp, "before.npy"),
                                   result=spec + ".result"), f)
                pool.start(job.index, __name__, [spec], log_path)
                by_key[job.index] = (job, spec + ".result", log_path)
                log(f"{job.prefix} {job.name}: started (log: {log_path})")
            key, code = pool.wait()
            job, result_path, log_path = by_key.pop(key)
            if code == 0:
                with open(result_path, encoding="utf-8") as f:
                    on_result(job, RunResult(**json.load(f)))
            elif pool.signum is not None and code in (-pool.signum, 128 + pool.signum, 130, 143):
                stopped.append(job.name)
                log(f"{job.prefix} {job.name}: stopped (log: {log_path})")
            else:
                failures.append(_failure(job, code, result_path, log_path))
                log(f"{job.prefix} {failures[-1]}" + ("; the runs in progress finish, no new one starts"
                                                      if pool.children or pending else ""))
    if pool.signum is not None:
        raise JobsStopped(pool.signum, stopped)
    if failures:
        more = f" ({len(failures) - 1} more run(s) failed: see their logs)" if len(failures) > 1 else ""
        raise RunFailed(failures[0] + more)


def nn_picture_path(job: RunJob) -> str:
    """Where the run's final nearest-neighbour picture goes: beside its grid."""
    return os.path.join(job.outdir, f"nn-{job.slug}.png")


def _log_path(job: RunJob) -> str:
    folder = os.path.join(job.outdir, "logs")
    os.makedirs(folder, exist_ok=True)
    return os.path.join(folder, f"{job.slug}.log")


def _failure(job: RunJob, code: int, result_path: str, log_path: str) -> str:
    """The message of a failed child: its UserError as the serial path words it, else its exit status and log tail."""
    if os.path.exists(result_path):
        with open(result_path, encoding="utf-8") as f:
            return f"{json.load(f)['error']} (log: {log_path})"
    with open(log_path, encoding="utf-8", errors="replace") as f:
        tail = "".join(f.readlines()[-LOG_TAIL_LINES:]).rstrip()
    how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"ended with exit status {code}"
    return f"run {job.name} {how}; the end of its log {log_path}:\n{tail}"


class _Terminated(Exception):
    """SIGTERM outside training (training catches it itself and stops after a snapshot)."""


def _terminate(signum: int, frame) -> None:
    raise _Terminated


def main(argv: Sequence[str]) -> int:
    """A child process: run the job in the JSON file argv[0], write its RunResult (or {'error': message}) to the file
    the job names; exit 0, 2 (a user error), or 128 + the signal that stopped it."""
    with open(argv[0], encoding="utf-8") as f:
        spec = json.load(f)
    die_with_parent(spec["parent"])
    signal.signal(signal.SIGTERM, _terminate)
    job = RunJob(**spec["job"])
    log = lambda message: print(message, flush=True)  # noqa: E731
    try:
        result = run_one(job, np.load(spec["before"]), log=log, show_progress=False)
    except TrainingStopped as e:
        log(f"{job.prefix} {job.name}: stopped by {e.signal_name} after {e.snapshot}")
        return e.exit_code
    except (KeyboardInterrupt, _Terminated) as e:
        signum = signal.SIGTERM if isinstance(e, _Terminated) else signal.SIGINT
        log(f"{job.prefix} {job.name}: stopped by {signal.Signals(signum).name}")
        return 128 + signum
    except RunFailed as e:
        log(f"Error: {e}")
        with atomic_write(spec["result"], "w") as f:
            json.dump(dict(error=str(e)), f)
        return 2
    with atomic_write(spec["result"], "w") as f:
        json.dump(dataclasses.asdict(result), f)
    log(f"{job.prefix} {job.name}: done")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
