"""A damaged or tampered training-state file is refused by name before any of its values is used: wrong types,
shapes, lengths and ranges, NaN Adam moments; and learning rates given on an exact resume take effect."""

from __future__ import annotations

import copy
import os
import re

import pytest
import torch
from training_fixtures import FIXTURES, TINY_UNCOND, make_zip

from stylegan_rlo.checkpoints.pickles import load_network_pkl, save_network_pkl
from stylegan_rlo.training import state as training_state
from stylegan_rlo.training.config import setup_training_options
from stylegan_rlo.training.launch import launch_training
from stylegan_rlo.training.options import TrainingOptionsError
from stylegan_rlo.training.state_checks import TrainingStateError, check_against, check_fields

SNAPSHOT = FIXTURES / "pre-layout-snapshot" / "network-snapshot-000000.pkl"
STATE = training_state.state_path(str(SNAPSHOT))


@pytest.fixture(scope="module")
def valid():
    """The committed snapshot's state file and Adam optimizers over its networks' parameters."""
    state = torch.load(STATE, weights_only=True)
    nets = load_network_pkl(SNAPSHOT)
    optimizers = {name: torch.optim.Adam(nets[name].parameters()) for name in ("G", "D")}
    return state, optimizers


def _set(state: dict, path: tuple, value) -> dict:
    state = copy.deepcopy(state)
    target = state
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return state


def test_the_committed_state_file_passes(valid):
    state, optimizers = valid
    check_fields(state, STATE)
    check_against(state, STATE, optimizers, torch.zeros([]))


FIELD_CASES = [  # (path, value, what the message names)
    (("ranks", 0, "rng", "torch"), torch.zeros([5], dtype=torch.uint8), "ranks[0].rng.torch has shape [5]"),
    (("ranks",), [], "ranks must be a list of num_gpus"),
    (("data_items",), -1, "data_items"),
    (("data_items",), 10 ** 15, "data_items"),
    (("progress",), "12", "progress must be a dictionary"),
    (("progress", "cur_nimg"), [1], "progress.cur_nimg"),
    (("num_gpus",), 0, "num_gpus"),
    (("schedule", "ada_kimg"), float("nan"), "schedule.ada_kimg"),
    (("ranks", 0, "pl_mean"), torch.tensor(float("nan")), "ranks[0].pl_mean holds NaN"),
    (("ranks", 0, "rng", "numpy", "pos"), 625, "ranks[0].rng.numpy.pos"),
    (("ranks", 0, "rng", "python", "internal"), [0] * 3, "ranks[0].rng.python.internal"),
    (("optimizers", "G"), 3, "optimizers.G must be a dictionary"),
]


@pytest.mark.parametrize("path, value, named", FIELD_CASES, ids=[c[2] for c in FIELD_CASES])
def test_bad_fields_are_refused_by_name(valid, path, value, named):
    with pytest.raises(TrainingStateError) as e:
        check_fields(_set(valid[0], path, value), STATE)
    assert named in str(e.value) and STATE in str(e.value)


def _first_moment_id(state: dict) -> int:
    return next(iter(state["optimizers"]["G"]["state"]))


def test_bad_tensors_are_refused_against_the_networks(valid):
    state, optimizers = valid
    pid = _first_moment_id(state)
    moments = state["optimizers"]["G"]["state"][pid]
    cases = [
        (("optimizers", "G", "state", pid, "exp_avg"), torch.full_like(moments["exp_avg"], float("nan")), "NaN"),
        (("optimizers", "G", "state", pid, "exp_avg_sq"), torch.zeros([7, 7]), "has shape [7, 7]"),
        (("optimizers", "G", "state", pid, "exp_avg_sq"), -torch.ones_like(moments["exp_avg_sq"]), "non-negative"),
        (("optimizers", "D", "param_groups", 0, "params"), [0], "parameter ids"),
        (("ranks", 0, "pl_mean"), torch.zeros([3, 3]), "pl_mean has shape [3, 3]"),
    ]
    for path, value, named in cases:
        with pytest.raises(TrainingStateError, match=named.replace("[", r"\[").replace("]", r"\]")):
            check_against(_set(state, path, value), STATE, optimizers, torch.zeros([]))


