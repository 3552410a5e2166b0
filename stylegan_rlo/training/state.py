"""Exact resume: the training state file written next to each network snapshot.

`network-snapshot-NNNNNN.pkl` keeps the official pickle format; `network-snapshot-NNNNNN.state.pt` holds what the
pickle lacks for a run to continue as if it had never stopped: both Adam optimizers, each rank's pl_mean and LeCam
anchors (with --lecam; files written before LeCam existed have none and still load), pending ADA statistics and RNG
states (torch, CUDA, numpy, python), the data sampler position, tick and kimg. It contains
tensors and plain values only (`torch.load(weights_only=True)` reads it: loading cannot run code) and is written
atomically.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import random
from typing import Any, Iterator

import numpy as np
import torch

from stylegan_rlo.fileio import atomic_write
from stylegan_rlo.training.state_checks import TrainingStateError, check_against, check_fields

__all__ = ["TrainingStateError"]  # raised here, defined with the checks

FORMAT = "stylegan_rlo.training_state"
VERSION = 1
SUFFIX = ".state.pt"
NEXT_SUFFIX = ".state.next.pt"  # a staged state file (see write_pair)


def state_path(snapshot_pkl: str) -> str:
    """The state file of a snapshot: `x/network-snapshot-000012.pkl` -> `x/network-snapshot-000012.state.pt`."""
    base = snapshot_pkl[:-4] if snapshot_pkl.endswith(".pkl") else snapshot_pkl
    return base + SUFFIX


def next_state_path(snapshot_pkl: str) -> str:
    """Where a state file is staged before its pickle is committed: `...-000012.state.next.pt` (see write_pair)."""
    return state_path(snapshot_pkl)[: -len(SUFFIX)] + NEXT_SUFFIX


def find_state(resume: str) -> str | None:
    """The state file of a local `--resume` pickle (URLs have none): the one of `<snapshot>.state.pt` and a staged
    `<snapshot>.state.next.pt` that records this pickle's SHA-256 (a file without a digest, written before digests
    existed, is taken as it is). TrainingStateError when state files are there but belong to another pickle."""
    if "://" in resume or not os.path.isfile(resume):
        return None
    candidates = [path for path in (state_path(resume), next_state_path(resume)) if os.path.isfile(path)]
    digest = None
    for path in candidates:
        recorded = _recorded_digest(path)
        if recorded is None:  # no digest, or unreadable: read() checks it (and names what is wrong)
            return path
        digest = digest or file_sha256(resume)
        if recorded == digest:
            return path
    if candidates:
        raise TrainingStateError(
            f"training state {candidates[0]} belongs to another snapshot than {resume} (it records another pickle "
            f"SHA-256): move it away to resume without it (not exactly)")
    return None


def file_sha256(path: str) -> str:
    """The SHA-256 of a file's bytes, read in 1 MiB pieces."""
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        for piece in iter(lambda: f.read(1 << 20), b""):
            sha.update(piece)
    return sha.hexdigest()


def _recorded_digest(path: str) -> str | None:
    """The pickle SHA-256 a state file records; None for a file without one or one that cannot be read."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 -- read() reports the reason
        return None
    digest = state.get("pickle_sha256") if isinstance(state, dict) else None
    return digest if isinstance(digest, str) else None


# ---------------------------------------------------------------------------------------------------------------
# Random number generators as plain values.

def rng_state() -> dict:
    """This process's torch, CUDA, numpy and python RNG states."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else []
    return dict(torch=torch.get_rng_state(), cuda=list(cuda),
                numpy=dict(name=str(name), keys=torch.from_numpy(keys.astype(np.int64)), pos=int(pos),
                           has_gauss=int(has_gauss), cached_gaussian=float(cached)),
                python=dict(version=int(version), internal=[int(v) for v in internal], gauss_next=gauss_next))


def set_rng_state(state: dict) -> None:
    """Put back what rng_state() returned."""
    torch.set_rng_state(state["torch"])
    if state["cuda"]:
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss_next"]))


# ---------------------------------------------------------------------------------------------------------------
# Writing.

def rank_state(loss_fn, ada_stats) -> dict:
    """What differs between ranks: RNG states, pl_mean, the LeCam anchors, ADA statistics not yet used."""
    return dict(rng=rng_state(), pl_mean=loss_fn.pl_mean.detach().cpu().clone(),
                lecam=loss_fn.lecam.state_dict() if loss_fn.lecam is not None else None,
                ada_stats=ada_stats.state_dict() if ada_stats is not None else None)


