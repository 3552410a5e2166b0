"""The training loop: data, networks (fresh or resumed), DDP, the iterations of `TrainingStep`, the ADA heuristic,
ticks with stats/status lines, image grids and atomic network snapshots that a later run can resume."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os
import time
from typing import Any, Callable

import numpy as np
import torch
from tqdm import tqdm

from stylegan_rlo.data.dataset import DatasetError, ImageFolderDataset
from stylegan_rlo.fileio import append_line
from stylegan_rlo.images import save_image_grid
from stylegan_rlo.training import preemption
from stylegan_rlo.training import state as training_state
from stylegan_rlo.training.loss import StyleGAN2Loss
from stylegan_rlo.training.run_dir import output_error
from stylegan_rlo.training.stats import StatsAccumulator, fan_out
from stylegan_rlo.training.step import Batch, TrainingStep, build_augment_pipe, build_networks, build_phases
from torch_utils import misc
from torch_utils.ops import conv2d_gradfix, grid_sample_gradfix

# ---------------------------------------------------------------------------------------------------------------
# Small helpers.

_TRACEBACK_MARKER = "Traceback (most recent call last)"  # in exceptions passed on from other processes as text


class RunLog:
    """Status messages: printed (around the progress bar) on rank 0 and appended to log.txt in batches."""

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


def _cpu_mem_gb() -> float:
    """Resident memory of this process in GiB (0 where /proc is unavailable)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 30
    except (OSError, ValueError, IndexError):
        return 0.0


