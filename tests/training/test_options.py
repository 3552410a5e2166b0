"""The training option table: train and compare_objectives get their options from it, --help shows its defaults,
and resolve_options fills them in."""

from __future__ import annotations

import re

import pytest
from click.testing import CliRunner

from stylegan_rlo.cli import compare_objectives, train
from stylegan_rlo.training.options import OPTIONS_BY_NAME, TRAINING_OPTIONS, TrainingOptionsError, resolve_options


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
