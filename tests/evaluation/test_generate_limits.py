"""generate: a seed list that would take unbounded memory (and images) is refused at once, with a message."""

import time

import pytest
from click.testing import CliRunner
from training_fixtures import DATA

from stylegan_rlo.cli.generate import main as generate_main
from stylegan_rlo.evaluation.generate import MAX_LIST_ITEMS, GenerateError, parse_int_list

UNCOND = str(DATA / "tiny_uncond.pkl")


def test_huge_seed_ranges_are_refused_quickly(tmp_path):
    assert len(parse_int_list(f"0-{MAX_LIST_ITEMS - 2},5", "seed list")) == MAX_LIST_ITEMS
    with pytest.raises(GenerateError, match=f"more than {MAX_LIST_ITEMS} values"):
        parse_int_list(f"0-{MAX_LIST_ITEMS - 1},5", "seed list")
    start = time.monotonic()
    result = CliRunner().invoke(generate_main, ["--network", UNCOND, "--seeds", "0-2000000000", "--device", "cpu",
                                                "--outdir", str(tmp_path / "out")])
    assert result.exit_code == 2 and "more than 1000000 values" in result.output, result.output
    assert time.monotonic() - start < 20 and not (tmp_path / "out").exists()
