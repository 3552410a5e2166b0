"""FID/KID through torch-fidelity: agreement with torch-fidelity's own result, caching, determinism, records, CLI.

The always-on cases read Inception's '64' feature layer (first conv stack only: ~10x cheaper on CPU and a 64x64
covariance); the cases marked slow repeat the key checks with the standard 2048-d pool features on more images.
"""

import io
import json
import os
import shutil
import zipfile

import numpy as np
import pytest
import torch
import torch_fidelity
from click.testing import CliRunner
from PIL import Image
from training_fixtures import DATA

from stylegan_rlo.cli.calc_fid import main as calc_fid_main
from stylegan_rlo.data.dataset import ImageFolderDataset
from stylegan_rlo.evaluation import inception_weights, metrics
from stylegan_rlo.model import networks

WEIGHTS = inception_weights.default_weights_path()
pytestmark = pytest.mark.skipif(not os.path.isfile(WEIGHTS),
                                reason=f"converted Inception weights missing at {WEIGHTS}: run `make setup`")


# ---- test data -----------------------------------------------------------------------------------------------------

def smooth_images(n: int, seed: int, size: int = 32) -> np.ndarray:
    """uint8 [n, size, size, 3]: random colour fields upsampled from 4x4 (image-like, not white noise)."""
    rng = np.random.default_rng(seed)
    low = torch.from_numpy(rng.uniform(0, 255, (n, 3, 4, 4)))
    up = torch.nn.functional.interpolate(low, size=(size, size), mode="bicubic", align_corners=False)
    return up.clamp(0, 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def perturb(images: np.ndarray, seed: int) -> np.ndarray:
    """Shifted, darkened and noisy copies."""
    noise = np.random.default_rng(seed).normal(0, 40, images.shape)
    return np.clip(np.roll(images, 5, axis=2) * 0.6 + noise, 0, 255).astype(np.uint8)


def write_zip(path, images: np.ndarray, labels=None) -> str:
    with zipfile.ZipFile(path, "w") as zf:
        for i, img in enumerate(images):
            buf = io.BytesIO()
            Image.fromarray(img[:, :, 0] if img.shape[2] == 1 else img).save(buf, format="PNG")
            zf.writestr(f"img{i:05d}.png", buf.getvalue())
        if labels is not None:
            zf.writestr("dataset.json", json.dumps({"labels": [[f"img{i:05d}.png", int(c)]
                                                               for i, c in enumerate(labels)]}))
    return str(path)


def read_zip_rgb(path) -> torch.utils.data.Dataset:
    """Independent reader for the reference: PIL decodes each PNG and converts it to RGB."""
    with zipfile.ZipFile(path) as zf:
        names = sorted(n for n in zf.namelist() if n.endswith(".png"))
        arrays = [np.asarray(Image.open(io.BytesIO(zf.read(n))).convert("RGB")) for n in names]
    return _TensorImages(torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous())


class _TensorImages(torch.utils.data.Dataset):
    def __init__(self, x):
        self.x = x

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i]


