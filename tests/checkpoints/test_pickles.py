"""checkpoints.pickles: official-format fixtures load exactly, our pickles load everywhere, hostile files are
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
import textwrap
import types

import numpy as np
import pytest
import torch
from training_fixtures import DATA, REPO

import dnnlib
from stylegan_rlo.checkpoints import pickles
from stylegan_rlo.model import augment, networks
from torch_utils import persistence

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


def test_failed_save_keeps_the_previous_file(saved, tmp_path):
    """A save that fails half-way (here: an unpicklable entry written after the networks) leaves the old file."""
    snapshot, path, _ = saved
    target = tmp_path / "network-snapshot.pkl"
    target.write_bytes(path.read_bytes())
    with pytest.raises((pickle.PicklingError, AttributeError, TypeError)):
        pickles.save_network_pkl(target, dict(snapshot, progress={"callback": lambda: None}))
    assert target.read_bytes() == path.read_bytes()
    assert os.listdir(tmp_path) == ["network-snapshot.pkl"]


def test_save_rejects_non_persistent_networks(tmp_path):
    with pytest.raises(TypeError, match="persistent"):
        pickles.save_network_pkl(tmp_path / "x.pkl", {"G": torch.nn.Linear(2, 2)})
    assert not (tmp_path / "x.pkl").exists()


def converted_tf_kwargs(c_dim):
    """Init kwargs in the form the official TF->PyTorch converter (legacy.py) stores in the released pickles (ffhq.pkl,
    metfaces.pkl, ...): nested EasyDicts with every option spelled out (small sizes here)."""
    E = dnnlib.EasyDict
    G = E(z_dim=32, c_dim=c_dim, w_dim=32, img_resolution=16, img_channels=3,
          mapping_kwargs=E(num_layers=8, embed_features=None, layer_features=None, activation="lrelu",
                           lr_multiplier=0.01, w_avg_beta=0.995),
          synthesis_kwargs=E(channel_base=512, channel_max=32, num_fp16_res=0, conv_clamp=None, architecture="skip",
                             resample_filter=[1, 3, 3, 1], use_noise=True, activation="lrelu"))
    D = E(c_dim=c_dim, img_resolution=16, img_channels=3, architecture="resnet", channel_base=512, channel_max=32,
          num_fp16_res=0, conv_clamp=None, cmap_dim=None,
          block_kwargs=E(activation="lrelu", resample_filter=[1, 3, 3, 1], freeze_layers=0),
          mapping_kwargs=E(num_layers=0, embed_features=None, layer_features=None, activation="lrelu",
                           lr_multiplier=0.1),
          epilogue_kwargs=E(mbstd_group_size=None, mbstd_num_channels=1, activation="lrelu"))
    return G, D


@pytest.mark.parametrize("c_dim", [0, 10])
def test_tf_converted_official_pickles_kwargs_load(tmp_path, c_dim):
    """The released official pickles were converted from TensorFlow; their networks carry the converter's kwargs."""
    G_kwargs, D_kwargs = converted_tf_kwargs(c_dim)
    torch.manual_seed(0)
    G = networks.Generator(**G_kwargs).eval().requires_grad_(False)
    D = networks.Discriminator(**D_kwargs).eval().requires_grad_(False)
    path = tmp_path / "converted.pkl"
    pickles.save_network_pkl(path, dict(G=G, D=D, G_ema=G, training_set_kwargs=None, augment_pipe=None))
    metas = read_metas(path)
    for key in ("G", "D", "G_ema"):  # as in a foreign file: the embedded source is not ours
        for _, meta in walk_metas(metas[key]):
            meta["module_src"] = "# official networks.py (not ours)\n"
    loaded = pickles.load_network_pkl(write(tmp_path, metas))
    assert loaded["G"].init_kwargs == G_kwargs and type(loaded["G"].init_kwargs.mapping_kwargs) is dnnlib.EasyDict
    assert loaded["augment_pipe"] is None and loaded["training_set_kwargs"] is None
    assert_outputs_equal(dict(G=G, D=D, G_ema=G), loaded,
                         dict(z=torch.randn([2, 32]), c=torch.eye(c_dim)[:2] if c_dim else torch.zeros([2, 0])))


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


