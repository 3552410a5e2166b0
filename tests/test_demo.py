"""`make demo` (stylegan_rlo.demo): the pieces that run without the committed source model and minutes of CPU.
The demo itself is run end to end by hand (README: Demo); the comparison it calls is tested in test_compare.py."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from stylegan_rlo import demo
from stylegan_rlo.cli.demo import main as cli_main
from stylegan_rlo.errors import UserError


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