def _format_time(seconds: float) -> str:
    s = int(np.rint(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h {(s // 60) % 60:02d}m {s % 60:02d}s"
    return f"{s // 86400}d {(s // 3600) % 24:02d}h {(s // 60) % 60:02d}m"


def default_grid_size(image_shape: list[int]) -> tuple[int, int]:
    """(cols, rows) of reals.png / fakes*.png as upstream: about 7680x4320 pixels, 7..32 columns, 4..32 rows."""
    return int(np.clip(7680 // image_shape[2], 7, 32)), int(np.clip(4320 // image_shape[1], 4, 32))


def setup_snapshot_image_grid(training_set, random_seed: int = 0, grid_size: tuple[int, int] | None = None
                              ) -> tuple[tuple[int, int], np.ndarray, np.ndarray]:
    """Grid (cols, rows) -- by default sized as upstream -- of randomly chosen reals (one label per row if labelled)."""
    rnd = np.random.RandomState(random_seed)
    gw, gh = default_grid_size(training_set.image_shape) if grid_size is None else grid_size
    if not training_set.has_labels:
        order = list(range(len(training_set)))
        rnd.shuffle(order)
        indices = [order[i % len(order)] for i in range(gw * gh)]
    else:
        groups: dict[tuple, list[int]] = {}
        for idx in range(len(training_set)):
            groups.setdefault(tuple(training_set.get_label(idx).flat[::-1]), []).append(idx)
        keys = sorted(groups)
        for key in keys:
            rnd.shuffle(groups[key])
        indices = []
        for y in range(gh):
            members = groups[keys[y % len(keys)]]
            indices += [members[x % len(members)] for x in range(gw)]
            groups[keys[y % len(keys)]] = [members[(i + gw) % len(members)] for i in range(len(members))]
    images, labels = zip(*[training_set[i] for i in indices])
    return (gw, gh), np.stack(images), np.stack(labels)


def _generate_grid(G_ema, grid_z, grid_c, force_fp32: bool) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([G_ema(z=z, c=c, noise_mode="const", force_fp32=force_fp32).cpu()
                          for z, c in zip(grid_z, grid_c)])


def dataset_error_in(traceback_text: str) -> DatasetError | None:
    """The DatasetError that ends a traceback printed by another process (a loader worker, a spawned rank), if any.

    Such errors reach us as text wrapped in the other process's traceback; this recovers the dataset's own message
    (which names the bad file) so that it can be shown without the traceback.
    """
    marker = f"{DatasetError.__name__}: "
    if _TRACEBACK_MARKER not in traceback_text or marker not in traceback_text:
        return None
    return DatasetError(traceback_text.rsplit(marker, 1)[-1].strip())


def _next_batch(iterator) -> tuple[torch.Tensor, torch.Tensor]:
    """The loader's next batch; a bad image met by a loader worker is re-raised with just its own message."""
    try:
        return next(iterator)
    except DatasetError as e:
        unwrapped = dataset_error_in(str(e))
        if unwrapped is not None:
            raise unwrapped from None
        raise


def _kimg_decimals(kimg_per_tick: float) -> int:
    """Decimals of kimg in the tick line: 1 as upstream, more when ticks are shorter than 0.1 kimg."""
    return max(1, int(np.ceil(-np.log10(kimg_per_tick) - 1e-9)))


def _broadcast_from_rank0(tensors) -> None:
    for tensor in tensors:
        torch.distributed.broadcast(tensor, src=0)


def _load_resume(resume_pkl: str, trust_pickle: bool, G, D, G_ema, log: RunLog, transfer: dict | None = None) -> dict:
    """Copy the resume pickle's networks into ours (built from its kwargs, or adapted to another resolution as
    planned in `transfer`); return its 'progress' (or {})."""
    from stylegan_rlo.checkpoints.pickles import load_network_pkl
    log(f'Resuming from "{resume_pkl}"')
    data = load_network_pkl(resume_pkl, trust_pickle=trust_pickle)
    if transfer is not None:  # --adapt-resolution
        from stylegan_rlo.training.adapt_resolution import apply
        log(apply(transfer, data, G, D, G_ema))
        return {}  # progress continues only at the same resolution
    for name, module in [("G", G), ("D", D), ("G_ema", G_ema)]:
        source = data.get(name) if data.get(name) is not None else data["G"]
        misc.copy_params_and_buffers(source, module, require_all=True)
    return dict(data.get("progress") or {})


# ---------------------------------------------------------------------------------------------------------------
# The loop.

def _export_tensorboard(writer: Any, stats: dict, metrics: dict, *, kimg: int, walltime: float) -> None:
    """One TensorBoard point per tick statistic (its mean) and per metric (under Metrics/), at the whole kimg."""
    scalars = {name: value["mean"] for name, value in stats.items()}
    scalars.update({f"Metrics/{name}": value for name, value in metrics.items()})
    for tag, scalar in scalars.items():
        writer.add_scalar(tag, scalar, global_step=kimg, walltime=walltime)
    writer.flush()


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
    objective: str,                           # Adversarial objective: 'logistic' or 'rooted:K' (Objective.spec).
    loss_kwargs: dict | None = None,          # Further StyleGAN2Loss kwargs (r1_gamma, pl_weight, ...).
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
) -> dict:
    """Train G and D; writes into `run_dir` on rank 0. With num_gpus > 1 the process group must be initialized.

    Returns this rank's final state: dict(G, D, G_ema, augment_pipe, cur_nimg, cur_tick, batch_idx, stopped_by,
    snapshot_pkl); stopped_by is the signal (SIGINT/SIGTERM) that stopped it early after a snapshot, else None.
    """
    start_time = time.time()
    local_rank = rank if local_rank is None else local_rank
    device = torch.device("cuda", local_rank) if device == "cuda" else torch.device(device)
    distributed = num_gpus > 1
    log = RunLog(os.path.join(run_dir, "log.txt"), enabled=(rank == 0))
    np.random.seed(random_seed * num_gpus + rank)
    torch.manual_seed(random_seed * num_gpus + rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = cudnn_benchmark
        torch.backends.cuda.matmul.allow_tf32 = allow_tf32
        torch.backends.cudnn.allow_tf32 = allow_tf32
    conv2d_gradfix.enabled = True      # double backward + weight-gradient skipping in the regularizers
    grid_sample_gradfix.enabled = True  # double backward through the augmentation's grid_sample (R1)
    force_fp32 = device.type != "cuda"
    tick_stats = StatsAccumulator()
    stats_tfevents = None
    finished = False
    stop = preemption.StopRequest(escalate=not distributed).start()
    try:
        log("Loading training set...")
        dataset_kwargs = {key: value for key, value in (training_set_kwargs or {}).items() if key != "class_name"}
        training_set = ImageFolderDataset(**dataset_kwargs)
        state = training_state.load_on_ranks(resume_state, rank, num_gpus) if resume_state is not None else None
        data_items = int(state["data_items"]) if state is not None else 0  # images drawn by all ranks so far
        sampler = misc.InfiniteSampler(dataset=training_set, rank=rank, num_replicas=num_gpus, seed=random_seed)
        if data_items:
            sampler = training_state.SkipSampler(sampler, data_items // num_gpus)
        loader_kwargs = dict(data_loader_kwargs or {})
        workers = int(loader_kwargs.pop("num_workers", 0))
        if workers > 0:
            loader_kwargs.setdefault("worker_init_fn", preemption.ignore_stop_signals)
        loader = torch.utils.data.DataLoader(dataset=training_set, sampler=sampler, batch_size=batch_size // num_gpus,
                                             num_workers=workers, pin_memory=(device.type == "cuda"),
                                             prefetch_factor=(2 if workers > 0 else None), **loader_kwargs)
        training_set_iterator = iter(loader)
        log(f"Num images:  {len(training_set)}\nImage shape: {training_set.image_shape}\n"
            f"Label shape: {training_set.label_shape}\n")

        log("Constructing networks...")
        G, D, G_ema = build_networks(G_kwargs, D_kwargs, device)
        progress: dict = {}
        if resume_pkl is not None and rank == 0:
            progress = _load_resume(resume_pkl, trust_pickle, G, D, G_ema, log, resume_transfer)
        cur_nimg = int(progress.get("cur_nimg", 0))
        cur_tick = int(progress["cur_tick"]) + 1 if "cur_tick" in progress else 0
        batch_idx = int(progress.get("batch_idx", 0))

        augment_pipe = None
        if augment_kwargs is not None and (augment_p > 0 or ada_target is not None):
            p = augment_p
            if ada_target is not None and progress.get("augment_p") is not None:
                p = float(progress["augment_p"])  # an adaptive run continues from its last p
            augment_pipe = build_augment_pipe(augment_kwargs, p, device)

        if distributed:
            log(f"Distributing across {num_gpus} processes...")
            counters = torch.tensor([cur_nimg, cur_tick, batch_idx], dtype=torch.int64, device=device)
            modules = [G, D, G_ema] + ([augment_pipe] if augment_pipe is not None else [])
            _broadcast_from_rank0([counters] + [t for m in modules for t in misc.params_and_buffers(m)])
            cur_nimg, cur_tick, batch_idx = (int(v) for v in counters.tolist())

        if rank == 0:
            z = torch.zeros([batch_gpu, G.z_dim], device=device)
            c = torch.zeros([batch_gpu, G.c_dim], device=device)
            summary = io.StringIO()
            with torch.no_grad(), contextlib.redirect_stdout(summary):  # in the precision training runs in
                img = misc.print_module_summary(G_ema, [z, c], kwargs=dict(force_fp32=force_fp32))
                misc.print_module_summary(D, [img, c], kwargs=dict(force_fp32=force_fp32))
            log(summary.getvalue().rstrip())

        ddp = dict(G_mapping=G.mapping, G_synthesis=G.synthesis, D=D)
        if distributed:
            for name, module in list(ddp.items()):
                module.requires_grad_(True)
                ddp[name] = torch.nn.parallel.DistributedDataParallel(
                    module, device_ids=[device] if device.type == "cuda" else None, broadcast_buffers=False)
                module.requires_grad_(False)

        ada_stats = StatsAccumulator(names=("Loss/signs/real",)) if ada_target is not None else None
        report = fan_out(tick_stats, *([ada_stats] if ada_stats is not None else []))
        loss_fn = StyleGAN2Loss(device=device, G=G, D=ddp["D"], augment_pipe=augment_pipe, objective=objective,
                                G_mapping=ddp["G_mapping"], G_synthesis=ddp["G_synthesis"], report=report,
                                **(loss_kwargs or {}))
        phases = build_phases(G, D, G_opt_kwargs, D_opt_kwargs, G_reg_interval, D_reg_interval)
        step = TrainingStep(phases, loss_fn, G, G_ema, batch_gpu=batch_gpu, num_gpus=num_gpus, ema_kimg=ema_kimg,
                            ema_rampup=ema_rampup, report=report)
        resume_rng = None
        if state is not None:
            resume_rng = training_state.restore(state, resume_state, phases, loss_fn, ada_stats, rank, num_gpus, log)
            del state
        schedule = dict(ema_kimg=ema_kimg, ema_rampup=ema_rampup, ada_kimg=ada_kimg)

        grid_size = grid_z = grid_c = None
        if rank == 0:
            log("Exporting sample images...")
            grid_size, images, labels = setup_snapshot_image_grid(training_set, grid_size=image_grid)
            save_image_grid(images, os.path.join(run_dir, "reals.png"), grid=grid_size, drange=(0, 255))
            grid_batch = batch_gpu if device.type == "cuda" else max(batch_gpu, 64)  # CPU: fewer, larger calls
            grid_z = torch.randn([labels.shape[0], G.z_dim], device=device).split(grid_batch)
            grid_c = torch.from_numpy(labels).to(device).split(grid_batch)
            save_image_grid(_generate_grid(G_ema, grid_z, grid_c, force_fp32),
                            os.path.join(run_dir, "fakes_init.png"), grid=grid_size)
            try:
                import torch.utils.tensorboard as tensorboard
                stats_tfevents = tensorboard.SummaryWriter(run_dir)
            except ImportError as err:
                log(f"Skipping TensorBoard export: {err}")

        log(f"Training for {total_kimg:g} kimg...\n")
        log.flush()
        total_nimg = round(total_kimg * 1000)  # rounded: a float sum such as 120.992 + 12 must not add an iteration
        bar = tqdm(total=total_nimg, initial=min(cur_nimg, total_nimg), unit="img",
                   disable=(True if rank != 0 or not show_progress else None), dynamic_ncols=True, leave=False)
        tick_start_nimg = cur_nimg
        tick_start_time = time.time()
        maintenance_time = tick_start_time - start_time
        stats_metrics: dict[str, float] = {}
        kimg_decimals = _kimg_decimals(kimg_per_tick)
        if progress_fn is not None:
            progress_fn(cur_nimg // 1000, total_kimg)
        if resume_rng is not None:  # last, so that the setup above draws nothing from the resumed streams
            training_state.set_rng_state(resume_rng)
        start_batch_idx = batch_idx
        stop_signal = None
        snapshot_pkl = None
        while True:
            # Data: this rank's reals, plus latents and labels for every phase.
            images, labels = _next_batch(training_set_iterator)
            real_img = images.to(device).to(torch.float32).div_(127.5).sub_(1)
            real_c = labels.to(device)
            num_gen = len(phases) * batch_size
            gen_z = torch.randn([num_gen, G.z_dim], device=device)
            if G.c_dim > 0:
                picks = np.random.randint(len(training_set), size=num_gen)
                gen_c = torch.from_numpy(np.stack([training_set.get_label(i) for i in picks])).to(device)
            else:
                gen_c = torch.zeros([num_gen, 0], device=device)

            step(Batch(real_img, real_c, gen_z, gen_c), batch_idx, cur_nimg)
            cur_nimg += batch_size
            batch_idx += 1
            bar.update(batch_size)

            # ADA: nudge p toward the target mean sign of D's real logits.
            if ada_stats is not None and batch_idx % ada_interval == 0:
                signs = ada_stats.reduce(device=device, distributed=distributed).get("Loss/signs/real")
                if signs is not None:
                    adjust = np.sign(signs["mean"] - ada_target) * (batch_size * ada_interval) / (ada_kimg * 1000)
                    augment_pipe.p.copy_((augment_pipe.p + adjust).clamp(min=0))

            stop_signal = preemption.agreed_signal(stop.signum, device, distributed)
            if stop_signal is not None:
                log(f"\nReceived {preemption.signal_name(stop_signal)}: stopping after this iteration with a "
                    f"snapshot and its training state...")
            done = cur_nimg >= total_nimg or stop_signal is not None
            if not done and cur_tick != 0 and cur_nimg < tick_start_nimg + kimg_per_tick * 1000:
                continue  # a fresh run reports after its first iteration, then every kimg_per_tick

            # Tick: status line and stats.
            tick_end_time = time.time()
            stats = tick_stats.reduce(device=device, distributed=distributed)
            nonfinite = {net: int(round(stats[f"Grad/nonfinite_{net}"]["mean"] * stats[f"Grad/nonfinite_{net}"]["num"]))
                         if f"Grad/nonfinite_{net}" in stats else 0 for net in ("G", "D")}
            p_now = float(augment_pipe.p.cpu()) if augment_pipe is not None else 0.0
            gpu_mem = torch.cuda.max_memory_allocated(device) / 2 ** 30 if device.type == "cuda" else 0.0
            scalars = {
                "Progress/tick": cur_tick,
                "Progress/kimg": cur_nimg / 1e3,
                "Progress/augment": p_now,
                "Timing/total_sec": tick_end_time - start_time,
                "Timing/sec_per_tick": tick_end_time - tick_start_time,
                "Timing/sec_per_kimg": (tick_end_time - tick_start_time) / max(cur_nimg - tick_start_nimg, 1) * 1e3,
                "Timing/maintenance_sec": maintenance_time,
                "Timing/total_hours": (tick_end_time - start_time) / 3600,
                "Resources/cpu_mem_gb": _cpu_mem_gb(),
                "Resources/peak_gpu_mem_gb": gpu_mem,
            }
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            for name, value in scalars.items():
                stats[name] = dict(num=1, mean=float(value), std=0.0)
            log(" ".join([
                f"tick {cur_tick:<5d}",
                f"kimg {cur_nimg / 1e3:<8.{kimg_decimals}f}",
                f"time {_format_time(tick_end_time - start_time):<12s}",
                f"sec/tick {scalars['Timing/sec_per_tick']:<7.1f}",
                f"sec/kimg {scalars['Timing/sec_per_kimg']:<7.2f}",
                f"maintenance {maintenance_time:<6.1f}",
                f"cpumem {scalars['Resources/cpu_mem_gb']:<6.2f}",
                f"gpumem {gpu_mem:<6.2f}",
                f"augment {p_now:.3f}",
                f"nonfinite G/D {nonfinite['G']}/{nonfinite['D']}",
            ]))

            if not done and abort_fn is not None and abort_fn():
                done = True
                log("\nAborting...")

            if rank == 0 and image_snapshot_ticks is not None and (done or cur_tick % image_snapshot_ticks == 0):
                save_image_grid(_generate_grid(G_ema, grid_z, grid_c, force_fp32),
                                os.path.join(run_dir, f"fakes{cur_nimg // 1000:06d}.png"), grid=grid_size)

            snapshot_G_ema = None
            snapshot_rng = None
            if stop_signal is not None or (network_snapshot_ticks is not None and
                                           (done or cur_tick % network_snapshot_ticks == 0)):
                progress_now = dict(cur_nimg=cur_nimg, cur_tick=cur_tick, batch_idx=batch_idx, augment_p=p_now)
                snapshot_pkl, snapshot_G_ema = _save_snapshot(
                    run_dir, rank, distributed, training_set_kwargs, G, D, G_ema, augment_pipe, progress_now)
                ranks = training_state.gather(training_state.rank_state(loss_fn, ada_stats), num_gpus)
                snapshot_rng = ranks[rank]["rng"]
                if rank == 0:
                    training_state.write(training_state.state_path(snapshot_pkl), phases=phases, ranks=ranks,
                                         progress=progress_now, schedule=schedule,
                                         data_items=data_items + (batch_idx - start_batch_idx) * batch_size)
                log(f"Saved {os.path.basename(snapshot_pkl)} and its training state")
            if snapshot_G_ema is not None and metrics and rank == 0 and stop_signal is None:
                stats_metrics.update(_evaluate_metrics(snapshot_G_ema, metrics, metrics_num, training_set_kwargs,
                                                       metric_data, best_metric, device, random_seed, snapshot_pkl,
                                                       cur_nimg, run_dir, log))
            if snapshot_rng is not None:  # continue exactly as a run resumed from this snapshot would
                training_state.set_rng_state(snapshot_rng)

            if rank == 0:
                timestamp = time.time()
                append_line(os.path.join(run_dir, "stats.jsonl"), json.dumps(dict(stats, timestamp=timestamp)))
                if stats_tfevents is not None:
                    _export_tensorboard(stats_tfevents, stats, stats_metrics, kimg=int(cur_nimg / 1e3),
                                        walltime=timestamp - start_time)
            log.flush()
            if progress_fn is not None:
                progress_fn(cur_nimg // 1000, total_kimg)
            if done:
                break
            # The next tick starts here; the time since the last iteration (snapshot, metrics, log) is maintenance.
            tick_start_nimg, tick_start_time = cur_nimg, time.time()
            maintenance_time = tick_start_time - tick_end_time
            cur_tick += 1
        bar.close()
        if stop_signal is not None:
            log(f"\nStopped by {preemption.signal_name(stop_signal)}; continue exactly with --resume {snapshot_pkl}")
        log("\nExiting...")
        finished = True
        return dict(G=G, D=D, G_ema=G_ema, augment_pipe=augment_pipe, cur_nimg=cur_nimg, cur_tick=cur_tick,
                    batch_idx=batch_idx, stopped_by=stop_signal, snapshot_pkl=snapshot_pkl)
    except OSError as e:  # a full or read-only disk while writing outputs: a message, not a traceback
        error = output_error(e, run_dir)
        if error is None:
            raise
        raise error from e
    finally:
        stop.close()
        _close_outputs(log, stats_tfevents, run_dir, failing=not finished)


def _close_outputs(log: RunLog, stats_tfevents, run_dir: str, failing: bool) -> None:
    """Flush log.txt and close TensorBoard. When `failing` (an error is on its way out, say the disk is full), a
    second failure here is dropped: it must not replace the first."""
    try:
        log.flush()
        if stats_tfevents is not None:
            stats_tfevents.close()
    except OSError as e:
        if failing:
            return
        error = output_error(e, run_dir)
        if error is None:
            raise
        raise error from e


def _save_snapshot(run_dir: str, rank: int, distributed: bool, training_set_kwargs: dict | None, G, D, G_ema,
                   augment_pipe, progress: dict) -> tuple[str, torch.nn.Module]:
    """Write network-snapshot-NNNNNN.pkl atomically on rank 0 (after checking that all ranks agree)."""
    from stylegan_rlo.checkpoints.pickles import save_network_pkl
    snapshot: dict[str, Any] = dict(training_set_kwargs=dict(training_set_kwargs or {}))
    for name, module in [("G", G), ("D", D), ("G_ema", G_ema), ("augment_pipe", augment_pipe)]:
        if module is not None:
            if distributed:
                misc.check_ddp_consistency(module, ignore_regex=r".*\.w_avg")
            if rank == 0:
                module = copy.deepcopy(module).eval().requires_grad_(False).cpu()
        snapshot[name] = module
    snapshot["progress"] = progress
    path = os.path.join(run_dir, f"network-snapshot-{progress['cur_nimg'] // 1000:06d}.pkl")
    if rank == 0:
        training_state.remove_stale(training_state.state_path(path))  # a kill in between leaves no wrong one
        save_network_pkl(path, snapshot)
    return path, snapshot["G_ema"]


def _evaluate_metrics(G_ema, metrics, metrics_num, training_set_kwargs, metric_data, best_metric, device, seed,
                      snapshot_pkl, cur_nimg, run_dir, log: RunLog) -> dict[str, float]:
    """Run the metrics hook on a snapshot's G_ema against the training data (or `metric_data`, held-out images,
    as they are); keep the best snapshot; returns {metric result name: value} for TensorBoard."""
    from stylegan_rlo.evaluation.metrics import append_records, evaluate_snapshot
    from stylegan_rlo.training.best_snapshot import update_best
    log("Evaluating metrics...")
    data = training_set_kwargs["path"] if metric_data is None else metric_data
    mirror = bool(training_set_kwargs.get("xflip", False)) and metric_data is None
    records = evaluate_snapshot(G_ema, metrics=list(metrics), data=data, num_gen=metrics_num, mirror=mirror,
                                device=str(device), seed=seed, snapshot_pkl=os.path.basename(snapshot_pkl))
    append_records([dict(record, data=data) for record in records], run_dir)
    for record in records:
        if record["metric"] == best_metric and update_best(run_dir, best_metric, record["results"][best_metric],
                                                           snapshot_pkl, cur_nimg / 1000):
            log(f"New best {best_metric}: {os.path.basename(snapshot_pkl)} is now best-{best_metric}.pkl")
    results: dict[str, float] = {}
    for record in records:
        for name, value in record.get("results", {}).items():
            results[name] = float(value)
            log(f"{record.get('metric', name)}: {name} = {value:g}")
    return results
