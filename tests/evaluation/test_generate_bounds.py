"""generate: grids and style-mixing tables beyond MAX_GRID_BYTES are refused before any image is made; each seed
image is on disk as soon as it exists (an interruption keeps them); earlier images are not replaced without
--overwrite."""

import os
import types

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from training_fixtures import DATA

from stylegan_rlo.checkpoints.pickles import load_network_pkl
from stylegan_rlo.cli.generate import main as generate_main
from stylegan_rlo.evaluation import generate as gen

UNCOND = str(DATA / "tiny_uncond.pkl")


@pytest.fixture(scope="module")
def G():
    return load_network_pkl(UNCOND)["G_ema"].eval().requires_grad_(False)


def run(*args):
    return CliRunner().invoke(generate_main, ["--network", UNCOND, "--device", "cpu", *map(str, args)])


def test_huge_grid_is_refused_before_generating(tmp_path):
    out = tmp_path / "out"
    result = run("--seeds", "0-9", "--grid", "2000x2000", "--outdir", out)
    assert result.exit_code == 2 and "--grid: a 2000x2000 grid" in result.output, result.output
    assert f"at most {gen.MAX_GRID_BYTES // 2**20} MiB" in result.output and "Traceback" not in result.output
    assert os.listdir(out) == []


def test_huge_style_mix_is_refused_before_generating(tmp_path, G):
    shape_only = types.SimpleNamespace(num_ws=G.num_ws, img_resolution=G.img_resolution, img_channels=G.img_channels)
    with pytest.raises(gen.GenerateError, match=r"--style-mix: a 1001x1001 grid .* at most 256 MiB"):
        gen.save_style_mix_grid(shape_only, list(range(1000)), list(range(1000)), [0], str(tmp_path))
    result = run("--style-mix", "0-99999", "0-99999", "--outdir", tmp_path / "o")
    assert result.exit_code == 2 and "--style-mix: a 100001x100001 grid" in result.output, result.output


def test_largest_allowed_grid_size_passes_the_check(G):
    res = int(G.img_resolution)
    tile = (res + 2 + 12) * (res + 2) * int(G.img_channels)  # one labelled tile of images.make_grid, with padding
    side = int((gen.MAX_GRID_BYTES / tile) ** 0.5) - 1
    gen.check_grid_size(G, side, side, "--grid")
    with pytest.raises(gen.GenerateError):
        gen.check_grid_size(G, side + 2, side + 2, "--grid")


class Interrupting(torch.nn.Module):
    """G that raises KeyboardInterrupt on its `limit`-th call (as Ctrl-C in the middle of a run)."""

    def __init__(self, G, limit):
        super().__init__()
        self.G, self.limit, self.calls = G, limit, 0
        self.z_dim, self.c_dim = G.z_dim, G.c_dim

    def forward(self, *args, **kwargs):
        self.calls += 1
        if self.calls == self.limit:
            raise KeyboardInterrupt
        return self.G(*args, **kwargs)


def test_each_image_is_written_as_soon_as_it_exists(G, tmp_path):
    with pytest.raises(KeyboardInterrupt):
        gen.save_seed_images(Interrupting(G, 4), [5, 6, 7, 8, 9], str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == ["seed0005.png", "seed0006.png", "seed0007.png"]  # no temp files
    reference = gen.save_seed_images(G, [6], str(tmp_path / "ref"))[0]
    assert np.array_equal(np.asarray(Image.open(tmp_path / "seed0006.png")), np.asarray(Image.open(reference)))


def test_existing_images_are_kept_unless_overwrite(G, tmp_path):
    first = gen.save_seed_images(G, [1, 2], str(tmp_path), grid=(2, 1))
    before = {p: os.path.getmtime(p) for p in first}
    with pytest.raises(gen.GenerateError, match=r"3 of the 3 files to write exist already, e.g. .*seed0001.png; "
                                                r"pass --overwrite"):
        gen.save_seed_images(G, [1, 2], str(tmp_path), grid=(2, 1))
    assert {p: os.path.getmtime(p) for p in first} == before
    result = run("--seeds", "2,3", "--outdir", tmp_path)
    assert result.exit_code == 2 and "seed0002.png" in result.output and "--overwrite" in result.output
    assert not (tmp_path / "seed0003.png").exists()  # refused before anything was written
    result = run("--seeds", "2,3", "--outdir", tmp_path, "--overwrite")
    assert result.exit_code == 0 and (tmp_path / "seed0003.png").exists(), result.output
    with pytest.raises(gen.GenerateError, match="stylemix.png"):
        (tmp_path / "stylemix.png").write_bytes(b"")
        gen.save_style_mix_grid(G, [1], [2], [0], str(tmp_path))
