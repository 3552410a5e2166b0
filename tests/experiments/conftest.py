"""Fixtures of the comparison tests (test_compare*.py): the Inception weights and reading summary.md tables."""

from __future__ import annotations

import os

import pytest
import torch

from stylegan_rlo.evaluation import inception_weights


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """The real converted Inception weights when `make setup` made them, else a seeded random-weight Inception of the
    same layout (values are then meaningless, but every consistency check still holds). Metric caches go to a
    temporary folder."""
    tmp = tmp_path_factory.mktemp("weights")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DNNLIB_CACHE_DIR", str(tmp / "cache"))
        path = inception_weights.default_weights_path()
        if not os.path.isfile(path):
            torch.manual_seed(0)
            path = str(tmp / "random-inception.pth")
            torch.save(inception_weights.fidelity_skeleton().state_dict(), path)
        yield path


def _table_rows(markdown: str, heading: str) -> list[list[str]]:
    """Cells of the markdown table that follows `## heading` (its header and rule left out)."""
    section = markdown.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("|")]
    return [[c.strip() for c in row.strip("|").split("|")] for row in rows[2:]]


@pytest.fixture
def table_rows():
    """_table_rows(markdown, heading): the cells of a summary.md table."""
    return _table_rows
