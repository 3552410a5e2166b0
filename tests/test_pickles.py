"""stylegan_rlo.pickles: official-format fixtures load exactly, our pickles load everywhere, hostile files are
refused without running anything."""

import ast
import copyreg
import inspect
import io
import os
import pathlib
import pickle
import re
import subprocess
import sys
import types

import numpy as np
import pytest
import torch

import dnnlib
from stylegan_rlo import augment, networks, pickles
from torch_utils import persistence

DATA = pathlib.Path(__file__).parent / "data"
REPO = pathlib.Path(__file__).resolve().parents[1]
FIXTURES = ("tiny_cond", "tiny_uncond")
NEWER_TORCH_MODULE_FIELDS = ("_forward_pre_hooks_with_kwargs", "_forward_hooks_with_kwargs",
                             "_forward_hooks_always_called", "_state_dict_pre_hooks", "_load_state_dict_post_hooks",
                             "_backward_pre_hooks", "_non_persistent_buffers_set", "_is_full_backward_hook")


# ---------------------------------------------------------------------------------------------------------------
# Helpers.

@pytest.fixture(scope="module", params=FIXTURES)
def official(request):
    """(name, snapshot loaded by our safe loader, reference outputs)."""
    name = request.param
    ref = torch.load(DATA / f"{name}_ref.pt", weights_only=False)
    return name, pickles.load_network_pkl(DATA / f"{name}.pkl"), ref


def outputs(snapshot, ref):
    """Every network output the fixture README lists, computed in float32."""
    G, D, G_ema = snapshot["G"], snapshot["D"], snapshot["G_ema"]
    z, c = ref["z"], ref["c"]
    with torch.no_grad():
        ws = G_ema.mapping(z, c, truncation_psi=1)
        ws_trunc07 = G_ema.mapping(z, c, truncation_psi=0.7, truncation_cutoff=None)
        img_const = G_ema.synthesis(ws, noise_mode="const", force_fp32=True)
        return dict(
            ws=ws, ws_trunc07=ws_trunc07, img_const=img_const,
            img_trunc07=G_ema.synthesis(ws_trunc07, noise_mode="const", force_fp32=True),
            img_nonoise=G_ema.synthesis(ws, noise_mode="none", force_fp32=True),
            img_G_const=G(z, c, noise_mode="const", force_fp32=True),
            D_logits=D(img_const, c, force_fp32=True),
            augment_p=snapshot["augment_pipe"].p.detach().clone())


def assert_same_snapshot(a, b):
    """Same classes, init args, tensors (bit-exact), flags and plain entries."""
    assert set(a) == set(b)
    for key in ("G", "D", "G_ema", "augment_pipe"):
        modules_a, modules_b = dict(a[key].named_modules()), dict(b[key].named_modules())
        assert list(modules_a) == list(modules_b)
        for name, ma in modules_a.items():
            mb = modules_b[name]
            assert type(ma).__name__ == type(mb).__name__ and ma.training == mb.training
            assert ma.init_args == mb.init_args and ma.init_kwargs == mb.init_kwargs
        tensors_a = list(a[key].named_parameters()) + list(a[key].named_buffers())
        tensors_b = dict(list(b[key].named_parameters()) + list(b[key].named_buffers()))
        assert len(tensors_a) == len(tensors_b)
        for name, ta in tensors_a:
            tb = tensors_b[name]
            assert ta.dtype == tb.dtype and ta.requires_grad == tb.requires_grad and torch.equal(ta, tb), name
    assert a["training_set_kwargs"] == b["training_set_kwargs"]


def assert_outputs_equal(snapshot_a, snapshot_b, ref):
    """G_ema image (mapping + synthesis), G image and D logits are bit-identical."""
    results = []
    for snapshot in (snapshot_a, snapshot_b):
        with torch.no_grad():
            img = snapshot["G_ema"](ref["z"], ref["c"], noise_mode="const", force_fp32=True)
            results.append((img, snapshot["G"](ref["z"], ref["c"], noise_mode="const", force_fp32=True),
                            snapshot["D"](img, ref["c"], force_fp32=True)))
    for a, b in zip(*results):
        assert torch.equal(a, b)


