"""ImageFolderDataset: pixels, labels, x-flips and subsets match an independent reading of the files, and every
kind of bad dataset fails with a DatasetError that names the problem file."""

from __future__ import annotations

import concurrent.futures
import io
import json
import os
import pickle
import zipfile

import numpy as np
import PIL.Image
import pytest
import torch

from stylegan_rlo.dataset import DatasetError, ImageFolderDataset


def _png_bytes(pixels: np.ndarray, mode: str | None = None) -> bytes:
    buf = io.BytesIO()
    PIL.Image.fromarray(pixels, mode).save(buf, format="PNG")
    return buf.getvalue()


def _random_images(n: int, res: int = 8, channels: int = 3, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    shape = (res, res) if channels == 1 else (res, res, channels)
    return [rng.integers(0, 256, shape, dtype=np.uint8) for _ in range(n)]


def _write_folder(root, files: dict[str, bytes]) -> str:
    for name, data in files.items():
        path = os.path.join(root, *name.split("/"))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
    return str(root)


def _write_zip(path, files: dict[str, bytes]) -> str:
    with zipfile.ZipFile(path, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
    return str(path)


def _dataset_files(images: list[np.ndarray], labels: list | None = None) -> dict[str, bytes]:
    """Official layout: 00000/img00000000.png ... plus dataset.json (labels or null)."""
    files = {f"00000/img{i:08d}.png": _png_bytes(img) for i, img in enumerate(images)}
    names = list(files)
    files["dataset.json"] = json.dumps({"labels": None if labels is None else
                                        [[n, l] for n, l in zip(names, labels)]}).encode()
    return files


def _chw(img: np.ndarray) -> np.ndarray:
    return img[np.newaxis] if img.ndim == 2 else img.transpose(2, 0, 1)


# ---- reading ------------------------------------------------------------------------------------------------------

def test_folder_pixels_and_properties(tmp_path):
    images = _random_images(5, res=16)
    ds = ImageFolderDataset(_write_folder(tmp_path / "mydata", _dataset_files(images)))
    assert (len(ds), ds.name, ds.image_shape, ds.num_channels, ds.resolution) == (5, "mydata", [3, 16, 16], 3, 16)
    assert ds.label_shape == [0] and ds.label_dim == 0 and not ds.has_labels
    for i, img in enumerate(images):
        x, c = ds[i]
        assert x.dtype == np.uint8 and x.flags.writeable and x.flags.c_contiguous
        np.testing.assert_array_equal(x, _chw(img))
        assert c.dtype == np.float32 and c.shape == (0,)


def test_zip_and_folder_give_identical_items(tmp_path):
    images = _random_images(6, res=8, seed=3)
    files = _dataset_files(images, labels=[2, 0, 1, 2, 0, 1])
    zip_ds = ImageFolderDataset(_write_zip(tmp_path / "d.zip", files), use_labels=True, xflip=True, max_size=4)
    dir_ds = ImageFolderDataset(_write_folder(tmp_path / "d", files), use_labels=True, xflip=True, max_size=4)
    assert len(zip_ds) == len(dir_ds) == 8 and zip_ds.name == dir_ds.name == "d"
    for i in range(len(zip_ds)):
        for a, b in zip(zip_ds[i], dir_ds[i]):
            np.testing.assert_array_equal(a, b)


def test_sorted_order_with_subfolders_and_other_files(tmp_path):
    images = _random_images(3, seed=4)
    files = {"b/x.png": _png_bytes(images[0]), "a/z.png": _png_bytes(images[1]), "a/y.jpg_not": b"junk",
             "readme.txt": b"hi", "c.png": _png_bytes(images[2]), "__MACOSX/a/._z.png": b"\0\0",
             ".hidden.png": b"not an image"}
    for make in (_write_folder, _write_zip):
        ds = ImageFolderDataset(make(tmp_path / f"{make.__name__}.zip", files))
        assert [ds.get_details(i).name for i in range(len(ds))] == ["a/z.png", "b/x.png", "c.png"]
        np.testing.assert_array_equal(ds[1][0], _chw(images[0]))


def test_grayscale_png_gives_one_channel(tmp_path):
    images = _random_images(2, res=4, channels=1)
    ds = ImageFolderDataset(_write_zip(tmp_path / "g.zip", _dataset_files(images)))
    assert ds.image_shape == [1, 4, 4] and ds.num_channels == 1
    np.testing.assert_array_equal(ds[1][0], images[1][np.newaxis])


def test_jpeg_and_palette_images_decode_like_pil(tmp_path):
    rgb = _random_images(1, res=8, seed=5)[0]
    jpeg = io.BytesIO()
    PIL.Image.fromarray(rgb).save(jpeg, format="JPEG", quality=90)
    palette = io.BytesIO()
    PIL.Image.fromarray(rgb).convert("P").save(palette, format="PNG")
    root = _write_folder(tmp_path / "j", {"a.jpg": jpeg.getvalue(), "b.png": palette.getvalue()})
    ds = ImageFolderDataset(root)
    expected_a = np.asarray(PIL.Image.open(os.path.join(root, "a.jpg")).convert("RGB"))
    expected_b = np.asarray(PIL.Image.open(os.path.join(root, "b.png")).convert("RGB"))
    np.testing.assert_array_equal(ds[0][0], _chw(expected_a))
    np.testing.assert_array_equal(ds[1][0], _chw(expected_b))


def test_xflip_doubles_and_mirrors(tmp_path):
    images = _random_images(3, seed=1)
    ds = ImageFolderDataset(_write_zip(tmp_path / "f.zip", _dataset_files(images, [0, 1, 2])), xflip=True,
                            use_labels=True)
    assert len(ds) == 6
    for i in range(3):
        np.testing.assert_array_equal(ds[i][0], _chw(images[i]))
        np.testing.assert_array_equal(ds[i + 3][0], _chw(images[i][:, ::-1]))
        np.testing.assert_array_equal(ds[i + 3][1], ds[i][1])
        assert ds.get_details(i + 3).xflip and not ds.get_details(i).xflip
        assert ds.get_details(i + 3).raw_idx == i


def test_max_size_is_a_seeded_sorted_subset(tmp_path):
    images = _random_images(20, res=4, seed=2)
    path = _write_zip(tmp_path / "m.zip", _dataset_files(images))

    def chosen(seed):
        ds = ImageFolderDataset(path, max_size=5, random_seed=seed)
        return [ds.get_details(i).raw_idx for i in range(len(ds))]

    for seed in (0, 7):
        expected = sorted(np.random.RandomState(seed).permutation(20)[:5].tolist())
        assert chosen(seed) == chosen(seed) == expected
    assert chosen(0) != chosen(7)
    ds = ImageFolderDataset(path, max_size=5, random_seed=7)
    np.testing.assert_array_equal(ds[2][0], _chw(images[chosen(7)[2]]))
    assert len(ImageFolderDataset(path, max_size=50)) == 20
    assert len(ImageFolderDataset(path, max_size=5, xflip=True)) == 10


def test_integer_labels_become_one_hot(tmp_path):
    labels = [3, 0, 1, 3]
    path = _write_folder(tmp_path / "l", _dataset_files(_random_images(4), labels))
    ds = ImageFolderDataset(path, use_labels=True)
    assert ds.label_shape == [4] and ds.label_dim == 4 and ds.has_labels and ds.has_onehot_labels
    for i, l in enumerate(labels):
        expected = np.zeros(4, np.float32)
        expected[l] = 1.0
        np.testing.assert_array_equal(ds[i][1], expected)
        np.testing.assert_array_equal(ds.get_label(i), expected)
        assert ds[i][1].dtype == np.float32
    assert ImageFolderDataset(path, use_labels=False).label_dim == 0


def test_vector_labels_pass_through(tmp_path):
    labels = [[0.5, -1.0], [2.0, 0.25]]
    ds = ImageFolderDataset(_write_zip(tmp_path / "v.zip", _dataset_files(_random_images(2), labels)),
                            use_labels=True)
    assert ds.label_shape == [2] and not ds.has_onehot_labels
    np.testing.assert_array_equal(ds[1][1], np.array(labels[1], np.float32))


def test_null_or_absent_labels_mean_no_labels(tmp_path):
    files = _dataset_files(_random_images(2))
    assert ImageFolderDataset(_write_zip(tmp_path / "n.zip", files), use_labels=True).label_dim == 0
    del files["dataset.json"]
    assert ImageFolderDataset(_write_zip(tmp_path / "a.zip", files), use_labels=True).label_dim == 0


def test_concurrent_threads_workers_and_pickle(tmp_path):
    images = _random_images(8, res=8, seed=9)
    ds = ImageFolderDataset(_write_zip(tmp_path / "c.zip", _dataset_files(images, list(range(8)))),
                            use_labels=True)
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda i: ds[i % 8][0], range(64)))
    for i, x in enumerate(results):
        np.testing.assert_array_equal(x, _chw(images[i % 8]))
    clone = pickle.loads(pickle.dumps(ds))
    np.testing.assert_array_equal(clone[5][0], _chw(images[5]))
    loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=2)
    batches = list(loader)
    got = torch.cat([b[0] for b in batches]).numpy()
    np.testing.assert_array_equal(got, np.stack([_chw(img) for img in images]))
    np.testing.assert_array_equal(torch.cat([b[1] for b in batches]).numpy(), np.eye(8, dtype=np.float32))
    ds.close()


