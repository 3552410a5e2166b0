"""Exact resume: a run of N iterations equals N/2 iterations, a resume from that snapshot (with its training state
file) and N/2 more -- G, G_ema and D parameters and buffers, the ADA p and the path length mean -- for both
objectives with ADA adapting. The split falls between two ADA adjustments and before a lazy G regularization step,
so pending ADA statistics, pl_mean and the Adam moments all matter."""

import os
import shutil

import pytest
import torch
from training_fixtures import TINY_UNCOND, make_zip

from stylegan_rlo.checkpoints.pickles import load_network_pkl
from stylegan_rlo.training import state as training_state
from stylegan_rlo.training.config import setup_training_options
from stylegan_rlo.training.launch import launch_training

ITERS = 6  # batch 4: 24 images; the resumed half starts at batch_idx 3 (ADA adjusts at 4, G regularizes at 4)


def run(tmp_path, data, resume, iters, outdir, **opts):
    """A tiny CPU run up to `iters` iterations of 4 images (a snapshot only at the end); returns its run dir."""
    opts = dict(dict(device="cpu", workers=0, batch=4, tick=0.004, snap=100, p=0.2, target=0.3), **opts)
    desc, options = setup_training_options(data=str(data), resume=str(resume), kimg=iters * 4 / 1000, **opts)
    return launch_training(desc, options, str(tmp_path / outdir), show_progress=False, image_grid=(2, 2))


def final_snapshot(run_dir):
    path = os.path.join(run_dir, "network-snapshot-000000.pkl")
    return path, load_network_pkl(path)


def max_diff(a, b):
    """Largest absolute difference over G, G_ema and D parameters and buffers (and the ADA p)."""
    worst = abs(float(a["augment_pipe"].p) - float(b["augment_pipe"].p))
    for net in ("G", "G_ema", "D"):
        ta = dict(list(a[net].named_parameters()) + list(a[net].named_buffers()))
        tb = dict(list(b[net].named_parameters()) + list(b[net].named_buffers()))
        assert ta.keys() == tb.keys()
        worst = max([worst] + [float((ta[n] - tb[n]).abs().max()) for n in ta if ta[n].numel()])
    return worst


@pytest.mark.parametrize("loss", ["logistic", "rooted"])
def test_split_run_with_training_state_equals_straight_run(tmp_path, one_thread, loss):
    data = make_zip(tmp_path / "dogs.zip", num=8)
    straight = run(tmp_path, data, TINY_UNCOND, ITERS, "straight", loss=loss)
    first = run(tmp_path, data, TINY_UNCOND, ITERS // 2, "first", loss=loss)
    half_pkl, half = final_snapshot(first)

    state_file = training_state.state_path(half_pkl)
    assert state_file.endswith("network-snapshot-000000.state.pt")
    state = torch.load(state_file, weights_only=True)  # tensors and plain values only
    assert state["progress"] == half["progress"] and state["progress"]["batch_idx"] == ITERS // 2
    assert state["data_items"] == ITERS // 2 * 4 and set(state["optimizers"]) == {"G", "D"}
    assert state["ranks"][0]["ada_stats"]["Loss/signs/real"][0] >= ITERS // 2 * 4  # pending until batch_idx 4
    assert float(state["ranks"][0]["pl_mean"]) != 0  # the G regularization at batch_idx 0 set it

    desc, options = setup_training_options(data=str(data), resume=half_pkl, kimg=ITERS * 4 / 1000, device="cpu",
                                           workers=0, batch=4, tick=0.004, snap=100, p=0.2, target=0.3, loss=loss)
    assert options.resume_state == state_file
    resumed = launch_training(desc, options, str(tmp_path / "resumed"), show_progress=False, image_grid=(2, 2))
    with open(os.path.join(resumed, "log.txt"), encoding="utf-8") as f:
        assert f'Restored the training state from "{state_file}"' in f.read()
    _, end_straight = final_snapshot(straight)
    _, end_resumed = final_snapshot(resumed)
    assert end_resumed["progress"] == end_straight["progress"]
    diff = max_diff(end_straight, end_resumed)
    print(f"{loss}: max abs difference straight vs resumed = {diff:.3g}")
    assert diff <= 1e-6


def test_resume_without_the_state_file_is_not_exact(tmp_path, one_thread):
    """The check above can fail: without the state file (the previous behaviour) the runs differ."""
    data = make_zip(tmp_path / "dogs.zip", num=8)
    straight = run(tmp_path, data, TINY_UNCOND, ITERS, "straight")
    half_pkl, _ = final_snapshot(run(tmp_path, data, TINY_UNCOND, ITERS // 2, "first"))
    copy = str(tmp_path / "bare.pkl")
    shutil.copyfile(half_pkl, copy)  # no .state.pt beside it
    resumed = run(tmp_path, data, copy, ITERS, "resumed")
    assert max_diff(final_snapshot(straight)[1], final_snapshot(resumed)[1]) > 1e-4


def test_state_file_from_another_snapshot_is_refused(tmp_path, one_thread):
    data = make_zip(tmp_path / "dogs.zip", num=8)
    first = run(tmp_path, data, TINY_UNCOND, 1, "first")
    pkl = os.path.join(first, "network-snapshot-000000.pkl")
    ignored = setup_training_options(data=str(data), resume=pkl, kimg=1, device="cpu", exact_resume=False)[1]
    assert ignored.resume_state is None and ignored.ada_kimg == 100  # compare_objectives: each run keeps its seed
    state = torch.load(training_state.state_path(pkl), weights_only=True)
    state["progress"]["batch_idx"] = 7
    torch.save(state, training_state.state_path(pkl))
    with pytest.raises(training_state.TrainingStateError, match="belongs to another snapshot"):
        setup_training_options(data=str(data), resume=pkl, kimg=1, device="cpu")
    with open(training_state.state_path(pkl), "wb") as f:
        f.write(b"not a state file")
    with pytest.raises(training_state.TrainingStateError, match="cannot be read"):
        setup_training_options(data=str(data), resume=pkl, kimg=1, device="cpu")
