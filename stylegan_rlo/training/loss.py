"""StyleGAN2 training loss: a pluggable adversarial objective plus R1, path length regularization, style mixing,
and optionally LeCam regularization and DiffAugment.

The adversarial objective comes from `stylegan_rlo.objectives` (logistic, rooted, hinge, least squares); this module
only calls its three terms: D real, D fake and G. Everything else (phases, regularizers, gradient gains, DDP sync
points) follows the official StyleGAN2-ADA loss.

LeCam regularization (Tseng et al. 2021, "Regularizing Generative Adversarial Networks under Limited Data") adds to
D's main loss weight * (mean relu(D(x) - a_F)^2 + mean relu(a_R - D(G(z)))^2), where a_R and a_F are exponential
moving averages of the mean D output on real and on generated images (`LeCamAnchors`; no gradient flows through
them). As in the authors' StyleGAN2 code, each D main pass first folds its own batch means into the averages, which
are zero-debiased (the first pass's anchors are that pass's means), then uses them.

DiffAugment (`stylegan_rlo.model.diffaugment`) transforms every image on its way into D (reals and fakes, D and G
passes, and the reals R1 differentiates through), before the ADA pipe, as in the authors' StyleGAN2-ADA fork.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from stylegan_rlo.model.diffaugment import DiffAugment, parse_policy
from stylegan_rlo.objectives import Objective
from torch_utils import misc
from torch_utils.ops import conv2d_gradfix

PHASES = ("Gmain", "Greg", "Gboth", "Dmain", "Dreg", "Dboth")
DEFAULT_LECAM_DECAY = 0.99  # the LeCam anchors' decay per D main pass, as the authors' StyleGAN2 code

Reporter = Callable[[str, torch.Tensor], None]


def _ignore_report(name: str, value: torch.Tensor) -> None:
    """Default reporter: statistics are dropped."""


class LeCamAnchors:
    """LeCam's anchors: zero-debiased exponential moving averages of D's mean output on real (a_R, `real`) and
    generated (a_F, `fake`) images, updated once per D main pass. After t updates with values x_1..x_t each is
    sum_i decay^(t-i) x_i / sum_i decay^(t-i) (decay 1: the plain mean of all); kept per process as float tensors on
    the device, with the update count, and saved in the training state file."""

    def __init__(self, decay: float, device: torch.device):
        self.decay = float(decay)
        self.real = torch.zeros([], device=device)
        self.fake = torch.zeros([], device=device)
        self.updates = 0

    def update(self, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> None:
        """Fold one pass's mean outputs in: a <- a + w_t (mean - a) with w_t = (1 - decay) / (1 - decay^t)."""
        self.updates += 1
        weight = 1 / self.updates if self.decay == 1 else (1 - self.decay) / (1 - self.decay ** self.updates)
        self.real.lerp_(real_logits.detach().mean().to(self.real.dtype), weight)
        self.fake.lerp_(fake_logits.detach().mean().to(self.fake.dtype), weight)

    def penalty(self, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
        """Per sample pair: relu(D(x_i) - a_F)^2 + relu(a_R - D(G(z_i)))^2 (its batch mean is the LeCam term)."""
        return (real_logits - self.fake).relu().square() + (self.real - fake_logits).relu().square()

    def state_dict(self) -> dict:
        """The anchors (CPU copies) and the update count, for the training state file."""
        return dict(real=self.real.detach().cpu().clone(), fake=self.fake.detach().cpu().clone(), updates=self.updates)

    def load_state_dict(self, state: dict) -> None:
        """Put back what state_dict() returned (ValueError for anything else: a damaged state file)."""
        values = [state["real"], state["fake"]]
        if not all(isinstance(v, torch.Tensor) and v.shape == () and bool(torch.isfinite(v)) for v in values):
            raise ValueError("the anchors must be finite scalar tensors")
        if isinstance(state["updates"], bool) or not isinstance(state["updates"], int) or state["updates"] < 0:
            raise ValueError(f"the update count must be an integer >= 0, got {state['updates']!r}")
        self.real.copy_(values[0])
        self.fake.copy_(values[1])
        self.updates = state["updates"]


class StyleGAN2Loss:
    """Accumulates the gradients of one training phase for G (mapping + synthesis) and D.

    `G_mapping`, `G_synthesis` and `D` may be DistributedDataParallel wrappers (gradients are all-reduced only on
    rounds with sync=True); `G` is the plain generator. `report(name, tensor)` receives per-sample statistics.
    On devices other than CUDA every network runs in float32 (`force_fp32`), since fp16 is a GPU speed trick.
    `lecam_weight` > 0 turns LeCam regularization on (anchors decaying by `lecam_decay`); `diffaugment` is a
    DiffAugment policy ('color,translation,cutout' or a subset; None or 'none': off).
    """

    def __init__(self, device: torch.device | str, G: torch.nn.Module, D: torch.nn.Module,
                 augment_pipe: torch.nn.Module | None = None, objective: Objective | str = "rooted",
                 r1_gamma: float = 10, style_mixing_prob: float = 0.9, pl_weight: float = 2,
                 pl_batch_shrink: int = 2, pl_decay: float = 0.01, lecam_weight: float = 0,
                 lecam_decay: float = DEFAULT_LECAM_DECAY, diffaugment: str | None = None,
                 G_mapping: torch.nn.Module | None = None, G_synthesis: torch.nn.Module | None = None,
                 report: Reporter | None = None):
        self.device = torch.device(device)
        self.G = G
        self.G_mapping = G_mapping if G_mapping is not None else G.mapping
        self.G_synthesis = G_synthesis if G_synthesis is not None else G.synthesis
        self.D = D
        self.augment_pipe = augment_pipe
        self.objective = Objective.parse(objective)
        self.r1_gamma = float(r1_gamma)
        self.style_mixing_prob = float(style_mixing_prob)
        self.pl_weight = float(pl_weight)
        self.pl_batch_shrink = int(pl_batch_shrink)
        self.pl_decay = float(pl_decay)
        self.pl_mean = torch.zeros([], device=self.device)
        self.lecam_weight = float(lecam_weight)
        self.lecam = LeCamAnchors(lecam_decay, self.device) if self.lecam_weight > 0 else None
        self.diffaugment = DiffAugment(diffaugment) if parse_policy(diffaugment) else None
        self.report = report if report is not None else _ignore_report
        self.force_fp32 = self.device.type != "cuda"

    # ------------------------------------------------------------------------------------------------
    # Network evaluation.

    def _mixing_cutoff(self, num_ws: int) -> int | None:
        """Layer index from which a second latent takes over (None = no mixing this time).

        Drawn on the CPU generator so that no device synchronization is needed to slice the ws.
        """
        if self.style_mixing_prob <= 0 or num_ws < 2:
            return None
        if float(torch.rand([])) >= self.style_mixing_prob:
            return None
        return int(torch.randint(1, num_ws, []))

    def run_G(self, z: torch.Tensor, c: torch.Tensor, sync: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Generate images (with style mixing); returns (img, ws)."""
        with misc.ddp_sync(self.G_mapping, sync):
            ws = self.G_mapping(z, c)
            cutoff = self._mixing_cutoff(ws.shape[1])
            if cutoff is not None:
                ws_mix = self.G_mapping(torch.randn_like(z), c, skip_w_avg_update=True)
                ws = torch.cat([ws[:, :cutoff], ws_mix[:, cutoff:]], dim=1)
        with misc.ddp_sync(self.G_synthesis, sync):
            img = self.G_synthesis(ws, force_fp32=self.force_fp32)
        return img, ws

    def run_D(self, img: torch.Tensor, c: torch.Tensor, sync: bool) -> torch.Tensor:
        """Discriminator logits of (augmented) images: DiffAugment, then the ADA pipe, then D."""
        if self.diffaugment is not None:
            img = self.diffaugment(img)
        if self.augment_pipe is not None:
            img = self.augment_pipe(img)
        with misc.ddp_sync(self.D, sync):
            return self.D(img, c, force_fp32=self.force_fp32)

    # ------------------------------------------------------------------------------------------------
    # Phases.

    def accumulate_gradients(self, phase: str, real_img: torch.Tensor, real_c: torch.Tensor, gen_z: torch.Tensor,
                             gen_c: torch.Tensor, sync: bool, gain: float) -> dict[str, torch.Tensor]:
        """Add the gradients of `phase` (one of PHASES) for one batch, scaled by `gain`, into the .grad fields.

        Returns the per-sample terms it computed (detached), keyed like the reported statistics.
        """
        if phase not in PHASES:
            raise ValueError(f"unknown training phase {phase!r}: expected one of {', '.join(PHASES)}")
        do_Gmain = phase in ("Gmain", "Gboth")
        do_Dmain = phase in ("Dmain", "Dboth")
        do_Gpl = phase in ("Greg", "Gboth") and self.pl_weight != 0
        do_Dr1 = phase in ("Dreg", "Dboth") and self.r1_gamma != 0
        terms: dict[str, torch.Tensor] = {}

        def report(name: str, value: torch.Tensor) -> None:
            terms[name] = value.detach()
            self.report(name, terms[name])

        if do_Gmain:
            # Generator: make D call the fakes real. The sync is deferred to the pl pass when both run.
            gen_img, _ = self.run_G(gen_z, gen_c, sync=sync and not do_Gpl)
            gen_logits = self.run_D(gen_img, gen_c, sync=False)
            report("Loss/scores/fake", gen_logits)
            report("Loss/signs/fake", gen_logits.sign())
            loss_Gmain = self.objective.generator(gen_logits)
            report("Loss/G/loss", loss_Gmain)
            loss_Gmain.mean().mul(gain).backward()

        if do_Gpl:
            self._accumulate_path_length(gen_z, gen_c, sync, gain, report)

        loss_Dgen: torch.Tensor | float = 0
        if do_Dmain:
            # Discriminator on fakes. G's parameters are frozen in D phases, so no graph is built through G.
            with torch.no_grad():
                gen_img, _ = self.run_G(gen_z, gen_c, sync=False)
            gen_logits = self.run_D(gen_img, gen_c, sync=False)  # synced by the real pass below
            report("Loss/scores/fake", gen_logits)
            report("Loss/signs/fake", gen_logits.sign())
            loss_Dgen = self.objective.discriminator_fake(gen_logits)
            if self.lecam is None:  # with LeCam the fake term waits: its anchor a_R needs this pass's reals
                loss_Dgen.mean().mul(gain).backward()

        if do_Dmain or do_Dr1:
            real_img_tmp = real_img.detach().requires_grad_(do_Dr1)
            real_logits = self.run_D(real_img_tmp, real_c, sync=sync)
            report("Loss/scores/real", real_logits)
            report("Loss/signs/real", real_logits.sign())
            total = real_logits * 0  # keeps every D output in the graph, so DDP sees all parameters used
            if do_Dmain:
                loss_Dreal = self.objective.discriminator_real(real_logits)
                report("Loss/D/loss", loss_Dgen + loss_Dreal)
                total = total + loss_Dreal
                if self.lecam is not None:
                    # One backward through both passes' graphs (DDP all-reduces once, at the synced real pass).
                    self.lecam.update(real_logits, gen_logits)
                    lecam_penalty = self.lecam.penalty(real_logits, gen_logits)
                    report("Loss/lecam_penalty", lecam_penalty)
                    total = total + loss_Dgen + lecam_penalty * self.lecam_weight
            if do_Dr1:
                with conv2d_gradfix.no_weight_gradients():
                    r1_grads, = torch.autograd.grad(outputs=[real_logits.sum()], inputs=[real_img_tmp],
                                                    create_graph=True, only_inputs=True)
                r1_penalty = r1_grads.square().sum([1, 2, 3])
                report("Loss/r1_penalty", r1_penalty)
                loss_Dr1 = r1_penalty * (self.r1_gamma / 2)
                report("Loss/D/reg", loss_Dr1)
                total = total + loss_Dr1.unsqueeze(1)
            total.mean().mul(gain).backward()
        return terms

    def _accumulate_path_length(self, gen_z: torch.Tensor, gen_c: torch.Tensor, sync: bool, gain: float,
                                report: Reporter) -> None:
        """Path length regularization on a shrunk batch: penalize |J^T y| deviating from its running mean."""
        batch = max(gen_z.shape[0] // self.pl_batch_shrink, 1)
        gen_img, gen_ws = self.run_G(gen_z[:batch], gen_c[:batch], sync=sync)
        pl_noise = torch.randn_like(gen_img) / np.sqrt(gen_img.shape[2] * gen_img.shape[3])
        with conv2d_gradfix.no_weight_gradients():
            pl_grads, = torch.autograd.grad(outputs=[(gen_img * pl_noise).sum()], inputs=[gen_ws],
                                            create_graph=True, only_inputs=True)
        # Per sample: the gradient's squared norm over w_dim, averaged over the ws, then its root.
        lengths = pl_grads.pow(2).sum(dim=2).mean(dim=1).sqrt()
        running = torch.lerp(self.pl_mean, lengths.mean(), self.pl_decay)
        self.pl_mean.copy_(running.detach())
        penalty = (lengths - running) ** 2
        report("Loss/pl_penalty", penalty)
        loss_Gpl = penalty * self.pl_weight
        report("Loss/G/reg", loss_Gpl)
        # The zero-weighted image term keeps every synthesis output in the graph (DDP needs all parameters used).
        (gen_img[:, 0, 0, 0] * 0 + loss_Gpl).mean().mul(gain).backward()