# ---- errors -------------------------------------------------------------------------------------------------------

def _error(path, **kwargs) -> str:
    with pytest.raises(DatasetError) as info:
        ImageFolderDataset(path, **kwargs)
    return str(info.value)


def test_missing_path_and_empty_dataset(tmp_path):
    assert "not found" in _error(str(tmp_path / "nope.zip"))
    _write_folder(tmp_path / "empty", {"notes.txt": b"x"})
    assert "no images" in _error(str(tmp_path / "empty"))
    (tmp_path / "fake.zip").write_bytes(b"not a zip")
    assert "ZIP" in _error(str(tmp_path / "fake.zip"))


@pytest.mark.parametrize("shape, words", [((8, 6, 3), "square"), ((12, 12, 3), "power of two")])
def test_bad_image_geometry_names_the_file(tmp_path, shape, words):
    files = _dataset_files(_random_images(2))
    files["00000/odd.png"] = _png_bytes(np.zeros(shape, np.uint8))
    msg = _error(_write_zip(tmp_path / "g.zip", files))
    assert "00000/odd.png" in msg and words in msg


def test_mixed_sizes_and_channels_name_both_files(tmp_path):
    files = _dataset_files(_random_images(2, res=8))
    files["00000/zbig.png"] = _png_bytes(np.zeros((16, 16, 3), np.uint8))
    msg = _error(_write_folder(tmp_path / "s", files))
    assert "mixed image sizes" in msg and "00000/zbig.png" in msg and "00000/img00000000.png" in msg
    files = _dataset_files(_random_images(2, res=8))
    files["00000/zgray.png"] = _png_bytes(np.zeros((8, 8), np.uint8))
    msg = _error(_write_folder(tmp_path / "c", files))
    assert "mixed channel counts" in msg and "00000/zgray.png" in msg


