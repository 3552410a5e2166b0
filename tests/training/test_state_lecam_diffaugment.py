"""Exact resume with LeCam regularization and DiffAugment on: a run of N iterations equals N/2 iterations, a resume
from that snapshot with its training state file, and N/2 more, bit for bit on the CPU (G, G_ema, D). The LeCam
anchors travel in the state file; a state file without them (written before LeCam existed) still loads."""

import os

import torch
from training_fixtures import TINY_UNCOND, make_zip

from stylegan_rlo.checkpoints.pickles import load_network_pkl
from stylegan_rlo.training import state as training_state
from stylegan_rlo.training.config import setup_training_options
from stylegan_rlo.training.launch import launch_training

ITERS = 4  # batch 4: the resumed half starts at batch_idx 2, with two LeCam updates and D steps behind it
OPTIONS = dict(device="cpu", workers=0, batch=4, tick=0.004, snap=100, aug="noaug", loss="hinge", lecam=0.3,
               lecam_decay=0.9, diffaugment="color,translation,cutout")


def run(tmp_path, data, resume, iters, outdir, **extra):
    """A tiny CPU run up to `iters` iterations of 4 images, one snapshot at the end; returns (its path, contents)."""
    desc, options = setup_training_options(data=str(data), resume=str(resume), kimg=iters * 4 / 1000,
                                           **dict(OPTIONS, **extra))
    run_dir = launch_training(desc, options, str(tmp_path / outdir), show_progress=False, image_grid=(2, 2))
    path = os.path.join(run_dir, "network-snapshot-000000.pkl")
    return path, load_network_pkl(path)


def tensors(snapshot):
    return {f"{net}.{name}": t for net in ("G", "G_ema", "D")
            for name, t in list(snapshot[net].named_parameters()) + list(snapshot[net].named_buffers())}


def test_split_run_equals_straight_run_bit_for_bit_with_lecam_and_diffaugment(tmp_path, one_thread):
    data = make_zip(tmp_path / "dogs.zip", num=8)
    _, straight = run(tmp_path, data, TINY_UNCOND, ITERS, "straight")
    half_pkl, _ = run(tmp_path, data, TINY_UNCOND, ITERS // 2, "first")
    state_file = training_state.state_path(half_pkl)
    lecam = torch.load(state_file, weights_only=True)["ranks"][0]["lecam"]
    assert lecam["updates"] == ITERS // 2 and float(lecam["real"]) != 0 and float(lecam["fake"]) != 0

    _, resumed = run(tmp_path, data, half_pkl, ITERS, "resumed")
    assert resumed["progress"] == straight["progress"]
    a, b = tensors(straight), tensors(resumed)
    assert a.keys() == b.keys()
    differing = [name for name in a if not torch.equal(a[name], b[name])]
    assert not differing, differing[:5]

    # A state file without the anchors (as written before LeCam existed) loads; the anchors then start afresh,
    # which changes the run: the anchors are part of what makes the resume exact.
    state = torch.load(state_file, weights_only=True)
    del state["ranks"][0]["lecam"]
    torch.save(state, state_file)
    old_pkl, old_state = run(tmp_path, data, half_pkl, ITERS, "old-state")
    with open(os.path.join(os.path.dirname(old_pkl), "log.txt"), encoding="utf-8") as f:
        assert f'Restored the training state from "{state_file}"' in f.read()
    assert old_state["progress"] == straight["progress"]
    c = tensors(old_state)
    assert any(not torch.equal(a[name], c[name]) for name in a if name.startswith("D."))
