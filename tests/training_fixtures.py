"""Helpers shared by the training tests: the fixture pickles, tiny PNG datasets written with PIL, subprocess settings
and the spawned-rank worker (a module-level function, so that it pickles). Fixtures live in conftest.py."""

from __future__ import annotations

import io
import json
import os
import pathlib
import zipfile

import numpy as np
import torch
from PIL import Image

REPO = pathlib.Path(__file__).resolve().parents[1]  # the checkout
FIXTURES = pathlib.Path(__file__).parent / "fixtures"  # every test data file
DATA = FIXTURES
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


def subprocess_env() -> dict:
    """Environment for CLI subprocesses: single-threaded math, no progress bars fighting over the terminal."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return env


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now (for torch.distributed rendezvous)."""
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ddp_rank_worker(rank: int, options: dict, run_dir: str, init_file: str, out_dir: str) -> None:
    """One `--gpus N` rank (the launcher's own worker), which then saves its final G/D/G_ema tensors."""
    from stylegan_rlo.training.launch import _spawned_worker
    torch.set_num_threads(1)
    state = _spawned_worker(rank, run_dir, options, init_file, dict(show_progress=False, image_grid=(2, 2)))
    tensors = {f"{net}.{name}": t.detach().clone() for net in ("G", "D", "G_ema")
               for name, t in list(state[net].named_parameters()) + list(state[net].named_buffers())}
    torch.save(dict(tensors=tensors, cur_nimg=state["cur_nimg"], batch_idx=state["batch_idx"]),
               os.path.join(out_dir, f"rank{rank}.pt"))