def tiny_generator(c_dim: int = 0, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return networks.Generator(z_dim=16, c_dim=c_dim, w_dim=16, img_resolution=32, img_channels=3,
                              mapping_kwargs=dict(num_layers=2), synthesis_kwargs=dict(channel_base=256,
                                                                                        channel_max=16))


def metric_datasets(tmp_path_factory, name: str, num: int, seed: int, perturb_seed: int):
    """Generator for a module-wide fixture: a private cache folder, the fast '64' feature layer, and the datasets
    a (`num` smooth images) and p (a perturbed); yields an object with root, a and p."""
    mp = pytest.MonkeyPatch()
    root = tmp_path_factory.mktemp(name)
    mp.setenv("DNNLIB_CACHE_DIR", str(root / "cache"))
    mp.setattr(metrics, "FEATURE_LAYER", "64")
    imgs = smooth_images(num, seed=seed)
    yield type("Datasets", (), dict(root=root, a=write_zip(root / "a.zip", imgs),
                                    p=write_zip(root / "p.zip", perturb(imgs, perturb_seed))))
    mp.undo()


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """Module-wide cache folder, the fast feature layer, and the datasets A (6 images), P (A perturbed)."""
    yield from metric_datasets(tmp_path_factory, "metrics", 6, seed=1, perturb_seed=2)


def direct_fidelity(input1, input2, layer: str, seed: int, n: int) -> dict:
    return torch_fidelity.calculate_metrics(
        input1=input1, input2=input2, fid=True, kid=True, cuda=False, feature_extractor="inception-v3-compat",
        feature_extractor_weights_path=WEIGHTS, feature_layer_fid=layer, feature_layer_kid=layer,
        kid_subset_size=n, rng_seed=seed, cache=False, save_cpu_ram=True, verbose=False)


# ---- names and options ---------------------------------------------------------------------------------------------

def test_metric_names():
    assert metrics.METRIC_NAMES == ("fid50k_full", "kid50k_full", "pr50k3_inception", "pr50k3_full",
                                    "mem50k_inception")
    assert metrics.validate_metric_names(["kid", " FID50K_FULL", "fid", "none", ""]) == ["kid50k_full",
                                                                                         "fid50k_full"]
    assert metrics.validate_metric_names(["none"]) == []
    with pytest.raises(metrics.MetricError, match="unknown metric 'fid10k'.*fid50k_full, kid50k_full"):
        metrics.validate_metric_names(["fid10k"])
    with pytest.raises(metrics.MetricError, match="Inception Score is not offered"):
        metrics.validate_metric_names(["is50k"])
    with pytest.raises(metrics.MetricError, match="must be a list"):
        metrics.validate_metric_names("fid50k_full")


def test_misspelled_fidelity_option_is_refused():
    with pytest.raises(TypeError, match="feature_extractor_weight_path"):
        metrics._call_fidelity(torch_fidelity.calculate_metrics, input1=None, fid=True,
                               feature_extractor_weight_path=WEIGHTS)


def test_grayscale_dataset_is_repeated_to_rgb(tmp_path):
    gray = smooth_images(2, seed=3)[:, :, :, :1]
    path = write_zip(tmp_path / "gray.zip", gray)
    ours = metrics.RealImages(ImageFolderDataset(path))
    ref = read_zip_rgb(path)
    assert ours[0].shape == (3, 32, 32) and ours[0].dtype == torch.uint8
    assert all(torch.equal(ours[i], ref[i]) for i in range(2))


# ---- cache keys ----------------------------------------------------------------------------------------------------

def test_cache_name_tracks_content_weights_and_mirror(tmp_path, env):
    imgs = smooth_images(3, seed=5)
    a = ImageFolderDataset(write_zip(tmp_path / "d.zip", imgs))
    os.mkdir(tmp_path / "copy")
    same = ImageFolderDataset(shutil.copy(tmp_path / "d.zip", tmp_path / "copy" / "d.zip"))
    imgs[1, 0, 0, 0] ^= 1
    os.mkdir(tmp_path / "changed")
    changed = ImageFolderDataset(write_zip(tmp_path / "changed" / "d.zip", imgs))
    w2 = tmp_path / "w2.pth"
    w2.write_bytes(b"other weights")
    name = metrics.dataset_cache_name(a, WEIGHTS, False)
    assert name.startswith("d-")
    assert metrics.dataset_cache_name(same, WEIGHTS, False) == name
    assert metrics.dataset_cache_name(changed, WEIGHTS, False) != name
    assert metrics.dataset_cache_name(a, WEIGHTS, True) != name
    assert metrics.dataset_cache_name(a, str(w2), False) != name
    # A folder holding the same images is fingerprinted by file bytes.
    folder = tmp_path / "dir"
    with zipfile.ZipFile(tmp_path / "d.zip") as zf:
        zf.extractall(folder)
    fp = metrics.dataset_fingerprint(folder)
    (folder / "notes.txt").write_text("not an image")
    assert metrics.dataset_fingerprint(folder) == fp
    with open(folder / "img00000.png", "ab") as f:
        f.write(b"\0")
    assert metrics.dataset_fingerprint(folder) != fp


# ---- dataset vs dataset --------------------------------------------------------------------------------------------

def test_dataset_vs_dataset_equals_torch_fidelity(env):
    records = metrics.evaluate_datasets(env.a, env.p, metrics=["fid", "kid"], seed=3, batch=4)
    assert [r["metric"] for r in records] == ["fid50k_full", "kid50k_full"]
    ref = direct_fidelity(read_zip_rgb(env.a), read_zip_rgb(env.p), "64", seed=3, n=6)
    fid, kid = records[0]["results"]["fid50k_full"], records[1]["results"]["kid50k_full"]
    assert fid == pytest.approx(ref[torch_fidelity.KEY_METRIC_FID], rel=1e-6)
    assert kid == pytest.approx(ref[torch_fidelity.KEY_METRIC_KID_MEAN], rel=1e-6)
    assert fid > 1
    assert records[0]["num_gen"] == 6 and records[0]["data"] == env.a and records[0]["ref"] == env.p
    assert set(records[0]) >= {"results", "metric", "num_gen", "snapshot_pkl", "total_time", "timestamp"}


def test_dataset_against_itself_from_cache(env, monkeypatch):
    first = metrics.evaluate_datasets(env.a, env.p, metrics=["fid", "kid"], seed=3, batch=4)  # cached by now
    cached = os.listdir(os.path.join(env.root, "cache", "stylegan_rlo-metrics"))
    assert any(n.startswith("a-") and n.endswith("features-64.pt") for n in cached)

    def no_reads(*args):
        raise AssertionError("dataset images were read although their features are cached")
    monkeypatch.setattr(ImageFolderDataset, "_load_raw_image", no_reads)
    again = metrics.evaluate_datasets(env.a, env.p, metrics=["fid", "kid"], seed=3, batch=4)
    assert [r["results"] for r in again] == [r["results"] for r in first]
    self_fid, self_kid = metrics.evaluate_datasets(env.a, env.a, metrics=["fid", "kid"], seed=3)
    assert abs(self_fid["results"]["fid50k_full"]) < 1e-3
    assert self_kid["results"]["kid50k_full"] < first[1]["results"]["kid50k_full"]


def test_other_weights_miss_the_cache(env, tmp_path):
    state = torch.load(WEIGHTS, weights_only=True)
    state["Conv2d_1a_3x3.conv.weight"] *= 0.5
    other = tmp_path / "other.pth"
    torch.save(state, other)
    base = metrics.evaluate_datasets(env.a, env.p, metrics=["fid"], seed=3)[0]["results"]["fid50k_full"]
    changed = metrics.evaluate_datasets(env.a, env.p, metrics=["fid"], seed=3,
                                        inception_weights=str(other))[0]["results"]["fid50k_full"]
    assert changed != pytest.approx(base, rel=1e-3)


# ---- generator vs dataset ------------------------------------------------------------------------------------------

def test_generated_images_depend_on_seed_and_index_only(env):
    G = tiny_generator().eval()
    whole = metrics.GeneratedImages(G, 5, seed=7, batch=5, noise_mode="const")
    split = metrics.GeneratedImages(G, 5, seed=7, batch=2, noise_mode="const")
    a = torch.stack([whole[i] for i in range(5)]).int()
    b = torch.stack([split[i] for i in range(5)]).int()
    assert (a - b).abs().max() <= 1  # only batching round-off may differ
    # Image 3 is G(z) with z drawn from a generator seeded with [seed, 3].
    z = torch.from_numpy(np.random.default_rng([7, 3]).standard_normal((1, 16))).float()
    with torch.no_grad():
        ref = G(z, torch.zeros([1, 0]), noise_mode="const", force_fp32=True)
    ref = ((ref[0] + 1) * 127.5).round().clamp(0, 255).int()
    assert (a[3] - ref).abs().max() <= 1
    assert not torch.equal(a[0], a[1])


def test_conditional_images_take_labels_from_the_dataset(tmp_path):
    """Conditional G is fed to torch-fidelity as a Dataset (its own conditional wrapper calls np.int, gone in numpy 2);
    image i is G(z_i, label of dataset image j_i) with z_i and j_i drawn from a generator seeded with [seed, i]."""
    labels = [2, 0, 1, 1]
    data = ImageFolderDataset(write_zip(tmp_path / "lab.zip", smooth_images(4, seed=9), labels=labels),
                              use_labels=True)
    G = tiny_generator(c_dim=3).eval()
    fake = metrics.GeneratedImages(G, 6, seed=4, batch=4, label_source=data, noise_mode="const")
    picked = []
    for i in range(6):
        rng = np.random.default_rng([4, i])
        z = torch.from_numpy(rng.standard_normal((1, 16))).float()
        j = int(rng.integers(4))
        picked.append(labels[j])
        with torch.no_grad():
            ref = G(z, torch.nn.functional.one_hot(torch.tensor([labels[j]]), 3).float(), noise_mode="const",
                    force_fp32=True)
        assert (fake[i].int() - ((ref[0] + 1) * 127.5).round().clamp(0, 255).int()).abs().max() <= 1
    assert len(set(picked)) > 1  # several classes are drawn


def test_evaluate_snapshot_records_and_determinism(env, tmp_path):
    G = tiny_generator()
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    kwargs = dict(metrics=["kid", "fid"], data=env.a, num_gen=4, batch=2, run_dir=str(run_dir),
                  snapshot_pkl=str(run_dir / "network-snapshot-000004.pkl"))
    first = metrics.evaluate_snapshot(G, seed=0, **kwargs)
    second = metrics.evaluate_snapshot(G, seed=0, **kwargs)
    other = metrics.evaluate_snapshot(G, seed=1, **kwargs)
    assert [r["results"] for r in first] == [r["results"] for r in second]
    assert first[0]["results"] != other[0]["results"]
    assert G.training  # the caller's network is left alone (evaluation works on a copy)
    lines = [json.loads(line) for line in (run_dir / "metric-kid50k_full.jsonl").read_text().splitlines()]
    assert len(lines) == 3 and lines[0] == first[0]
    assert lines[0]["snapshot_pkl"] == "network-snapshot-000004.pkl" and lines[0]["num_gen"] == 4
    assert (run_dir / "metric-fid50k_full.jsonl").read_text().count("\n") == 3


def test_conditional_generator_needs_labels(env, tmp_path):
    G = tiny_generator(c_dim=3)
    with pytest.raises(metrics.MetricError, match=r"conditional \(c_dim=3\) but the dataset has no labels"):
        metrics.evaluate_snapshot(G, metrics=["kid"], data=env.a, num_gen=2)
    labelled = write_zip(tmp_path / "lab.zip", smooth_images(4, seed=9), labels=[0, 1, 2, 1])
    kid = metrics.evaluate_snapshot(G, metrics=["kid"], data=labelled, num_gen=3, batch=3)[0]
    assert np.isfinite(kid["results"]["kid50k_full"])


# ---- command line --------------------------------------------------------------------------------------------------

def test_calc_fid_cli_reproducible_and_run_dir(env, tmp_path):
    run_dir = tmp_path / "00000-run"
    run_dir.mkdir()
    (run_dir / "training_options.json").write_text("{}")
    pkl = shutil.copy(os.path.join(DATA, "tiny_uncond.pkl"), run_dir / "network-snapshot-000000.pkl")
    args = ["--network", str(pkl), "--data", env.a, "--num", "4", "--metrics", "kid", "--device", "cpu",
            "--batch", "4", "--inception-weights", WEIGHTS]
    runs = [CliRunner().invoke(calc_fid_main, args + ["--seed", s]) for s in ("5", "5", "6")]
    assert all(r.exit_code == 0 for r in runs), [r.output for r in runs]
    values = [json.loads(r.stdout)["results"]["kid50k_full"] for r in runs]
    assert values[0] == values[1] != values[2]
    lines = (run_dir / "metric-kid50k_full.jsonl").read_text().splitlines()
    assert len(lines) == 3 and json.loads(lines[0])["snapshot_pkl"] == "network-snapshot-000000.pkl"

    refmode = CliRunner().invoke(calc_fid_main, ["--data", env.a, "--ref", env.p, "--metrics", "fid,kid",
                                                 "--device", "cpu"])
    assert refmode.exit_code == 0, refmode.output
    assert [json.loads(line)["metric"] for line in refmode.stdout.splitlines()] == ["fid50k_full", "kid50k_full"]


@pytest.mark.parametrize("args, message", [
    (["--data", "X.zip"], "give --network PKL"),
    (["--data", "X.zip", "--network", "N.pkl", "--metrics", "fid,mem50k_inception"], "needs --ref HELD_OUT"),
    (["--data", "X.zip", "--ref", "Y.zip", "--num", "5"], "only applies to --network"),
    (["--data", "X.zip", "--ref", "Y.zip", "--metrics", "is50k"], "Inception Score is not offered"),
    (["--data", "X.zip", "--ref", "Y.zip", "--inception-weights", "/nonexistent/w.pth"], "not found"),
    (["--data", "X.zip", "--ref", "Y.zip", "--device", "cpu"], "dataset not found: X.zip"),
])
def test_calc_fid_cli_errors(args, message):
    result = CliRunner().invoke(calc_fid_main, args)
    assert result.exit_code != 0 and message in result.output, result.output


# ---- standard 2048-d features on more images -------------------------------------------------------------------

@pytest.mark.slow
def test_pool_features_fid_kid_slow(tmp_path, monkeypatch):
    monkeypatch.setenv("DNNLIB_CACHE_DIR", str(tmp_path / "cache"))
    imgs = smooth_images(100, seed=11)
    a = write_zip(tmp_path / "a.zip", imgs)
    p = write_zip(tmp_path / "p.zip", perturb(imgs, 12))
    fid, kid = metrics.evaluate_datasets(a, p, metrics=["fid", "kid"], seed=1)
    ref = direct_fidelity(read_zip_rgb(a), read_zip_rgb(p), "2048", seed=1, n=100)
    assert fid["results"]["fid50k_full"] == pytest.approx(ref[torch_fidelity.KEY_METRIC_FID], rel=1e-6)
    assert kid["results"]["kid50k_full"] == pytest.approx(ref[torch_fidelity.KEY_METRIC_KID_MEAN], rel=1e-6)
    self_fid, self_kid = metrics.evaluate_datasets(a, a, metrics=["fid", "kid"], seed=1)
    assert abs(self_fid["results"]["fid50k_full"]) < 1e-2 < fid["results"]["fid50k_full"]
    assert abs(self_kid["results"]["kid50k_full"]) < kid["results"]["kid50k_full"]
    G = tiny_generator()
    runs = [metrics.evaluate_snapshot(G, metrics=["fid"], data=a, num_gen=32, seed=0)[0]["results"]
            for _ in range(2)]
    assert runs[0] == runs[1] and runs[0]["fid50k_full"] > 0


def test_cpu_memory_format_keeps_pool_features():
    """The channels-last extractor _measure uses on the CPU gives today's 2048-d features within 1e-5."""
    extractor = inception_weights.feature_extractor(WEIGHTS, ["2048"])
    images = torch.from_numpy(np.random.RandomState(0).randint(0, 256, (4, 3, 32, 32), dtype=np.uint8))
    with torch.no_grad():
        reference = extractor(images)[0].double()
        fast = extractor.to(memory_format=metrics.CPU_MEMORY_FORMAT)(images)[0].double()
    assert reference.abs().max() > 0.1
    assert (fast - reference).abs().max().item() <= 1e-5
