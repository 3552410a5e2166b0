"""Bounded reading (stylegan_rlo.fileio) and the checked JSON reader (stylegan_rlo.checked_json): special files are
refused by type without blocking, sizes are what is read (not st_size), damaged or encrypted ZIP members are named,
deep nesting is refused without recursion, and the schema names the field and what was expected."""

import json
import os
import zipfile

import pytest

from stylegan_rlo import checked_json as cj
from stylegan_rlo.fileio import BoundedReadError, open_regular, read_regular_bytes, read_zip_member


def _naive_depth(value) -> int:
    """Reference depth of a parsed JSON value (recursive: only for shallow test values)."""
    if isinstance(value, dict):
        return 1 + max((_naive_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_naive_depth(v) for v in value), default=0)
    return 0


def test_fifo_is_refused_by_type_without_blocking(tmp_path):
    fifo = tmp_path / "labels.json"
    os.mkfifo(fifo)  # no writer: a blocking open or read would hang the test
    with pytest.raises(BoundedReadError, match=r"labels.json is not a regular file \(a FIFO\)"):
        read_regular_bytes(fifo, 100)
    with pytest.raises(BoundedReadError, match="a folder"):
        open_regular(tmp_path)


def test_link_to_dev_zero_is_read_only_up_to_the_limit(tmp_path):
    link = tmp_path / "dataset.json"
    os.symlink("/dev/zero", link)
    assert os.path.getsize(link) == 0  # what a size check would have trusted
    with pytest.raises(BoundedReadError, match="not a regular file"):
        read_regular_bytes(link, 1000)


def test_size_limit_counts_what_is_read(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"x" * 1001)
    assert read_regular_bytes(path, 1001) == b"x" * 1001
    with pytest.raises(BoundedReadError, match="larger than 1000 bytes"):
        read_regular_bytes(path, 1000)


def _zip_with(path, name, data, **kwargs):
    with zipfile.ZipFile(path, "w", **kwargs) as zf:
        zf.writestr(name, data)
    return path


def test_damaged_zip_member_is_named(tmp_path):
    path = _zip_with(tmp_path / "d.zip", "dataset.json", b'{"labels": null}' * 10)
    raw = bytearray(path.read_bytes())
    at = raw.index(b'{"labels"')
    raw[at + 3] ^= 0xFF  # flip data bytes: the CRC no longer matches
    path.write_bytes(bytes(raw))
    with zipfile.ZipFile(path) as zf, pytest.raises(BoundedReadError, match=r"member 'dataset.json' of .*d.zip.*CRC"):
        read_zip_member(zf, "dataset.json", 10**6, str(path))


def test_encrypted_and_unsupported_members_are_named(tmp_path):
    path = _zip_with(tmp_path / "e.zip", "dataset.json", b"{}")
    raw = bytearray(path.read_bytes())
    for sig in (b"PK\x03\x04", b"PK\x01\x02"):  # set the 'encrypted' flag bit in the local and central headers
        at = raw.index(sig)
        raw[at + (6 if sig == b"PK\x03\x04" else 8)] |= 1
    path.write_bytes(bytes(raw))
    with zipfile.ZipFile(path) as zf, pytest.raises(BoundedReadError, match="'dataset.json' of .*e.zip is encrypted"):
        read_zip_member(zf, "dataset.json", 100, str(path))
    path = _zip_with(tmp_path / "m.zip", "dataset.json", b"{}")
    raw = bytearray(path.read_bytes())
    for sig, off in ((b"PK\x03\x04", 8), (b"PK\x01\x02", 10)):  # compression method 99 (AES): not in zipfile
        at = raw.index(sig)
        raw[at + off:at + off + 2] = (99).to_bytes(2, "little")
    path.write_bytes(bytes(raw))
    with zipfile.ZipFile(path) as zf, pytest.raises(BoundedReadError, match="'dataset.json' of .*m.zip"):
        read_zip_member(zf, "dataset.json", 100, str(path))


def test_oversized_member_is_refused_by_what_is_read(tmp_path):
    path = _zip_with(tmp_path / "b.zip", "x", b" " * 5000, compression=zipfile.ZIP_DEFLATED)
    with zipfile.ZipFile(path) as zf:
        zf.getinfo("x").file_size = 10  # a lying header does not help
        with pytest.raises(BoundedReadError, match="larger than 100 bytes|cannot be read"):
            read_zip_member(zf, "x", 100, str(path))


@pytest.mark.parametrize("text", [b'[1, {"a": [2, "[[[{{"]}, "]]]"]', b'{"k": "\\"[["}', b"[]", b"7", b'"x"',
                                  b'[[[[["\\\\"]]]]]'])
def test_nesting_depth_matches_the_parsed_structure(text):
    assert cj.nesting_depth(text) == _naive_depth(json.loads(text))


def test_deep_nesting_is_refused_before_parsing(tmp_path):
    path = tmp_path / "deep.json"
    path.write_bytes(b"[" * 100_000 + b"]" * 100_000)
    with pytest.raises(cj.JsonFileError, match="deep.json nests 100000 levels deep; at most 32"):
        cj.read_json_file(path, max_bytes=10**6)
    path.write_bytes(b"[" * 32 + b"]" * 32)
    assert cj.read_json_file(path, max_bytes=10**6) == json.loads(b"[" * 32 + b"]" * 32)


@pytest.mark.parametrize("data, words", [
    (b"\xff\xfe{}", "not UTF-8"), (b'{"a": NaN}', "NaN is not a JSON number"), (b'{"a": 1', "not valid JSON"),
    (b"9" * 5000, "holds an integer of more than 4300 digits"),
])
def test_parse_errors_name_the_file(data, words):
    with pytest.raises(cj.JsonFileError, match=f"^state.json .*{words}"):
        cj.parse_json(data, "state.json")


SPEC = cj.Obj({"kimg": cj.Number(0, 1e6), "seeds": cj.List(cj.Int(0, 2**32 - 1), 1, 3)},
              optional={"note": cj.Nullable(cj.Str(10))}, extra=False)


@pytest.mark.parametrize("value, words", [
    ({"kimg": 1.5, "seeds": [0]}, None),
    ({"kimg": 1.5, "seeds": [0], "note": None}, None),
    ([], "top level: expected an object"),
    ({"seeds": [0]}, 'no "kimg" key'),
    ({"kimg": True, "seeds": [0]}, "field kimg: expected a finite number >= 0 and <= 1e\\+06, got true"),
    ({"kimg": -1, "seeds": [0]}, "field kimg: .*got -1"),
    ({"kimg": 1, "seeds": []}, "field seeds: expected a list of 1..3 items"),
    ({"kimg": 1, "seeds": [0, 1.5]}, r"field seeds\[1\]: expected an integer >= 0 .*got 1.5"),
    ({"kimg": 1, "seeds": [0], "note": "x" * 11}, "field note: expected null or a string of at most 10"),
    ({"kimg": 1, "seeds": [0], "other": 1}, 'unexpected key "other"'),
])
def test_schema_names_file_field_and_expectation(value, words):
    if words is None:
        cj.check(value, SPEC, "summary.json")
    else:
        with pytest.raises(cj.JsonFileError, match=f"^summary.json: .*{words}"):
            cj.check(value, SPEC, "summary.json")


def test_byte_order_mark_is_accepted():
    assert cj.parse_json(b'\xef\xbb\xbf{"a": [1, 2.5]}', "x.json") == {"a": [1, 2.5]}
