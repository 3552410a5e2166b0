"""A snapshot written by main 082ffc1 (before the package moved into subpackages) still loads and continues exactly.

tests/fixtures/pre-layout-snapshot/ holds that run's network-snapshot-000000.pkl, its .state.pt and
training_options.json
(tiny_uncond.pkl fine-tuned for 8 iterations of 4 images on make_zip(num=8), rooted k=8, gamma 0.1, seed 3, x-flips)
and reference.pt: the outputs of its networks on fixed inputs, and of the same networks after an exact resume of
4 more iterations, both computed by that main before the move.
"""

import json
import os
import shutil

import torch
from training_fixtures import DATA, make_zip

from stylegan_rlo.checkpoints.pickles import load_network_pkl
from stylegan_rlo.training.config import setup_training_options
from stylegan_rlo.training.launch import launch_training

FIXTURE = DATA / "pre-layout-snapshot"
SNAPSHOT = "network-snapshot-000000.pkl"


def outputs(data: dict, inputs: dict) -> dict:
    c = torch.zeros([len(inputs["z"]), 0])
    with torch.no_grad():
        return dict(G_ema=data["G_ema"](inputs["z"], c, noise_mode="const"), D=data["D"](inputs["img"], c))


def test_pre_layout_snapshot_loads_with_the_same_outputs():
    ref = torch.load(FIXTURE / "reference.pt", weights_only=False)
    data = load_network_pkl(str(FIXTURE / SNAPSHOT))
    assert data["progress"] == ref["progress"]
    got = dict(outputs(data, ref["inputs"]), G=data["G"](ref["inputs"]["z"], torch.zeros([4, 0]), noise_mode="const"))
    for name, want in ref["outputs"].items():
        torch.testing.assert_close(got[name].detach(), want, rtol=0, atol=1e-6)


def test_pre_layout_options_record_is_readable():
    options = json.loads((FIXTURE / "training_options.json").read_text())
    assert options["objective"] == "rooted:8"


def test_pre_layout_snapshot_continues_exactly_from_its_state_file(tmp_path, one_thread):
    ref = torch.load(FIXTURE / "reference.pt", weights_only=False)
    for name in (SNAPSHOT, "network-snapshot-000000.state.pt"):
        shutil.copy(FIXTURE / name, tmp_path / name)
    data = make_zip(tmp_path / "data.zip", num=8, res=32)
    desc, options = setup_training_options(data=data, resume=str(tmp_path / SNAPSHOT), kimg=0.048, batch=4,
                                           tick=0.016, snap=100, workers=0, loss="rooted", k=8, gamma=0.1, seed=3,
                                           mirror=True, device="cpu")
    run_dir = launch_training(desc, options, str(tmp_path / "out"), show_progress=False, image_grid=(2, 2))
    assert "Restored the training state" in open(os.path.join(run_dir, "log.txt")).read()
    continued = load_network_pkl(os.path.join(run_dir, SNAPSHOT))
    assert continued["progress"] == ref["continued"]["progress"]
    for name, got in outputs(continued, ref["inputs"]).items():  # bit for bit here; a little slack for other CPUs
        torch.testing.assert_close(got, ref["continued"]["outputs"][name], rtol=0, atol=1e-4)