def process_state():
    """What executing foreign code would leave behind: loaded modules and the persistence source registry."""
    return (set(sys.modules), dict(persistence._src_to_module_dict), dict(persistence._module_to_src_dict),
            list(persistence._import_hooks))


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
    before = process_state()
    with pytest.raises(pickles.UnsafePickleError) as info:
        pickles.load_network_pkl(path)
    assert name in str(info.value) and "--trust-pickle" in str(info.value) and str(path) in str(info.value)
    assert not marker.exists() and process_state() == before


def test_payload_inside_tensor_storage_blob_is_refused(tmp_path):
    marker = tmp_path / "marker"
    blob = pickle.dumps(Payload(exec, f"open({str(marker)!r}, 'w').write('ran')"))
    metas = read_metas(DATA / "tiny_uncond.pkl")
    metas["G"].meta["state"]["_modules"]["mapping"].meta["state"]["bad"] = Payload(torch.storage._load_from_bytes,
                                                                                   blob)
    path = write(tmp_path, metas)
    before = process_state()
    with pytest.raises(pickles.UnsafePickleError, match="weights-only"):
        pickles.load_network_pkl(path)
    assert not marker.exists() and process_state() == before


def _evil_source_pickle(tmp_path, class_name):
    """A persistent object whose embedded module source would create a marker file."""
    marker = tmp_path / "marker"
    state = dict(networks.MinibatchStdLayer(group_size=2).__dict__)
    meta = dict(type="class", version=6, class_name=class_name, state=state,
                module_src=f"open({str(marker)!r}, 'w').write('ran')\n")
    return write(tmp_path, {"G": Meta(meta)}), marker


def test_embedded_source_never_runs_by_default(tmp_path):
    path, marker = _evil_source_pickle(tmp_path, "MinibatchStdLayer")
    before = process_state()
    loaded = pickles.load_network_pkl(path)["G"]  # a known class: rebuilt as ours, source ignored
    assert isinstance(loaded, networks.MinibatchStdLayer) and loaded.group_size == 2
    with open(path, "rb") as f:
        assert isinstance(pickle.load(f)["G"], networks.MinibatchStdLayer)  # plain pickle ignores it too
    assert not marker.exists() and process_state() == before

    pickles.load_network_pkl(path, trust_pickle=True)  # positive control: explicit trust executes it
    assert marker.read_text() == "ran"


def test_unknown_class_is_refused_without_running_source(tmp_path):
    path, marker = _evil_source_pickle(tmp_path, "EvilNetwork")
    before = process_state()
    with pytest.raises(pickles.UnknownClassError, match="'EvilNetwork'.*Generator"):
        pickles.load_network_pkl(path)
    with pytest.raises(pickles.UnknownClassError, match="EvilNetwork"), open(path, "rb") as f:
        pickle.load(f)  # plain unpickling refuses it the same way
    assert not marker.exists() and process_state() == before


