"""--ema-kimg and --ema-rampup in train: validation, the resume rule they override, and their effect on G_ema."""

import os

import pytest
import torch
from click.testing import CliRunner
from training_fixtures import TINY_UNCOND, make_zip

from stylegan_rlo.checkpoints.pickles import load_network_pkl
from stylegan_rlo.cli.train import main
from stylegan_rlo.training.config import setup_training_options
from stylegan_rlo.training.options import TrainingOptionsError
from stylegan_rlo.training.launch import launch_training


def options(tmp_path, **opts):
    data = make_zip(tmp_path / "d.zip", num=2)
    return setup_training_options(data=data, device="cpu", batch=4, **opts)[1]


def test_defaults_and_overrides(tmp_path):
    fresh = options(tmp_path)  # --cfg auto at 32x32: the preset's batch 32 gives 32 * 10 / 32 kimg, ramp-up 0.05
    assert (fresh.ema_kimg, fresh.ema_rampup) == (10.0, 0.05)
    resumed = options(tmp_path, resume=str(TINY_UNCOND))
    assert resumed.ema_rampup is None  # as upstream when starting from a trained network
    custom = options(tmp_path, resume=str(TINY_UNCOND), ema_kimg=0.5, ema_rampup="0.1")
    assert (custom.ema_kimg, custom.ema_rampup) == (0.5, 0.1)
    assert options(tmp_path, ema_rampup="none").ema_rampup is None


@pytest.mark.parametrize("opts,words", [
    (dict(ema_kimg=0), "--ema-kimg must be a finite number > 0, got 0"),
    (dict(ema_kimg=float("nan")), "--ema-kimg must be a finite number > 0, got nan"),
    (dict(ema_rampup="abc"), "--ema-rampup must be a number or 'none', got 'abc'"),
    (dict(ema_rampup=-0.5), "--ema-rampup must be a finite number > 0 or 'none', got -0.5"),
])
def test_bad_values_are_refused(tmp_path, opts, words):
    with pytest.raises(TrainingOptionsError, match=words):
        options(tmp_path, **opts)


def test_cli_records_the_ema_options(tmp_path):
    data = make_zip(tmp_path / "d.zip", num=2)
    result = CliRunner().invoke(main, ["--data", data, "--outdir", str(tmp_path / "runs"), "--device", "cpu",
                                       "--ema-kimg", "3", "--ema-rampup", "none", "--dry-run", "1"])
    assert result.exit_code == 0, result.output
    assert '"ema_kimg": 3.0' in result.output and '"ema_rampup": null' in result.output
    result = CliRunner().invoke(main, ["--data", data, "--outdir", str(tmp_path / "runs"), "--device", "cpu",
                                       "--ema-rampup", "0", "--dry-run", "1"])
    assert result.exit_code == 2 and "--ema-rampup" in result.output


def test_a_tiny_half_life_makes_G_ema_follow_G(tmp_path, one_thread):
    data = make_zip(tmp_path / "d.zip", num=8)
    for ema_kimg, follows in ((1e-9, True), (1000.0, False)):
        desc, opts = setup_training_options(data=data, resume=str(TINY_UNCOND), device="cpu", workers=0, batch=4,
                                            kimg=0.004, tick=0.004, aug="noaug", ema_kimg=ema_kimg)
        run_dir = launch_training(desc, opts, str(tmp_path / f"runs{ema_kimg:g}"), show_progress=False,
                                  image_grid=(2, 2))
        snap = load_network_pkl(os.path.join(run_dir, "network-snapshot-000000.pkl"))
        weight = snap["G"].synthesis.b32.conv1.weight
        assert torch.equal(snap["G_ema"].synthesis.b32.conv1.weight, weight) is follows
