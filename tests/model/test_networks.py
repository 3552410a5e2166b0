"""Behavioural tests of stylegan_rlo.model.networks on tiny configurations (CPU, float32/float64)."""

import ast
import copy
import inspect
import itertools
import pathlib
import sys

import numpy as np
import pytest
import torch

from stylegan_rlo.model import networks
from torch_utils import misc, persistence
from torch_utils.ops import conv2d_resample, upfirdn2d

ARCHS = ("orig", "skip", "resnet")
RES = 16
BATCH = 4


def make_G(arch="skip", c_dim=0, **synthesis_kwargs):
    kwargs = dict(channel_base=128, channel_max=16, architecture=arch, num_fp16_res=2, conv_clamp=256)
    kwargs.update(synthesis_kwargs)
    return networks.Generator(z_dim=16, c_dim=c_dim, w_dim=16, img_resolution=RES, img_channels=3,
                              mapping_kwargs=dict(num_layers=2), synthesis_kwargs=kwargs)


def make_D(arch="resnet", c_dim=0, **kwargs):
    all_kwargs = dict(architecture=arch, channel_base=128, channel_max=16, num_fp16_res=2, conv_clamp=256,
                      epilogue_kwargs=dict(mbstd_group_size=2))
    all_kwargs.update(kwargs)
    return networks.Discriminator(c_dim=c_dim, img_resolution=RES, img_channels=3, **all_kwargs)


