"""setup_training_options fills in the table's defaults, and every command parses --device the same way."""

from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner
from training_fixtures import TINY_UNCOND, make_zip

from stylegan_rlo.cli import calc_fid, generate, train
from stylegan_rlo.devices import parse_device
from stylegan_rlo.errors import UserError
from stylegan_rlo.training.config import setup_training_options


def test_setup_uses_the_table_defaults(tmp_path):
    data = make_zip(tmp_path / "d.zip", num=2)
    _, options = setup_training_options(data=data, resume=str(TINY_UNCOND), device="cpu")
    assert options.kimg_per_tick == 4.0 and options.image_snapshot_ticks == options.network_snapshot_ticks == 50
    assert options.data_loader_kwargs == {"num_workers": 3} and options.loss_kwargs["objective"] == "rooted:8"
    assert options.ada_target == 0.6 and options.augment_kwargs == setup_training_options(
        data=data, resume=str(TINY_UNCOND), device="cpu", augpipe="bgc")[1].augment_kwargs


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message for a machine without a GPU")
def test_every_command_parses_devices_alike(tmp_path):
    data = make_zip(tmp_path / "d.zip", num=2)
    with pytest.raises(UserError) as info:
        parse_device("cuda:1")
    want = str(info.value)
    runs = [
        (train.main, ["--data", data, "--outdir", str(tmp_path / "o"), "--device", "cuda:1"]),
        (generate.main, ["--network", str(TINY_UNCOND), "--seeds", "0", "--device", "cuda:1"]),
        (calc_fid.main, ["--network", str(TINY_UNCOND), "--data", data, "--device", "cuda:1"]),
    ]
    for command, args in runs:
        result = CliRunner().invoke(command, args)
        assert result.exit_code == 2 and f"Error: {want}" in result.output, result.output
    assert str(parse_device("cpu")) == "cpu" and parse_device("auto").type == "cpu"
