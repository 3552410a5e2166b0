"""Fixtures shared by the tests (pytest finds them here; test modules do not import them)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture
def one_thread():
    """The test machine is shared: one torch thread (restored afterwards)."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


@pytest.fixture
def small_grids(monkeypatch):
    """4x3 image grids instead of upstream's 32x32 (1024 fakes per grid cost seconds on the CPU)."""
    from stylegan_rlo import training_loop
    monkeypatch.setattr(training_loop, "default_grid_size", lambda image_shape: (4, 3))