def randomize_(module, seed=0):
    """Give every parameter and buffer (except resample filters) random values so all of them matter."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in misc.named_params_and_buffers(module):
            if not name.endswith("resample_filter"):
                t.add_(torch.randn(t.shape, generator=gen) * 0.5)
    return module


def labels(n, c_dim, seed=0):
    if c_dim == 0:
        return torch.zeros([n, 0])
    idx = torch.randint(c_dim, [n], generator=torch.Generator().manual_seed(seed))
    return torch.nn.functional.one_hot(idx, c_dim).float()


def latents(n, seed=0):
    return torch.randn([n, 16], generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------------------------
# Structure and shapes.


@pytest.mark.parametrize("arch,c_dim", list(itertools.product(ARCHS, (0, 3))))
def test_generator_shapes_and_layout(arch, c_dim):
    G = make_G(arch, c_dim).eval()
    assert G.num_ws == G.synthesis.num_ws == G.mapping.num_ws == 2 * int(np.log2(RES)) - 2
    assert G.synthesis.block_resolutions == [4, 8, 16]
    for res in G.synthesis.block_resolutions:
        block = getattr(G.synthesis, f"b{res}")
        assert hasattr(block, "torgb") == (arch == "skip" or res == RES)
        assert hasattr(block, "skip") == (arch == "resnet" and res > 4)
        assert hasattr(block, "const") == (res == 4)
    assert hasattr(G.mapping, "embed") == (c_dim > 0)

    z, c = latents(BATCH), labels(BATCH, c_dim)
    ws = G.mapping(z, c)
    assert ws.shape == (BATCH, G.num_ws, 16)
    img = G(z, c, noise_mode="const", force_fp32=True)
    assert img.shape == (BATCH, 3, RES, RES) and img.dtype == torch.float32
    assert torch.isfinite(img).all()


@pytest.mark.parametrize("arch,c_dim", list(itertools.product(ARCHS, (0, 3))))
def test_discriminator_shapes_and_layout(arch, c_dim):
    D = make_D(arch, c_dim).eval()
    assert D.block_resolutions == [16, 8]
    for res in D.block_resolutions:
        block = getattr(D, f"b{res}")
        assert hasattr(block, "fromrgb") == (arch == "skip" or res == RES)
        assert hasattr(block, "skip") == (arch == "resnet")
    assert hasattr(D.b4, "fromrgb") == (arch == "skip")
    assert hasattr(D, "mapping") == (c_dim > 0)
    assert D.b4.cmap_dim == (16 if c_dim else 0)

    img = torch.randn([BATCH, 3, RES, RES])
    logits = D(img, labels(BATCH, c_dim), force_fp32=True)
    assert logits.shape == (BATCH, 1) and logits.dtype == torch.float32


def test_labels_condition_both_networks():
    G, D = randomize_(make_G("skip", 3)).eval(), randomize_(make_D("resnet", 3)).eval()
    z = latents(BATCH)
    c1 = torch.eye(3)[[0, 1, 2, 0]]
    c2 = torch.eye(3)[[1, 2, 0, 1]]
    img1 = G(z, c1, noise_mode="const", force_fp32=True)
    img2 = G(z, c2, noise_mode="const", force_fp32=True)
    assert (img1 - img2).abs().amax() > 1e-3
    assert (D(img1, c1, force_fp32=True) - D(img1, c2, force_fp32=True)).abs().amax() > 1e-4


def test_fp16_resolutions_and_clamp():
    G = make_G("skip", num_fp16_res=2)
    assert [getattr(G.synthesis, f"b{r}").use_fp16 for r in (4, 8, 16)] == [False, True, True]
    G = make_G("skip", num_fp16_res=10)  # never below 8x8
    assert [getattr(G.synthesis, f"b{r}").use_fp16 for r in (4, 8, 16)] == [False, True, True]
    D = make_D("resnet", num_fp16_res=1)
    assert [D.b16.use_fp16, D.b8.use_fp16] == [True, False]
    assert G.synthesis.b16.conv1.conv_clamp == 256 and D.b16.conv0.conv_clamp == 256
    assert D.b16.skip.conv_clamp is None  # the residual skip is never clamped


def test_channels_last_weights_same_outputs():
    torch.manual_seed(0)
    G_cl = make_G("resnet", fp16_channels_last=True)
    G_ref = make_G("resnet")
    randomize_(G_cl)
    with torch.no_grad():
        misc.copy_params_and_buffers(G_cl, G_ref, require_all=True)
    assert G_cl.synthesis.b16.channels_last and not G_cl.synthesis.b4.channels_last
    assert G_cl.synthesis.b16.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    D_cl = make_D("skip", block_kwargs=dict(fp16_channels_last=True))
    D_ref = make_D("skip")
    randomize_(D_cl)
    with torch.no_grad():
        misc.copy_params_and_buffers(D_cl, D_ref, require_all=True)
    assert D_cl.b16.channels_last and D_cl.b16.conv0.weight.is_contiguous(memory_format=torch.channels_last)

    z = latents(BATCH)
    c = labels(BATCH, 0)
    with torch.no_grad():
        img_cl = G_cl.eval()(z, c, noise_mode="const", force_fp32=True)
        img_ref = G_ref.eval()(z, c, noise_mode="const", force_fp32=True)
        assert (img_cl - img_ref).abs().amax() < 1e-5
        assert (D_cl(img_ref, c, force_fp32=True) - D_ref(img_ref, c, force_fp32=True)).abs().amax() < 1e-5


def test_fp16_path_close_to_fp32():
    """Without force_fp32 the top blocks really compute in fp16 and stay close to the fp32 result."""
    G = randomize_(make_G("skip", num_fp16_res=2)).eval()
    D = randomize_(make_D("resnet", num_fp16_res=2)).eval()
    with torch.no_grad():
        G.synthesis.b16.conv1.weight.mul_(0.1)
        ws = G.mapping(latents(BATCH), labels(BATCH, 0))
        try:
            x16, _ = G.synthesis.b8(torch.randn([BATCH, 16, 4, 4]), None, ws[:, 1:4], noise_mode="const")
        except RuntimeError as exc:  # some CPU builds lack fp16 kernels
            pytest.skip(f"fp16 kernels unavailable on this device: {exc}")
        assert x16.dtype == torch.float16
        img16 = G.synthesis(ws, noise_mode="const")
        img32 = G.synthesis(ws, noise_mode="const", force_fp32=True)
        assert img16.dtype == torch.float32
        scale = img32.abs().amax()
        assert (img16 - img32).abs().amax() < 0.05 * scale
        logits16 = D(img32, None)
        logits32 = D(img32, None, force_fp32=True)
        assert (logits16 - logits32).abs().amax() < 0.05 * logits32.abs().amax() + 1e-2


# ----------------------------------------------------------------------------------------------
# Modulated convolution.


def naive_modconv(x, weight, styles, demodulate, padding):
    """Per-sample reference: build each sample's modulated (and demodulated) weight, then conv2d."""
    out = []
    for i in range(x.shape[0]):
        w = weight * styles[i].reshape(1, -1, 1, 1)
        if demodulate:
            w = w / (w.square().sum(dim=[1, 2, 3], keepdim=True) + 1e-8).sqrt()
        out.append(torch.nn.functional.conv2d(x[i:i + 1], w, padding=padding))
    return torch.cat(out)


