"""StyleGAN2 generator and discriminator, interchangeable with the StyleGAN2-ADA (NVIDIA) networks.

The formulas and the wiring are specified in docs/architecture.md. Class names, constructor arguments, attribute,
parameter and buffer names and forward signatures are the official ones, because network pickles move between the
two code bases in both directions. This module's source is stored in every pickle we write and may be executed by
the official loader against its own `torch_utils`: it imports only numpy, torch and those upstream-compatible names,
and keeps to Python 3.7 syntax.
"""

import numpy as np
import torch

from torch_utils import misc, persistence
from torch_utils.ops import bias_act, conv2d_resample, fma, upfirdn2d

_ARCHITECTURES = ("orig", "skip", "resnet")
_NOISE_MODES = ("random", "const", "none")
_SQRT_HALF = np.sqrt(0.5)  # branch gain of the residual blocks: keeps the variance of the sum


# ---------------------------------------------------------------------------------------------------------------------
# Configuration rules shared by the generator and the discriminator.


def _check_architecture(architecture):
    if architecture not in _ARCHITECTURES:
        raise ValueError(f'architecture must be one of {", ".join(_ARCHITECTURES)}; got {architecture!r}')


def _check_resolution(img_resolution):
    if img_resolution < 4 or img_resolution & (img_resolution - 1):
        raise ValueError(f"img_resolution must be a power of two >= 4; got {img_resolution}")


