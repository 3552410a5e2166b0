"""Image generation: per-seed PNGs, labelled grid, projected w, style mixing, class handling, CLI."""

import os

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from training_fixtures import DATA

from stylegan_rlo.checkpoints.pickles import load_network_pkl
from stylegan_rlo.cli.generate import main as generate_main
from stylegan_rlo.evaluation import generate as gen

UNCOND = os.path.join(DATA, "tiny_uncond.pkl")
COND = os.path.join(DATA, "tiny_cond.pkl")


@pytest.fixture(scope="module")
def G():
    return load_network_pkl(UNCOND)["G_ema"].eval().requires_grad_(False)


@pytest.fixture(scope="module")
def G_cond():
    return load_network_pkl(COND)["G_ema"].eval().requires_grad_(False)


def read_png(path) -> np.ndarray:
    return np.asarray(Image.open(path))


def expected_uint8(img: torch.Tensor) -> np.ndarray:
    """Reference [-1, 1] CHW -> uint8 HWC conversion in float64."""
    x = (img.double().numpy().transpose(1, 2, 0) + 1) * 127.5
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def close(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal up to one grey level (float32 round-off may flip a rounding)."""
    return np.abs(a.astype(int) - b.astype(int)).max() <= 1


def test_parsers():
    assert gen.parse_int_list("0-3,7, 10-11") == [0, 1, 2, 3, 7, 10, 11]
    assert gen.parse_grid("8x4") == (8, 4)
    for bad in ("3-1", "a", "1,,2", "-1"):
        with pytest.raises(gen.GenerateError):
            gen.parse_int_list(bad)
    with pytest.raises(gen.GenerateError, match="COLSxROWS"):
        gen.parse_grid("0x3")


def test_seed_images_and_grid(G, tmp_path):
    seeds = [0, 42, 7]
    paths = gen.save_seed_images(G, seeds, str(tmp_path), truncation_psi=0.7, grid=(2, 2))
    assert [os.path.basename(p) for p in paths] == ["seed0000.png", "seed0042.png", "seed0007.png", "grid.png"]
    with torch.no_grad():  # the official convention: z = RandomState(seed).randn(1, z_dim)
        for seed, path in zip(seeds, paths):
            z = torch.from_numpy(np.random.RandomState(seed).randn(1, G.z_dim)).float()
            ref = G(z, torch.zeros([1, 0]), truncation_psi=0.7, noise_mode="const", force_fp32=True)[0]
            assert close(read_png(path), expected_uint8(ref))
    grid = read_png(paths[-1])
    pad, label_h = 2, 12
    assert grid.shape == (2 * (32 + pad + label_h) + pad, 2 * (32 + pad) + pad, 3)
    tile = lambda r, c: grid[pad + r * (32 + pad + label_h):][:32, pad + c * (32 + pad):][:, :32]  # noqa: E731
    assert np.array_equal(tile(0, 1), read_png(paths[1])) and np.array_equal(tile(1, 0), read_png(paths[2]))
    assert (tile(1, 1) == 255).all()  # unused cell stays blank
    label_band = grid[pad + 32:pad + 32 + label_h, pad:pad + 32]
    assert (label_band < 128).any()  # a seed number is written under the tile


def official_seed_pixels(G, seed: int, c: torch.Tensor, psi: float) -> np.ndarray:
    """What the official StyleGAN2-ADA / StyleGAN3 generate.py writes for one seed (their recipe, restated): a float64
    z tensor straight from RandomState(seed).randn(1, z_dim), one image per call, the network's default precision,
    then x * 127.5 + 128 clamped to [0, 255] and cast to uint8."""
    with torch.no_grad():
        z = torch.from_numpy(np.random.RandomState(seed).randn(1, G.z_dim))
        img = G(z, c, truncation_psi=psi, noise_mode="const")
    return (img.permute(0, 2, 3, 1) * 127.5 + 128).clamp(0, 255).to(torch.uint8)[0].numpy()


@pytest.mark.parametrize("which", ["uncond", "cond"])
def test_seed_pngs_are_byte_identical_to_the_official_script(G, G_cond, tmp_path, which):
    """Issue: 1.4-4.6% of the pixels differed by one level from the official generate.py (ours forced fp32 on the CPU
    and generated in batches). Now every pixel agrees, for both fixtures (fp16 top blocks), with truncation."""
    net, class_idx = (G, None) if which == "uncond" else (G_cond, 2)
    c = torch.zeros([1, net.c_dim])
    if class_idx is not None:
        c[:, class_idx] = 1
    seeds = list(range(12))
    paths = gen.save_seed_images(net, seeds, str(tmp_path), truncation_psi=0.7, class_idx=class_idx)
    for seed, path in zip(seeds, paths):
        want = official_seed_pixels(net, seed, c, 0.7)
        assert np.array_equal(read_png(path), want), (seed, np.mean(read_png(path) != want))
        with Image.open(path) as png:
            assert png.mode == "RGB" and png.format == "PNG"


def test_official_pixel_conversion_against_float64():
    """x * 127.5 + 128, clamped and truncated: checked in float64 on values away from level boundaries, plus the
    ends and the half-way points that rint would round to even."""
    x = torch.tensor([-2.0, -1.0, -0.999, -0.5, 0.0, 0.25, 0.5, 0.999, 1.0, 3.0], dtype=torch.float32)
    want = np.floor(np.clip(x.double().numpy() * 127.5 + 128, 0, 255)).astype(np.uint8)
    got = gen.official_pixels(x.reshape(1, 1, 1, -1))
    assert got.shape == (1, 1, 10, 1) and np.array_equal(got[0, 0, :, 0], want)
    assert list(want[[1, 4, 8]]) == [0, 128, 255]


def test_truncation_zero_collapses_to_average(G, tmp_path):
    paths = gen.save_seed_images(G, [1, 2], str(tmp_path), truncation_psi=0.0)
    assert np.array_equal(read_png(paths[0]), read_png(paths[1]))


def test_class_handling(G, G_cond, tmp_path):
    with pytest.raises(gen.GenerateError, match="conditional with 3 classes: pass --class"):
        gen.save_seed_images(G_cond, [0], str(tmp_path))
    with pytest.raises(gen.GenerateError, match="out of range: this network has classes 0..2"):
        gen.save_seed_images(G_cond, [0], str(tmp_path), class_idx=3)
    with pytest.raises(gen.GenerateError, match="unconditional"):
        gen.save_seed_images(G, [0], str(tmp_path), class_idx=0)
    a = gen.save_seed_images(G_cond, [5], str(tmp_path / "c0"), class_idx=0)[0]
    b = gen.save_seed_images(G_cond, [5], str(tmp_path / "c2"), class_idx=2)[0]
    assert not np.array_equal(read_png(a), read_png(b))
    with torch.no_grad():
        z = torch.from_numpy(np.random.RandomState(5).randn(1, G_cond.z_dim)).float()
        ref = G_cond(z, torch.tensor([[0.0, 0.0, 1.0]]), noise_mode="const", force_fp32=True)[0]
    assert close(read_png(b), expected_uint8(ref))


def test_projected_w_matches_reference_outputs(G, tmp_path):
    ref = torch.load(os.path.join(DATA, "tiny_uncond_ref.pt"), weights_only=False)
    npz = tmp_path / "proj.npz"
    np.savez(npz, w=ref["ws"].numpy())
    ws = gen.load_projected_w(str(npz), G)
    paths = gen.save_projected_images(G, ws, str(tmp_path))
    assert [os.path.basename(p) for p in paths] == [f"proj{i:02d}.png" for i in range(4)]
    for path, img in zip(paths, ref["img_const"]):  # upstream outputs stored in the fixture
        assert close(read_png(path), expected_uint8(img))

    np.savez(tmp_path / "bad.npz", w=ref["ws"].numpy()[:, :3])
    with pytest.raises(gen.GenerateError, match=r"shape \[4, 3, 32\], this network needs \[N, 8, 32\]"):
        gen.load_projected_w(str(tmp_path / "bad.npz"), G)
    np.savez(tmp_path / "nokey.npz", ws=ref["ws"].numpy())
    with pytest.raises(gen.GenerateError, match="array 'w'"):
        gen.load_projected_w(str(tmp_path / "nokey.npz"), G)
    np.save(tmp_path / "plain.npy", ref["ws"].numpy())
    with pytest.raises(gen.GenerateError, match="plain .npy"):
        gen.load_projected_w(str(tmp_path / "plain.npy"), G)
    (tmp_path / "junk.npz").write_bytes(b"junk")
    with pytest.raises(gen.GenerateError, match="not a readable .npz"):
        gen.load_projected_w(str(tmp_path / "junk.npz"), G)


def test_style_mixing_table(G):
    rows, cols = [1, 2], [3, 4, 5]
    with torch.no_grad():
        ws = G.mapping(torch.from_numpy(np.stack([np.random.RandomState(s).randn(G.z_dim) for s in rows + cols]))
                       .float(), None)
        plain = G.synthesis(ws, noise_mode="const", force_fp32=True)
    mixed_ws = ws[0].clone()
    mixed_ws[:3] = ws[3][:3]  # row seed 1 with layers 0-2 from column seed 4
    with torch.no_grad():
        mixed = G.synthesis(mixed_ws[None], noise_mode="const", force_fp32=True)[0]

    table = gen.style_mix_images(G, rows, cols, [0, 1, 2]).reshape(3, 4, 3, 32, 32)
    assert (table[0, 0] == 1).all()  # blank corner
    for j in range(3):
        assert torch.allclose(table[0, j + 1], plain[2 + j], atol=1e-4)  # header row: column seeds
    for i in range(2):
        assert torch.allclose(table[i + 1, 0], plain[i], atol=1e-4)  # header column: row seeds
    assert torch.allclose(table[1, 2], mixed, atol=1e-4)
    everything = gen.style_mix_images(G, rows, cols, list(range(G.num_ws))).reshape(3, 4, 3, 32, 32)
    assert torch.allclose(everything[2, 3], plain[4], atol=1e-4)  # all layers from the column seed
    with pytest.raises(gen.GenerateError, match=r"layer\(s\) \[8\] given; layers must be in 0..7"):
        gen.style_mix_images(G, rows, cols, [8])


def test_cli_seeds_grid_and_style_mix(tmp_path):
    out = tmp_path / "out"
    result = CliRunner().invoke(generate_main, ["--network", UNCOND, "--seeds", "0-3", "--grid", "2x2",
                                                "--outdir", str(out), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert sorted(os.listdir(out)) == ["grid.png", "seed0000.png", "seed0001.png", "seed0002.png", "seed0003.png"]
    result = CliRunner().invoke(generate_main, ["--network", COND, "--style-mix", "0-1", "2-4", "--styles",
                                                "0-3", "--class", "1", "--outdir", str(out), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert read_png(out / "stylemix.png").shape[1] == 4 * 34 + 2


@pytest.mark.parametrize("args, message", [
    (["--network", COND, "--seeds", "0"], "pass --class C"),
    (["--network", UNCOND], "exactly one of --seeds, --projected-w or --style-mix"),
    (["--network", UNCOND, "--seeds", "0", "--projected-w", "w.npz"], "(got --seeds, --projected-w)"),
    (["--network", UNCOND, "--seeds", "5-2"], "runs backwards"),
    (["--network", UNCOND, "--projected-w", "w.npz", "--grid", "2x2"], "only applies to --seeds"),
    (["--network", os.path.join(DATA, "missing.pkl"), "--seeds", "0"], "missing.pkl"),
    (["--network", UNCOND, "--seeds", "0", "--class", "1"], "this network is unconditional"),
    (["--network", UNCOND, "--seeds", "0-4", "--grid", "2x2"], "holds 4 images but 5 seeds"),
    (["--network", UNCOND, "--seeds", "0", "--trunc", "nan"], "must be a finite number"),
    (["--network", UNCOND, "--seeds", "4294967296"], "seed 4294967296 is out of range"),
])
def test_cli_errors(args, message, tmp_path):
    result = CliRunner().invoke(generate_main, args + ["--outdir", str(tmp_path / "out"), "--device", "cpu"])
    assert result.exit_code != 0 and message in result.output, result.output
    assert not (tmp_path / "out").exists() or not os.listdir(tmp_path / "out")  # no image written


def test_cli_outdir_that_cannot_be_created(tmp_path):
    (tmp_path / "file").write_text("")
    result = CliRunner().invoke(generate_main, ["--network", UNCOND, "--seeds", "0", "--outdir",
                                                str(tmp_path / "file" / "out"), "--device", "cpu"])
    assert result.exit_code == 2 and "cannot create folder" in result.output and "Not a directory" in result.output