@pytest.mark.parametrize("demodulate,kernel", [(True, 3), (False, 1), (True, 1)])
def test_modulated_conv2d_matches_naive_loop(demodulate, kernel):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn([3, 5, 6, 6], generator=gen, dtype=torch.float64)
    weight = torch.randn([4, 5, kernel, kernel], generator=gen, dtype=torch.float64)
    styles = torch.randn([3, 5], generator=gen, dtype=torch.float64)
    noise = torch.randn([3, 1, 6, 6], generator=gen, dtype=torch.float64)
    ref = naive_modconv(x, weight, styles, demodulate, kernel // 2)
    for fused in (True, False):
        y = networks.modulated_conv2d(x, weight, styles, padding=kernel // 2, demodulate=demodulate,
                                      fused_modconv=fused)
        assert y.dtype == torch.float64
        assert (y - ref).abs().amax() < 1e-10
        y = networks.modulated_conv2d(x, weight, styles, noise=noise, padding=kernel // 2,
                                      demodulate=demodulate, fused_modconv=fused)
        assert (y - (ref + noise)).abs().amax() < 1e-10


def test_modulated_conv2d_upsampling_fused_equals_separate():
    gen = torch.Generator().manual_seed(2)
    x = torch.randn([3, 5, 4, 4], generator=gen, dtype=torch.float64)
    weight = torch.randn([4, 5, 3, 3], generator=gen, dtype=torch.float64)
    styles = torch.randn([3, 5], generator=gen, dtype=torch.float64)
    f = upfirdn2d.setup_filter([1, 3, 3, 1])  # filters stay float32 (as upstream)
    kw = dict(up=2, padding=1, resample_filter=f, flip_weight=False)
    fused = networks.modulated_conv2d(x, weight, styles, fused_modconv=True, **kw)
    separate = networks.modulated_conv2d(x, weight, styles, fused_modconv=False, **kw)
    assert fused.shape == (3, 4, 8, 8)
    assert (fused - separate).abs().amax() < 1e-10
    # Independent of the batching trick: each sample alone through conv2d_resample with its own weight.
    for i in range(3):
        w = weight * styles[i].reshape(1, -1, 1, 1)
        w = w / (w.square().sum(dim=[1, 2, 3], keepdim=True) + 1e-8).sqrt()
        ref = conv2d_resample.conv2d_resample(x=x[i:i + 1], w=w, f=f, up=2, padding=1, flip_weight=False)
        assert (fused[i:i + 1] - ref).abs().amax() < 1e-10


@pytest.mark.parametrize("arch", ARCHS)
def test_fused_and_separate_modconv_give_same_image(arch):
    G = randomize_(make_G(arch, 3)).eval()
    ws = G.mapping(latents(BATCH), labels(BATCH, 3))
    with torch.no_grad():
        a = G.synthesis(ws, noise_mode="const", force_fp32=True, fused_modconv=True)
        b = G.synthesis(ws, noise_mode="const", force_fp32=True, fused_modconv=False)
    assert (a - b).abs().amax() < 1e-5 * max(1.0, a.abs().amax().item())


def test_modulated_conv2d_fp16_prenormalisation_is_scale_free():
    """The fp16 overflow guard rescales weight and styles; demodulation must cancel it exactly."""
    gen = torch.Generator().manual_seed(3)
    x = torch.randn([2, 4, 5, 5], generator=gen)
    weight = torch.randn([3, 4, 3, 3], generator=gen) * 50
    styles = torch.randn([2, 4], generator=gen) * 50
    ref = naive_modconv(x.double(), weight.double(), styles.double(), True, 1)
    try:
        y = networks.modulated_conv2d(x.half(), weight, styles, padding=1, fused_modconv=False)
    except RuntimeError as exc:
        pytest.skip(f"fp16 kernels unavailable on this device: {exc}")
    assert y.dtype == torch.float16
    assert (y.double() - ref).abs().amax() < 2e-2 * ref.abs().amax()


# ----------------------------------------------------------------------------------------------
# Mapping network: truncation and w_avg.


def test_truncation_matches_direct_formula():
    G = randomize_(make_G("skip", 3)).eval()
    z, c = latents(BATCH), labels(BATCH, 3)
    w_avg = G.mapping.w_avg.double()
    assert w_avg.abs().amax() > 0
    with torch.no_grad():
        ws = G.mapping(z, c).double()
        for psi in (0.7, 0.0, 1.5):
            t = G.mapping(z, c, truncation_psi=psi).double()
            assert (t - (w_avg + psi * (ws - w_avg))).abs().amax() < 1e-5
        t = G.mapping(z, c, truncation_psi=0.5, truncation_cutoff=2)
        assert (t[:, :2].double() - (w_avg + 0.5 * (ws[:, :2] - w_avg))).abs().amax() < 1e-5
        assert torch.equal(t[:, 2:].double(), ws[:, 2:])
        # All num_ws copies are the same broadcast w before truncation.
        assert torch.equal(ws, ws[:, :1].expand_as(ws))


def test_w_avg_tracking():
    G = randomize_(make_G("skip", 0))
    mapping = G.mapping
    z, c = latents(BATCH), labels(BATCH, 0)
    beta = mapping.w_avg_beta
    assert beta == 0.995
    old = mapping.w_avg.clone()
    mapping.eval()
    w = mapping(z, c)[:, 0].detach()
    assert torch.equal(mapping.w_avg, old)  # eval mode never updates
    mapping.train()
    mapping(z, c, skip_w_avg_update=True)
    assert torch.equal(mapping.w_avg, old)
    mapping(z, c)
    expected = beta * old.double() + (1 - beta) * w.double().mean(dim=0)
    assert (mapping.w_avg.double() - expected).abs().amax() < 1e-6
    # The discriminator's label mapping neither broadcasts nor tracks an average.
    D = make_D("resnet", 3)
    assert D.mapping.num_ws is None and D.mapping.w_avg_beta is None
    assert "w_avg" not in dict(D.mapping.named_buffers())
    assert D.mapping(None, labels(BATCH, 3)).shape == (BATCH, 16)


# ----------------------------------------------------------------------------------------------
# Noise.


def test_noise_modes():
    G = randomize_(make_G("skip", 0)).eval()
    ws = G.mapping(latents(BATCH), labels(BATCH, 0)).detach()
    run = lambda mode: G.synthesis(ws, noise_mode=mode, force_fp32=True)  # noqa: E731
    with torch.no_grad():
        assert torch.equal(run("none"), run("none"))
        assert torch.equal(run("const"), run("const"))
        assert (run("const") - run("none")).abs().amax() > 1e-4
        assert (run("random") - run("random")).abs().amax() > 1e-4
        for name, p in G.named_parameters():
            if name.endswith("noise_strength"):
                p.zero_()
        assert (run("random") - run("none")).abs().amax() < 1e-6
        assert (run("const") - run("none")).abs().amax() < 1e-6
    with pytest.raises(ValueError, match="noise_mode"):
        run("bogus")


def test_use_noise_false_has_no_noise_state():
    layer = networks.SynthesisLayer(4, 4, w_dim=8, resolution=8, use_noise=False)
    assert "noise_strength" not in dict(layer.named_parameters())
    assert "noise_const" not in dict(layer.named_buffers())
    x, w = torch.randn([2, 4, 8, 8]), torch.randn([2, 8])
    assert torch.equal(layer(x, w, noise_mode="random"), layer(x, w, noise_mode="none"))


# ----------------------------------------------------------------------------------------------
# Gradients.


@pytest.mark.parametrize("arch", ARCHS)
def test_gradients_reach_every_parameter(arch):
    G = randomize_(make_G(arch, 3)).train()
    D = randomize_(make_D(arch, 3)).train()
    z, c = latents(BATCH), labels(BATCH, 3)
    img = G(z, c, noise_mode="random", force_fp32=True)
    loss = D(img, c, force_fp32=True).square().sum() + img.square().mean()
    loss.backward()
    for net in (G, D):
        for name, p in net.named_parameters():
            assert p.grad is not None, name
            assert torch.isfinite(p.grad).all(), name
            assert p.grad.abs().amax() > 0, name


def test_freeze_layers_turns_first_layers_into_buffers():
    D = make_D("resnet", block_kwargs=dict(freeze_layers=2))
    params = dict(D.named_parameters())
    buffers = dict(D.named_buffers())
    assert D.b16.num_layers == 4 and D.b8.first_layer_idx == 4
    assert "b16.fromrgb.weight" in buffers and "b16.conv0.weight" in buffers
    assert "b16.conv1.weight" in params and "b8.conv0.weight" in params


# ----------------------------------------------------------------------------------------------
# Minibatch standard deviation.


def naive_mbstd(x, group_size, num_channels):
    """Loop reference: sample i shares a group with the samples j where j % (N/G) == i % (N/G)."""
    N, C, H, W = x.shape
    G = N if group_size is None else min(group_size, N)
    n = N // G
    c = C // num_channels
    extra = torch.zeros([N, num_channels, H, W], dtype=x.dtype)
    for i in range(N):
        members = x[[j for j in range(N) if j % n == i % n]]
        for f in range(num_channels):
            block = members[:, f * c:(f + 1) * c]
            std = (block.var(dim=0, unbiased=False) + 1e-8).sqrt()
            extra[i, f] = std.mean()
    return torch.cat([x, extra], dim=1)


@pytest.mark.parametrize("group_size,num_channels,N", [(4, 1, 8), (2, 2, 6), (None, 1, 3), (8, 3, 4)])
def test_minibatch_std_matches_naive(group_size, num_channels, N):
    x = torch.randn([N, 6, 3, 3], generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    layer = networks.MinibatchStdLayer(group_size, num_channels=num_channels)
    y = layer(x)
    assert y.shape == (N, 6 + num_channels, 3, 3)
    assert (y - naive_mbstd(x, group_size, num_channels)).abs().amax() < 1e-12


def test_minibatch_std_rejects_indivisible_batch():
    with pytest.raises(ValueError, match="not divisible"):
        networks.MinibatchStdLayer(4)(torch.randn([6, 2, 4, 4]))


# ----------------------------------------------------------------------------------------------
# Persistence contract.


def test_all_classes_persistent_and_record_init_kwargs():
    names = ["FullyConnectedLayer", "Conv2dLayer", "MappingNetwork", "SynthesisLayer", "ToRGBLayer",
             "SynthesisBlock", "SynthesisNetwork", "Generator", "DiscriminatorBlock", "MinibatchStdLayer",
             "DiscriminatorEpilogue", "Discriminator"]
    for name in names:
        assert persistence.is_persistent(getattr(networks, name)), name
    G = make_G("resnet", 3)
    assert G.init_kwargs["synthesis_kwargs"]["architecture"] == "resnet"
    kwargs = copy.deepcopy(G.init_kwargs)
    G2 = networks.Generator(**kwargs)
    assert [(n, t.shape) for n, t in misc.named_params_and_buffers(G2)] == \
        [(n, t.shape) for n, t in misc.named_params_and_buffers(G)]
    # Sub-modules record the arguments the parent passed (what the official pickles store).
    assert G.synthesis.b8.init_args == (16, 16)
    assert G.synthesis.b8.init_kwargs == dict(w_dim=16, resolution=8, img_channels=3, is_last=False, use_fp16=True,
                                              architecture="resnet", conv_clamp=256)


def test_module_imports_only_persistable_dependencies():
    """The persisted source must run under the official code base: numpy, torch, torch_utils, dnnlib only."""
    src = pathlib.Path(networks.__file__).read_text()
    allowed = {"numpy", "torch", "torch_utils", "dnnlib"}
    for node in ast.walk(ast.parse(src)):
        if isinstance(node, ast.Import):
            roots = {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "relative imports break when the source is executed from a pickle"
            roots = {node.module.split(".")[0]}
        else:
            continue
        assert roots <= allowed, roots


def test_source_runs_standalone_like_the_official_loader():
    """Pickles carry this module's source; loaders exec it in a fresh, package-less module."""
    # A trailing comment makes the text differ from the already-imported module, forcing a fresh exec.
    src = inspect.getsource(networks) + "\n# standalone copy (test)\n"
    module = persistence._src_to_module(src)
    try:
        assert module is not networks and module.__name__ != networks.__name__
        for ours in (randomize_(make_G("resnet", 3)), randomize_(make_D("skip", 3))):
            clone = getattr(module, type(ours).__name__)(*ours.init_args, **ours.init_kwargs)
            with torch.no_grad():
                misc.copy_params_and_buffers(ours, clone, require_all=True)
            ours.eval()
            clone.eval()
            if isinstance(ours, networks.Generator):
                args = (latents(BATCH), labels(BATCH, 3))
                kwargs = dict(noise_mode="const", force_fp32=True)
            else:
                args = (torch.randn([BATCH, 3, RES, RES]), labels(BATCH, 3))
                kwargs = dict(force_fp32=True)
            assert torch.equal(ours(*args, **kwargs), clone(*args, **kwargs))
    finally:
        sys.modules.pop(module.__name__, None)


def test_bad_configuration_errors():
    with pytest.raises(ValueError, match="architecture"):
        make_G("fancy")
    with pytest.raises(ValueError, match="architecture"):
        make_D("fancy")
    with pytest.raises(ValueError, match="needs an input"):
        networks.MappingNetwork(z_dim=0, c_dim=0, w_dim=8, num_ws=None)
    with pytest.raises(ValueError, match="power of two"):
        networks.SynthesisNetwork(w_dim=8, img_resolution=24, img_channels=3)
    G = make_G("skip", 0)
    with pytest.raises(ValueError, match="w_avg"):
        networks.MappingNetwork(z_dim=4, c_dim=0, w_dim=4, num_ws=None, w_avg_beta=None)(
            torch.randn([2, 4]), None, truncation_psi=0.5)
    with pytest.raises(AssertionError):
        G.synthesis(torch.randn([2, G.num_ws + 1, 16]))