def _width(res, channel_base, channel_max):
    """Feature channels at resolution `res`: inversely proportional to it, capped."""
    return min(channel_base // res, channel_max)


def _lowest_fp16_resolution(img_resolution_log2, num_fp16_res):
    """Blocks at this resolution and above run in fp16: the top `num_fp16_res` ones, never below 8x8."""
    return max(2 ** (img_resolution_log2 + 1 - num_fp16_res), 8)


def _precision(use_fp16, channels_last, force_fp32, device):
    """(dtype, memory format) a block computes in. On the CPU always channels_last: oneDNN convolutions work in that
    layout, so this saves a conversion per convolution without changing any value."""
    dtype = torch.float16 if use_fp16 and not force_fp32 else torch.float32
    nhwc = (channels_last and not force_fp32) or device.type == "cpu"
    return dtype, (torch.channels_last if nhwc else torch.contiguous_format)


def _std_normal(shape, channels_last=False):
    """A fresh N(0, 1) weight; equalized learning rate scales it at run time."""
    value = torch.randn(shape)
    return value.to(memory_format=torch.channels_last) if channels_last else value


def _bias_act(layer, x, bias, gain):
    """Bias, the layer's activation and its clamp, with activation gain and clamp both multiplied by `gain`."""
    clamp = None if layer.conv_clamp is None else layer.conv_clamp * gain
    bias = None if bias is None else bias.to(x.dtype)
    return bias_act.bias_act(x, bias, act=layer.activation, gain=layer.act_gain * gain, clamp=clamp)


def _two_convs(x, first, second, skip=None):
    """`second(first(x), gain)`; given a residual `skip` layer, both branches get gain sqrt(1/2) and are summed."""
    if skip is None:
        return second(first(x), 1)
    shortcut = skip(x, gain=_SQRT_HALF)
    return shortcut.add_(second(first(x), _SQRT_HALF))


# ---------------------------------------------------------------------------------------------------------------------
# Functional core.


@misc.profiled_function
def normalize_2nd_moment(x: torch.Tensor, dim: int = 1, eps: float = 1e-8) -> torch.Tensor:
    """Rescale `x` to unit mean square along `dim` (onto the sphere of radius sqrt(size))."""
    mean_square = x.square().mean(dim=dim, keepdim=True)
    return x * (mean_square + eps).rsqrt()


def _fp16_safe(weight, styles):
    """Weight and styles shrunk so that fp16 products cannot overflow; demodulation cancels the factors."""
    fan_in = weight[0].numel()
    weight = weight * (1 / np.sqrt(fan_in) / weight.abs().amax(dim=[1, 2, 3], keepdim=True))
    return weight, styles / styles.abs().amax(dim=1, keepdim=True)


def _demodulation(weight, styles):
    """[N, O] inverse L2 norms of the modulated weights: sum_i s[n, i]^2 * sum_k weight[o, i, k]^2 is one small matmul,
    so the [N, O, I, kh, kw] per-sample weight never has to exist for this."""
    energy = weight.square().sum(dim=[2, 3])  # [O, I]
    return (styles.square() @ energy.t() + 1e-8).rsqrt()


def _modconv_grouped(x, weight, styles, dcoefs, noise, up, down, padding, resample_filter, flip_weight):
    """All samples in one grouped convolution, each with its own [O, I, kh, kw] weight."""
    with misc.suppress_tracer_warnings():  # the batch size becomes a constant when traced
        batch = int(x.shape[0])
    factors = styles[:, None, :] if dcoefs is None else styles[:, None, :] * dcoefs[:, :, None]  # [N, O or 1, I]
    per_sample = weight[None] * factors[:, :, :, None, None]
    y = conv2d_resample.conv2d_resample(x=x.reshape(1, -1, *x.shape[2:]),
                                        w=per_sample.reshape(-1, *weight.shape[1:]).to(x.dtype),
                                        f=resample_filter, up=up, down=down, padding=padding, groups=batch,
                                        flip_weight=flip_weight)
    y = y.reshape(batch, -1, *y.shape[2:])
    return y if noise is None else y.add_(noise)


def _modconv_scaled(x, weight, styles, dcoefs, noise, up, down, padding, resample_filter, flip_weight):
    """Scale the input channels, convolve with the shared weight, scale the output channels (cheap gradients)."""
    batch = x.shape[0]
    x = x * styles.to(x.dtype).reshape(batch, -1, 1, 1)
    y = conv2d_resample.conv2d_resample(x=x, w=weight.to(x.dtype), f=resample_filter, up=up, down=down,
                                        padding=padding, flip_weight=flip_weight)
    if dcoefs is None:
        return y if noise is None else y.add_(noise.to(y.dtype))
    out_scale = dcoefs.to(y.dtype).reshape(batch, -1, 1, 1)
    return y * out_scale if noise is None else fma.fma(y, out_scale, noise.to(y.dtype))


@misc.profiled_function
def modulated_conv2d(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, noise: "torch.Tensor | None" = None,
                     up: int = 1, down: int = 1, padding=0, resample_filter: "torch.Tensor | None" = None,
                     demodulate: bool = True, flip_weight: bool = True, fused_modconv: bool = True) -> torch.Tensor:
    """Convolve each sample of x [N, I, H, W] with weight [O, I, kh, kw] scaled per input channel by styles [N, I]
    and (demodulate) renormalised per output channel; then add `noise`. `up`, `down`, `padding`, `resample_filter`
    and `flip_weight` are conv2d_resample's. `fused_modconv`: one grouped convolution instead of scale-conv-scale
    (same values)."""
    batch, in_channels = x.shape[0], weight.shape[1]
    misc.assert_shape(x, [batch, in_channels, None, None])
    misc.assert_shape(styles, [batch, in_channels])
    if demodulate and x.dtype == torch.float16:
        weight, styles = _fp16_safe(weight, styles)
    dcoefs = _demodulation(weight, styles) if demodulate else None
    path = _modconv_grouped if fused_modconv else _modconv_scaled
    return path(x, weight, styles, dcoefs, noise, up, down, padding, resample_filter, flip_weight)


# ---------------------------------------------------------------------------------------------------------------------
# Layers with equalized learning rate.


@persistence.persistent_class
class FullyConnectedLayer(torch.nn.Module):
    """Dense layer: run-time scaled weight, learning-rate multiplier, fused bias and activation."""

    def __init__(self, in_features, out_features, bias=True, activation="linear", lr_multiplier=1, bias_init=0):
        super().__init__()
        self.activation = activation
        self.weight_gain = lr_multiplier / np.sqrt(in_features)
        self.bias_gain = lr_multiplier
        self.weight = torch.nn.Parameter(torch.randn([out_features, in_features]) / lr_multiplier)
        initial_bias = torch.full([out_features], float(bias_init), dtype=torch.float32)
        self.bias = torch.nn.Parameter(initial_bias) if bias else None

    def forward(self, x):
        w = self.weight.to(x.dtype) * self.weight_gain
        if self.bias is None:
            return bias_act.bias_act(x.matmul(w.t()), None, act=self.activation)
        b = self.bias.to(x.dtype)
        if self.bias_gain != 1:
            b = b * self.bias_gain
        if self.activation == "linear":
            return torch.addmm(b.unsqueeze(0), x, w.t())
        return bias_act.bias_act(x.matmul(w.t()), b, act=self.activation)


@persistence.persistent_class
class Conv2dLayer(torch.nn.Module):
    """Convolution with run-time scaled weight, optional FIR up/downsampling, bias, activation and clamp.
    `trainable=False` (Freeze-D) keeps weight and bias as buffers."""

    def __init__(self, in_channels, out_channels, kernel_size, bias=True, activation="linear", up=1, down=1,
                 resample_filter=[1, 3, 3, 1], conv_clamp=None, channels_last=False, trainable=True):
        super().__init__()
        self.register_buffer("resample_filter", upfirdn2d.setup_filter(resample_filter))
        self.activation = activation
        self.up, self.down, self.padding = up, down, kernel_size // 2
        self.conv_clamp = conv_clamp
        self.weight_gain = 1 / np.sqrt(in_channels * kernel_size ** 2)
        self.act_gain = bias_act.activation_funcs[activation].def_gain
        tensors = {"weight": _std_normal([out_channels, in_channels, kernel_size, kernel_size], channels_last)}
        if bias:
            tensors["bias"] = torch.zeros([out_channels])
        for name, value in tensors.items():
            if trainable:
                setattr(self, name, torch.nn.Parameter(value))
            else:
                self.register_buffer(name, value)
        if not bias:
            self.bias = None

    def forward(self, x, gain=1):
        w = (self.weight * self.weight_gain).to(x.dtype)
        x = conv2d_resample.conv2d_resample(x=x, w=w, f=self.resample_filter, up=self.up, down=self.down,
                                            padding=self.padding, flip_weight=(self.up == 1))
        return _bias_act(self, x, self.bias, gain)


# ---------------------------------------------------------------------------------------------------------------------
# Generator.


@persistence.persistent_class
class MappingNetwork(torch.nn.Module):
    """(z, c) -> w through normalised inputs and a stack of dense layers; tracks the average w for truncation.
    Also D's label mapping (z_dim=0, num_ws=None, w_avg_beta=None)."""

    def __init__(self, z_dim, c_dim, w_dim, num_ws, num_layers=8, embed_features=None, layer_features=None,
                 activation="lrelu", lr_multiplier=0.01, w_avg_beta=0.995):
        if z_dim == 0 and c_dim == 0:
            raise ValueError("MappingNetwork needs an input: z_dim and c_dim are both 0")
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim = z_dim, c_dim, w_dim
        self.num_ws, self.num_layers, self.w_avg_beta = num_ws, num_layers, w_avg_beta
        embed_width = 0 if c_dim == 0 else (w_dim if embed_features is None else embed_features)
        hidden_width = w_dim if layer_features is None else layer_features
        if c_dim > 0:
            self.embed = FullyConnectedLayer(c_dim, embed_width)
        width = z_dim + embed_width
        for idx in range(num_layers):
            next_width = w_dim if idx == num_layers - 1 else hidden_width
            layer = FullyConnectedLayer(width, next_width, activation=activation, lr_multiplier=lr_multiplier)
            setattr(self, f"fc{idx}", layer)
            width = next_width
        if num_ws is not None and w_avg_beta is not None:
            self.register_buffer("w_avg", torch.zeros([w_dim]))

    def _inputs(self, z, c):
        """Normalised z, normalised label embedding, or both side by side (z first)."""
        parts = []
        if self.z_dim > 0:
            misc.assert_shape(z, [None, self.z_dim])
            parts.append(normalize_2nd_moment(z.to(torch.float32)))
        if self.c_dim > 0:
            misc.assert_shape(c, [None, self.c_dim])
            parts.append(normalize_2nd_moment(self.embed(c.to(torch.float32))))
        return torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]

    def _truncate(self, ws, psi, cutoff):
        """Pull w toward w_avg: w_avg + psi (w - w_avg), for all ws or only the first `cutoff`."""
        w_avg = getattr(self, "w_avg", None)
        if w_avg is None:
            raise ValueError("truncation_psi != 1 needs the running average w_avg, which this mapping network does "
                             "not track (num_ws or w_avg_beta is None)")
        if cutoff is None or self.num_ws is None:
            return w_avg.lerp(ws, psi)
        ws[:, :cutoff] = w_avg.lerp(ws[:, :cutoff], psi)
        return ws

    def forward(self, z, c, truncation_psi=1, truncation_cutoff=None, skip_w_avg_update=False):
        w = self._inputs(z, c)
        for idx in range(self.num_layers):
            w = getattr(self, f"fc{idx}")(w)
        w_avg = getattr(self, "w_avg", None)
        if self.training and not skip_w_avg_update and w_avg is not None:
            w_avg.copy_(w.detach().mean(dim=0).lerp(w_avg, self.w_avg_beta))  # beta * w_avg + (1 - beta) * mean
        if self.num_ws is not None:
            w = w.unsqueeze(1).repeat([1, self.num_ws, 1])
        return w if truncation_psi == 1 else self._truncate(w, truncation_psi, truncation_cutoff)


