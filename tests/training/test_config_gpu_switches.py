"""The official GPU switches --fp32, --nhwc, --allow-tf32 and --nobench: upstream defaults, and their effect on the
network kwargs and CUDA back-end settings recorded in training_options.json, for fresh and resumed networks."""

import pytest
import torch
from training_fixtures import TINY_UNCOND, make_zip

from stylegan_rlo.checkpoints.pickles import load_network_pkl
from stylegan_rlo.training.config import setup_training_options
from stylegan_rlo.training.options import OPTIONS_BY_NAME, TrainingOptionsError
from stylegan_rlo.training.step import build_networks
from torch_utils import misc

SWITCHES = ("fp32", "nhwc", "allow_tf32", "nobench")


def options(tmp_path, **opts):
    data = make_zip(tmp_path / "d.zip", num=2)
    return setup_training_options(data=data, device="cpu", batch=4, **opts)[1]


def test_defaults_are_upstream_ones(tmp_path):
    assert all(OPTIONS_BY_NAME[name].default is False and OPTIONS_BY_NAME[name].per_run for name in SWITCHES)
    fresh = options(tmp_path)
    assert fresh.cudnn_benchmark is True and fresh.allow_tf32 is False
    assert (fresh.G_kwargs["synthesis_kwargs"]["num_fp16_res"], fresh.G_kwargs["synthesis_kwargs"]["conv_clamp"],
            fresh.D_kwargs["num_fp16_res"], fresh.D_kwargs["conv_clamp"]) == (4, 256, 4, 256)
    assert "fp16_channels_last" not in fresh.G_kwargs["synthesis_kwargs"]
    assert "fp16_channels_last" not in fresh.D_kwargs["block_kwargs"]
    explicit_off = options(tmp_path, **{name: False for name in SWITCHES})
    assert explicit_off == fresh
    with pytest.raises(TrainingOptionsError, match="--fp32 must be true or false"):
        options(tmp_path, fp32="yes")


def test_backend_switches(tmp_path):
    switched = options(tmp_path, nobench=True, allow_tf32=True)
    assert switched.cudnn_benchmark is False and switched.allow_tf32 is True
    assert {k: v for k, v in switched.items() if k not in ("cudnn_benchmark", "allow_tf32")} == \
        {k: v for k, v in options(tmp_path).items() if k not in ("cudnn_benchmark", "allow_tf32")}


@pytest.mark.parametrize("resume", [None, str(TINY_UNCOND)])
def test_fp32_and_nhwc_change_only_precision_and_layout(tmp_path, resume):
    plain = options(tmp_path, resume=resume)
    fp32 = options(tmp_path, resume=resume, fp32=True)
    nhwc = options(tmp_path, resume=resume, nhwc=True)
    both = options(tmp_path, resume=resume, fp32=True, nhwc=True)
    if resume is not None:  # the pickle's own precision: 1 fp16 block, no clamp
        assert plain.G_kwargs["synthesis_kwargs"]["num_fp16_res"] == plain.D_kwargs["num_fp16_res"] == 1
    for o in (fp32, both):
        assert o.G_kwargs["synthesis_kwargs"]["num_fp16_res"] == o.D_kwargs["num_fp16_res"] == 0
        assert o.G_kwargs["synthesis_kwargs"]["conv_clamp"] is None and o.D_kwargs["conv_clamp"] is None
    for o in (nhwc, both):
        assert o.G_kwargs["synthesis_kwargs"]["fp16_channels_last"] is True
        assert o.D_kwargs["block_kwargs"]["fp16_channels_last"] is True
    assert nhwc.G_kwargs["synthesis_kwargs"]["num_fp16_res"] == plain.G_kwargs["synthesis_kwargs"]["num_fp16_res"]

    def without_switches(o):
        G, D = o.G_kwargs, o.D_kwargs
        keys = ("num_fp16_res", "conv_clamp", "fp16_channels_last")
        G = dict(G, synthesis_kwargs={k: v for k, v in G["synthesis_kwargs"].items() if k not in keys})
        D = {k: v for k, v in D.items() if k not in keys}
        D["block_kwargs"] = {k: v for k, v in D.pop("block_kwargs", {}).items() if k not in keys}
        return dict(o, G_kwargs=G, D_kwargs=D)
    assert without_switches(both) == without_switches(plain)

    if resume is not None:  # the pickle's parameters fit the switched networks exactly; the CPU computes alike
        data = load_network_pkl(resume)
        outputs = []
        for o in (plain, both):
            G, D, G_ema = build_networks(o.G_kwargs, o.D_kwargs, torch.device("cpu"))
            for name, module in [("G", G), ("D", D), ("G_ema", G_ema)]:
                misc.copy_params_and_buffers(data[name], module, require_all=True)
            z, c = torch.randn([2, G.z_dim], generator=torch.Generator().manual_seed(0)), torch.zeros([2, 0])
            with torch.no_grad():
                img = G(z, c, noise_mode="const", force_fp32=True)
                outputs.append((img, D(img, c, force_fp32=True)))
        assert all(torch.equal(a, b) for a, b in zip(*outputs))
