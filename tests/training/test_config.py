"""The training option table: train and compare_objectives get their options from it, --help shows its defaults,
setup_training_options fills them in, and every command parses --device the same way."""

from __future__ import annotations

import re

import pytest
import torch
from click.testing import CliRunner
from training_fixtures import TINY_UNCOND, make_zip

from stylegan_rlo.cli import calc_fid, compare_objectives, generate, train
from stylegan_rlo.devices import parse_device
from stylegan_rlo.errors import UserError
from stylegan_rlo.training.config import (OPTIONS_BY_NAME, TRAINING_OPTIONS, TrainingOptionsError, resolve_options,
                                          setup_training_options)


def params(command) -> dict:
    return {p.name: p for p in command.params}


def test_train_options_are_the_table():
    names = set(params(train.main)) - {"outdir", "dry_run", "help"}
    assert names == set(OPTIONS_BY_NAME)
    help_text = re.sub(r"\s+", " ", CliRunner().invoke(train.main, ["--help"]).output)
    for option in TRAINING_OPTIONS:
        assert option.flag in help_text
        if option.name != "data":  # required: no default shown
            if option.default is not None or option.derived is not None:
                assert f"[default: {option.default_text}]" in help_text, option.name
    assert "[default: 4]" in help_text and "[default: 50]" in help_text and "[default: bgc]" in help_text


def test_compare_passes_the_same_per_run_options():
    own, trained = params(compare_objectives.main), params(train.main)
    per_run = {o.name for o in TRAINING_OPTIONS if o.per_run}
    assert per_run <= set(own)
    for name in per_run:
        assert own[name].help == trained[name].help and type(own[name].type) is type(trained[name].type), name
    assert {"freezed", "augpipe", "gamma", "batch"} <= per_run and "tick" not in per_run


def test_resolve_options_fills_table_defaults_and_refuses_unknown_names():
    resolved = resolve_options({"tick": None, "snap": 7})
    assert resolved.tick == OPTIONS_BY_NAME["tick"].default == 4.0 and resolved.snap == 7
    assert resolved.workers == 3 and resolved.loss == "rooted" and resolved.k is None
    with pytest.raises(TrainingOptionsError, match="unknown training option.*freezeD"):
        resolve_options({"freezeD": 2})
    with pytest.raises(TrainingOptionsError, match="--snap must be an integer"):
        resolve_options({"snap": 2.5})


def test_setup_uses_the_table_defaults(tmp_path):
    data = make_zip(tmp_path / "d.zip", num=2)
    _, options = setup_training_options(data=data, resume=str(TINY_UNCOND), device="cpu")
    assert options.kimg_per_tick == 4.0 and options.image_snapshot_ticks == options.network_snapshot_ticks == 50
    assert options.data_loader_kwargs == {"num_workers": 3} and options.objective == "rooted:8"
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