class Meta:
    """A persistent object held as its meta dict; pickles back to `_reconstruct_persistent_obj(meta)`."""

    def __init__(self, meta):
        self.meta = meta

    def __reduce__(self):
        return persistence._reconstruct_persistent_obj, (self.meta,)


class MetaUnpickler(pickle.Unpickler):
    """Reads a (trusted, test-data) pickle keeping persistent objects as editable Meta records."""

    def find_class(self, module, name):
        if (module, name) == ("torch_utils.persistence", "_reconstruct_persistent_obj"):
            return Meta
        return super().find_class(module, name)


def read_metas(path_or_bytes):
    data = path_or_bytes if isinstance(path_or_bytes, bytes) else pathlib.Path(path_or_bytes).read_bytes()
    return MetaUnpickler(io.BytesIO(data)).load()


def walk_metas(meta):
    """Yield (path, meta dict) for a Meta record and all its submodule records."""
    stack = [("", meta)]
    while stack:
        path, record = stack.pop()
        yield path, record.meta
        for name, child in record.meta["state"]["_modules"].items():
            if isinstance(child, Meta):
                stack.append((f"{path}.{name}" if path else name, child))


def write(tmp_path, data, name="edited.pkl", protocol=4):
    path = tmp_path / name
    path.write_bytes(pickle.dumps(data, protocol=protocol))
    return path


# ---------------------------------------------------------------------------------------------------------------
# Official-format fixtures.

def test_fixture_reproduces_reference_outputs(official):
    _, snapshot, ref = official
    for key, value in outputs(snapshot, ref).items():
        expected = torch.as_tensor(ref[key], dtype=value.dtype)
        assert (value - expected).abs().max().item() <= 1e-5, key
    assert snapshot["G_ema"].num_ws == ref["num_ws"]


_NODE = re.compile(r"^( *)(\w+): class=(\w+) version=(\d+) init_kwargs=(\{.*\}) init_args=(\(.*\))$")
_TENSOR = re.compile(r"^( *)(param|buffer) (\w+) \((.*)\)$")
_ATTRS = re.compile(r"^( *)attrs: (.*)$")


