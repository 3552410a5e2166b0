"""The training loop: data, networks (fresh or resumed), DDP, the iterations of `TrainingStep`, the ADA heuristic,
ticks with stats/status lines, image grids and atomic network snapshots that a later run can resume."""

from __future__ import annotations

import contextlib
import io
import json
import os
import time
from typing import Any, Callable, Iterator, NoReturn

import numpy as np
import torch
from tqdm import tqdm

from stylegan_rlo.data.dataset import ImageFolderDataset
from stylegan_rlo.fileio import append_line
from stylegan_rlo.training import preemption
from stylegan_rlo.training import state as training_state
from stylegan_rlo.training.data_loading import draw_batch, load_training_set, start_loader
# default_grid_size is looked up here when the loop runs: tests shrink the grids by replacing it in this module.
from stylegan_rlo.training.grids import FakesGrid, default_grid_size, export_start_grids
from stylegan_rlo.training.loss import StyleGAN2Loss
from stylegan_rlo.training.run_dir import output_error
from stylegan_rlo.training.snapshot_metrics import SnapshotMetrics
from stylegan_rlo.training.snapshots import SnapshotParts, load_resume, write_snapshot
from stylegan_rlo.training.stats import StatsAccumulator, fan_out
from stylegan_rlo.training.step import TrainingStep, build_augment_pipe, build_networks, build_phases
from stylegan_rlo.training.ticks import (TickClock, close_tick, export_tensorboard, kimg_decimals, open_tensorboard,
                                         status_line)
from torch_utils import misc
from torch_utils.ops import conv2d_gradfix, grid_sample_gradfix


class RunLog:
    """Status messages: printed (around the progress bar) on rank 0 and appended to log.txt in batches (through this
    module's `append_line`, which tests replace to fill the disk)."""

    def __init__(self, path: str | None, enabled: bool):
        self.path = path
        self.enabled = enabled
        self._pending: list[str] = []

    def __call__(self, message: str = "") -> None:
        if not self.enabled:
            return
        tqdm.write(message)
        self._pending.append(message)

    def flush(self) -> None:
        """Append everything printed since the last flush to log.txt in one locked append."""
        if self.enabled and self.path is not None and self._pending:
            append_line(self.path, "\n".join(self._pending))
        self._pending = []


class RunOutputs:
    """Rank 0's outputs besides log.txt and the snapshots: reals.png and the fakes grids, stats.jsonl and TensorBoard
    events (with the latest metric results). On other ranks they do nothing."""

    def __init__(self, run_dir: str, start_time: float, enabled: bool):
        self.run_dir = run_dir
        self.start_time = start_time
        self.enabled = enabled
        self.metrics: dict[str, float] = {}  # the latest result of each metric, for TensorBoard
        self._grid: FakesGrid | None = None
        self._tfevents: Any = None

    def start(self, training_set: ImageFolderDataset, G_ema: torch.nn.Module, grid_size: tuple[int, int], *,
              batch_gpu: int, device: torch.device, force_fp32: bool, log: RunLog) -> None:
        """Write reals.png and fakes_init.png; open TensorBoard's event file (if tensorboard is installed)."""
        if self.enabled:
            log("Exporting sample images...")
            self._grid = export_start_grids(training_set, G_ema, self.run_dir, grid_size, batch_gpu=batch_gpu,
                                            device=device, force_fp32=force_fp32)
            self._tfevents = open_tensorboard(self.run_dir, log)

    def fakes(self, G_ema: torch.nn.Module, cur_nimg: int) -> None:
        """Write fakesNNNNNN.png: the grid's fixed latents through `G_ema`."""
        if self.enabled:
            self._grid.save(G_ema, os.path.join(self.run_dir, f"fakes{cur_nimg // 1000:06d}.png"))

    def tick(self, stats: dict, cur_nimg: int) -> None:
        """Append the tick's line to stats.jsonl and its TensorBoard points."""
        if self.enabled:
            timestamp = time.time()
            append_line(os.path.join(self.run_dir, "stats.jsonl"), json.dumps(dict(stats, timestamp=timestamp)))
            if self._tfevents is not None:
                export_tensorboard(self._tfevents, stats, self.metrics, kimg=int(cur_nimg / 1e3),
                                   walltime=timestamp - self.start_time)

    def close(self) -> None:
        """Close TensorBoard's event file."""
        if self._tfevents is not None:
            self._tfevents.close()


