"""Training-speed benchmark: times `TrainingStep` (the loop's own iteration, on networks, optimizers and augment pipe
built by the training set-up's own functions) on synthetic data.

Workload per iteration: Gmain; Greg every 4th (pl batch shrink 2); Dmain; Dreg every 16th; Adam steps; G_ema
update. z_dim = w_dim = 512, no labels, ADA 'bgc' pipe with p fixed at 0.2, style mixing 0.9, r1_gamma 1,
fp16 only on CUDA (fp32=True: none, and no conv clamping, as --fp32). Warm-up iterations use indices 0.., then the
timed iterations again start at index 0. On CUDA the result has the peak GPU memory allocated (warm-up included).
`channels` and `mbstd_group` give other workloads (the demo's: 1 channel, group 32); `profile=True` records the
timed iterations with torch.profiler (slower) and adds a per-phase and per-operator summary (bench/profile.py).
"""

from __future__ import annotations

import contextlib
import time

import torch
from torch.profiler import record_function

from stylegan_rlo.bench.profile import ITERATION_LABEL, LabelledLoss, Profile

from stylegan_rlo.model.augment import AUGPIPE_SPECS
from stylegan_rlo.objectives import Objective
from stylegan_rlo.training.config import cfg_spec, fresh_networks
from stylegan_rlo.training.loss import StyleGAN2Loss
from stylegan_rlo.training.stats import StatsAccumulator
from stylegan_rlo.training.step import Batch, TrainingStep, build_augment_pipe, build_networks, build_phases
from torch_utils.ops import conv2d_gradfix, grid_sample_gradfix


def sync_device(device: torch.device | str) -> None:
    """Wait for the device's queued work (CUDA runs asynchronously), so that a timer reads finished work."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def run_bench(res: int = 32, cbase: int = 2048, cmax: int = 128, batch: int = 8, map_depth: int = 2,
              iters: int = 16, warmup: int = 2, device: torch.device | str = "cpu", threads: int | None = None,
              objective: Objective | str = "logistic", seed: int = 0, fp32: bool = False, channels: int = 3,
              mbstd_group: int | None = None, profile: bool = False) -> dict:
    """Build the benchmark networks, run warm-up + timed iterations; returns timings and the configuration."""
    if threads is not None:
        torch.set_num_threads(threads)
    dev = torch.device(device)
    objective = Objective.parse(objective)
    torch.manual_seed(seed)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.cuda.reset_peak_memory_stats(dev)
    conv2d_gradfix.enabled = True
    grid_sample_gradfix.enabled = True

    # The training set-up's own builders: fresh networks as --cfg auto makes them, with these sizes.
    G_kwargs, D_kwargs = fresh_networks(cfg_spec("auto", res, 1), "auto", res, channels, 0, cbase, cmax, map_depth)
    if mbstd_group is not None:
        D_kwargs["epilogue_kwargs"]["mbstd_group_size"] = mbstd_group
    if fp32:  # as the training option --fp32: every block in float32, no clamping of the convolution outputs
        G_kwargs["synthesis_kwargs"].update(num_fp16_res=0, conv_clamp=None)
        D_kwargs.update(num_fp16_res=0, conv_clamp=None)
    G, D, G_ema = build_networks(G_kwargs, D_kwargs, dev)
    augment_pipe = build_augment_pipe(AUGPIPE_SPECS["bgc"], 0.2, dev)
    stats = StatsAccumulator()
    loss_fn = StyleGAN2Loss(device=dev, G=G, D=D, augment_pipe=augment_pipe, objective=objective, r1_gamma=1,
                            style_mixing_prob=0.9, pl_weight=2, pl_batch_shrink=2, report=stats.report)
    opt_kwargs = dict(lr=0.0025, betas=[0.0, 0.99], eps=1e-8)
    phases = build_phases(G, D, opt_kwargs, opt_kwargs, G_reg_interval=4, D_reg_interval=16)
    step = TrainingStep(phases, LabelledLoss(loss_fn) if profile else loss_fn, G, G_ema, batch_gpu=batch, num_gpus=1,
                        ema_kimg=batch * 10 / 32,
                        ema_rampup=None, report=stats.report)
    reals = torch.randint(0, 256, [batch, channels, res, res], dtype=torch.uint8, device=dev)

    def iteration(batch_idx: int) -> None:
        real_img = reals.to(torch.float32).div_(127.5).sub_(1)
        real_c = torch.zeros([batch, 0], device=dev)
        gen_z = torch.randn([len(phases) * batch, G.z_dim], device=dev)
        gen_c = torch.zeros([len(phases) * batch, 0], device=dev)
        with record_function(ITERATION_LABEL) if profile else contextlib.nullcontext():
            step(Batch(real_img, real_c, gen_z, gen_c), batch_idx, batch_idx * batch)

    start = time.perf_counter()
    for batch_idx in range(warmup):
        iteration(batch_idx)
    stats.reduce()
    sync_device(dev)
    warmup_sec = time.perf_counter() - start  # includes cuDNN's autotuning of each new shape on a GPU
    recorder = Profile()
    start = time.perf_counter()
    with recorder.recording() if profile else contextlib.nullcontext():
        for batch_idx in range(iters):
            iteration(batch_idx)
        stats.reduce()  # reading the stats is part of the loop's work (once per tick)
        sync_device(dev)
    elapsed = time.perf_counter() - start
    images = iters * batch
    peak = torch.cuda.max_memory_allocated(dev) / 2 ** 30 if dev.type == "cuda" else None
    return dict(sec_per_kimg=elapsed / images * 1000, img_per_sec=images / elapsed, loss=objective.name,
                k=objective.k, res=res, cbase=cbase, cmax=cmax, batch=batch, map=map_depth, iters=iters,
                warmup=warmup, device=str(dev), threads=torch.get_num_threads(), total_sec=elapsed,
                warmup_sec=warmup_sec, fp32=fp32, peak_mem_gib=peak, channels=channels,
                mbstd_group=D_kwargs["epilogue_kwargs"]["mbstd_group_size"],
                **(dict(profile=recorder.summary(iters)) if profile else {}))