def test_trust_pickle_executes_a_benign_exotic_class(tmp_path):
    """The opt-in runs embedded source like the official loader: a class we do not have becomes usable."""
    marker = tmp_path / "executed"
    src = ("import torch\nfrom torch_utils import persistence\n"
           f"open({str(marker)!r}, 'a').write('x')\n"
           "@persistence.persistent_class\nclass Scaler(torch.nn.Module):\n"
           "    def __init__(self, factor):\n        super().__init__()\n"
           "        self.register_buffer('factor', torch.tensor(float(factor)))\n"
           "    def forward(self, x):\n        return x * self.factor\n")
    template = torch.nn.Module()
    template.register_buffer("factor", torch.tensor(2.5))
    state = dict(template.__dict__, _init_args=(1.0,), _init_kwargs={})  # stored buffer differs from init
    meta = dict(type="class", version=6, class_name="Scaler", state=state, module_src=src)
    path = write(tmp_path, {"G": Meta(meta), "D": None, "training_set_kwargs": {"resolution": 8}})

    with pytest.raises(pickles.UnknownClassError, match="'Scaler'.*--trust-pickle"):
        pickles.load_network_pkl(path)
    assert not marker.exists()

    snapshot = pickles.load_network_pkl(path, trust_pickle=True)
    assert marker.read_text() == "x"  # the source ran, once
    G = snapshot["G"]
    assert type(G).__name__ == "Scaler" and type(G).__mro__[1].__module__.startswith("_imported_module_")
    assert torch.equal(G(torch.ones(3)), torch.full([3], 2.5)) and G.init_args == (1.0,)
    assert snapshot["D"] is None and snapshot["G_ema"] is None and snapshot["training_set_kwargs"] == {"resolution": 8}
    pickles.load_network_pkl(path, trust_pickle=True)
    assert marker.read_text() == "x"  # known source is reused, not executed again

    meta["module_src"] = "import stylegan_rlo_missing_dependency\n" + src
    with pytest.raises(pickles.TrustedCodeError, match=r"broken\.pkl.*stylegan_rlo_missing_dependency"):
        pickles.load_network_pkl(write(tmp_path, {"G": Meta(meta)}, name="broken.pkl"), trust_pickle=True)


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
        "numpy.core.multiarray.scalar", "numpy._core.multiarray.scalar", "numpy.dtype",
        "builtins.dict", "_codecs.encode", "copyreg._reconstructor"}  # protocol 0-2 pickles (restricted wrappers)


# ---------------------------------------------------------------------------------------------------------------
# The persisted source must run on the OFFICIAL torch_utils/dnnlib (StyleGAN2-ADA legacy.load_network_pkl execs it).

# Facts read from NVlabs/stylegan2-ada-pytorch: the public names of each module and, for callables, their parameter
# lists ('name=' marks a parameter with a default). None: a non-callable attribute (or one we never call).
OFFICIAL_API = {
    "torch_utils.misc": {
        "constant": ("value", "shape=", "dtype=", "device=", "memory_format="),
        "nan_to_num": None, "symbolic_assert": None, "suppress_tracer_warnings": None,
        "assert_shape": ("tensor", "ref_shape"),
        "profiled_function": ("fn",),
        "InfiniteSampler": ("dataset", "rank=", "num_replicas=", "shuffle=", "seed=", "window_size="),
        "params_and_buffers": ("module",),
        "named_params_and_buffers": ("module",),
        "copy_params_and_buffers": ("src_module", "dst_module", "require_all="),
        "ddp_sync": ("module", "sync"),
        "check_ddp_consistency": ("module", "ignore_regex="),
        "print_module_summary": ("module", "inputs", "max_nesting=", "skip_redundant="),
    },
    "torch_utils.persistence": {
        "persistent_class": ("orig_class",), "is_persistent": ("obj",), "import_hook": ("func",),
    },
    "torch_utils.ops.upfirdn2d": {
        "setup_filter": ("f", "device=", "normalize=", "flip_filter=", "gain=", "separable="),
        "upfirdn2d": ("x", "f", "up=", "down=", "padding=", "flip_filter=", "gain=", "impl="),
        "filter2d": ("x", "f", "padding=", "flip_filter=", "gain=", "impl="),
        "upsample2d": ("x", "f", "up=", "padding=", "flip_filter=", "gain=", "impl="),
        "downsample2d": ("x", "f", "down=", "padding=", "flip_filter=", "gain=", "impl="),
    },
    "torch_utils.ops.bias_act": {
        "bias_act": ("x", "b=", "dim=", "act=", "alpha=", "gain=", "clamp=", "impl="),
        "activation_funcs": None,
    },
    "torch_utils.ops.conv2d_resample": {
        "conv2d_resample": ("x", "w", "f=", "up=", "down=", "padding=", "groups=", "flip_weight=", "flip_filter="),
    },
    "torch_utils.ops.fma": {"fma": ("a", "b", "c")},
    "torch_utils.ops.conv2d_gradfix": {
        "conv2d": ("input", "weight", "bias=", "stride=", "padding=", "dilation=", "groups="),
        "conv_transpose2d": ("input", "weight", "bias=", "stride=", "padding=", "output_padding=", "groups=",
                             "dilation="),
        "no_weight_gradients": (), "enabled": None, "weight_gradients_disabled": None,
    },
    "torch_utils.ops.grid_sample_gradfix": {"grid_sample": ("input", "grid"), "enabled": None},
    "dnnlib": {"EasyDict": None, "make_cache_dir_path": None, "util": None},
}
OFFICIAL_ACTIVATION_FIELDS = {"func", "def_alpha", "def_gain", "cuda_idx", "ref", "has_2nd_grad"}
_OFFICIAL_MODULE_IMPORTS = {("torch_utils", name): f"torch_utils.{name}" for name in ("misc", "persistence")}
_OFFICIAL_MODULE_IMPORTS.update({("torch_utils.ops", key.rsplit(".", 1)[1]): key
                                 for key in OFFICIAL_API if key.startswith("torch_utils.ops.")})


