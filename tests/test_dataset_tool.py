"""dataset_tool: every source type converts into a dataset ImageFolderDataset reads back with the expected pixels
and labels; Stanford Dogs boxes crop exactly where the geometry is exact; bad inputs fail cleanly with nothing
half-written left behind."""

from __future__ import annotations

import io
import json
import os
import zipfile

import numpy as np
import PIL.Image
import pytest
from click.testing import CliRunner

from stylegan_rlo import dataset_tool
from stylegan_rlo.cli.dataset_tool import main as cli_main
from stylegan_rlo.dataset import ImageFolderDataset
from stylegan_rlo.dataset_tool import DatasetToolError, convert_dataset, square_around_box

BLUE, RED, GREEN, YELLOW, MAGENTA = (0, 0, 255), (255, 0, 0), (0, 255, 0), (255, 255, 0), (255, 0, 255)


def _save(path, pixels: np.ndarray, fmt: str = "PNG", mode: str | None = None) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    PIL.Image.fromarray(pixels, mode).save(path, format=fmt)


def _convert(source, dest, **kwargs):
    messages: list[str] = []
    summary = convert_dataset(str(source), str(dest), progress=False, log=messages.append, **kwargs)
    return summary, messages


def _items(dest, use_labels=False):
    ds = ImageFolderDataset(str(dest), use_labels=use_labels)
    return ds, [ds[i] for i in range(len(ds))]


def _hwc(chw: np.ndarray) -> np.ndarray:
    return chw.transpose(1, 2, 0)


def _leftovers(folder) -> list[str]:
    return [n for n in os.listdir(folder) if n.endswith(".tmp")]


# ---- Stanford Dogs -------------------------------------------------------------------------------------------

def _voc(boxes) -> str:
    objects = "".join(f"<object><name>dog</name><bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin><xmax>{x1}</xmax>"
                      f"<ymax>{y1}</ymax></bndbox></object>" for x0, y0, x1, y1 in boxes)
    return f"<annotation><folder>x</folder><size><depth>3</depth></size>{objects}</annotation>"


def _painted(width, height, boxes_colours) -> np.ndarray:
    img = np.empty((height, width, 3), np.uint8)
    img[:] = BLUE
    for (x0, y0, x1, y1), colour in boxes_colours:
        img[y0:y1, x0:x1] = colour
    return img


def _make_dogs(root) -> None:
    """Three breeds; beagle/a1 has two boxes, corgi/b1's box touches the left border (the square shifts right),
    pug/c1 is narrower than its box's square (padded with black), pug/d1 is a real JPEG."""
    specs = {
        "n001-beagle/a1": (96, 80, [((8, 8, 40, 40), RED), ((60, 40, 76, 72), GREEN)], "png"),
        "n002-corgi/b1": (100, 80, [((4, 8, 44, 72), YELLOW)], "png"),
        "n003-pug/c1": (32, 100, [((0, 20, 32, 84), MAGENTA)], "png"),
        "n003-pug/d1": (64, 64, [((16, 16, 48, 48), RED)], "jpg"),
    }
    for stem, (w, h, boxes, ext) in specs.items():
        _save(os.path.join(root, "Images", stem + "." + ext), _painted(w, h, boxes), "PNG" if ext == "png" else "JPEG")
        ann = os.path.join(root, "Annotation", stem)
        os.makedirs(os.path.dirname(ann), exist_ok=True)
        with open(ann, "w") as f:
            f.write(_voc([b for b, _ in boxes]))


def _expected_crop(columns: list[tuple[int, tuple]], side: int, res: int) -> np.ndarray:
    """A side x side crop made of vertical stripes [(width, colour), ...], box-downscaled to res (exact: every
    stripe edge falls on a block edge)."""
    crop = np.concatenate([np.tile(np.array(c, np.uint8), (side, w, 1)) for w, c in columns], axis=1)
    assert crop.shape == (side, side, 3)
    f = side // res
    return crop.reshape(res, f, res, f, 3).mean(axis=(1, 3)).astype(np.uint8)


def test_square_around_box_geometry():
    assert square_around_box((8, 8, 40, 40), 96, 80) == (8, 8, 32)        # square box: itself
    assert square_around_box((60, 40, 76, 72), 96, 80) == (52, 40, 32)    # widened symmetrically
    assert square_around_box((4, 8, 44, 72), 100, 80) == (0, 8, 64)       # would start at -8: shifted inside
    assert square_around_box((70, 0, 100, 10), 100, 80) == (70, 0, 30)    # shifted left from 75 to 70
    assert square_around_box((0, 20, 32, 84), 32, 100) == (-16, 20, 64)   # wider than the image: centred, padded


