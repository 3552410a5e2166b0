"""Every command reports a user error as one clean line, `Error: ...`, with exit status 2 and no traceback: errors
found while parsing (option callbacks such as --device) and while running (files, networks, objectives)."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from training_fixtures import TINY_UNCOND, make_zip

from stylegan_rlo.cli import (bench, bench_ops, calc_fid, compare_objectives, dataset_tool, demo, fetch_inception,
                               generate, rlo_logreg, train)
from stylegan_rlo.errors import UserError

MISSING_PKL = "/nonexistent/net.pkl"


def cases(data: str, out: str) -> list[tuple[str, object, list[str], str]]:
    """(case name, command, arguments, a phrase of the expected message) for every command."""
    return [
        ("train: missing data", train.main, ["--data", "/nonexistent/d.zip", "--outdir", out], "/nonexistent/d.zip"),
        ("train: k out of range", train.main, ["--data", data, "--outdir", out, "--k", "1e308"], "[0.001, 1e+07]"),
        ("train: tiny k", train.main, ["--data", data, "--outdir", out, "--k", "1e-300"], "[0.001, 1e+07]"),
        ("train: device", train.main, ["--data", data, "--outdir", out, "--device", "tpu"], "--device tpu"),
        ("generate: missing network", generate.main, ["--network", MISSING_PKL, "--seeds", "0", "--outdir", out,
                                                      "--device", "cpu"], MISSING_PKL),
        ("generate: device", generate.main, ["--network", str(TINY_UNCOND), "--seeds", "0", "--device", "cuda:x"],
         "--device cuda:x"),
        ("calc_fid: missing network", calc_fid.main, ["--network", MISSING_PKL, "--data", data, "--device", "cpu"],
         MISSING_PKL),
        ("dataset_tool: missing source", dataset_tool.main, ["--source", "/nonexistent/src", "--dest", out + ".zip"],
         "/nonexistent/src"),
        ("compare: k out of range", compare_objectives.main,
         ["--network", str(TINY_UNCOND), "--data", data, "--ref", data, "--kimg", "1", "--outdir", out,
          "--objectives", "logistic,rooted:1e308", "--device", "cpu"], "[0.001, 1e+07]"),
        ("demo: missing model", demo.main, ["--network", MISSING_PKL, "--outdir", out], MISSING_PKL),
        ("bench: k out of range", bench.main, ["--loss", "rooted", "--k", "0"], "[0.001, 1e+07]"),
        ("fetch_inception: missing source", fetch_inception.main, ["--source", "/nonexistent/w.whl", "--out",
                                                                   out + ".pth"], "/nonexistent/w.whl"),
        ("rlo_logreg: k out of range", rlo_logreg.main, ["--ks", "2,1e308", "--out", out + ".png"], "[0.001, 1e+07]"),
        ("bench_ops: bad range", bench_ops.main, ["--min-res", "64", "--max-res", "8"], "--min-res 64"),
    ]


CASE_NAMES = [c[0] for c in cases("d", "o")]


@pytest.mark.parametrize("name", CASE_NAMES)
def test_bad_value_gives_one_clean_error_line(tmp_path, name):
    data = make_zip(tmp_path / "d.zip", num=2)
    _, command, args, phrase = next(c for c in cases(data, str(tmp_path / "out")) if c[0] == name)
    result = CliRunner().invoke(command, args)
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit), (result.exit_code, result.output)
    assert "Traceback" not in result.output and result.output.count("Error: ") == 1, result.output
    assert phrase in result.output, result.output


def test_user_errors_of_the_library_share_one_base():
    from stylegan_rlo import objectives
    from stylegan_rlo.checkpoints import pickles
    from stylegan_rlo.data import dataset
    from stylegan_rlo.data import dataset_tool as tool
    from stylegan_rlo.evaluation import generate as gen
    from stylegan_rlo.evaluation import inception_weights, metrics
    from stylegan_rlo.experiments import compare
    from stylegan_rlo.training import config as training_config
    for cls in (compare.CompareError, dataset.DatasetError, tool.DatasetToolError, gen.GenerateError,
                inception_weights.InceptionWeightsError, metrics.MetricError, objectives.ObjectiveError,
                pickles.PickleError, pickles.MissingPickleError, training_config.TrainingOptionsError):
        assert issubclass(cls, UserError), cls


@pytest.mark.parametrize("flag, value, words", [
    ("--glr", "inf", ["--glr must be a finite number > 0, got inf"]),
    ("--tick", "0", ["--tick must be a finite number > 0"]),
    ("--gamma", "nan", ["--gamma must be a finite number >= 0"]),
    ("--p", "1.5", ["--p must be a finite number in [0, 1], got 1.5"]),
])
def test_range_messages_say_what_is_allowed(tmp_path, flag, value, words):
    """Issue: "(0, inf]" refused inf while saying it was allowed; the messages now state the range plainly."""
    data = make_zip(tmp_path / "d.zip", num=2)
    result = CliRunner().invoke(train.main, ["--data", data, "--outdir", str(tmp_path / "o"), "--device", "cpu",
                                             "--resume", str(TINY_UNCOND), flag, value, "--dry-run"])
    assert result.exit_code == 2 and "inf]" not in result.output, result.output
    for word in words:
        assert word in result.output, result.output