def official_api_violations(src):
    """Everything in a persisted module source that the official code base could not run, as messages."""
    try:
        tree = ast.parse(src, feature_version=(3, 7))  # the official release targets Python 3.7
    except SyntaxError as e:
        return [f"not Python 3.7 syntax: {e}"]
    problems, bound = [], {}  # bound: local name -> key of OFFICIAL_API
    has_future_annotations = False
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                root = alias.name.split(".")[0]
                if alias.name == "dnnlib":
                    bound[alias.asname or "dnnlib"] = "dnnlib"
                elif root not in ("numpy", "torch"):
                    problems.append(f"import {alias.name}")
        elif isinstance(node, ast.ImportFrom):
            if node.module == "__future__":
                has_future_annotations |= any(a.name == "annotations" for a in node.names)
                continue
            for alias in node.names:
                key = _OFFICIAL_MODULE_IMPORTS.get((node.module, alias.name)) if node.level == 0 else None
                if key is None:
                    problems.append(f"from {'.' * node.level}{node.module or ''} import {alias.name}")
                else:
                    bound[alias.asname or alias.name] = key
        elif isinstance(node, ast.Name) and node.id in ("exec", "eval", "__import__", "importlib", "compile"):
            problems.append(f"dynamic code or import: {node.id}")

    attribute_bases = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in bound:
            attribute_bases.add(id(node.value))
            key = bound[node.value.id]
            if node.attr not in OFFICIAL_API[key]:
                problems.append(f"{node.value.id}.{node.attr} is not in the official {key}")
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Subscript) \
                and isinstance(node.value.value, ast.Attribute) and node.value.value.attr == "activation_funcs" \
                and node.attr not in OFFICIAL_ACTIVATION_FIELDS:
            problems.append(f"activation_funcs[...].{node.attr} is not an official activation field")
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                and isinstance(node.func.value, ast.Name) and node.func.value.id in bound:
            params = OFFICIAL_API[bound[node.func.value.id]].get(node.func.attr)
            if params is not None:
                problems += _call_problems(f"{node.func.value.id}.{node.func.attr}", node, params)
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and node.id in bound and id(node) not in attribute_bases:
            problems.append(f"module {node.id} used other than as `{node.id}.name` (cannot be checked)")

    if not has_future_annotations:  # annotations are evaluated at import time on Python 3.7
        for node in ast.walk(tree):
            if isinstance(node, ast.arg) and node.annotation is not None:
                annotations = [node.annotation]
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.returns is not None:
                annotations = [node.returns]
            else:
                continue
            for ann in annotations:
                for sub in ast.walk(ann):
                    if isinstance(sub, ast.BinOp) or (isinstance(sub, ast.Subscript) and isinstance(sub.value, ast.Name)
                                                      and sub.value.id in ("list", "dict", "tuple", "set", "type")):
                        problems.append(f"annotation {ast.unparse(ann)} fails on Python 3.7 at import time")
    return problems