def test_stanford_dogs_box_crop(tmp_path):
    _make_dogs(tmp_path / "dogs")
    summary, _ = _convert(tmp_path / "dogs", tmp_path / "out.zip", transform="box-crop", resolution=16,
                          labels=True, resize_filter="box")
    assert (summary.num_images, summary.resolution, summary.channels) == (5, 16, 3)
    ds, items = _items(tmp_path / "out.zip", use_labels=True)
    assert ds.label_dim == 3
    assert [int(np.argmax(label)) for _, label in items] == [0, 0, 1, 2, 2]
    expected = [
        _expected_crop([(32, RED)], 32, 16),                                   # a1 box 1
        _expected_crop([(8, BLUE), (16, GREEN), (8, BLUE)], 32, 16),          # a1 box 2
        _expected_crop([(4, BLUE), (40, YELLOW), (20, BLUE)], 64, 16),        # b1: shifted to the border
        _expected_crop([(16, (0, 0, 0)), (32, MAGENTA), (16, (0, 0, 0))], 64, 16),  # c1: black padding
    ]
    for (img, _), exp in zip(items, expected):
        np.testing.assert_array_equal(_hwc(img), exp)
    decoded = np.asarray(PIL.Image.open(tmp_path / "dogs" / "Images" / "n003-pug" / "d1.jpg").convert("RGB"))
    block_mean = decoded[16:48, 16:48].astype(float).reshape(16, 2, 16, 2, 3).mean(axis=(1, 3))
    assert np.abs(_hwc(items[4][0]) - block_mean).max() <= 1  # lossy JPEG: its own pixels (PIL rounds)
    with zipfile.ZipFile(tmp_path / "out.zip") as z:
        meta = json.loads(z.read("dataset.json"))
        assert meta["class_names"] == ["n001-beagle", "n002-corgi", "n003-pug"]
        assert meta["labels"][0] == ["00000/img00000000.png", 0]


def test_stanford_dogs_without_box_crop_is_a_breed_folder(tmp_path):
    _make_dogs(tmp_path / "dogs")
    summary, _ = _convert(tmp_path / "dogs", tmp_path / "out", transform="center-crop", resolution=16,
                          labels=True)
    ds, items = _items(tmp_path / "out", use_labels=True)
    assert summary.num_images == 4 and [int(np.argmax(l)) for _, l in items] == [0, 1, 2, 2]


def test_stanford_dogs_annotation_problems_follow_on_error(tmp_path):
    _make_dogs(tmp_path / "dogs")
    os.remove(tmp_path / "dogs" / "Annotation" / "n002-corgi" / "b1")
    (tmp_path / "dogs" / "Annotation" / "n003-pug" / "c1").write_text("<annotation><object>")
    with pytest.raises(DatasetToolError, match="b1"):
        _convert(tmp_path / "dogs", tmp_path / "out.zip", transform="box-crop", resolution=16)
    assert not (tmp_path / "out.zip").exists() and not _leftovers(tmp_path)
    summary, messages = _convert(tmp_path / "dogs", tmp_path / "out.zip", transform="box-crop", resolution=16,
                                 on_error="skip")
    assert summary.num_images == 3  # a1's two boxes and d1
    assert any("n002-corgi/b1" in m and "no annotation" in m for m in messages)
    assert any("n003-pug/c1" in m and "malformed" in m for m in messages)


