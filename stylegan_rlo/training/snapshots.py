"""Network snapshots: network-snapshot-NNNNNN.pkl (networks and progress, official format) with its training
state file, written atomically so that a later run can resume from them exactly; and reading one back for --resume."""

from __future__ import annotations

import copy
import dataclasses
import os
from typing import Any, Callable, Sequence

import torch

from stylegan_rlo.checkpoints.pickles import load_network_pkl, save_network_pkl
from stylegan_rlo.training import adapt_resolution
from stylegan_rlo.training import state as training_state
from stylegan_rlo.training.state_checks import check_progress
from stylegan_rlo.training.loss import StyleGAN2Loss
from stylegan_rlo.training.stats import StatsAccumulator
from stylegan_rlo.training.step import Phase
from torch_utils import misc


def load_resume(resume_pkl: str, trust_pickle: bool, G: torch.nn.Module, D: torch.nn.Module,
                G_ema: torch.nn.Module, log: Callable[[str], None], transfer: dict | None = None) -> dict:
    """Copy the resume pickle's networks into ours (built from its kwargs, or adapted to another resolution as
    planned in `transfer`); return its 'progress' (or {})."""
    log(f'Resuming from "{resume_pkl}"')
    data = load_network_pkl(resume_pkl, trust_pickle=trust_pickle)
    if transfer is not None:  # --adapt-resolution
        log(adapt_resolution.apply(transfer, data, G, D, G_ema))
        return {}  # progress continues only at the same resolution
    for name, module in [("G", G), ("D", D), ("G_ema", G_ema)]:
        source = data.get(name) if data.get(name) is not None else data["G"]
        misc.copy_params_and_buffers(source, module, require_all=True)
    return check_progress(data.get("progress"), resume_pkl)


@dataclasses.dataclass
class SnapshotParts:
    """What a snapshot saves: the networks and augment pipe (the pickle), and what an exact resume needs besides
    (the training state): the optimizers of the phases, the loss's pl_mean, pending ADA statistics, the schedule."""
    training_set_kwargs: dict | None
    G: torch.nn.Module
    D: torch.nn.Module
    G_ema: torch.nn.Module
    augment_pipe: torch.nn.Module | None
    phases: Sequence[Phase]
    loss: StyleGAN2Loss
    ada_stats: StatsAccumulator | None
    schedule: dict
    run: dict  # training_state.run_identity: what an exact resume must keep


def _snapshot_dict(parts: SnapshotParts, rank: int, distributed: bool, progress: dict) -> dict[str, Any]:
    """The pickle's content (CPU copies on rank 0, after checking that all ranks agree)."""
    snapshot: dict[str, Any] = dict(training_set_kwargs=dict(parts.training_set_kwargs or {}))
    for name in ("G", "D", "G_ema", "augment_pipe"):
        module = getattr(parts, name)
        if module is not None:
            if distributed:
                misc.check_ddp_consistency(module, ignore_regex=r".*\.w_avg")
            if rank == 0:
                module = copy.deepcopy(module).eval().requires_grad_(False).cpu()
        snapshot[name] = module
    snapshot["progress"] = progress
    return snapshot


def write_pair(snapshot_pkl: str, snapshot: dict, state: dict) -> None:
    """Write a snapshot pickle and its training state such that a kill at any moment leaves every pickle on disk
    with its own state (the protocol: stylegan_rlo.training.state, above settle())."""
    training_state.settle(snapshot_pkl)
    save_network_pkl(snapshot_pkl, snapshot,
                     before_commit=lambda digest: training_state.write_next(snapshot_pkl, state, digest))
    training_state.promote(snapshot_pkl)


def write_snapshot(parts: SnapshotParts, run_dir: str, *, rank: int, num_gpus: int, progress: dict, data_items: int,
                   log: Callable[[str], None]) -> tuple[str, torch.nn.Module, dict]:
    """Write the snapshot pickle and its training state (on rank 0; every rank takes part). Returns the pickle's
    path, its G_ema (a CPU copy on rank 0) and this rank's RNG state as saved, for the run to continue from."""
    ranks = training_state.gather(training_state.rank_state(parts.loss, parts.ada_stats), num_gpus)
    snapshot = _snapshot_dict(parts, rank, num_gpus > 1, progress)
    snapshot_pkl = os.path.join(run_dir, f"network-snapshot-{progress['cur_nimg'] // 1000:06d}.pkl")
    if rank == 0:
        state = training_state.build(phases=parts.phases, ranks=ranks, progress=progress, schedule=parts.schedule,
                                     run=parts.run, data_items=data_items)
        write_pair(snapshot_pkl, snapshot, state)
    log(f"Saved {os.path.basename(snapshot_pkl)} and its training state")
    return snapshot_pkl, snapshot["G_ema"], ranks[rank]["rng"]
