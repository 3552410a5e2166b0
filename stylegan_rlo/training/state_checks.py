"""Checks of a training-state file's values before any of them is used: the plain fields' types, ranges and lengths
when the file is read (check_fields), and its tensors against the networks and optimizers they are loaded into
(check_against), so that a damaged or tampered file is refused by name instead of training on NaN or crashing.

The file is loaded with torch.load(weights_only=True) and cannot run code; these checks keep its values honest."""

from __future__ import annotations

import math
from typing import Any, Iterable

import torch

from stylegan_rlo.training.options import TrainingOptionsError

MAX_NIMG = 10 ** 10  # images shown: 400x the longest official run (25,000 kimg); a skip that large would spin
MAX_GPUS = 1024


class TrainingStateError(TrainingOptionsError):
    """A training state file that cannot be used; the message names the file and the field."""


def _refuse(path: str, field: str, expected: str, got: Any) -> TrainingStateError:
    shown = f"a {type(got).__name__}" if not isinstance(got, (int, float, str, type(None))) else repr(got)[:60]
    return TrainingStateError(f"training state {path}: {field} must be {expected}, got {shown}; the file is damaged "
                              f"or not ours: delete it to resume without it (not exactly)")


def _int(value: Any, path: str, field: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _refuse(path, field, f"an integer in [{low}, {high}]", value)
    return value


def _number(value: Any, path: str, field: str, low: float = -math.inf, optional: bool = False) -> None:
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < low:
        raise _refuse(path, field, f"a finite number >= {low:g}" + (" or null" if optional else ""), value)


def _dict(value: Any, path: str, field: str, keys: Iterable[str] = ()) -> dict:
    if not isinstance(value, dict):
        raise _refuse(path, field, "a dictionary", value)
    missing = sorted(set(keys) - set(value))
    if missing:
        raise TrainingStateError(f"training state {path}: {field} lacks {missing}; delete the file to resume "
                                 f"without it (not exactly)")
    return value


def _tensor(value: Any, path: str, field: str, shape: torch.Size | None = None, dtype: torch.dtype | None = None,
            finite: bool = False) -> torch.Tensor:
    """A tensor of the given shape and dtype (None: any), optionally with finite values only."""
    if not isinstance(value, torch.Tensor):
        raise _refuse(path, field, "a tensor", value)
    if shape is not None and value.shape != shape:
        raise TrainingStateError(f"training state {path}: {field} has shape {list(value.shape)}, expected "
                                 f"{list(shape)}; delete the file to resume without it (not exactly)")
    if dtype is not None and value.dtype != dtype:
        raise TrainingStateError(f"training state {path}: {field} is {value.dtype}, expected {dtype}; delete the "
                                 f"file to resume without it (not exactly)")
    if finite and value.is_floating_point() and not bool(torch.isfinite(value).all()):
        raise TrainingStateError(f"training state {path}: {field} holds NaN or infinite values; delete the file "
                                 f"to resume without it (not exactly)")
    return value


# ---------------------------------------------------------------------------------------------------------------
# A snapshot pickle's 'progress' entry (official pickles have none).

def check_progress(progress: Any, pkl: str) -> dict:
    """A resumed pickle's progress: {} when absent, else a dictionary whose counters are integers in range and whose
    augment_p is a probability; TrainingOptionsError naming the pickle and the entry otherwise."""
    if progress is None:
        return {}
    if not isinstance(progress, dict):
        raise TrainingOptionsError(f"--resume {pkl}: its 'progress' entry must be a dictionary, got a "
                                   f"{type(progress).__name__}; the pickle is damaged or not ours")
    for key in ("cur_nimg", "cur_tick", "batch_idx"):
        value = progress.get(key, 0)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_NIMG:
            raise TrainingOptionsError(f"--resume {pkl}: progress[{key!r}] must be an integer in [0, {MAX_NIMG}], "
                                       f"got {repr(value)[:60]}; the pickle is damaged or not ours")
    p = progress.get("augment_p")
    if p is not None and (isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p <= 1):
        raise TrainingOptionsError(f"--resume {pkl}: progress['augment_p'] must be a probability in [0, 1], got "
                                   f"{repr(p)[:60]}; the pickle is damaged or not ours")
    return dict(progress)


# ---------------------------------------------------------------------------------------------------------------
# The fields, when the file is read.

def check_rng(rng: Any, path: str, field: str) -> None:
    """An rng_state() value: torch, CUDA, numpy (MT19937) and python states of the right types and lengths."""
    rng = _dict(rng, path, field, ("torch", "cuda", "numpy", "python"))
    _tensor(rng["torch"], path, f"{field}.torch", torch.get_rng_state().shape, torch.uint8)
    if not isinstance(rng["cuda"], list):
        raise _refuse(path, f"{field}.cuda", "a list", rng["cuda"])
    for i, cuda in enumerate(rng["cuda"]):
        _tensor(cuda, path, f"{field}.cuda[{i}]", dtype=torch.uint8)
    numpy = _dict(rng["numpy"], path, f"{field}.numpy", ("name", "keys", "pos", "has_gauss", "cached_gaussian"))
    if numpy["name"] != "MT19937":
        raise _refuse(path, f"{field}.numpy.name", "'MT19937'", numpy["name"])
    keys = _tensor(numpy["keys"], path, f"{field}.numpy.keys", torch.Size([624]), torch.int64)
    if bool(((keys < 0) | (keys >= 2 ** 32)).any()):
        raise _refuse(path, f"{field}.numpy.keys", "624 values in [0, 2^32)", "others")
    _int(numpy["pos"], path, f"{field}.numpy.pos", 0, 624)
    _int(numpy["has_gauss"], path, f"{field}.numpy.has_gauss", 0, 1)
    _number(numpy["cached_gaussian"], path, f"{field}.numpy.cached_gaussian")
    python = _dict(rng["python"], path, f"{field}.python", ("version", "internal", "gauss_next"))
    _int(python["version"], path, f"{field}.python.version", 3, 3)
    internal = python["internal"]
    if (not isinstance(internal, list) or len(internal) != 625
            or not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2 ** 32 for v in internal)
            or internal[-1] > 624):
        raise _refuse(path, f"{field}.python.internal", "625 integers in [0, 2^32) ending in a position <= 624",
                      internal)
    _number(python["gauss_next"], path, f"{field}.python.gauss_next", optional=True)


