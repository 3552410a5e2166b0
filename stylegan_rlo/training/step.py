"""One training iteration, shared by the training loop and the benchmark: the networks, augment pipe and optimizers
it works on (built here for both), the G/D phases (with lazy regularization), the non-finite gradient guard, the Adam
steps and the G_ema update."""

from __future__ import annotations

import copy
import dataclasses
from typing import Callable, Sequence

import torch

from stylegan_rlo.model import networks
from stylegan_rlo.model.augment import AugmentPipe
from stylegan_rlo.training.loss import StyleGAN2Loss

Reporter = Callable[[str, torch.Tensor], None]


@dataclasses.dataclass
class Phase:
    """One optimizer step kind: Gmain/Greg/Gboth/Dmain/Dreg/Dboth, run on iterations where batch_idx % interval == 0."""
    name: str
    module: torch.nn.Module
    opt: torch.optim.Optimizer
    interval: int


def build_networks(G_kwargs: dict, D_kwargs: dict, device: torch.device
                   ) -> tuple[torch.nn.Module, torch.nn.Module, torch.nn.Module]:
    """G, D (training mode, frozen until a phase trains them) and G_ema (a copy of G in eval mode) on `device`."""
    G = networks.Generator(**G_kwargs).train().requires_grad_(False).to(device)
    D = networks.Discriminator(**D_kwargs).train().requires_grad_(False).to(device)
    return G, D, copy.deepcopy(G).eval()


def build_augment_pipe(augment_kwargs: dict, p: float, device: torch.device) -> torch.nn.Module:
    """The ADA pipe with probability `p`."""
    augment_pipe = AugmentPipe(**augment_kwargs).train().requires_grad_(False).to(device)
    augment_pipe.p.copy_(torch.as_tensor(p))
    return augment_pipe


def make_adam(params, lr: float, betas: Sequence[float], eps: float) -> torch.optim.Adam:
    """Adam over `params` (fused kernel where the device supports it: same math, fewer per-tensor launches)."""
    params = list(params)
    fused = bool(params) and all(p.device.type in ("cpu", "cuda") for p in params)
    return torch.optim.Adam(params, lr=lr, betas=tuple(float(b) for b in betas), eps=eps, fused=fused)


def build_phases(G: torch.nn.Module, D: torch.nn.Module, G_opt_kwargs: dict, D_opt_kwargs: dict,
                 G_reg_interval: int | None, D_reg_interval: int | None) -> list[Phase]:
    """Phases in the official order: G then D; lazy regularization splits each into main + reg with the
    learning rate and betas corrected by mb_ratio = interval / (interval + 1)."""
    phases = []
    for name, module, opt_kwargs, reg_interval in [("G", G, G_opt_kwargs, G_reg_interval),
                                                   ("D", D, D_opt_kwargs, D_reg_interval)]:
        lr, betas, eps = opt_kwargs["lr"], list(opt_kwargs["betas"]), opt_kwargs.get("eps", 1e-8)
        if reg_interval is None:
            opt = make_adam(module.parameters(), lr, betas, eps)
            phases.append(Phase(name + "both", module, opt, 1))
        else:
            mb_ratio = reg_interval / (reg_interval + 1)
            opt = make_adam(module.parameters(), lr * mb_ratio, [b ** mb_ratio for b in betas], eps)
            phases.append(Phase(name + "main", module, opt, 1))
            phases.append(Phase(name + "reg", module, opt, reg_interval))
    return phases


@torch.no_grad()
def sanitize_gradients_(params) -> torch.Tensor:
    """Replace non-finite gradient entries in place (NaN -> 0, +inf -> 1e5, -inf -> -1e5, as the official loop)
    and return how many there were (a device tensor, so no synchronization is forced).

    Works on one flat copy of all gradients: a handful of large ops instead of several small ones per parameter.
    """
    grads = [param.grad for param in params if param.grad is not None]
    if not grads:
        return torch.zeros([], dtype=torch.int64)
    flat = torch.cat([grad.flatten() for grad in grads])
    # x * 0 is 0 for finite x and NaN otherwise; float ops are several times faster than isfinite's bool masks on CPU.
    count = (flat * 0).nan_to_num_(nan=1.0).sum().to(torch.int64)
    torch.nan_to_num(flat, nan=0.0, posinf=1e5, neginf=-1e5, out=flat)
    parts = flat.split([grad.numel() for grad in grads])
    torch._foreach_copy_(grads, [part.view_as(grad) for part, grad in zip(parts, grads)])
    return count


