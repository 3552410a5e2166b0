"""torch_utils.persistence: the persistent-class pickle format, and that embedded source never runs by default."""

import copy
import inspect
import pickle
import sys

import pytest
import torch

import dnnlib
from stylegan_rlo.checkpoints.pickles import UnknownClassError
from torch_utils import persistence


@persistence.persistent_class
class Tiny(torch.nn.Module):
    """A small persistent module defined here: its module source is this test file."""

    def __init__(self, features, widths=(2, 3), scale=1.0):
        super().__init__()
        self.fc = torch.nn.Linear(features, widths[0])
        self.register_buffer("running", torch.arange(float(widths[1])))
        self.scale = scale


class Plain:
    pass


def test_records_deep_copies_of_init_args():
    widths = [4, 5]
    m = Tiny(3, widths=widths, scale=0.5)
    widths.append(99)  # mutating the caller's object must not change what was recorded
    assert m.init_args == (3,)
    assert m.init_kwargs == {"widths": [4, 5], "scale": 0.5}
    assert isinstance(m.init_kwargs, dnnlib.EasyDict)
    m.init_kwargs["scale"] = 7  # the properties hand out copies
    assert m._init_kwargs["scale"] == 0.5
    assert type(m).__name__ == "Tiny"


def test_is_persistent():
    assert persistence.is_persistent(Tiny)
    assert persistence.is_persistent(Tiny(2))
    assert not persistence.is_persistent(Plain)
    assert not persistence.is_persistent(Plain())
    assert not persistence.is_persistent({})  # unhashable
    assert persistence.persistent_class(Tiny) is Tiny


def test_reduce_emits_official_meta_format():
    m = Tiny(3)
    func, args, state = m.__reduce__()[:3]
    assert func is persistence._reconstruct_persistent_obj and state is None
    meta = args[0]
    assert set(meta) == {"type", "version", "module_src", "class_name", "state"}
    assert meta["type"] == "class" and meta["version"] == 6 and meta["class_name"] == "Tiny"
    assert meta["module_src"] == inspect.getsource(sys.modules[__name__])
    assert meta["state"]["_init_args"] == (3,) and meta["state"]["_init_kwargs"] == {}
    assert set(meta["state"]["_modules"]) == {"fc"} and "running" in meta["state"]["_buffers"]


def test_pickle_and_deepcopy_round_trip_in_process():
    m = Tiny(3, scale=2.0)
    for clone in (pickle.loads(pickle.dumps(m)), copy.deepcopy(m)):
        assert type(clone) is type(m)
        assert clone.scale == 2.0 and clone.init_args == (3,)
        for (name_a, a), (name_b, b) in zip(m.state_dict().items(), clone.state_dict().items()):
            assert name_a == name_b and torch.equal(a, b)


def test_unpicklable_init_arg_fails_at_construction():
    with pytest.raises(Exception):
        Tiny(3, scale=lambda: 1)


def test_import_hook_sees_and_can_change_meta(monkeypatch):
    monkeypatch.setattr(persistence, "_import_hooks", [])
    seen = []

    def hook(meta):
        seen.append(meta.class_name)
        meta.state["scale"] = 9.0
        return meta

    persistence.import_hook(hook)
    clone = pickle.loads(pickle.dumps(Tiny(3)))
    assert seen == ["Tiny"] and clone.scale == 9.0
    with pytest.raises(TypeError):
        persistence.import_hook("not callable")


def _foreign_pickle(tmp_path):
    """A pickle of a persistent class from source this process has never seen; the source leaves a marker."""
    marker = tmp_path / "marker"
    src = (f"import torch\nfrom torch_utils import persistence\n"
           f"open({str(marker)!r}, 'w').write('source ran')\n"
           f"@persistence.persistent_class\nclass Foreign(torch.nn.Module):\n"
           f"    def __init__(self, n):\n        super().__init__()\n        self.n = n\n")
    meta = dict(type="class", version=6, module_src=src, class_name="Foreign",
                state=dict(Tiny(1).__dict__, n=5, _init_args=(5,), _init_kwargs={}))

    class Carrier:
        def __reduce__(self):
            return persistence._reconstruct_persistent_obj, (meta,)

    return pickle.dumps(Carrier()), marker


def test_foreign_source_is_not_executed_by_default(tmp_path):
    data, marker = _foreign_pickle(tmp_path)
    with pytest.raises(UnknownClassError, match="Foreign"):
        pickle.loads(data)
    assert not marker.exists()


def test_trusted_source_executes_like_the_official_loader(tmp_path):
    data, marker = _foreign_pickle(tmp_path)
    with persistence.trusted_source():
        obj = pickle.loads(data)
    assert marker.read_text() == "source ran"
    assert type(obj).__name__ == "Foreign" and obj.n == 5
    assert type(obj).__mro__[1].__module__.startswith("_imported_module_")
    marker.unlink()
    pickle.loads(data)  # the source is now known to this process: reused, not executed again
    assert not marker.exists()


def test_rejects_unknown_format_version():
    meta = dict(type="class", version=5, module_src="", class_name="Tiny", state={})
    with pytest.raises(ValueError, match="version=5"):
        persistence._reconstruct_persistent_obj(meta)


def test_easydict():
    d = dnnlib.EasyDict(a=1)
    d.b = 2
    assert d == {"a": 1, "b": 2} and d.a == 1 and d["b"] == 2
    del d.a
    assert "a" not in d
    with pytest.raises(AttributeError):
        _ = d.missing
    with pytest.raises(AttributeError):
        del d.missing
    clone = pickle.loads(pickle.dumps(d))
    assert type(clone) is dnnlib.EasyDict and clone == d