def gather(state: dict, num_gpus: int) -> list[dict]:
    """Every rank's rank_state (all ranks must call this; rank 0 uses the result)."""
    if num_gpus == 1:
        return [state]
    states: list[Any] = [None] * num_gpus
    torch.distributed.all_gather_object(states, state)
    return states


def _optimizers(phases) -> dict[str, torch.optim.Optimizer]:
    """'G'/'D' -> the optimizer its phases share."""
    return {phase.name[0]: phase.opt for phase in phases}


# What an exact resume must keep: the options that decide the data order and the per-process batches (the RNG
# states restored from the file would silently override a new --seed). Options that take effect on a resume instead
# (learning rates, R1 gamma, the objective, --kimg, ...) are not listed: see docs/training.md.
IDENTITY_FLAGS = {"random_seed": "--seed", "batch_size": "--batch", "batch_gpu": "--batch-gpu",
                  "max_size": "--subset (the number of training images)", "xflip": "--mirror", "use_labels": "--cond",
                  "resolution": "the dataset's resolution"}


def run_identity(training_set_kwargs: dict, batch_size: int, batch_gpu: int) -> dict:
    """The values of IDENTITY_FLAGS for a run, as recorded in its state files."""
    values = dict(training_set_kwargs, batch_size=batch_size, batch_gpu=batch_gpu)
    return {key: values.get(key) for key in IDENTITY_FLAGS}


def check_identity(recorded: dict | None, current: dict, path: str) -> None:
    """Refuse an exact resume whose run differs from the one that wrote the state file (files written before this
    record existed have none and are not checked)."""
    if recorded is None:
        return
    diffs = [f"{IDENTITY_FLAGS[key]}: {recorded.get(key)!r} then, {value!r} now" for key, value in current.items()
             if recorded.get(key) != value]
    if diffs:
        raise TrainingStateError(
            f"training state {path} belongs to a run with other settings ({'; '.join(diffs)}): an exact resume "
            f"continues that run, so give its settings, or move the state file away to resume without it (not "
            f"exactly)")


def build(*, phases, ranks: list[dict], progress: dict, data_items: int, schedule: dict, run: dict) -> dict:
    """The state file's content (rank 0), without the digest of its pickle (write_next adds it)."""
    return dict(format=FORMAT, version=VERSION, num_gpus=len(ranks), data_items=int(data_items),
                progress=dict(progress), schedule=dict(schedule), run=dict(run), ranks=ranks,
                optimizers={name: opt.state_dict() for name, opt in _optimizers(phases).items()})


# The write protocol of a (pickle, state) pair, such that a kill at any moment leaves every pickle on disk with its
# own state file, also when a snapshot replaces one of the same name (--tick below 1 kimg):
#   1. settle(): finish what an earlier killed writer left (a staged state whose pickle is there becomes the state
#      file; one whose pickle never appeared is removed);
#   2. the pickle is written to a temp file; write_next() stages the state, with the pickle's SHA-256, as
#      <snapshot>.state.next.pt; only then does the pickle replace <snapshot>.pkl;
#   3. promote(): the staged state replaces <snapshot>.state.pt.
# Until 2 commits, the old pickle and its old state stand; between 2 and 3 find_state() picks the staged file by
# its digest. stylegan_rlo.training.snapshots.write_pair runs the three steps.

def settle(snapshot_pkl: str) -> None:
    """Step 1: promote a staged state whose pickle was committed, remove one whose pickle was not."""
    staged = next_state_path(snapshot_pkl)
    if not os.path.exists(staged):
        return
    if os.path.isfile(snapshot_pkl) and _recorded_digest(staged) == file_sha256(snapshot_pkl):
        os.replace(staged, state_path(snapshot_pkl))
    else:
        os.remove(staged)


def write_next(snapshot_pkl: str, state: dict, pickle_sha256: str) -> None:
    """Step 2: stage the state file, recording the SHA-256 of the pickle about to be committed."""
    with atomic_write(next_state_path(snapshot_pkl), "wb") as f:
        torch.save(dict(state, pickle_sha256=pickle_sha256), f)


def promote(snapshot_pkl: str) -> None:
    """Step 3: the staged state becomes the snapshot's state file."""
    os.replace(next_state_path(snapshot_pkl), state_path(snapshot_pkl))