def check_fields(state: dict, path: str) -> None:
    """Types, ranges and lengths of every field a resume uses (the tensors' shapes against the networks come later,
    in check_against)."""
    num_gpus = _int(state["num_gpus"], path, "num_gpus", 1, MAX_GPUS)
    progress = _dict(state["progress"], path, "progress", ("cur_nimg", "cur_tick", "batch_idx"))
    cur_nimg = _int(progress["cur_nimg"], path, "progress.cur_nimg", 0, MAX_NIMG)
    _int(progress["cur_tick"], path, "progress.cur_tick", 0, MAX_NIMG)
    _int(progress["batch_idx"], path, "progress.batch_idx", 0, MAX_NIMG)
    _int(state["data_items"], path, "data_items (the data position)", 0, cur_nimg)
    schedule = _dict(state["schedule"], path, "schedule", ("ada_kimg", "ema_rampup"))
    _number(schedule["ada_kimg"], path, "schedule.ada_kimg", low=0)
    _number(schedule["ema_rampup"], path, "schedule.ema_rampup", low=0, optional=True)
    if state.get("run") is not None:  # absent in files written before it was recorded
        _dict(state["run"], path, "run")
    ranks = state["ranks"]
    if not isinstance(ranks, list) or len(ranks) != num_gpus:
        raise _refuse(path, "ranks", f"a list of num_gpus = {num_gpus} entries", ranks)
    for i, rank in enumerate(ranks):
        rank = _dict(rank, path, f"ranks[{i}]", ("rng", "pl_mean", "ada_stats"))
        check_rng(rank["rng"], path, f"ranks[{i}].rng")
        _tensor(rank["pl_mean"], path, f"ranks[{i}].pl_mean", finite=True)
        if rank["ada_stats"] is not None:
            for name, entry in _dict(rank["ada_stats"], path, f"ranks[{i}].ada_stats").items():
                where = f"ranks[{i}].ada_stats[{name!r}]"
                if not isinstance(entry, list) or len(entry) != 2:
                    raise _refuse(path, where, "[count, tensor([sum, sum of squares])]", entry)
                _int(entry[0], path, f"{where} count", 0, MAX_NIMG)
                _tensor(entry[1], path, f"{where} moments", torch.Size([2]), finite=True)
    optimizers = _dict(state["optimizers"], path, "optimizers")
    for name, saved in optimizers.items():
        saved = _dict(saved, path, f"optimizers.{name}", ("state", "param_groups"))
        _dict(saved["state"], path, f"optimizers.{name}.state")
        if not isinstance(saved["param_groups"], list):
            raise _refuse(path, f"optimizers.{name}.param_groups", "a list", saved["param_groups"])


# ---------------------------------------------------------------------------------------------------------------
# The tensors, against what they are loaded into.

def check_against(state: dict, path: str, optimizers: dict[str, torch.optim.Optimizer],
                  pl_mean: torch.Tensor) -> None:
    """Each saved optimizer's groups and Adam moments against the live optimizer's parameters (count, shape,
    finiteness), and pl_mean's shape; before anything is loaded."""
    for name, opt in optimizers.items():
        if name not in state["optimizers"]:
            raise TrainingStateError(f"training state {path}: no state for the {name} optimizer; delete the file to "
                                     f"resume without it (not exactly)")
        saved = state["optimizers"][name]
        groups = saved["param_groups"]
        if len(groups) != len(opt.param_groups):
            raise _refuse(path, f"optimizers.{name}.param_groups", f"{len(opt.param_groups)} group(s)", groups)
        for g, (group, live) in enumerate(zip(groups, opt.param_groups)):
            where = f"optimizers.{name}.param_groups[{g}]"
            group = _dict(group, path, where, ("params", "lr"))
            _number(group["lr"], path, f"{where}.lr", low=0)
            ids = group["params"]
            if not isinstance(ids, list) or len(ids) != len(live["params"]):
                raise _refuse(path, f"{where}.params", f"{len(live['params'])} parameter ids (the network's)", ids)
            for pid, param in zip(ids, live["params"]):
                moments = saved["state"].get(pid)
                if moments is None:  # a parameter that never had a gradient (e.g. frozen layers)
                    continue
                entry = f"optimizers.{name}.state[{pid}]"
                moments = _dict(moments, path, entry, ("step", "exp_avg", "exp_avg_sq"))
                step = moments["step"]
                step = step.item() if isinstance(step, torch.Tensor) and step.numel() == 1 else step
                _number(step, path, f"{entry}.step", low=0)
                _tensor(moments["exp_avg"], path, f"{entry}.exp_avg", param.shape, finite=True)
                sq = _tensor(moments["exp_avg_sq"], path, f"{entry}.exp_avg_sq", param.shape, finite=True)
                if bool((sq < 0).any()):
                    raise _refuse(path, f"{entry}.exp_avg_sq", "non-negative", "negative values")
    for i, rank in enumerate(state["ranks"]):
        _tensor(rank["pl_mean"], path, f"ranks[{i}].pl_mean", pl_mean.shape)