def _call_problems(name, call, params):
    """A call must bind to the official parameter list exactly as Python would."""
    if any(isinstance(a, ast.Starred) for a in call.args) or any(k.arg is None for k in call.keywords):
        return [f"{name}: *args/**kwargs call cannot be checked"]
    names = [p.rstrip("=") for p in params]
    problems = []
    if len(call.args) > len(names):
        problems.append(f"{name}: {len(call.args)} positional arguments, the official function takes {len(names)}")
    given = set(names[:len(call.args)])
    for keyword in call.keywords:
        if keyword.arg not in names:
            problems.append(f"{name}: no parameter {keyword.arg!r} in the official signature")
        elif keyword.arg in given:
            problems.append(f"{name}: {keyword.arg!r} given twice")
        given.add(keyword.arg)
    missing = [p for p in params if not p.endswith("=") and p not in given]
    if missing:
        problems.append(f"{name}: required official parameters {missing} not given")
    return problems


def test_persisted_sources_use_only_the_official_api(saved):
    """Parse the module_src stored in a pickle we wrote: imports and every torch_utils/dnnlib use are official."""
    _, path, _ = saved
    metas = read_metas(path)
    sources = {meta["module_src"] for key in ("G", "D", "G_ema", "augment_pipe") for _, meta in walk_metas(metas[key])}
    assert len(sources) == 2  # networks.py and augment.py
    used = set()
    for src in sources:
        assert official_api_violations(src) == []
        used |= {f"{n.value.id}.{n.attr}" for n in ast.walk(ast.parse(src))
                 if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name)
                 and n.value.id in ("misc", "upfirdn2d", "bias_act", "conv2d_resample", "fma", "conv2d_gradfix",
                                    "grid_sample_gradfix", "persistence")}
    assert {"persistence.persistent_class", "misc.assert_shape", "bias_act.bias_act", "upfirdn2d.setup_filter",
            "conv2d_resample.conv2d_resample", "fma.fma", "conv2d_gradfix.conv2d",
            "grid_sample_gradfix.grid_sample", "misc.constant"} <= used  # the checker really saw the calls


def test_official_api_checker_catches_violations():
    """Positive control: each kind of incompatibility is reported."""
    src = ("import os\nimport numpy as np\nfrom stylegan_rlo import fileio\nfrom torch_utils import misc\n"
           "from torch_utils.ops import upfirdn2d, bias_act\nfrom torch_utils.misc import constant\nfrom . import x\n"
           "misc.not_official(1)\nupfirdn2d.upsample2d(x, f, bogus=1)\nupfirdn2d.setup_filter()\n"
           "misc.assert_shape(1, 2, 3)\nmisc.constant(1, value=2)\ng = getattr(misc, 'constant')\n"
           "upfirdn2d.upfirdn2d(*args)\nk = bias_act.activation_funcs['lrelu'].our_extra\n"
           "def f(a: int | None) -> list[int]:\n    exec('1')\n")
    problems = "\n".join(official_api_violations(src))
    for expected in ("import os", "from stylegan_rlo import fileio", "from torch_utils.misc import constant",
                     "from . import x", "misc.not_official", "no parameter 'bogus'",
                     "required official parameters ['f']",
                     "3 positional arguments", "'value' given twice", "module misc used other than",
                     "*args/**kwargs", "our_extra", "int | None", "list[int]", "dynamic code or import: exec"):
        assert expected in problems, expected
    assert "numpy" not in problems
    assert official_api_violations("x = (y := 1)\n")[0].startswith("not Python 3.7 syntax")
    assert official_api_violations("from __future__ import annotations\ndef f(a: int | None): pass\n") == []