def test_box_crop_needs_a_dogs_tree_and_a_resolution(tmp_path):
    _save(str(tmp_path / "imgs" / "a.png"), np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(DatasetToolError, match="Stanford Dogs"):
        _convert(tmp_path / "imgs", tmp_path / "o.zip", transform="box-crop", resolution=8)
    with pytest.raises(DatasetToolError, match="needs --resolution"):
        _convert(tmp_path / "imgs", tmp_path / "o.zip", transform="box-crop")


# ---- folders and ZIPs --------------------------------------------------------------------------------------

def test_folder_with_labels_from_subfolders(tmp_path):
    rng = np.random.default_rng(0)
    imgs = {name: rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
            for name in ("dog/b.png", "cat/a.png", "dog/deep/c.png", "cat/d.png")}
    for name, img in imgs.items():
        _save(str(tmp_path / "src" / name), img)
    (tmp_path / "src" / "cat" / "notes.txt").write_text("not an image")
    summary, _ = _convert(tmp_path / "src", tmp_path / "out.zip", labels=True)
    ds, items = _items(tmp_path / "out.zip", use_labels=True)
    order = ["cat/a.png", "cat/d.png", "dog/b.png", "dog/deep/c.png"]  # sorted relative paths
    assert summary.num_images == 4 and ds.label_dim == 2
    for (img, label), name in zip(items, order):
        np.testing.assert_array_equal(_hwc(img), imgs[name])
        assert int(np.argmax(label)) == (0 if name.startswith("cat") else 1)
    _save(str(tmp_path / "src" / "loose.png"), imgs["cat/a.png"])
    with pytest.raises(DatasetToolError, match="loose.png"):
        _convert(tmp_path / "src", tmp_path / "out2.zip", labels=True)


def test_zip_source_keeps_its_labels_and_refuses_zip_slip(tmp_path):
    rng = np.random.default_rng(1)
    imgs = [rng.integers(0, 256, (4, 4, 3), dtype=np.uint8) for _ in range(3)]
    src = tmp_path / "src.zip"
    with zipfile.ZipFile(src, "w") as z:
        for i, img in enumerate(imgs):
            buf = io.BytesIO()
            PIL.Image.fromarray(img).save(buf, format="PNG")
            z.writestr(f"x/{i}.png", buf.getvalue())
        z.writestr("dataset.json", json.dumps({"labels": [["x/0.png", 2], ["x/1.png", 0], ["x/2.png", 1]]}))
    _, messages = _convert(src, tmp_path / "nolabels.zip", resolution=8, resize_filter="box")
    assert any("--labels" in m for m in messages)
    assert ImageFolderDataset(str(tmp_path / "nolabels.zip"), use_labels=True).label_dim == 0
    _convert(src, tmp_path / "out.zip", labels=True, resolution=8, resize_filter="box")
    ds, items = _items(tmp_path / "out.zip", use_labels=True)
    assert [int(np.argmax(l)) for _, l in items] == [2, 0, 1]
    np.testing.assert_array_equal(_hwc(items[1][0]), imgs[1].repeat(2, axis=0).repeat(2, axis=1))
    for evil in ("../evil.png", "/abs/evil.png", "x/../../evil.png", "C:/evil.png"):
        bad = tmp_path / "bad.zip"
        with zipfile.ZipFile(bad, "w") as z:
            z.writestr("ok.png", b"")
            z.writestr(evil, b"")
        with pytest.raises(DatasetToolError, match="zip-slip"):
            _convert(bad, tmp_path / "slip.zip")
        assert not (tmp_path / "slip.zip").exists()


def test_corrupt_images_skip_or_stop(tmp_path):
    rng = np.random.default_rng(2)
    for i in range(4):
        _save(str(tmp_path / "src" / f"{i}.png"), rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))
    (tmp_path / "src" / "1.png").write_bytes(b"garbage")                                    # no header
    data = (tmp_path / "src" / "2.png").read_bytes()
    (tmp_path / "src" / "2.png").write_bytes(data[:len(data) // 2])                          # truncated
    out = tmp_path / "out" / "d.zip"
    with pytest.raises(DatasetToolError, match="1.png.*--on-error skip"):
        _convert(tmp_path / "src", out)
    assert not out.exists() and not _leftovers(out.parent)
    (tmp_path / "src" / "1.png").unlink()
    with pytest.raises(DatasetToolError, match="2.png"):                                      # fails at decode
        _convert(tmp_path / "src", out)
    assert not out.exists() and not _leftovers(out.parent)
    (tmp_path / "src" / "1.png").write_bytes(b"garbage")
    summary, messages = _convert(tmp_path / "src", out, on_error="skip")
    assert summary.num_images == 2 and summary.skipped == ["1.png", "2.png"]
    assert any("1.png" in m for m in messages) and len(ImageFolderDataset(str(out))) == 2


@pytest.mark.parametrize("dest_name", ["out.zip", "outdir"])
def test_interrupt_leaves_no_partial_output(tmp_path, monkeypatch, dest_name):
    for i in range(4):
        _save(str(tmp_path / "src" / f"{i}.png"), np.full((8, 8, 3), i, np.uint8))
    real_add = dataset_tool.DatasetWriter.add

    def add_then_interrupt(self, image, label=None):
        if len(self.labels) == 2:
            raise KeyboardInterrupt
        return real_add(self, image, label)

    monkeypatch.setattr(dataset_tool.DatasetWriter, "add", add_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        _convert(tmp_path / "src", tmp_path / dest_name)
    assert sorted(os.listdir(tmp_path)) == ["src"]


def test_mixed_sizes_without_resolution_fail_cleanly(tmp_path):
    _save(str(tmp_path / "src" / "a.png"), np.zeros((8, 8, 3), np.uint8))
    _save(str(tmp_path / "src" / "b.png"), np.zeros((16, 16, 3), np.uint8))
    with pytest.raises(DatasetToolError, match="b.png.*--resolution"):
        _convert(tmp_path / "src", tmp_path / "o")
    assert sorted(os.listdir(tmp_path)) == ["src"]
    _save(str(tmp_path / "src2" / "c.png"), np.zeros((8, 6, 3), np.uint8))
    with pytest.raises(DatasetToolError, match="c.png.*not square"):
        _convert(tmp_path / "src2", tmp_path / "o.zip", resolution=8)


def test_existing_nonempty_folder_dest_is_refused(tmp_path):
    _save(str(tmp_path / "src" / "a.png"), np.zeros((8, 8, 3), np.uint8))
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "keep.txt").write_text("mine")
    with pytest.raises(DatasetToolError, match="not an empty folder"):
        _convert(tmp_path / "src", tmp_path / "busy")
    assert os.listdir(tmp_path / "busy") == ["keep.txt"]
    (tmp_path / "empty").mkdir()
    assert _convert(tmp_path / "src", tmp_path / "empty")[0].num_images == 1
    with pytest.raises(DatasetToolError, match="inside --source"):
        _convert(tmp_path / "src", tmp_path / "src" / "out")


# ---- colour handling and transforms ----------------------------------------------------------------------------

def test_grayscale_kept_unless_some_image_has_colour(tmp_path):
    g = np.arange(64, dtype=np.uint8).reshape(8, 8)
    _save(str(tmp_path / "gray" / "a.png"), g)
    _save(str(tmp_path / "gray" / "b.png"), g[::-1])
    assert _convert(tmp_path / "gray", tmp_path / "g.zip")[0].channels == 1
    np.testing.assert_array_equal(_items(tmp_path / "g.zip")[1][1][0], g[::-1][np.newaxis])
    _save(str(tmp_path / "gray" / "c.png"), np.zeros((8, 8, 3), np.uint8))
    assert _convert(tmp_path / "gray", tmp_path / "rgb.zip")[0].channels == 3
    np.testing.assert_array_equal(_items(tmp_path / "rgb.zip")[1][0][0], np.stack([g, g, g]))


def test_transparency_is_composited_onto_black(tmp_path):
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., :3] = (200, 100, 50)
    rgba[:, :2, 3] = 255       # left half opaque
    rgba[:, 2:, 3] = 0         # right half transparent
    _save(str(tmp_path / "src" / "a.png"), rgba, mode="RGBA")
    _convert(tmp_path / "src", tmp_path / "o.zip")
    img = _hwc(_items(tmp_path / "o.zip")[1][0][0])
    np.testing.assert_array_equal(img[:, :2], np.full((4, 2, 3), (200, 100, 50), np.uint8))
    np.testing.assert_array_equal(img[:, 2:], 0)


def test_center_crop_and_center_crop_wide(tmp_path):
    rng = np.random.default_rng(3)
    wide = rng.integers(0, 256, (16, 32, 3), dtype=np.uint8)
    _save(str(tmp_path / "src" / "w.png"), wide)
    _convert(tmp_path / "src", tmp_path / "cc.zip", transform="center-crop")
    np.testing.assert_array_equal(_hwc(_items(tmp_path / "cc.zip")[1][0][0]), wide[:, 8:24])
    _convert(tmp_path / "src", tmp_path / "ccw.zip", transform="center-crop-wide")
    got = _hwc(_items(tmp_path / "ccw.zip")[1][0][0])
    np.testing.assert_array_equal(got[8:24], wide)
    np.testing.assert_array_equal(got[:8], 0)
    np.testing.assert_array_equal(got[24:], 0)


def test_resize_filters_match_pil(tmp_path):
    rng = np.random.default_rng(4)
    img = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    _save(str(tmp_path / "src" / "a.png"), img)
    for name, flt in (("box", PIL.Image.Resampling.BOX), ("lanczos", PIL.Image.Resampling.LANCZOS)):
        _convert(tmp_path / "src", tmp_path / f"{name}.zip", resolution=8, resize_filter=name)
        expected = np.asarray(PIL.Image.fromarray(img).resize((8, 8), flt))
        np.testing.assert_array_equal(_hwc(_items(tmp_path / f"{name}.zip")[1][0][0]), expected)
    block_mean = img.reshape(8, 4, 8, 4, 3).mean(axis=(1, 3))
    assert np.abs(_hwc(_items(tmp_path / "box.zip")[1][0][0]) - block_mean).max() <= 1


# ---- NumPy sources ---------------------------------------------------------------------------------------------

def test_npy_pad_28_to_32(tmp_path):
    rng = np.random.default_rng(5)
    x = rng.integers(0, 256, (5, 28, 28), dtype=np.uint8)
    np.save(tmp_path / "sil.npy", x)
    summary, _ = _convert(tmp_path / "sil.npy", tmp_path / "sil.zip", transform="pad", resolution=32,
                          max_images=3)
    assert (summary.num_images, summary.channels) == (3, 1)
    _, items = _items(tmp_path / "sil.zip")
    for i, (img, _) in enumerate(items):
        expected = np.zeros((1, 32, 32), np.uint8)
        expected[0, 2:30, 2:30] = x[i]
        np.testing.assert_array_equal(img, expected)


def test_npz_images_and_labels(tmp_path):
    rng = np.random.default_rng(6)
    x = rng.integers(0, 256, (4, 8, 8, 3), dtype=np.uint8)
    y = np.array([1, 0, 3, 1])
    np.savez(tmp_path / "d.npz", x=x, y=y)
    _convert(tmp_path / "d.npz", tmp_path / "d.zip", labels=True)
    ds, items = _items(tmp_path / "d.zip", use_labels=True)
    assert ds.label_dim == 4 and [int(np.argmax(l)) for _, l in items] == y.tolist()
    np.testing.assert_array_equal(_hwc(items[2][0]), x[2])
    np.savez(tmp_path / "single.npz", anything=x[:, :, :, :1])
    assert _convert(tmp_path / "single.npz", tmp_path / "s.zip")[0].channels == 1
    with pytest.raises(DatasetToolError, match="label array"):
        _convert(tmp_path / "single.npz", tmp_path / "s2.zip", labels=True)
    np.savez(tmp_path / "two.npz", a=x, b=x)
    with pytest.raises(DatasetToolError, match="'images', 'x'"):
        _convert(tmp_path / "two.npz", tmp_path / "t.zip")
    np.save(tmp_path / "float.npy", x.astype(np.float32))
    with pytest.raises(DatasetToolError, match="uint8"):
        _convert(tmp_path / "float.npy", tmp_path / "f.zip")
    np.save(tmp_path / "bad.npy", np.zeros((2, 8, 8, 4), np.uint8))
    with pytest.raises(DatasetToolError, match=r"C = 1 or 3"):
        _convert(tmp_path / "bad.npy", tmp_path / "b.zip")
    assert sorted(n for n in os.listdir(tmp_path) if n.endswith(".zip")) == ["d.zip", "s.zip"]


# ---- CLI ---------------------------------------------------------------------------------------------------------

def test_cli_end_to_end_and_errors(tmp_path):
    np.save(tmp_path / "sil.npy", np.full((3, 28, 28), 255, np.uint8))
    runner = CliRunner()
    result = runner.invoke(cli_main, ["--source", str(tmp_path / "sil.npy"), "--dest", str(tmp_path / "o.zip"),
                                      "--transform", "pad", "--resolution", "32"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout.strip().splitlines()[-1])["num_images"] == 3
    assert ImageFolderDataset(str(tmp_path / "o.zip")).image_shape == [1, 32, 32]
    result = runner.invoke(cli_main, ["--source", str(tmp_path / "sil.npy"), "--dest", str(tmp_path / "p.zip"),
                                      "--resolution", "30"])
    assert result.exit_code == 2 and "power of two" in result.output
    result = runner.invoke(cli_main, ["--source", str(tmp_path / "missing"), "--dest", str(tmp_path / "p.zip")])
    assert result.exit_code == 2 and "Error: " in result.output and "source not found" in result.output
