"""dataset_tool and training decode every input alike (one decoder, dataset.decode_image): EXIF orientation applied by
both, palette transparency composited onto black by dataset_tool and refused (with that hint) by training, 16-bit
images refused by both with a hint that does not send the user from one to the other. References are computed from
the raw pixels with numpy."""

import io
import os

import numpy as np
import PIL.Image
import pytest

from stylegan_rlo.data.dataset import DatasetError, ImageFolderDataset
from stylegan_rlo.data.dataset_tool import DatasetToolError, convert_dataset

RNG = np.random.default_rng(0)
PIXELS = RNG.integers(0, 256, (8, 8, 3), dtype=np.uint8)


def save(folder, name, img: PIL.Image.Image, **kwargs) -> str:
    os.makedirs(folder, exist_ok=True)
    img.save(os.path.join(folder, name), format="PNG", **kwargs)
    return str(folder)


def convert(src, dest, **kwargs):
    return convert_dataset(str(src), str(dest), progress=False, log=lambda _m: None, **kwargs)


def hwc(dataset, i=0) -> np.ndarray:
    return dataset[i][0].transpose(1, 2, 0)


@pytest.mark.parametrize("orientation, rot", [(3, 2), (6, -1), (8, 1)])
def test_exif_orientation_is_applied_by_both(tmp_path, orientation, rot):
    exif = PIL.Image.Exif()
    exif[0x0112] = orientation
    src = save(tmp_path / "src", "a.png", PIL.Image.fromarray(PIXELS), exif=exif)
    upright = np.rot90(PIXELS, rot)  # what a viewer shows
    assert np.array_equal(hwc(ImageFolderDataset(src)), upright)
    convert(src, tmp_path / "out.zip")
    assert np.array_equal(hwc(ImageFolderDataset(str(tmp_path / "out.zip"))), upright)


def test_palette_transparency_is_composited_by_dataset_tool_and_refused_by_training(tmp_path):
    palette = RNG.integers(0, 256, (256, 3), dtype=np.uint8)
    index = RNG.integers(0, 4, (8, 8), dtype=np.uint8)
    img = PIL.Image.fromarray(index, "P")
    img.putpalette(palette.tobytes())
    src = save(tmp_path / "src", "a.png", img, transparency=2)
    with pytest.raises(DatasetError, match="a.png.*transparent colour.*dataset_tool.py"):
        ImageFolderDataset(src)
    convert(src, tmp_path / "out.zip")
    expected = np.where((index == 2)[:, :, None], 0, palette[index])
    assert np.array_equal(hwc(ImageFolderDataset(str(tmp_path / "out.zip"))), expected)


def test_opaque_palette_images_decode_alike(tmp_path):
    palette = RNG.integers(0, 256, (256, 3), dtype=np.uint8)
    index = RNG.integers(0, 256, (8, 8), dtype=np.uint8)
    img = PIL.Image.fromarray(index, "P")
    img.putpalette(palette.tobytes())
    src = save(tmp_path / "src", "a.png", img)
    convert(src, tmp_path / "out.zip")
    assert np.array_equal(hwc(ImageFolderDataset(src)), palette[index])
    assert np.array_equal(hwc(ImageFolderDataset(str(tmp_path / "out.zip"))), palette[index])


def test_16_bit_images_get_one_hint_from_both(tmp_path):
    buf = io.BytesIO()
    PIL.Image.fromarray(np.zeros((8, 8), np.uint16)).save(buf, format="PNG")
    os.makedirs(tmp_path / "src")
    (tmp_path / "src" / "a.png").write_bytes(buf.getvalue())
    with pytest.raises(DatasetError) as training:
        ImageFolderDataset(str(tmp_path / "src"))
    with pytest.raises(DatasetToolError) as tool:
        convert(tmp_path / "src", tmp_path / "out.zip")
    for message in (str(training.value), str(tool.value)):
        assert "a.png" in message and "-depth 8" in message, message
        assert "convert the images with scripts/dataset_tool.py" not in message