def test_our_torch_utils_match_the_official_signatures():
    """Our upstream-compatible torch_utils/dnnlib expose the official names with the official parameter lists, so
    the persisted source (and official source run with --trust-pickle) binds the same way on both code bases."""
    import importlib
    mismatches = []
    for module_name, api in OFFICIAL_API.items():
        module = importlib.import_module(module_name)
        for name, params in api.items():
            obj = getattr(module, name)  # AttributeError names the missing API
            if params is None:
                continue
            sig = inspect.signature(obj.__init__ if isinstance(obj, type) else obj)
            ours = [p.name + ("=" if p.default is not p.empty else "") for p in sig.parameters.values()
                    if p.name != "self"]
            # Same parameters in the same order; extensions only as extra trailing optional parameters.
            if ours[:len(params)] != list(params) or not all(p.endswith("=") for p in ours[len(params):]):
                mismatches.append(f"{module_name}.{name}{sig}")
    assert mismatches == []
    from torch_utils.ops import bias_act
    for spec in bias_act.activation_funcs.values():
        assert all(hasattr(spec, field) for field in OFFICIAL_ACTIVATION_FIELDS)


def test_fp16_rebuild_from_init_kwargs_like_official_tools(saved):
    """Official tools (legacy.load_network_pkl(force_fp16=True)) rebuild a loaded network from its init kwargs with
    num_fp16_res=4, conv_clamp=256 and copy every tensor over (require_all): our kwargs and tensors allow that."""
    from torch_utils import misc
    snapshot, _, ref = saved
    rebuilt = {}
    for key in ("G_ema", "D"):
        kwargs = dnnlib.EasyDict(snapshot[key].init_kwargs)
        fp16 = dict(num_fp16_res=4, conv_clamp=256)
        if key == "G_ema":
            kwargs.synthesis_kwargs = dict(kwargs.synthesis_kwargs, **fp16)
        else:
            kwargs.update(fp16)
        rebuilt[key] = type(snapshot[key])(*snapshot[key].init_args, **kwargs).eval().requires_grad_(False)
        misc.copy_params_and_buffers(snapshot[key], rebuilt[key], require_all=True)
    assert rebuilt["G_ema"].synthesis.b8.use_fp16 and rebuilt["D"].b8.use_fp16
    with torch.no_grad():
        img = rebuilt["G_ema"](ref["z"], ref["c"], noise_mode="const", force_fp32=True)
        logits = rebuilt["D"](img, ref["c"], force_fp32=True)
    assert (img - ref["img_const"]).abs().max().item() <= 1e-5
    assert (logits - ref["D_logits"]).abs().max().item() <= 1e-5


OFFICIAL_CHECKOUT = os.environ.get("STYLEGAN2_ADA_PYTORCH_DIR")


@pytest.mark.skipif(not OFFICIAL_CHECKOUT, reason="maintainer check: set STYLEGAN2_ADA_PYTORCH_DIR to a checkout of "
                                                  "the official StyleGAN2-ADA PyTorch code")
def test_official_legacy_loader_reads_our_pickle(saved, tmp_path):
    """The real official code (its torch_utils, dnnlib and legacy.py; none of ours) loads and runs our pickle."""
    _, path, ref = saved
    out = tmp_path / "official.pt"
    script = (
        "import sys\nsys.path.insert(0, sys.argv[1])\n"
        "import torch, legacy, torch_utils\n"
        "assert torch_utils.__file__.startswith(sys.argv[1]), torch_utils.__file__\n"
        "ref = torch.load(sys.argv[3], weights_only=False)\nresults = {}\n"
        "for fp16 in (False, True):\n"
        "    with open(sys.argv[2], 'rb') as f:\n        d = legacy.load_network_pkl(f, force_fp16=fp16)\n"
        "    with torch.no_grad():\n"
        "        img = d['G_ema'](ref['z'], ref['c'], noise_mode='const', force_fp32=True)\n"
        "        results[fp16] = dict(img=img, D=d['D'](img, ref['c'], force_fp32=True), p=d['augment_pipe'].p)\n"
        "assert not any(m.split('.')[0] == 'stylegan_rlo' for m in sys.modules)\n"
        "torch.save(results, sys.argv[4])\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    subprocess.run([sys.executable, "-c", script, OFFICIAL_CHECKOUT, str(path), str(DATA / "tiny_cond_ref.pt"),
                    str(out)], check=True, env=env, cwd=str(tmp_path), timeout=300)
    for result in torch.load(out, weights_only=False).values():
        assert (result["img"] - ref["img_const"]).abs().max().item() <= 1e-5
        assert (result["D"] - ref["D_logits"]).abs().max().item() <= 1e-5
        assert float(result["p"]) == pytest.approx(float(ref["augment_p"]))