# ---------------------------------------------------------------------------------------------------------------
# Set-up steps.

def _setup_process(device: str, local_rank: int, seed: int, cudnn_benchmark: bool, allow_tf32: bool) -> torch.device:
    """Seed this rank's RNGs and return its device (CUDA: made current, with the cuDNN/TF32 choices); the gradfix
    ops are enabled for the regularizers (double backward through convolutions and the augmentation's grid_sample)."""
    np.random.seed(seed)
    torch.manual_seed(seed)
    device = torch.device("cuda", local_rank) if device == "cuda" else torch.device(device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = cudnn_benchmark
        torch.backends.cuda.matmul.allow_tf32 = allow_tf32
        torch.backends.cudnn.allow_tf32 = allow_tf32
    conv2d_gradfix.enabled = True
    grid_sample_gradfix.enabled = True
    return device


def _open_training_data(training_set_kwargs: dict | None, data_loader_kwargs: dict | None, resume_state: str | None,
                        *, rank: int, num_gpus: int, batch_size: int, seed: int, device: torch.device,
                        log: RunLog) -> tuple[ImageFolderDataset, Iterator, dict | None, int]:
    """The training set, this rank's batches of it, the training state of an exact resume (read on rank 0, given
    to all; None without one) and how many images all ranks drew before (where the batches continue)."""
    log("Loading training set...")
    training_set = load_training_set(training_set_kwargs)
    state = training_state.load_on_ranks(resume_state, rank, num_gpus) if resume_state is not None else None
    data_items = int(state["data_items"]) if state is not None else 0
    batches = start_loader(training_set, data_loader_kwargs, rank=rank, num_gpus=num_gpus, batch_size=batch_size,
                           seed=seed, skip=data_items // num_gpus, pin_memory=(device.type == "cuda"))
    log(f"Num images:  {len(training_set)}\nImage shape: {training_set.image_shape}\n"
        f"Label shape: {training_set.label_shape}\n")
    return training_set, batches, state, data_items


def _start_networks(G_kwargs: dict, D_kwargs: dict, augment_kwargs: dict | None, *, augment_p: float,
                    ada_target: float | None, resume_pkl: str | None, trust_pickle: bool, resume_transfer: dict | None,
                    device: torch.device, rank: int, num_gpus: int, log: RunLog
                    ) -> tuple[torch.nn.Module, torch.nn.Module, torch.nn.Module, torch.nn.Module | None, list[int]]:
    """The networks a run starts from: built, loaded from the resume pickle on rank 0, then rank 0's on every rank.
    Returns G, D, G_ema, the augment pipe (None without augmentation) and [cur_nimg, cur_tick, batch_idx] where the
    resumed snapshot left off (an adaptive run continues from its p too)."""
    log("Constructing networks...")
    G, D, G_ema = build_networks(G_kwargs, D_kwargs, device)
    progress: dict = {}
    if resume_pkl is not None and rank == 0:
        progress = load_resume(resume_pkl, trust_pickle, G, D, G_ema, log, resume_transfer)
    counters = [int(progress.get("cur_nimg", 0)), int(progress["cur_tick"]) + 1 if "cur_tick" in progress else 0,
                int(progress.get("batch_idx", 0))]
    augment_pipe = None
    if augment_kwargs is not None and (augment_p > 0 or ada_target is not None):
        p = augment_p
        if ada_target is not None and progress.get("augment_p") is not None:
            p = float(progress["augment_p"])
        augment_pipe = build_augment_pipe(augment_kwargs, p, device)
    if num_gpus > 1:
        log(f"Distributing across {num_gpus} processes...")
        counters = _broadcast_from_rank0(counters, [G, D, G_ema, augment_pipe], device)
    return G, D, G_ema, augment_pipe, counters


def _broadcast_from_rank0(counters: list[int], modules: list[torch.nn.Module | None],
                          device: torch.device) -> list[int]:
    """Give every rank rank 0's networks (fresh or resumed) and progress counters; returns the counters."""
    shared = torch.tensor(counters, dtype=torch.int64, device=device)
    for tensor in [shared] + [t for m in modules if m is not None for t in misc.params_and_buffers(m)]:
        torch.distributed.broadcast(tensor, src=0)
    return [int(v) for v in shared.tolist()]


def _network_summary(G_ema: torch.nn.Module, D: torch.nn.Module, batch_gpu: int, device: torch.device,
                     force_fp32: bool) -> str:
    """The layer tables of G and D, from one forward pass in the precision training runs in."""
    z = torch.zeros([batch_gpu, G_ema.z_dim], device=device)
    c = torch.zeros([batch_gpu, G_ema.c_dim], device=device)
    summary = io.StringIO()
    with torch.no_grad(), contextlib.redirect_stdout(summary):
        img = misc.print_module_summary(G_ema, [z, c], kwargs=dict(force_fp32=force_fp32))
        misc.print_module_summary(D, [img, c], kwargs=dict(force_fp32=force_fp32))
    return summary.getvalue().rstrip()


def _ddp_modules(G: torch.nn.Module, D: torch.nn.Module, device: torch.device,
                 distributed: bool) -> dict[str, torch.nn.Module]:
    """The modules the loss runs (G_mapping, G_synthesis, D), wrapped in DistributedDataParallel when distributed
    (gradients averaged over ranks; buffers are not broadcast)."""
    ddp = dict(G_mapping=G.mapping, G_synthesis=G.synthesis, D=D)
    if distributed:
        for name, module in list(ddp.items()):
            module.requires_grad_(True)
            ddp[name] = torch.nn.parallel.DistributedDataParallel(
                module, device_ids=[device] if device.type == "cuda" else None, broadcast_buffers=False)
            module.requires_grad_(False)
    return ddp


# ---------------------------------------------------------------------------------------------------------------
# Steps of the iterations and ticks.

def _adjust_augment_p(augment_pipe: torch.nn.Module, ada_stats: StatsAccumulator, ada_target: float,
                      adjust: float, device: torch.device, distributed: bool) -> None:
    """ADA: move p by `adjust` toward the target mean sign of D's real logits since the last adjustment."""
    signs = ada_stats.reduce(device=device, distributed=distributed).get("Loss/signs/real")
    if signs is not None:
        augment_pipe.p.copy_((augment_pipe.p + np.sign(signs["mean"] - ada_target) * adjust).clamp(min=0))


def _due(every_ticks: int | None, cur_tick: int, done: bool) -> bool:
    """Whether an output written every `every_ticks` ticks (None: never) is due now; the last tick always has one."""
    return every_ticks is not None and (done or cur_tick % every_ticks == 0)


def _agreed_stop(stop: preemption.StopRequest, device: torch.device, distributed: bool, log: RunLog) -> int | None:
    """The stop signal (SIGINT/SIGTERM) all ranks have agreed to stop after this iteration on, if any."""
    stop_signal = preemption.agreed_signal(stop.signum, device, distributed)
    if stop_signal is not None:
        log(f"\nReceived {preemption.signal_name(stop_signal)}: stopping after this iteration with a "
            f"snapshot and its training state...")
    return stop_signal


def _take_snapshot(parts: SnapshotParts, run_dir: str, *, rank: int, num_gpus: int, progress: dict, data_items: int,
                   metrics: SnapshotMetrics | None, stop: preemption.StopRequest,
                   log: RunLog) -> tuple[str, dict[str, float]]:
    """Write a network snapshot with its training state and evaluate `metrics` on it (if any; rank 0), then go on
    with the RNG state it saved, exactly as a run resumed from it would. Returns its path and the metric results.
    A stop signal drops the evaluation at once (single-process runs): the snapshot is already on disk."""
    snapshot_pkl, snapshot_G_ema, snapshot_rng = write_snapshot(parts, run_dir, rank=rank, num_gpus=num_gpus,
                                                                progress=progress, data_items=data_items, log=log)
    results: dict[str, float] = {}
    if metrics is not None:
        try:
            with stop.interrupting(enabled=num_gpus == 1):
                results = metrics.evaluate(snapshot_G_ema, snapshot_pkl, progress["cur_nimg"], run_dir, log)
        except preemption.StopNow as e:
            log(f"\nReceived {preemption.signal_name(e.signum)} during the metric evaluation: dropped it; "
                f"{os.path.basename(snapshot_pkl)} and its training state are on disk (evaluate it later with "
                f"scripts/calc_fid.py)")
    training_state.set_rng_state(snapshot_rng)
    return snapshot_pkl, results


# ---------------------------------------------------------------------------------------------------------------
# The loop.

def training_loop(
    *,                                       # Keywords only; stylegan_rlo.training.config makes the option values.
    run_dir: str = ".",                      # Output directory (log.txt, stats.jsonl, images, snapshots).
    training_set_kwargs: dict | None = None,  # ImageFolderDataset kwargs (+ class_name, recorded in snapshots).
    data_loader_kwargs: dict | None = None,   # torch.utils.data.DataLoader options (num_workers).
    G_kwargs: dict | None = None,             # networks.Generator constructor kwargs (complete).
    D_kwargs: dict | None = None,             # networks.Discriminator constructor kwargs (complete).
    G_opt_kwargs: dict | None = None,         # Adam lr / betas / eps for G.
    D_opt_kwargs: dict | None = None,         # Adam lr / betas / eps for D.
    augment_kwargs: dict | None = None,       # augment.AugmentPipe kwargs; None = no augmentation.
    loss_kwargs: dict,                        # StyleGAN2Loss kwargs: objective ('logistic' or 'rooted:K'), r1_gamma,
                                             # pl_weight, ...
    metrics: list | tuple = (),               # Metric names evaluated at every network snapshot.
    metrics_num: int | None = None,           # Generated images per metric (None = the metric's default).
    random_seed: int = 0,                     # Global seed.
    num_gpus: int = 1,                        # Number of processes (ranks) training together.
    rank: int = 0,                            # This process's rank in [0, num_gpus).
    local_rank: int | None = None,            # CUDA device index of this process (default: rank).
    device: str = "cpu",                      # 'cpu' or 'cuda'.
    batch_size: int = 4,                      # Total batch per iteration over all ranks.
    batch_gpu: int = 4,                       # Samples per forward pass of one rank.
    ema_kimg: float = 10,                     # G_ema half-life in thousands of images.
    ema_rampup: float | None = None,          # EMA ramp-up coefficient (None = no ramp-up).
    G_reg_interval: int | None = 4,           # Lazy regularization interval for G (None = every step, Gboth).
    D_reg_interval: int | None = 16,          # Lazy regularization interval for D (None = every step, Dboth).
    augment_p: float = 0,                     # Initial augmentation probability.
    ada_target: float | None = None,          # ADA target for the mean sign of real logits (None = fixed p).
    ada_interval: int = 4,                    # Iterations between ADA adjustments.
    ada_kimg: float = 500,                    # kimg for p to move by one unit.
    total_kimg: float = 25000,                # Training length (absolute, continues across resumes).
    kimg_per_tick: float,                     # Status/stat interval.
    image_snapshot_ticks: int | None,         # Ticks between fakes grids (None = never).
    network_snapshot_ticks: int | None,       # Ticks between network snapshots (None = never).
    resume_pkl: str | None = None,            # Pickle (path or URL) to start from; ours continue their progress.
    trust_pickle: bool = False,               # Execute code embedded in the resume pickle (trusted files only).
    cudnn_benchmark: bool = True,             # torch.backends.cudnn.benchmark.
    allow_tf32: bool = False,                 # TF32 matmul/convolutions on Ampere+ GPUs.
    abort_fn: Callable[[], bool] | None = None,           # Checked every tick; True stops after a final snapshot.
    progress_fn: Callable[[int, float], Any] | None = None,  # Called with (cur_kimg, total_kimg) every tick.
    show_progress: bool = True,               # tqdm progress bar on rank 0 (when stderr is a terminal).
    image_grid: tuple[int, int] | None = None,  # (cols, rows) of reals.png / fakes*.png; None = upstream size.
    resume_transfer: dict | None = None,      # --adapt-resolution: the transfer planned from the resume pickle.
    resume_state: str | None = None,          # Training state file of the resumed snapshot (exact resume).
    metric_data: str | None = None,           # Dataset the metrics compare with (None = the training data).
    best_metric: str | None = None,           # Metric whose best snapshot is kept as best-<metric>.pkl.
    vgg16_weights: str | None = None,         # VGG16 weights file of pr50k3_full (None = the default places).
) -> dict:
    """Train G and D; writes into `run_dir` on rank 0. With num_gpus > 1 the process group must be initialized.

    Returns this rank's final state: dict(G, D, G_ema, augment_pipe, cur_nimg, cur_tick, batch_idx, stopped_by,
    snapshot_pkl); stopped_by is the signal (SIGINT/SIGTERM) that stopped it early after a snapshot, else None.
    """
    start_time = time.time()
    distributed = num_gpus > 1
    log = RunLog(os.path.join(run_dir, "log.txt"), enabled=(rank == 0))
    device = _setup_process(device, rank if local_rank is None else local_rank, random_seed * num_gpus + rank,
                            cudnn_benchmark, allow_tf32)
    force_fp32 = device.type != "cuda"
    tick_stats = StatsAccumulator()
    outputs = RunOutputs(run_dir, start_time, enabled=(rank == 0))
    finished = False
    stop = preemption.StopRequest(escalate=not distributed).start()
    interruptible_setup = contextlib.ExitStack()  # a signal during set-up stops it at once: nothing to save yet
    try:
        interruptible_setup.enter_context(stop.interrupting(enabled=not distributed))
        training_set, batches, state, data_items = _open_training_data(
            training_set_kwargs, data_loader_kwargs, resume_state, rank=rank, num_gpus=num_gpus, batch_size=batch_size,
            seed=random_seed, device=device, log=log)

        G, D, G_ema, augment_pipe, (cur_nimg, cur_tick, batch_idx) = _start_networks(
            G_kwargs, D_kwargs, augment_kwargs, augment_p=augment_p, ada_target=ada_target, resume_pkl=resume_pkl,
            trust_pickle=trust_pickle, resume_transfer=resume_transfer, device=device, rank=rank, num_gpus=num_gpus,
            log=log)
        if rank == 0:
            log(_network_summary(G_ema, D, batch_gpu, device, force_fp32))

        ada_stats = StatsAccumulator(names=("Loss/signs/real",)) if ada_target is not None else None
        report = fan_out(tick_stats, *([ada_stats] if ada_stats is not None else []))
        ddp = _ddp_modules(G, D, device, distributed)
        loss_fn = StyleGAN2Loss(device=device, G=G, D=ddp["D"], augment_pipe=augment_pipe,
                                G_mapping=ddp["G_mapping"], G_synthesis=ddp["G_synthesis"], report=report,
                                **loss_kwargs)
        phases = build_phases(G, D, G_opt_kwargs, D_opt_kwargs, G_reg_interval, D_reg_interval)
        step = TrainingStep(phases, loss_fn, G, G_ema, batch_gpu=batch_gpu, num_gpus=num_gpus, ema_kimg=ema_kimg,
                            ema_rampup=ema_rampup, report=report)
        resume_rng = None if state is None else training_state.restore(state, resume_state, phases, loss_fn,
                                                                       ada_stats, rank, num_gpus, log)
        del state  # the optimizer states are in the optimizers now
        snapshot_parts = SnapshotParts(training_set_kwargs, G, D, G_ema, augment_pipe, phases, loss_fn, ada_stats,
                                       schedule=dict(ema_kimg=ema_kimg, ema_rampup=ema_rampup, ada_kimg=ada_kimg),
                                       run=training_state.run_identity(training_set_kwargs, batch_size, batch_gpu))
        snapshot_metrics = SnapshotMetrics.plan(metrics, metrics_num, training_set_kwargs, metric_data, best_metric,
                                                device, random_seed, vgg16_weights) if metrics else None

        outputs.start(training_set, G_ema, default_grid_size(training_set.image_shape) if image_grid is None
                      else image_grid, batch_gpu=batch_gpu, device=device, force_fp32=force_fp32, log=log)
        log(f"Training for {total_kimg:g} kimg...\n")
        log.flush()
        total_nimg = round(total_kimg * 1000)  # rounded: a float sum such as 120.992 + 12 must not add an iteration
        bar = tqdm(total=total_nimg, initial=min(cur_nimg, total_nimg), unit="img",
                   disable=(True if rank != 0 or not show_progress else None), dynamic_ncols=True, leave=False)
        clock = TickClock(start_time, cur_nimg, kimg_per_tick)
        if progress_fn is not None:
            progress_fn(cur_nimg // 1000, total_kimg)
        if resume_rng is not None:  # last, so that the setup above draws nothing from the resumed streams
            training_state.set_rng_state(resume_rng)
        interruptible_setup.close()  # from here on, a signal finishes the iteration and writes a snapshot
        start_batch_idx = batch_idx
        snapshot_pkl = None
        while True:
            step(draw_batch(batches, training_set, len(phases) * batch_size, G, device), batch_idx, cur_nimg)
            cur_nimg += batch_size
            batch_idx += 1
            bar.update(batch_size)
            if ada_stats is not None and batch_idx % ada_interval == 0:
                _adjust_augment_p(augment_pipe, ada_stats, ada_target, (batch_size * ada_interval) / (ada_kimg * 1000),
                                  device, distributed)

            stop_signal = _agreed_stop(stop, device, distributed, log)
            done = cur_nimg >= total_nimg or stop_signal is not None
            if not done and cur_tick != 0 and not clock.due(cur_nimg):
                continue  # a fresh run reports after its first iteration, then every kimg_per_tick

            stats = close_tick(tick_stats, clock, cur_tick=cur_tick, cur_nimg=cur_nimg, augment_pipe=augment_pipe,
                               device=device, distributed=distributed)
            log(status_line(stats, kimg_decimals(kimg_per_tick)))
            if not done and abort_fn is not None and abort_fn():
                done = True
                log("\nAborting...")
            if _due(image_snapshot_ticks, cur_tick, done):
                outputs.fakes(G_ema, cur_nimg)
            if stop_signal is not None or _due(network_snapshot_ticks, cur_tick, done):
                progress_now = dict(cur_nimg=cur_nimg, cur_tick=cur_tick, batch_idx=batch_idx,
                                    augment_p=stats["Progress/augment"]["mean"])
                snapshot_pkl, results = _take_snapshot(
                    snapshot_parts, run_dir, rank=rank, num_gpus=num_gpus, progress=progress_now, log=log,
                    data_items=data_items + (batch_idx - start_batch_idx) * batch_size,
                    metrics=snapshot_metrics if rank == 0 and stop_signal is None else None, stop=stop)
                outputs.metrics.update(results)
                if stop_signal is None and not distributed and stop.signum is not None:  # came after this snapshot
                    stop_signal, done = stop.signum, True
            outputs.tick(stats, cur_nimg)
            log.flush()
            if progress_fn is not None:
                progress_fn(cur_nimg // 1000, total_kimg)
            if done:
                break
            clock.next_tick(cur_nimg)
            cur_tick += 1
        bar.close()
        if stop_signal is not None:
            log(f"\nStopped by {preemption.signal_name(stop_signal)}; continue exactly with --resume {snapshot_pkl}")
        log("\nExiting...")
        finished = True
        return dict(G=G, D=D, G_ema=G_ema, augment_pipe=augment_pipe, cur_nimg=cur_nimg, cur_tick=cur_tick,
                    batch_idx=batch_idx, stopped_by=stop_signal, snapshot_pkl=snapshot_pkl)
    except preemption.StopNow as e:  # during set-up
        log(f"\nReceived {preemption.signal_name(e.signum)} during set-up: stopped before training began")
        raise preemption.TrainingStopped(e.signum, run_dir, None) from None
    except OSError as e:  # a full or read-only disk while writing outputs: a message, not a traceback
        _raise_output_error(e, run_dir)
    finally:
        stop.close()
        _close_outputs(log, outputs, run_dir, failing=not finished)


def _raise_output_error(e: OSError, run_dir: str) -> NoReturn:
    """Raise `e` as the RunDirError of an unusable output location (full, read-only) if it is one, else as it is."""
    error = output_error(e, run_dir)
    if error is None:
        raise e
    raise error from e


def _close_outputs(log: RunLog, outputs: RunOutputs, run_dir: str, failing: bool) -> None:
    """Flush log.txt and close TensorBoard. When `failing` (an error is on its way out, say the disk is full), a
    second failure here is dropped: it must not replace the first."""
    try:
        log.flush()
        outputs.close()
    except OSError as e:
        if not failing:
            _raise_output_error(e, run_dir)