def parse_structure(path):
    """{module path: dict(class_name, init_kwargs, init_args, attrs, tensors)} from a *.structure.txt file."""
    nodes, stack = {}, []
    for line in path.read_text().splitlines():
        if m := _NODE.match(line):
            depth = len(m[1]) // 2
            stack[depth:] = [m[2]]
            nodes[".".join(stack)] = dict(class_name=m[3], version=int(m[4]), init_kwargs=ast.literal_eval(m[5]),
                                          init_args=ast.literal_eval(m[6]), attrs={}, tensors={})
        elif m := _TENSOR.match(line):
            shape = tuple(int(s) for s in m[4].split(",") if s.strip())
            nodes[".".join(stack[:len(m[1]) // 2])]["tensors"][(m[2], m[3])] = shape
        elif m := _ATTRS.match(line):
            for item in re.split(r", (?=\w+=)", m[2]):
                key, value = item.split("=", 1)
                nodes[".".join(stack[:len(m[1]) // 2])]["attrs"][key] = eval(value, {"np": np})  # test data
    return nodes


def test_fixture_structure_matches_structure_file(official):
    name, snapshot, _ = official
    expected = parse_structure(DATA / f"{name}.structure.txt")
    expected.update({"G_ema" + path[1:]: node for path, node in expected.items() if path.split(".")[0] == "G"})
    found = {}
    for key in {path.split(".")[0] for path in expected}:  # tiny_uncond's file does not describe augment_pipe
        for sub, module in snapshot[key].named_modules():
            tensors = {("param", n): tuple(p.shape) for n, p in module.named_parameters(recurse=False)}
            tensors.update({("buffer", n): tuple(b.shape) for n, b in module.named_buffers(recurse=False)})
            found[f"{key}.{sub}" if sub else key] = (module, tensors)
    assert set(found) == set(expected)
    for path, node in expected.items():
        module, tensors = found[path]
        assert type(module).__name__ == node["class_name"], path
        assert module.init_kwargs == node["init_kwargs"] and module.init_args == node["init_args"], path
        assert tensors == node["tensors"], path
        for attr, value in node["attrs"].items():
            assert getattr(module, attr) == pytest.approx(value), (path, attr)
    training_line = (DATA / f"{name}.structure.txt").read_text().splitlines()[1]
    assert snapshot["training_set_kwargs"] == ast.literal_eval(training_line.split(": ", 1)[1])
    assert isinstance(snapshot["training_set_kwargs"], dnnlib.EasyDict)


def test_loaded_networks_are_our_classes_in_eval_mode(official):
    _, snapshot, _ = official
    assert isinstance(snapshot["G"], networks.Generator) and isinstance(snapshot["D"], networks.Discriminator)
    assert isinstance(snapshot["augment_pipe"], augment.AugmentPipe)
    for key in ("G", "D", "G_ema"):
        assert not snapshot[key].training
        assert not any(p.requires_grad for p in snapshot[key].parameters())  # as stored by the official code


def test_plain_pickle_load_of_fixture_matches(official):
    name, snapshot, ref = official
    with open(DATA / f"{name}.pkl", "rb") as f:
        plain = pickle.load(f)
    assert_same_snapshot(snapshot, plain)


def test_load_accepts_open_file_and_keeps_missing_keys_as_none(tmp_path):
    with open(DATA / "tiny_uncond.pkl", "rb") as f:
        snapshot = pickles.load_network_pkl(f)
    metas = read_metas(DATA / "tiny_uncond.pkl")
    del metas["augment_pipe"], metas["training_set_kwargs"]
    metas["progress"] = {"cur_nimg": 64, "cur_tick": 2, "batch_idx": 8}
    reduced = pickles.load_network_pkl(write(tmp_path, metas))
    assert reduced["augment_pipe"] is None and reduced["training_set_kwargs"] is None
    assert reduced["progress"] == {"cur_nimg": 64, "cur_tick": 2, "batch_idx": 8}
    assert torch.equal(reduced["G"].mapping.fc0.weight, snapshot["G"].mapping.fc0.weight)


# ---------------------------------------------------------------------------------------------------------------
# Our pickles.

@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """tiny_cond loaded and written back by save_network_pkl (with a progress entry)."""
    snapshot = pickles.load_network_pkl(DATA / "tiny_cond.pkl")
    snapshot["progress"] = {"cur_nimg": 1000, "cur_tick": 3, "batch_idx": 31}
    path = tmp_path_factory.mktemp("saved") / "network-snapshot-000001.pkl"
    pickles.save_network_pkl(path, snapshot)
    return snapshot, path, torch.load(DATA / "tiny_cond_ref.pt", weights_only=False)


def test_round_trip_is_identical(saved):
    snapshot, path, ref = saved
    again = pickles.load_network_pkl(path)
    assert again["progress"] == snapshot["progress"]
    assert_same_snapshot(snapshot, again)
    assert_outputs_equal(snapshot, again, ref)
    assert not any(name.endswith(".tmp") for name in os.listdir(path.parent))


def test_our_pickle_embeds_real_source_in_official_format(saved):
    _, path, _ = saved
    metas = read_metas(path)
    assert set(metas) == {"G", "D", "G_ema", "augment_pipe", "training_set_kwargs", "progress"}
    assert type(metas["training_set_kwargs"]) is dnnlib.EasyDict
    sources = {"augment_pipe": inspect.getsource(augment)}
    for key in ("G", "D", "G_ema", "augment_pipe"):
        for sub, meta in walk_metas(metas[key]):
            assert meta["type"] == "class" and meta["version"] == 6, sub
            assert meta["module_src"] == sources.get(key, inspect.getsource(networks)), sub
            assert {"_init_args", "_init_kwargs", "_parameters", "_buffers", "_modules"} <= set(meta["state"])


def test_our_pickle_loads_with_plain_pickle_in_process(saved):
    snapshot, path, _ = saved
    with open(path, "rb") as f:
        plain = pickle.load(f)
    assert_same_snapshot(snapshot, plain)


def test_plain_pickle_load_in_a_fresh_process(saved, tmp_path):
    """Nothing imported beforehand: pickle must find our classes itself, and never run embedded source."""
    _, path, ref = saved
    out = tmp_path / "out.pt"
    script = ("import pickle, sys, torch\n"
              "ref = torch.load(sys.argv[3], weights_only=False)\n"
              "with open(sys.argv[1], 'rb') as f:\n    d = pickle.load(f)\n"
              "assert not any(m.startswith('_imported_module_') for m in sys.modules)\n"
              "with torch.no_grad():\n"
              "    img = d['G_ema'](ref['z'], ref['c'], noise_mode='const', force_fp32=True)\n"
              "torch.save(dict(img=img, D=d['D'](img, ref['c'], force_fp32=True)), sys.argv[2])\n")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    subprocess.run([sys.executable, "-c", script, str(path), str(out), str(DATA / "tiny_cond_ref.pt")],
                   check=True, env=env, cwd=str(tmp_path), timeout=120)
    got = torch.load(out, weights_only=True)
    assert (got["img"] - ref["img_const"]).abs().max().item() <= 1e-5
    assert (got["D"] - ref["D_logits"]).abs().max().item() <= 1e-5


def test_executing_embedded_source_like_the_official_loader(saved, monkeypatch):
    """Simulate the official loader: exec each module_src in a fresh module and adopt the stored state."""
    snapshot, path, ref = saved
    monkeypatch.setattr(persistence, "_module_to_src_dict", {})  # isolated caches, restored afterwards
    monkeypatch.setattr(persistence, "_src_to_module_dict", {})
    modules = {}

    def official_reconstruct(meta):
        module = modules.get(meta["module_src"])
        if module is None:
            module = types.ModuleType(f"_imported_module_sim{len(modules)}")
            monkeypatch.setitem(sys.modules, module.__name__, module)
            persistence._module_to_src_dict[module] = meta["module_src"]
            persistence._src_to_module_dict[meta["module_src"]] = module
            exec(meta["module_src"], module.__dict__)
            modules[meta["module_src"]] = module
        cls = persistence.persistent_class(module.__dict__[meta["class_name"]])
        obj = cls.__new__(cls)
        obj.__setstate__(meta["state"])
        return obj

    class OfficialLikeUnpickler(pickle.Unpickler):
        def find_class(self, module, name):
            if name == "_reconstruct_persistent_obj":
                return official_reconstruct
            return super().find_class(module, name)

    with open(path, "rb") as f:
        official = OfficialLikeUnpickler(f).load()
    assert len(modules) == 2  # networks.py and augment.py sources
    for key in ("G", "D", "G_ema", "augment_pipe"):
        assert official[key].__class__.__mro__[1].__module__.startswith("_imported_module_sim")
        assert all(isinstance(m, torch.nn.Module) for m in official[key].modules())
    assert_outputs_equal(snapshot, official, ref)


def test_save_rejects_non_persistent_networks(tmp_path):
    with pytest.raises(TypeError, match="persistent"):
        pickles.save_network_pkl(tmp_path / "x.pkl", {"G": torch.nn.Linear(2, 2)})
    assert not (tmp_path / "x.pkl").exists()


# ---------------------------------------------------------------------------------------------------------------
# Old torch, numpy 1, legacy storages.

def _legacy_storage(storage):
    """Reduce a storage the way torch 1.x did: a legacy (non-zip) torch.save blob."""
    blob = io.BytesIO()
    torch.save(storage, blob, _use_new_zipfile_serialization=False)
    return torch.storage._load_from_bytes, (blob.getvalue(),)


class OldTorchPickler(pickle.Pickler):
    dispatch_table = {**copyreg.dispatch_table, torch.storage.TypedStorage: _legacy_storage}


def test_old_torch_numpy1_pickle_loads(tmp_path):
    metas = read_metas(DATA / "tiny_cond.pkl")
    for key in ("G", "D", "G_ema", "augment_pipe"):
        for _, meta in walk_metas(metas[key]):
            for field in NEWER_TORCH_MODULE_FIELDS:
                del meta["state"][field]
    buffer = io.BytesIO()
    OldTorchPickler(buffer, protocol=3).dump(metas)  # Python 3.7 (the official setup) wrote protocol 3
    data = buffer.getvalue().replace(b"cnumpy._core.multiarray\nscalar\n", b"cnumpy.core.multiarray\nscalar\n")
    assert b"cnumpy.core.multiarray\nscalar\n" in data and b"numpy._core" not in data
    assert b"PK\x03\x04" not in data  # no zip-format storage blobs left
    path = tmp_path / "old.pkl"
    path.write_bytes(data)

    ref = torch.load(DATA / "tiny_cond_ref.pt", weights_only=False)
    reference = pickles.load_network_pkl(DATA / "tiny_cond.pkl")
    for snapshot in (pickles.load_network_pkl(path), pickle.loads(data)):
        assert_same_snapshot(reference, snapshot)  # same classes and bit-identical tensors: same outputs
        G = snapshot["G_ema"]
        for module in G.modules():
            assert all(hasattr(module, field) for field in NEWER_TORCH_MODULE_FIELDS)
        calls = []
        handle = G.mapping.register_forward_pre_hook(lambda m, a, k: calls.append(1), with_kwargs=True)
        G.mapping(ref["z"], ref["c"])
        handle.remove()
        assert calls == [1]


# ---------------------------------------------------------------------------------------------------------------
# Bad and hostile files.

class Payload:
    """An object whose unpickling calls `func(*args)`."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _marker_payloads(marker):
    return {
        "posix.system" if os.name == "posix" else "nt.system": Payload(os.system, f"touch '{marker}'"),
        "builtins.exec": Payload(exec, f"open({str(marker)!r}, 'w').write('ran')"),
    }


@pytest.mark.parametrize("where", ["top level", "inside a network's state"])
@pytest.mark.parametrize("global_name", ["system", "builtins.exec"])
def test_reduce_payload_is_refused_and_never_runs(tmp_path, where, global_name):
    marker = tmp_path / "marker"
    name, payload = next((k, v) for k, v in _marker_payloads(marker).items() if k.endswith(global_name))
    metas = read_metas(DATA / "tiny_uncond.pkl")
    if where == "top level":
        metas["G"] = payload
    else:
        metas["G"].meta["state"]["_modules"]["mapping"].meta["state"]["extra_attr"] = payload
    data = pickle.dumps(metas)

    pickle.loads(data)  # positive control: unrestricted unpickling really runs the payload
    assert marker.exists()
    marker.unlink()

    path = tmp_path / "evil.pkl"
    path.write_bytes(data)
    with pytest.raises(pickles.UnsafePickleError) as info:
        pickles.load_network_pkl(path)
    assert name in str(info.value) and "--trust-pickle" in str(info.value) and str(path) in str(info.value)
    assert not marker.exists()


def test_payload_inside_tensor_storage_blob_is_refused(tmp_path):
    marker = tmp_path / "marker"
    blob = pickle.dumps(Payload(exec, f"open({str(marker)!r}, 'w').write('ran')"))
    metas = read_metas(DATA / "tiny_uncond.pkl")
    metas["G"].meta["state"]["_modules"]["mapping"].meta["state"]["bad"] = Payload(torch.storage._load_from_bytes,
                                                                                   blob)
    with pytest.raises(pickles.UnsafePickleError, match="weights-only"):
        pickles.load_network_pkl(write(tmp_path, metas))
    assert not marker.exists()


def _evil_source_pickle(tmp_path, class_name):
    """A persistent object whose embedded module source would create a marker file."""
    marker = tmp_path / "marker"
    state = dict(networks.MinibatchStdLayer(group_size=2).__dict__)
    meta = dict(type="class", version=6, class_name=class_name, state=state,
                module_src=f"open({str(marker)!r}, 'w').write('ran')\n")
    return write(tmp_path, {"G": Meta(meta)}), marker


def test_embedded_source_never_runs_by_default(tmp_path):
    path, marker = _evil_source_pickle(tmp_path, "MinibatchStdLayer")
    loaded = pickles.load_network_pkl(path)["G"]  # a known class: rebuilt as ours, source ignored
    assert isinstance(loaded, networks.MinibatchStdLayer) and loaded.group_size == 2
    with open(path, "rb") as f:
        assert isinstance(pickle.load(f)["G"], networks.MinibatchStdLayer)  # plain pickle ignores it too
    assert not marker.exists()

    pickles.load_network_pkl(path, trust_pickle=True)  # positive control: explicit trust executes it
    assert marker.read_text() == "ran"


def test_unknown_class_is_refused_without_running_source(tmp_path):
    path, marker = _evil_source_pickle(tmp_path, "EvilNetwork")
    with pytest.raises(pickles.UnknownClassError, match="'EvilNetwork'.*Generator"):
        pickles.load_network_pkl(path)
    assert not marker.exists()


def test_truncated_and_garbage_files(tmp_path):
    data = (DATA / "tiny_uncond.pkl").read_bytes()
    for name, content in [("truncated.pkl", data[: len(data) // 2]), ("tail_cut.pkl", data[:-1]),
                          ("garbage.pkl", b"\x80\x04not a pickle at all"), ("empty.pkl", b"")]:
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(pickles.CorruptPickleError, match=re.escape(str(path))):
            pickles.load_network_pkl(path)
    with pytest.raises(pickles.CorruptPickleError, match="top level is list"):
        pickles.load_network_pkl(write(tmp_path, [1, 2]))
    with pytest.raises(pickles.MissingPickleError, match="no_such.pkl"):
        pickles.load_network_pkl(tmp_path / "no_such.pkl")


def test_shape_mismatch_names_the_tensor(tmp_path):
    metas = read_metas(DATA / "tiny_cond.pkl")
    fc0 = metas["G"].meta["state"]["_modules"]["mapping"].meta["state"]["_modules"]["fc0"].meta["state"]
    fc0["_parameters"]["weight"] = torch.zeros(5, 32)
    with pytest.raises(pickles.ShapeMismatchError, match=r"G\.mapping\.fc0\.weight.*\(32, 64\).*\(5, 32\)"):
        pickles.load_network_pkl(write(tmp_path, metas))


def test_missing_tensor_and_wrong_attribute_are_reported(tmp_path):
    metas = read_metas(DATA / "tiny_cond.pkl")
    del metas["D"].meta["state"]["_modules"]["b32"].meta["state"]["_buffers"]["resample_filter"]
    with pytest.raises(pickles.IncompatibleNetworkError, match=r"D\.b32.*missing in file \['resample_filter'\]"):
        pickles.load_network_pkl(write(tmp_path, metas))

    metas = read_metas(DATA / "tiny_cond.pkl")
    metas["G"].meta["state"]["num_ws"] = 99
    with pytest.raises(pickles.IncompatibleNetworkError, match=r"G\.num_ws.*99"):
        pickles.load_network_pkl(write(tmp_path, metas))


def test_tensorflow_pickle_is_reported(tmp_path):
    class TFNetwork:  # pickles under the global name the old TF release used
        pass

    TFNetwork.__module__, TFNetwork.__qualname__ = "dnnlib.tflib.network", "Network"
    fake_module = types.ModuleType("dnnlib.tflib.network")
    fake_module.Network = TFNetwork
    sys.modules["dnnlib.tflib"], sys.modules["dnnlib.tflib.network"] = types.ModuleType("dnnlib.tflib"), fake_module
    try:
        data = pickle.dumps((TFNetwork(), TFNetwork(), TFNetwork()))
    finally:
        del sys.modules["dnnlib.tflib"], sys.modules["dnnlib.tflib.network"]
    path = tmp_path / "karras2019stylegan-ffhq-1024x1024.pkl"
    path.write_bytes(data)
    for trust in (False, True):
        with pytest.raises(pickles.TensorFlowPickleError, match="TensorFlow.*legacy.py"):
            pickles.load_network_pkl(path, trust_pickle=trust)


def test_loading_does_not_touch_the_global_rng():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    pickles.load_network_pkl(DATA / "tiny_uncond.pkl")
    assert torch.equal(torch.rand(3), expected)


def test_safe_globals_are_the_documented_few():
    allowed = {f"{m}.{n}" for m, n in pickles._SAFE_GLOBALS}
    assert allowed == {
        "torch_utils.persistence._reconstruct_persistent_obj", "dnnlib.util.EasyDict", "collections.OrderedDict",
        "builtins.set", "builtins.frozenset", "torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_parameter",
        "torch._utils._rebuild_parameter_with_state", "torch.storage._load_from_bytes",
        "numpy.core.multiarray.scalar", "numpy._core.multiarray.scalar", "numpy.dtype"}
