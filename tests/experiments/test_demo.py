"""`make demo` (experiments.demo): the pieces that run without the committed source model and minutes of CPU.
The demo itself is run end to end by hand (README: Demo); the comparison it calls is tested in test_compare.py."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from stylegan_rlo.cli.demo import main as cli_main
from stylegan_rlo.errors import UserError
from stylegan_rlo.experiments import demo


def test_missing_source_model_is_explained(tmp_path):
    missing = str(tmp_path / "demo-source.pkl")
    with pytest.raises(UserError, match="pretrain_demo_source.sh"):
        demo.run_demo(str(tmp_path / "out"), network=missing, log=lambda _m: None)
    result = CliRunner().invoke(cli_main, ["--network", missing, "--outdir", str(tmp_path / "out")])
    assert result.exit_code == 2 and "Error: " in result.output and "not found" in result.output
    assert not (tmp_path / "out").exists()


def test_demo_snapshots_fit_the_run():
    """The schedule must give whole-kimg snapshots inside the run (see compare: snapshots are named by kimg)."""
    assert demo.DEMO_SNAP_KIMG >= 1 and demo.DEMO_KIMG % demo.DEMO_SNAP_KIMG == 0



class _ReachedEvaluation(Exception):
    pass


def test_demo_settings_pass_every_check_before_the_first_evaluation(tmp_path, monkeypatch):
    """run_demo's call fits compare_objectives, and every run's options pass the training checks against the committed
    source model (e.g. the batch divides its minibatch-stddev group): the comparison reaches its first evaluation."""
    from training_fixtures import make_zip

    from stylegan_rlo.experiments import compare
    from stylegan_rlo.experiments.demo_data import DemoDatasets

    dogs = make_zip(tmp_path / "dogs.zip", num=4, res=32, channels=1)
    monkeypatch.setattr(demo, "prepare_demo_data", lambda network, log: DemoDatasets(dogs, dogs, dogs, dogs))
    monkeypatch.setattr(demo, "prepare_weights", lambda: ("weights.pth", False))

    def reached(*args, **kwargs):
        raise _ReachedEvaluation

    monkeypatch.setattr(compare, "evaluate_datasets", reached)
    with pytest.raises(_ReachedEvaluation):
        demo.run_demo(str(tmp_path / "out"), log=lambda _m: None, show_progress=False)