def _tiny_run(tmp_path, data, resume, outdir, **opts):
    opts = dict(dict(device="cpu", workers=0, batch=4, tick=0.004, snap=100, kimg=0.008), **opts)
    desc, options = setup_training_options(data=str(data), resume=str(resume), **opts)
    return launch_training(desc, options, str(tmp_path / outdir), show_progress=False, image_grid=(2, 2))


def test_nan_adam_moments_stop_the_resume_and_learning_rates_take_effect(tmp_path, one_thread):
    data = make_zip(tmp_path / "dogs.zip", num=8)
    first = _tiny_run(tmp_path, data, TINY_UNCOND, "first", kimg=0.004)
    pkl = os.path.join(first, "network-snapshot-000000.pkl")
    good = torch.load(training_state.state_path(pkl), weights_only=True)

    resumed = _tiny_run(tmp_path, data, pkl, "resumed", glr=0.005)  # an explicit --glr on an exact resume
    with open(os.path.join(resumed, "log.txt"), encoding="utf-8") as f:
        log = f.read()
    # Adam's lr is the flag's times 4/5 (lazy regularization every 4 steps): --cfg auto's 0.0025 -> 0.002
    assert "Restored the training state" in log and "G learning rate 0.002 -> 0.004 (this run's)" in log

    bad = copy.deepcopy(good)
    pid = _first_moment_id(bad)
    bad["optimizers"]["G"]["state"][pid]["exp_avg"].fill_(float("nan"))
    torch.save(bad, training_state.state_path(pkl))  # the digest still matches the pickle
    with pytest.raises(TrainingStateError, match=r"optimizers\.G\.state\[\d+\]\.exp_avg holds NaN"):
        _tiny_run(tmp_path, data, pkl, "tampered")


def test_exact_resume_with_another_seed_or_batch_is_refused(tmp_path, one_thread):
    data = make_zip(tmp_path / "dogs.zip", num=8)
    pkl = os.path.join(_tiny_run(tmp_path, data, TINY_UNCOND, "first", kimg=0.004), "network-snapshot-000000.pkl")
    state = torch.load(training_state.state_path(pkl), weights_only=True)
    assert state["run"] == dict(random_seed=0, batch_size=4, batch_gpu=4, max_size=8, xflip=False, use_labels=False,
                                resolution=32)
    common = dict(data=str(data), resume=pkl, kimg=0.008, device="cpu", workers=0)
    with pytest.raises(TrainingStateError, match=r"--seed: 0 then, 3 now.*move the state file away"):
        setup_training_options(seed=3, batch=4, **common)
    with pytest.raises(TrainingStateError, match=r"--batch: 4 then, 8 now"):
        setup_training_options(batch=8, **common)
    assert setup_training_options(batch=4, **common)[1].resume_state == training_state.state_path(pkl)
    assert setup_training_options(seed=3, batch=4, exact_resume=False, **common)[1].resume_state is None


@pytest.mark.parametrize("progress, named", [("12", "must be a dictionary"), ([1, 2], "must be a dictionary"),
                                             (dict(cur_nimg="12"), "progress['cur_nimg']"),
                                             (dict(cur_tick=-1), "progress['cur_tick']"),
                                             (dict(augment_p=7.0), "progress['augment_p']")])
def test_a_bad_progress_entry_in_the_resumed_pickle_is_refused(tmp_path, progress, named):
    data = make_zip(tmp_path / "dogs.zip", num=8)
    snapshot = load_network_pkl(TINY_UNCOND)
    snapshot["progress"] = progress
    pkl = str(tmp_path / "network-snapshot-000000.pkl")
    save_network_pkl(pkl, snapshot)
    with pytest.raises(TrainingOptionsError, match=re.escape(named)):
        setup_training_options(data=str(data), resume=pkl, kimg=1, device="cpu")