# ---------------------------------------------------------------------------------------------------------------
# Reading.

def read(path: str, progress: dict | None = None) -> dict:
    """Load and check a state file (tensors memory-mapped); `progress` is its snapshot's, which must match."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:  # noqa: BLE001 -- torch raises many types for a bad or unsafe file
        raise TrainingStateError(f"training state {path}: cannot be read ({type(e).__name__}: "
                                 f"{str(e).splitlines()[0] if str(e) else ''}); delete it to resume without it "
                                 f"(not exactly)") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT or state.get("version") != VERSION:
        raise TrainingStateError(f"training state {path}: not a {FORMAT} version {VERSION} file")
    missing = {"num_gpus", "data_items", "progress", "schedule", "ranks", "optimizers"} - set(state)
    if missing:
        raise TrainingStateError(f"training state {path}: missing {sorted(missing)}")
    check_fields(state, path)
    if progress is not None:
        for key in ("cur_nimg", "cur_tick", "batch_idx"):
            if state["progress"].get(key) != progress.get(key):
                raise TrainingStateError(
                    f"training state {path} is for {key}={state['progress'].get(key)} but its snapshot has "
                    f"{key}={progress.get(key)}; it belongs to another snapshot: delete it to resume without it")
    return state


def load_on_ranks(path: str, rank: int, num_gpus: int) -> dict:
    """Rank 0 reads the state file; the others receive it (the file need not be visible to them)."""
    holder = [read(path) if rank == 0 else None]
    if num_gpus > 1:
        torch.distributed.broadcast_object_list(holder, src=0)
    return holder[0]


def restore(state: dict, path: str, phases, loss_fn, ada_stats, rank: int, num_gpus: int, log) -> dict | None:
    """Load the optimizers, pl_mean, LeCam anchors and ADA statistics; returns this rank's RNG state to set just
    before the first iteration (None when the process count changed: then the run continues, but not bit-exactly).
    LeCam anchors start afresh when the state has none (LeCam was off, or the file predates it)."""
    optimizers = _optimizers(phases)
    check_against(state, path, optimizers, loss_fn.pl_mean)
    for name, opt in optimizers.items():
        learning_rates = [group["lr"] for group in opt.param_groups]  # this run's (--glr/--dlr take effect)
        try:
            opt.load_state_dict(state["optimizers"][name])
        except (KeyError, ValueError, RuntimeError) as e:
            raise TrainingStateError(f"training state {path}: the {name} optimizer state does not fit the "
                                     f"network ({e}); delete the file to resume without it") from None
        saved = [group["lr"] for group in opt.param_groups]
        for group, lr in zip(opt.param_groups, learning_rates):
            group["lr"] = lr
        if saved != learning_rates:
            log(f"{name} learning rate {saved[0]:g} -> {learning_rates[0]:g} (this run's) on the resumed optimizer")
    log(f'Restored the training state from "{path}" (optimizers, pl_mean, ADA, RNG, data position)')
    if int(state["num_gpus"]) != num_gpus:
        log(f"The state was saved by {state['num_gpus']} process(es), this run has {num_gpus}: per-process "
            f"state (RNG, pl_mean) starts afresh, so the run continues but not bit-exactly")
        return None
    mine = state["ranks"][rank]
    loss_fn.pl_mean.copy_(mine["pl_mean"])
    if loss_fn.lecam is not None and mine.get("lecam") is not None:
        try:
            loss_fn.lecam.load_state_dict(mine["lecam"])
        except (KeyError, TypeError, ValueError, RuntimeError) as e:
            raise TrainingStateError(f"training state {path}: the LeCam anchors cannot be restored ({e}); delete "
                                     f"the file to resume without it (not exactly)") from None
    if ada_stats is not None and mine["ada_stats"] is not None:
        ada_stats.load_state_dict(mine["ada_stats"], device=loss_fn.pl_mean.device)
    return mine["rng"]


class SkipSampler(torch.utils.data.Sampler):
    """`sampler`'s index stream without its first `skip` items: the data position of a resumed run."""

    def __init__(self, sampler: torch.utils.data.Sampler, skip: int):
        super().__init__()
        self.sampler = sampler
        self.skip = int(skip)

    def __iter__(self) -> Iterator[int]:
        return itertools.islice(iter(self.sampler), self.skip, None)
