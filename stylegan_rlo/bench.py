"""Training-speed benchmark: times `training_step` (the loop's own iteration) on synthetic data.

Workload per iteration: Gmain; Greg every 4th (pl batch shrink 2); Dmain; Dreg every 16th; Adam steps; G_ema
update. z_dim = w_dim = 512, no labels, ADA 'bgc' pipe with p fixed at 0.2, style mixing 0.9, r1_gamma 1,
fp16 only on CUDA. Warm-up iterations use indices 0.., then the timed iterations again start at index 0.
"""

from __future__ import annotations

import copy
import time

import torch

from torch_utils.ops import conv2d_gradfix, grid_sample_gradfix

from . import networks
from .augment import AUGPIPE_SPECS, AugmentPipe
from .loss import StyleGAN2Loss
from .stats import StatsAccumulator
from .training_step import build_phases, training_step


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_bench(res: int = 32, cbase: int = 2048, cmax: int = 128, batch: int = 8, map_depth: int = 2,
              iters: int = 16, warmup: int = 2, device: str = "cpu", threads: int | None = None,
              loss: str = "logistic", k: float | None = None, seed: int = 0) -> dict:
    """Build the benchmark networks, run warm-up + timed iterations; returns timings and the configuration."""
    if threads is not None:
        torch.set_num_threads(threads)
    dev = torch.device(device)
    torch.manual_seed(seed)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
    conv2d_gradfix.enabled = True
    grid_sample_gradfix.enabled = True

    common = dict(c_dim=0, img_resolution=res, img_channels=3)
    G = networks.Generator(z_dim=512, w_dim=512, **common, mapping_kwargs=dict(num_layers=map_depth),
                           synthesis_kwargs=dict(channel_base=cbase, channel_max=cmax, num_fp16_res=4,
                                                 conv_clamp=256)).train().requires_grad_(False).to(dev)
    D = networks.Discriminator(**common, channel_base=cbase, channel_max=cmax, num_fp16_res=4,
                               conv_clamp=256).train().requires_grad_(False).to(dev)
    G_ema = copy.deepcopy(G).eval()
    augment_pipe = AugmentPipe(**AUGPIPE_SPECS["bgc"]).train().requires_grad_(False).to(dev)
    augment_pipe.p.copy_(torch.as_tensor(0.2))
    stats = StatsAccumulator()
    loss_fn = StyleGAN2Loss(device=dev, G=G, D=D, augment_pipe=augment_pipe, objective=loss, k=k, r1_gamma=1,
                            style_mixing_prob=0.9, pl_weight=2, pl_batch_shrink=2, report=stats.report)
    opt_kwargs = dict(lr=0.0025, betas=[0.0, 0.99], eps=1e-8)
    phases = build_phases(G, D, opt_kwargs, opt_kwargs, G_reg_interval=4, D_reg_interval=16)
    reals = torch.randint(0, 256, [batch, 3, res, res], dtype=torch.uint8, device=dev)

    def iteration(batch_idx: int) -> None:
        real_img = reals.to(torch.float32).div_(127.5).sub_(1)
        real_c = torch.zeros([batch, 0], device=dev)
        gen_z = torch.randn([len(phases) * batch, G.z_dim], device=dev)
        gen_c = torch.zeros([len(phases) * batch, 0], device=dev)
        training_step(phases, loss_fn, G, G_ema, batch_idx, batch_idx * batch, real_img, real_c, gen_z, gen_c,
                      batch_gpu=batch, num_gpus=1, ema_kimg=batch * 10 / 32, ema_rampup=None, report=stats.report)

    for batch_idx in range(warmup):
        iteration(batch_idx)
    stats.reduce()
    _sync(dev)
    start = time.perf_counter()
    for batch_idx in range(iters):
        iteration(batch_idx)
    stats.reduce()  # reading the stats is part of the loop's work (once per tick)
    _sync(dev)
    elapsed = time.perf_counter() - start
    images = iters * batch
    return dict(sec_per_kimg=elapsed / images * 1000, img_per_sec=images / elapsed, loss=loss, k=k, res=res,
                cbase=cbase, cmax=cmax, batch=batch, map=map_depth, iters=iters, warmup=warmup, device=str(dev),
                threads=torch.get_num_threads(), total_sec=elapsed)