@torch.no_grad()
def update_ema(G_ema: torch.nn.Module, G: torch.nn.Module, beta: float) -> None:
    """G_ema <- beta * G_ema + (1 - beta) * G for parameters; buffers are copied."""
    ema_params, params = list(G_ema.parameters()), list(G.parameters())
    if ema_params:
        torch._foreach_lerp_(ema_params, params, 1.0 - beta)
    for b_ema, b in zip(G_ema.buffers(), G.buffers()):
        b_ema.copy_(b)


def ema_beta(batch_size: int, cur_nimg: int, ema_kimg: float, ema_rampup: float | None) -> float:
    """Per-iteration EMA decay for a half-life of ema_kimg thousand images (shorter during the ramp-up)."""
    ema_nimg = ema_kimg * 1000
    if ema_rampup is not None:
        ema_nimg = min(ema_nimg, cur_nimg * ema_rampup)
    return 0.5 ** (batch_size / max(ema_nimg, 1e-8))


@dataclasses.dataclass
class Batch:
    """One iteration's inputs on this rank: its share of the reals (float images in [-1, 1]) with their labels, and
    latents and labels for every phase (len(phases) * batch_size rows; each phase takes its own slice, as upstream)."""
    real_img: torch.Tensor
    real_c: torch.Tensor
    gen_z: torch.Tensor
    gen_c: torch.Tensor


@dataclasses.dataclass
class TrainingStep:
    """What one iteration works with, fixed from one iteration to the next; `step(batch, batch_idx, cur_nimg)` runs
    every due phase, then the G_ema update."""
    phases: Sequence[Phase]
    loss: StyleGAN2Loss
    G: torch.nn.Module
    G_ema: torch.nn.Module
    batch_gpu: int
    num_gpus: int
    ema_kimg: float
    ema_rampup: float | None
    report: Reporter

    def run_phases(self, batch: Batch, batch_idx: int) -> None:
        """Run every phase due at `batch_idx`: accumulate gradients in rounds of batch_gpu samples, guard, step."""
        batch_size = batch.real_img.shape[0] * self.num_gpus
        real_imgs, real_cs = batch.real_img.split(self.batch_gpu), batch.real_c.split(self.batch_gpu)
        num_rounds = len(real_imgs)
        for phase, phase_z, phase_c in zip(self.phases, batch.gen_z.split(batch_size), batch.gen_c.split(batch_size)):
            if batch_idx % phase.interval != 0:
                continue
            phase.opt.zero_grad(set_to_none=True)
            phase.module.requires_grad_(True)
            rounds = zip(real_imgs, real_cs, phase_z.split(self.batch_gpu), phase_c.split(self.batch_gpu))
            for round_idx, (r_img, r_c, z, c) in enumerate(rounds):
                self.loss.accumulate_gradients(phase=phase.name, real_img=r_img, real_c=r_c, gen_z=z, gen_c=c,
                                               sync=(round_idx == num_rounds - 1), gain=phase.interval)
            phase.module.requires_grad_(False)
            self.report("Grad/nonfinite_" + phase.name[0], sanitize_gradients_(phase.module.parameters()))
            phase.opt.step()

    def __call__(self, batch: Batch, batch_idx: int, cur_nimg: int) -> None:
        self.run_phases(batch, batch_idx)
        batch_size = batch.real_img.shape[0] * self.num_gpus
        update_ema(self.G_ema, self.G, ema_beta(batch_size, cur_nimg, self.ema_kimg, self.ema_rampup))