@persistence.persistent_class
class SynthesisLayer(torch.nn.Module):
    """Style-modulated, demodulated convolution (optionally 2x upsampling) plus per-pixel noise, bias, activation."""

    def __init__(self, in_channels, out_channels, w_dim, resolution, kernel_size=3, up=1, use_noise=True,
                 activation="lrelu", resample_filter=[1, 3, 3, 1], conv_clamp=None, channels_last=False):
        super().__init__()
        self.register_buffer("resample_filter", upfirdn2d.setup_filter(resample_filter))
        self.resolution, self.up, self.use_noise = resolution, up, use_noise
        self.activation, self.conv_clamp = activation, conv_clamp
        self.padding = kernel_size // 2
        self.act_gain = bias_act.activation_funcs[activation].def_gain
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = torch.nn.Parameter(_std_normal([out_channels, in_channels, kernel_size, kernel_size],
                                                     channels_last))
        if use_noise:  # the fixed image of noise_mode='const' and a learned strength, starting at 0
            self.register_buffer("noise_const", torch.randn([resolution, resolution]))
            self.noise_strength = torch.nn.Parameter(torch.tensor(0.0))
        self.bias = torch.nn.Parameter(torch.zeros(out_channels))

    def _noise(self, batch, device, noise_mode):
        """Noise image for this call, already scaled by noise_strength, or None."""
        if noise_mode not in _NOISE_MODES:
            raise ValueError(f'noise_mode must be one of {", ".join(_NOISE_MODES)}; got {noise_mode!r}')
        if noise_mode == "none" or not self.use_noise:
            return None
        if noise_mode == "const":
            return self.noise_const * self.noise_strength
        return torch.randn([batch, 1, self.resolution, self.resolution], device=device) * self.noise_strength

    def forward(self, x, w, noise_mode="random", fused_modconv=True, gain=1):
        side = self.resolution // self.up
        misc.assert_shape(x, [None, self.weight.shape[1], side, side])
        noise = self._noise(x.shape[0], x.device, noise_mode)
        x = modulated_conv2d(x=x, weight=self.weight, styles=self.affine(w), noise=noise, up=self.up,
                             padding=self.padding, resample_filter=self.resample_filter, flip_weight=(self.up == 1),
                             fused_modconv=fused_modconv)
        return _bias_act(self, x, self.bias, gain)


