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
