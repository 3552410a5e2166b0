"""Hostile network pickles that try to exhaust memory or time, or break the loader with nesting, and legitimate
old-protocol pickles: the safe loader refuses the first with PickleLimitError before allocating, and loads the second.
"""

import io
import pickle
import time

import pytest
import torch
from click.testing import CliRunner
from test_pickles import read_metas, write
from training_fixtures import DATA

from stylegan_rlo.checkpoints import limits as pickle_limits
from stylegan_rlo.checkpoints import pickles
from stylegan_rlo.cli.generate import main as generate_main


def _edited_kwargs(tmp_path, key, edit):
    """tiny_uncond.pkl with `edit` applied to the init kwargs of network `key` (G is edited in G_ema too)."""
    metas = read_metas(DATA / "tiny_uncond.pkl")
    for name in ((key, "G_ema") if key == "G" else (key,)):
        edit(metas[name].meta["state"]["_init_kwargs"])
    return write(tmp_path, metas)


# ---- item 4: constructor arguments from the file may not make the loader allocate ----------------------------------

def test_inflated_channels_stop_before_allocating(tmp_path):
    # Before the guard: ~300 MB of weights were allocated, then a shape mismatch was reported.
    path = _edited_kwargs(tmp_path, "G", lambda kw: kw["synthesis_kwargs"].update(channel_base=2**14,
                                                                                     channel_max=1024))
    with pytest.raises(pickles.PickleLimitError, match=r"constructor arguments of .*G.* imply more than") as info:
        pickles.load_network_pkl(path)
    assert str(path) in str(info.value)


def test_huge_mapping_depth_fails_fast(tmp_path):
    # Before the guard: minutes and GBs building this many layers (the largest integer argument accepted).
    path = _edited_kwargs(tmp_path, "G", lambda kw: kw["mapping_kwargs"].update(num_layers=pickle_limits.MAX_INIT_INT))
    start = time.monotonic()
    with pytest.raises(pickles.PickleLimitError, match="imply more than"):
        pickles.load_network_pkl(path)
    assert time.monotonic() - start < 30  # generous: a few hundred small layers at most are built


@pytest.mark.parametrize("num_layers", [10**7, 10**10, -10**10])
def test_huge_integer_arguments_are_refused_before_construction(tmp_path, num_layers):
    # Before: minutes for 10^7 layers; a Python list of num_layers widths before any tensor (80 GB for 10^10).
    path = _edited_kwargs(tmp_path, "G", lambda kw: kw["mapping_kwargs"].update(num_layers=num_layers))
    start = time.monotonic()
    with pytest.raises(pickles.PickleLimitError, match=f"integer {num_layers}, beyond the {2**20}"):
        pickles.load_network_pkl(path)
    assert time.monotonic() - start < 10


def test_allocation_guard_counts_before_allocating():
    guard = pickle_limits.AllocationGuard(stored_bytes=4000, stored_tensors=1, what="test")
    with guard:
        torch.zeros(10)
        with pytest.raises(pickle_limits.LimitExceeded):
            torch.empty(2**40, dtype=torch.uint8)  # 1 TiB: refused, not attempted
    assert guard.bytes == 40 + 2**40 and guard.tensors == 2


def test_genuine_networks_pass_the_guard():
    data = pickles.load_network_pkl(DATA / "tiny_cond.pkl")
    assert data["G"] is not None and data["D"] is not None


# ---- item 5: shared references and nesting ---------------------------------------------------------------------------

def _shared(levels):
    node = []
    for _ in range(levels):
        node = [node, node]
    return node


@pytest.mark.parametrize("levels", [21, 30])
def test_shared_references_are_walked_once_and_bounded(tmp_path, levels):
    path = write(tmp_path, {"extra": _shared(levels)})  # 2^levels paths in a few hundred bytes
    assert path.stat().st_size < 1000
    start = time.monotonic()
    with pytest.raises(pickles.PickleLimitError, match="expand to more than"):
        pickles.load_network_pkl(path)
    assert time.monotonic() - start < 10
    # The same addition inside a network's constructor arguments.
    path = _edited_kwargs(tmp_path, "G", lambda kw: kw["synthesis_kwargs"].update(junk=_shared(levels)))
    start = time.monotonic()
    with pytest.raises(pickles.PickleLimitError, match="expand to more than"):
        pickles.load_network_pkl(path)
    assert time.monotonic() - start < 10


def test_moderate_sharing_loads_and_stays_shared(tmp_path):
    data = pickles.load_network_pkl(write(tmp_path, {"extra": _shared(10)}))
    assert data["extra"][0] is data["extra"][1]


def _deep_pickle(depth):
    """{'extra': [[[...]]]} nested `depth` lists deep (pickle.dumps itself would recurse too deep)."""
    return (b"\x80\x04}\x8c\x05extra" + b"]" * depth + b"a" * (depth - 1) + b"s.")


def test_deep_nesting_is_refused_clearly(tmp_path):
    assert pickle.loads(_deep_pickle(5)) == {"extra": [[[[[]]]]]}
    path = tmp_path / "deep.pkl"
    path.write_bytes(_deep_pickle(200_000))
    with pytest.raises(pickles.PickleLimitError, match="nesting deeper than"):
        pickles.load_network_pkl(path)
    result = CliRunner().invoke(generate_main, ["--network", str(path), "--seeds", "0", "--device", "cpu",
                                                "--outdir", str(tmp_path / "out")])
    assert result.exit_code != 0 and "nesting deeper than" in result.output
    assert not isinstance(result.exception, RecursionError) and "Traceback" not in result.output


# ---- item 10: protocol 0-2 pickles (Python 2 names) ---------------------------------------------------------------

@pytest.mark.parametrize("protocol", [0, 1, 2])
def test_old_protocol_pickles_load(tmp_path, protocol):
    original = pickles.load_network_pkl(DATA / "tiny_uncond.pkl")
    path = write(tmp_path, original, protocol=protocol)
    assert b"__builtin__" in path.read_bytes()  # Python 2 names, as the stdlib pickler writes them
    loaded = pickles.load_network_pkl(path)
    z = torch.randn([2, original["G"].z_dim], generator=torch.Generator().manual_seed(0))
    c = torch.zeros([2, 0])
    with torch.no_grad():
        assert torch.equal(loaded["G_ema"](z, c, noise_mode="const", force_fp32=True),
                           original["G_ema"](z, c, noise_mode="const", force_fp32=True))
    assert type(loaded["training_set_kwargs"]) is type(original["training_set_kwargs"])


@pytest.mark.parametrize("body", [
    b"ccopy_reg\n_reconstructor\n(c__builtin__\nset\nc__builtin__\ndict\nNtR.",    # set is not a dict
    b"ccopy_reg\n_reconstructor\n(cnumpy\ndtype\nc__builtin__\nobject\nNtR.",      # not an allow-listed class
    b"c_codecs\nencode\n(I1\nS'latin1'\ntR.",                                       # only text -> bytes
    b"cposix\nsystem\n(S'true'\ntR.",
])
def test_python2_names_do_not_widen_the_allow_list(body):
    with pytest.raises(pickles.UnsafePickleError):
        pickles.load_network_pkl(io.BytesIO(body))