@pytest.mark.skipif(not OFFICIAL_CHECKOUT, reason="maintainer check: set STYLEGAN2_ADA_PYTORCH_DIR to a checkout of "
                                                  "the official StyleGAN2-ADA PyTorch code")
def test_networks_match_official_code_in_every_architecture(tmp_path):
    """FFHQ-like widths, all architectures, with and without labels: the official networks.py and ours (both run
    on the official torch_utils) give bit-identical outputs from the same weights."""
    script = textwrap.dedent("""
        import sys, types, torch
        sys.path.insert(0, sys.argv[1])
        from torch_utils import misc, persistence

        def load(path, name):  # what the official loader does with a pickle's module_src
            src = open(path).read()
            module = types.ModuleType(name)
            sys.modules[name] = module
            persistence._module_to_src_dict[module] = src
            persistence._src_to_module_dict[src] = module
            exec(src, module.__dict__)
            return module

        ours = load(sys.argv[2], '_ours')
        official = load(sys.argv[1] + '/training/networks.py', '_official')
        gen = torch.Generator().manual_seed(0)
        for arch in ('orig', 'skip', 'resnet'):
            for c_dim in (0, 10):
                common = dict(c_dim=c_dim, img_resolution=64, img_channels=3)
                widths = dict(channel_base=32768, channel_max=512, num_fp16_res=4, conv_clamp=256, architecture=arch)
                G_kwargs = dict(common, z_dim=512, w_dim=512, mapping_kwargs=dict(num_layers=8),
                                synthesis_kwargs=widths)
                D_kwargs = dict(common, epilogue_kwargs=dict(mbstd_group_size=2), **widths)
                z = torch.randn([2, 512], generator=gen)
                c = torch.eye(c_dim)[[1, 7]] if c_dim else torch.zeros([2, 0])
                img = torch.randn([2, 3, 64, 64], generator=gen)
                for name, kwargs in (('Generator', G_kwargs), ('Discriminator', D_kwargs)):
                    a = getattr(ours, name)(**kwargs).eval().requires_grad_(False)
                    b = getattr(official, name)(**kwargs).eval().requires_grad_(False)
                    for tensor_name, t in misc.named_params_and_buffers(a):
                        if not tensor_name.endswith('resample_filter'):
                            t.add_(torch.randn(t.shape, generator=gen) * 0.3)
                    misc.copy_params_and_buffers(a, b, require_all=True)
                    names = lambda net: [n for n, _ in misc.named_params_and_buffers(net)]
                    assert names(a) == names(b), (name, arch)
                    with torch.no_grad():
                        if name == 'Generator':
                            x = a(z, c, truncation_psi=0.7, noise_mode='const', force_fp32=True)
                            y = b(z, c, truncation_psi=0.7, noise_mode='const', force_fp32=True)
                        else:
                            x, y = a(img, c, force_fp32=True), b(img, c, force_fp32=True)
                    assert torch.equal(x, y), (name, arch, c_dim, (x - y).abs().max().item())
        print('compared', flush=True)
        """)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "-c", script, OFFICIAL_CHECKOUT, networks.__file__], check=True, env=env,
                          cwd=str(tmp_path), timeout=600, capture_output=True, text=True)
    assert "compared" in done.stdout