@persistence.persistent_class
class ToRGBLayer(torch.nn.Module):
    """Features -> image channels: modulated 1x1 convolution without demodulation (the image keeps the scale
    the styles give it), linear, clamped."""

    def __init__(self, in_channels, out_channels, w_dim, kernel_size=1,
                 conv_clamp=None, channels_last=False):
        super().__init__()
        self.weight_gain = 1 / np.sqrt(in_channels * kernel_size ** 2)
        self.conv_clamp = conv_clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = torch.nn.Parameter(_std_normal([out_channels, in_channels, kernel_size, kernel_size],
                                                     channels_last))
        self.bias = torch.nn.Parameter(torch.zeros([out_channels]))

    def forward(self, x, w, fused_modconv=True):
        styles = self.affine(w) * self.weight_gain
        x = modulated_conv2d(x=x, weight=self.weight, styles=styles, demodulate=False, fused_modconv=fused_modconv)
        return bias_act.bias_act(x, self.bias.to(x.dtype), clamp=self.conv_clamp)


@persistence.persistent_class
class SynthesisBlock(torch.nn.Module):
    """One resolution of the generator: the learned constant or a 2x upsampling conv, a second conv, and the image
    path (toRGB added to the upsampled image for 'skip'; residual shortcut for 'resnet')."""

    def __init__(self, in_channels, out_channels, w_dim, resolution, img_channels, is_last, architecture="skip",
                 resample_filter=[1, 3, 3, 1], conv_clamp=None, use_fp16=False, fp16_channels_last=False,
                 **layer_kwargs):
        _check_architecture(architecture)
        super().__init__()
        self.in_channels, self.w_dim, self.resolution = in_channels, w_dim, resolution
        self.img_channels, self.is_last, self.architecture = img_channels, is_last, architecture
        self.use_fp16 = use_fp16
        self.channels_last = use_fp16 and fp16_channels_last
        self.register_buffer("resample_filter", upfirdn2d.setup_filter(resample_filter))
        self.num_conv = 1 if in_channels == 0 else 2
        self.num_torgb = 1 if (is_last or architecture == "skip") else 0

        per_layer = dict(w_dim=w_dim, resolution=resolution, conv_clamp=conv_clamp, channels_last=self.channels_last)
        if in_channels == 0:
            self.const = torch.nn.Parameter(torch.randn([out_channels, resolution, resolution]))
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, up=2, resample_filter=resample_filter, **per_layer,
                                        **layer_kwargs)
        self.conv1 = SynthesisLayer(out_channels, out_channels, **per_layer, **layer_kwargs)
        if self.num_torgb:
            self.torgb = ToRGBLayer(out_channels, img_channels, w_dim=w_dim, conv_clamp=conv_clamp,
                                    channels_last=self.channels_last)
        if architecture == "resnet" and in_channels > 0:  # linear 1x1 shortcut, upsampled like the image
            self.skip = Conv2dLayer(in_channels, out_channels, kernel_size=1, bias=False, up=2,
                                    resample_filter=resample_filter,
                                    channels_last=self.channels_last)

    def forward(self, x, img, ws, force_fp32=False, fused_modconv=None, **layer_kwargs):
        misc.assert_shape(ws, [None, self.num_conv + self.num_torgb, self.w_dim])
        dtype, memory_format = _precision(self.use_fp16, self.channels_last, force_fp32, ws.device)
        if fused_modconv is None:  # grouped conv only for fp32 (or single-sample) inference
            with misc.suppress_tracer_warnings():
                fused_modconv = not self.training and (dtype == torch.float32 or int(ws.shape[0]) == 1)
        ws = ws.unbind(dim=1)  # conv0 (if any), conv1, torgb (if any)
        conv_kwargs = dict(fused_modconv=fused_modconv, **layer_kwargs)

        if self.in_channels == 0:
            x = self.const.to(dtype=dtype).unsqueeze(0).repeat([ws[0].shape[0], 1, 1, 1])
            x = self.conv1(x.to(memory_format=memory_format), ws[0], **conv_kwargs)
        else:
            misc.assert_shape(x, [None, self.in_channels, self.resolution // 2, self.resolution // 2])
            x = _two_convs(x.to(dtype=dtype, memory_format=memory_format),
                           lambda t: self.conv0(t, ws[0], **conv_kwargs),
                           lambda t, gain: self.conv1(t, ws[1], gain=gain, **conv_kwargs),
                           getattr(self, "skip", None))

        if img is not None:
            misc.assert_shape(img, [None, self.img_channels, self.resolution // 2, self.resolution // 2])
            img = upfirdn2d.upsample2d(img, self.resample_filter)
        if self.num_torgb:
            rgb = self.torgb(x, ws[-1], fused_modconv=fused_modconv)
            rgb = rgb.to(dtype=torch.float32, memory_format=torch.contiguous_format)
            img = rgb if img is None else img.add_(rgb)
        assert x.dtype == dtype and (img is None or img.dtype == torch.float32)
        return x, img


@persistence.persistent_class
class SynthesisNetwork(torch.nn.Module):
    """ws -> image through SynthesisBlocks at 4, 8, ..., img_resolution."""

    def __init__(self, w_dim, img_resolution, img_channels, channel_base=32768, channel_max=512, num_fp16_res=0,
                 **block_kwargs):
        _check_resolution(img_resolution)
        super().__init__()
        self.w_dim, self.img_channels = w_dim, img_channels
        self.img_resolution = img_resolution
        self.img_resolution_log2 = int(np.log2(img_resolution))
        self.block_resolutions = [2 ** i for i in range(2, self.img_resolution_log2 + 1)]
        fp16_from = _lowest_fp16_resolution(self.img_resolution_log2, num_fp16_res)
        self.num_ws = 0
        for res in self.block_resolutions:
            in_channels = _width(res // 2, channel_base, channel_max) if res > 4 else 0
            block = SynthesisBlock(in_channels, _width(res, channel_base, channel_max), w_dim=w_dim, resolution=res,
                                   img_channels=img_channels, is_last=(res == img_resolution),
                                   use_fp16=(res >= fp16_from), **block_kwargs)
            setattr(self, f"b{res}", block)
            self.num_ws += block.num_conv
        # A block's toRGB reads the w of the next block's first conv; only the last block's toRGB needs its own.
        self.num_ws += block.num_torgb

    def forward(self, ws, **block_kwargs):
        misc.assert_shape(ws, [None, self.num_ws, self.w_dim])
        ws = ws.to(torch.float32)
        features = img = None
        first = 0
        for res in self.block_resolutions:
            block = getattr(self, f"b{res}")
            block_ws = ws.narrow(1, first, block.num_conv + block.num_torgb)
            features, img = block(features, img, block_ws, **block_kwargs)
            first += block.num_conv
        return img


@persistence.persistent_class
class Generator(torch.nn.Module):
    """z, c -> image: MappingNetwork then SynthesisNetwork."""

    def __init__(self, z_dim, c_dim, w_dim, img_resolution, img_channels, mapping_kwargs={}, synthesis_kwargs={}):
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim = z_dim, c_dim, w_dim
        self.img_resolution, self.img_channels = img_resolution, img_channels
        self.synthesis = SynthesisNetwork(w_dim=w_dim, img_resolution=img_resolution, img_channels=img_channels,
                                          **synthesis_kwargs)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, num_ws=self.num_ws,
                                      **mapping_kwargs)

    def forward(self, z, c, truncation_psi=1, truncation_cutoff=None, **synthesis_kwargs):
        return self.synthesis(self.mapping(z, c, truncation_psi, truncation_cutoff), **synthesis_kwargs)


# ---------------------------------------------------------------------------------------------------------------------
# Discriminator.


@persistence.persistent_class
class DiscriminatorBlock(torch.nn.Module):
    """One resolution of the discriminator: fromRGB (first block or 'skip'), a conv, a 2x downsampling conv, and for
    'resnet' a downsampling 1x1 shortcut. Layers are numbered across D; the first `freeze_layers` are frozen."""

    def __init__(self, in_channels, tmp_channels, out_channels, resolution, img_channels, first_layer_idx,
                 architecture="resnet", activation="lrelu", resample_filter=[1, 3, 3, 1], conv_clamp=None,
                 use_fp16=False, fp16_channels_last=False, freeze_layers=0):
        if in_channels not in (0, tmp_channels):
            raise ValueError(f"in_channels must be 0 or tmp_channels ({tmp_channels}); got {in_channels}")
        _check_architecture(architecture)
        super().__init__()
        self.in_channels, self.resolution, self.img_channels = in_channels, resolution, img_channels
        self.first_layer_idx, self.architecture = first_layer_idx, architecture
        self.use_fp16 = use_fp16
        self.channels_last = use_fp16 and fp16_channels_last
        self.register_buffer("resample_filter", upfirdn2d.setup_filter(resample_filter))

        activated = dict(activation=activation, conv_clamp=conv_clamp)
        layers = []  # (name, in, out, kwargs) in creation (= layer index) order
        if in_channels == 0 or architecture == "skip":
            layers.append(("fromrgb", img_channels, tmp_channels, dict(kernel_size=1, **activated)))
        layers.append(("conv0", tmp_channels, tmp_channels, dict(kernel_size=3, **activated)))
        layers.append(("conv1", tmp_channels, out_channels,
                       dict(kernel_size=3, down=2, resample_filter=resample_filter, **activated)))
        if architecture == "resnet":
            layers.append(("skip", tmp_channels, out_channels,
                           dict(kernel_size=1, bias=False, down=2, resample_filter=resample_filter)))
        for index, (name, cin, cout, kwargs) in enumerate(layers):
            trainable = first_layer_idx + index >= freeze_layers
            setattr(self, name, Conv2dLayer(cin, cout, trainable=trainable, channels_last=self.channels_last,
                                            **kwargs))
        self.num_layers = len(layers)

    def forward(self, x, img, force_fp32=False):
        device = img.device if x is None else x.device
        dtype, memory_format = _precision(self.use_fp16, self.channels_last, force_fp32, device)
        side = self.resolution
        if x is not None:
            misc.assert_shape(x, [None, self.in_channels, side, side])
            x = x.to(dtype=dtype, memory_format=memory_format)
        if hasattr(self, "fromrgb"):  # first block, or every block of 'skip'
            misc.assert_shape(img, [None, self.img_channels, side, side])
            img = img.to(dtype=dtype, memory_format=memory_format)
            from_img = self.fromrgb(img)
            x = from_img if x is None else x + from_img
            img = upfirdn2d.downsample2d(img, self.resample_filter) if self.architecture == "skip" else None
        x = _two_convs(x, self.conv0, lambda t, gain: self.conv1(t, gain=gain), getattr(self, "skip", None))
        return x, img


@persistence.persistent_class
class MinibatchStdLayer(torch.nn.Module):
    """Appends, as `num_channels` feature maps, the mean standard deviation within groups of `group_size` samples
    (sample i is in group i mod N/G), so D can see a batch's lack of variety."""

    def __init__(self, group_size, num_channels=1):
        super().__init__()
        self.group_size, self.num_channels = group_size, num_channels

    def forward(self, x):
        n, c, h, w = x.shape
        group = n if self.group_size is None else min(int(self.group_size), int(n))
        if n % group:
            raise ValueError(f"MinibatchStdLayer: batch size {n} is not divisible by the group size {group}; "
                             f"use a batch (per GPU) that is a multiple of mbstd_group_size")
        f = self.num_channels
        members = x.reshape(group, -1, f, c // f, h, w)
        deviation = members - members.mean(dim=0)
        stddev = (deviation.square().mean(dim=0) + 1e-8).sqrt()    # [N/G, F, C/F, H, W]
        summary = stddev.mean(dim=[2, 3, 4]).reshape(-1, f, 1, 1)  # [N/G, F, 1, 1]
        return torch.cat([x, summary.repeat(group, 1, h, w)], dim=1)


@persistence.persistent_class
class DiscriminatorEpilogue(torch.nn.Module):
    """The 4x4 head, always fp32: (fromRGB), minibatch stddev, conv, two dense layers; for labels, the projection
    onto the mapped label cmap, normalised by sqrt(cmap_dim)."""

    def __init__(self, in_channels, cmap_dim, resolution, img_channels, architecture="resnet", mbstd_group_size=4,
                 mbstd_num_channels=1, activation="lrelu", conv_clamp=None):
        _check_architecture(architecture)
        super().__init__()
        self.in_channels, self.cmap_dim, self.resolution = in_channels, cmap_dim, resolution
        self.img_channels, self.architecture = img_channels, architecture
        if architecture == "skip":
            self.fromrgb = Conv2dLayer(img_channels, in_channels, kernel_size=1, activation=activation)
        self.mbstd = None
        if mbstd_num_channels > 0:
            self.mbstd = MinibatchStdLayer(group_size=mbstd_group_size, num_channels=mbstd_num_channels)
        self.conv = Conv2dLayer(in_channels + mbstd_num_channels, in_channels, kernel_size=3, activation=activation,
                                conv_clamp=conv_clamp)
        self.fc = FullyConnectedLayer(in_channels * resolution ** 2, in_channels, activation=activation)
        self.out = FullyConnectedLayer(in_channels, cmap_dim if cmap_dim > 0 else 1)

    def forward(self, x, img, cmap, force_fp32=False):
        del force_fp32  # accepted for the official signature; this head always computes in fp32
        fp32 = dict(dtype=torch.float32, memory_format=torch.contiguous_format)
        misc.assert_shape(x, [None, self.in_channels, self.resolution, self.resolution])
        x = x.to(**fp32)
        if self.architecture == "skip":
            misc.assert_shape(img, [None, self.img_channels, self.resolution, self.resolution])
            x = x + self.fromrgb(img.to(**fp32))
        if self.mbstd is not None:
            x = self.mbstd(x)
        scores = self.out(self.fc(self.conv(x).flatten(1)))
        if self.cmap_dim == 0:
            return scores
        misc.assert_shape(cmap, [None, self.cmap_dim])
        return (scores * cmap).sum(dim=1, keepdim=True) * (1 / np.sqrt(self.cmap_dim))


@persistence.persistent_class
class Discriminator(torch.nn.Module):
    """(image, c) -> logit: DiscriminatorBlocks from img_resolution down to 8x8, then the 4x4 epilogue; labels go
    through a MappingNetwork into the epilogue's projection."""

    def __init__(self, c_dim, img_resolution, img_channels, architecture="resnet", channel_base=32768,
                 channel_max=512, num_fp16_res=0, conv_clamp=None, cmap_dim=None, block_kwargs={}, mapping_kwargs={},
                 epilogue_kwargs={}):
        _check_resolution(img_resolution)
        super().__init__()
        self.c_dim, self.img_channels = c_dim, img_channels
        self.img_resolution = img_resolution
        self.img_resolution_log2 = int(np.log2(img_resolution))
        self.block_resolutions = [2 ** i for i in range(self.img_resolution_log2, 2, -1)]
        fp16_from = _lowest_fp16_resolution(self.img_resolution_log2, num_fp16_res)
        if c_dim == 0:
            cmap_dim = 0
        elif cmap_dim is None:
            cmap_dim = _width(4, channel_base, channel_max)

        shared = dict(img_channels=img_channels, architecture=architecture, conv_clamp=conv_clamp)
        layer_idx = 0
        for res in self.block_resolutions:
            tmp_channels = _width(res, channel_base, channel_max)
            block = DiscriminatorBlock(tmp_channels if res < img_resolution else 0, tmp_channels,
                                       _width(res // 2, channel_base, channel_max), resolution=res,
                                       first_layer_idx=layer_idx, use_fp16=(res >= fp16_from), **block_kwargs,
                                       **shared)
            setattr(self, f"b{res}", block)
            layer_idx += block.num_layers
        if c_dim > 0:
            self.mapping = MappingNetwork(z_dim=0, c_dim=c_dim, w_dim=cmap_dim, num_ws=None, w_avg_beta=None,
                                          **mapping_kwargs)
        self.b4 = DiscriminatorEpilogue(_width(4, channel_base, channel_max), cmap_dim=cmap_dim, resolution=4,
                                        **epilogue_kwargs, **shared)

    def forward(self, img, c, **block_kwargs):
        features = None
        for res in self.block_resolutions:
            features, img = getattr(self, f"b{res}")(features, img, **block_kwargs)
        return self.b4(features, img, self.mapping(None, c) if self.c_dim > 0 else None)
