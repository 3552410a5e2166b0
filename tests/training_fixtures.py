"""Helpers shared by the training tests: tiny PNG datasets written with PIL, and single-threaded torch."""

from __future__ import annotations

import io
import json
import os
import pathlib
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

DATA = pathlib.Path(__file__).parent / "data"
TINY_UNCOND = DATA / "tiny_uncond.pkl"   # 32x32, c_dim 0, D mbstd group 2
TINY_COND = DATA / "tiny_cond.pkl"       # 32x32, c_dim 3, D mbstd group 4


def make_zip(path: str | os.PathLike, num: int = 8, res: int = 32, channels: int = 3, classes: int | None = None,
             seed: int = 0) -> str:
    """A dataset ZIP of random PNG images (official layout); with `classes`, dataset.json labels i % classes."""
    rnd = np.random.RandomState(seed)
    with zipfile.ZipFile(path, "w") as zf:
        for i in range(num):
            pixels = (rnd.rand(res, res, channels) * 255).astype(np.uint8)
            buf = io.BytesIO()
            Image.fromarray(pixels[:, :, 0] if channels == 1 else pixels).save(buf, format="PNG")
            zf.writestr(f"img{i:05d}.png", buf.getvalue())
        if classes:
            labels = [[f"img{i:05d}.png", i % classes] for i in range(num)]
            zf.writestr("dataset.json", json.dumps({"labels": labels}))
    return os.fspath(path)


@pytest.fixture
def one_thread():
    """The test machine is shared: one torch thread (restored afterwards)."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


def subprocess_env() -> dict:
    """Environment for CLI subprocesses: single-threaded math, no progress bars fighting over the terminal."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return env