def test_alpha_images_are_refused_with_a_hint(tmp_path):
    files = {"a.png": _png_bytes(np.zeros((4, 4, 4), np.uint8), "RGBA")}
    msg = _error(_write_zip(tmp_path / "a.zip", files))
    assert "a.png" in msg and "alpha" in msg and "dataset_tool" in msg


def test_resolution_mismatch(tmp_path):
    path = _write_zip(tmp_path / "r.zip", _dataset_files(_random_images(2, res=8)))
    msg = _error(path, resolution=16)
    assert "8x8" in msg and "16" in msg
    assert ImageFolderDataset(path, resolution=8).resolution == 8


def test_unreadable_image_is_named_at_construction(tmp_path):
    files = _dataset_files(_random_images(2))
    files["00000/broken.png"] = b"\x89PNG garbage, no header at all"
    msg = _error(_write_zip(tmp_path / "u.zip", files))
    assert "00000/broken.png" in msg and "not a readable image" in msg


def test_truncated_image_is_named_on_access(tmp_path):
    files = _dataset_files(_random_images(3, res=32))
    files["00000/img00000001.png"] = files["00000/img00000001.png"][:400]
    for make in (_write_zip, _write_folder):
        ds = ImageFolderDataset(make(tmp_path / f"t{make.__name__}.zip", files))
        assert ds[0][0].shape == (3, 32, 32)
        with pytest.raises(DatasetError, match="00000/img00000001.png.*cannot be decoded"):
            ds[1]


@pytest.mark.parametrize("content, words", [
    (b'{"labels": [["00000/img00000000.png", 1]', "not valid JSON"),
    (b'{"classes": []}', '"labels" key'),
    (b'{"labels": [["00000/img00000000.png", 1], ["00000/img00000001.png", 0]]}', "no label for 1 image"),
    (b'{"labels": [["00000/img00000000.png", 1], ["00000/img00000001.png", 0], ["00000/img00000002.png", 0],'
     b' ["gone.png", 1]]}', "'gone.png'"),
    (b'{"labels": [["00000/img00000000.png", 1], ["00000/img00000001.png", -2], ["00000/img00000002.png", 0]]}',
     "integers >= 0"),
    (b'{"labels": [["00000/img00000000.png", 1], ["00000/img00000001.png", [1.0]], '
     b'["00000/img00000002.png", 0]]}', "'00000/img00000001.png'"),
    (b'{"labels": [["00000/img00000000.png", 1, 2]]}', "[name, label]"),
])
def test_bad_labels(tmp_path, content, words):
    files = _dataset_files(_random_images(3))
    files["dataset.json"] = content
    path = _write_zip(tmp_path / "b.zip", files)
    msg = _error(path, use_labels=True)
    assert words in msg and "dataset.json" in msg
    assert len(ImageFolderDataset(path, use_labels=False)) == 3  # labels are only read when asked for
