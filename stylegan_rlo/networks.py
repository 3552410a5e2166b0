"""StyleGAN2 generator and discriminator with the official StyleGAN2-ADA (PyTorch) contract.

Class names, constructor arguments, attribute/parameter/buffer names and forward signatures follow
the NVlabs release so that weights and pickles move between the two code bases in both directions.
This module's source is persisted into every network pickle and may be executed by the official
loader, so it imports only numpy, torch and the upstream-compatible `torch_utils` names.
"""

import numpy as np
import torch

from torch_utils import misc
from torch_utils import persistence
from torch_utils.ops import bias_act
from torch_utils.ops import conv2d_resample
from torch_utils.ops import fma
from torch_utils.ops import upfirdn2d

# ---------------------------------------------------------------------------------------------
# Small shared helpers (private: not part of the persisted class contract).


def _scaled_gain_and_clamp(act_gain, conv_clamp, gain):
    """Activation gain and output clamp after applying an extra multiplicative `gain`."""
    clamp = conv_clamp * gain if conv_clamp is not None else None
    return act_gain * gain, clamp


def _block_dtype_and_format(use_fp16, channels_last, force_fp32, device):
    """Working dtype and memory format of a block: fp16/channels_last unless forced to fp32. On the CPU blocks always
    run channels_last, the layout oneDNN convolutions work in (saves a layout conversion per convolution)."""
    dtype = torch.float16 if (use_fp16 and not force_fp32) else torch.float32
    cl = (channels_last and not force_fp32) or device.type == 'cpu'
    return dtype, (torch.channels_last if cl else torch.contiguous_format)


def _channel_counts(resolutions, channel_base, channel_max):
    """Feature-map width per resolution: channel_base / res, capped at channel_max."""
    return {res: min(channel_base // res, channel_max) for res in resolutions}


def _first_fp16_resolution(img_resolution_log2, num_fp16_res):
    """Lowest resolution that runs in fp16 when the top `num_fp16_res` resolutions do (never below 8)."""
    return max(2 ** (img_resolution_log2 + 1 - num_fp16_res), 8)


def _random_weight(shape, channels_last):
    """Standard-normal weight tensor, optionally stored in channels_last memory format."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return torch.randn(shape).to(memory_format=fmt)


# ---------------------------------------------------------------------------------------------
# Functional building blocks.


@misc.profiled_function
def normalize_2nd_moment(x: torch.Tensor, dim: int = 1, eps: float = 1e-8) -> torch.Tensor:
    """Scale `x` so that its mean square along `dim` is one."""
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()


def _modconv_separate(x, weight, styles, dcoefs, noise, up, down, padding, resample_filter, flip_weight):
    """Modulated conv as scale-inputs, shared-weight conv, scale-outputs (the training-time form)."""
    n = x.shape[0]
    x = x * styles.to(x.dtype).reshape(n, -1, 1, 1)
    x = conv2d_resample.conv2d_resample(x=x, w=weight.to(x.dtype), f=resample_filter, up=up, down=down,
                                        padding=padding, flip_weight=flip_weight)
    if dcoefs is not None:
        scale = dcoefs.to(x.dtype).reshape(n, -1, 1, 1)
        return fma.fma(x, scale, noise.to(x.dtype)) if noise is not None else x * scale
    if noise is not None:
        x = x.add_(noise.to(x.dtype))
    return x


def _modconv_fused(x, w, noise, up, down, padding, resample_filter, flip_weight):
    """Modulated conv as one grouped convolution with a per-sample weight `w` [N, O, I, kh, kw]."""
    with misc.suppress_tracer_warnings():  # the batch size becomes a trace-time constant
        n = int(x.shape[0])
    in_channels, kh, kw = w.shape[2:]
    misc.assert_shape(x, [n, in_channels, None, None])
    x = x.reshape(1, -1, *x.shape[2:])
    w = w.reshape(-1, in_channels, kh, kw)
    x = conv2d_resample.conv2d_resample(x=x, w=w.to(x.dtype), f=resample_filter, up=up, down=down,
                                        padding=padding, groups=n, flip_weight=flip_weight)
    x = x.reshape(n, -1, *x.shape[2:])
    if noise is not None:
        x = x.add_(noise)
    return x


@misc.profiled_function
def modulated_conv2d(
    x: torch.Tensor,             # [N, I, H, W] input activations.
    weight: torch.Tensor,        # [O, I, kh, kw] shared convolution weight.
    styles: torch.Tensor,        # [N, I] per-sample input-channel scales.
    noise=None,                  # Optional tensor added to the output.
    up: int = 1,                 # Integer upsampling factor.
    down: int = 1,               # Integer downsampling factor.
    padding=0,                   # Padding relative to the upsampled image.
    resample_filter=None,        # Filter prepared by upfirdn2d.setup_filter(), used when resampling.
    demodulate: bool = True,     # Normalise each output channel of the modulated weight to unit norm?
    flip_weight: bool = True,    # True = correlation (as torch conv2d), False = true convolution.
    fused_modconv: bool = True,  # One grouped conv with per-sample weights instead of scale-conv-scale?
) -> torch.Tensor:
    """StyleGAN2 weight (de)modulated convolution, fused or as separate scaling and convolution."""
    batch_size = x.shape[0]
    out_channels, in_channels, kh, kw = weight.shape
    misc.assert_shape(weight, [out_channels, in_channels, kh, kw])
    misc.assert_shape(x, [batch_size, in_channels, None, None])
    misc.assert_shape(styles, [batch_size, in_channels])

    if x.dtype == torch.float16 and demodulate:
        # Shrink weight and styles (max-abs 1/sqrt(fan_in) and 1) so fp16 products cannot overflow;
        # demodulation divides the scale out again.
        weight_max = weight.abs().amax(dim=[1, 2, 3], keepdim=True)
        weight = weight * (1 / np.sqrt(in_channels * kh * kw) / weight_max)
        styles = styles / styles.abs().amax(dim=1, keepdim=True)

    dcoefs = None  # [N, O] demodulation coefficients
    if demodulate:
        # |weight[o] * styles[n]|^2 summed over (i, kh, kw) is styles[n]^2 @ (weight[o]^2 summed over kh, kw): a
        # small matmul instead of materializing the [N, O, I, kh, kw] modulated weight (same value, far cheaper).
        dcoefs = (styles.square() @ weight.square().sum(dim=[2, 3]).t() + 1e-8).rsqrt()

    if not fused_modconv:
        return _modconv_separate(x, weight, styles, dcoefs, noise, up, down, padding, resample_filter, flip_weight)
    scales = styles.unsqueeze(1)  # [N, 1, I]: the per-sample factor of the modulated weight [N, O, I, kh, kw]
    if dcoefs is not None:
        scales = scales * dcoefs.unsqueeze(2)
    w = weight.unsqueeze(0) * scales.unsqueeze(3).unsqueeze(4)
    return _modconv_fused(x, w, noise, up, down, padding, resample_filter, flip_weight)


# ---------------------------------------------------------------------------------------------
# Layers.


@persistence.persistent_class
class FullyConnectedLayer(torch.nn.Module):
    """Dense layer with equalized learning rate (runtime weight scaling) and fused activation."""

    def __init__(self,
        in_features,              # Number of input features.
        out_features,             # Number of output features.
        bias=True,                # Add a learned bias before the activation?
        activation='linear',      # Activation name from bias_act.activation_funcs.
        lr_multiplier=1,          # Learning-rate multiplier (folded into the runtime gains).
        bias_init=0,              # Initial bias value.
    ):
        super().__init__()
        self.activation = activation
        self.weight = torch.nn.Parameter(torch.randn([out_features, in_features]) / lr_multiplier)
        self.bias = torch.nn.Parameter(torch.full([out_features], np.float32(bias_init))) if bias else None
        self.weight_gain = lr_multiplier / np.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x):
        w = self.weight.to(x.dtype) * self.weight_gain
        b = self.bias
        if b is not None:
            b = b.to(x.dtype)
            if self.bias_gain != 1:
                b = b * self.bias_gain
        if b is not None and self.activation == 'linear':
            return torch.addmm(b.unsqueeze(0), x, w.t())
        return bias_act.bias_act(x.matmul(w.t()), b, act=self.activation)


@persistence.persistent_class
class Conv2dLayer(torch.nn.Module):
    """Convolution with equalized learning rate, optional FIR up/downsampling, activation and clamp."""

    def __init__(self,
        in_channels,                   # Number of input channels.
        out_channels,                  # Number of output channels.
        kernel_size,                   # Square kernel width.
        bias=True,                     # Add a learned bias before the activation?
        activation='linear',           # Activation name from bias_act.activation_funcs.
        up=1,                          # Integer upsampling factor.
        down=1,                        # Integer downsampling factor.
        resample_filter=[1, 3, 3, 1],  # Low-pass FIR filter used when resampling.
        conv_clamp=None,               # Clamp outputs to +-conv_clamp (None = no clamp).
        channels_last=False,           # Store the weight in channels_last memory format?
        trainable=True,                # False = weight/bias are buffers (frozen layer).
    ):
        super().__init__()
        self.activation = activation
        self.up = up
        self.down = down
        self.conv_clamp = conv_clamp
        self.register_buffer('resample_filter', upfirdn2d.setup_filter(resample_filter))
        self.padding = kernel_size // 2
        self.weight_gain = 1 / np.sqrt(in_channels * (kernel_size ** 2))
        self.act_gain = bias_act.activation_funcs[activation].def_gain

        weight = _random_weight([out_channels, in_channels, kernel_size, kernel_size], channels_last)
        bias_value = torch.zeros([out_channels]) if bias else None
        if trainable:
            self.weight = torch.nn.Parameter(weight)
            self.bias = torch.nn.Parameter(bias_value) if bias_value is not None else None
        else:
            self.register_buffer('weight', weight)
            if bias_value is not None:
                self.register_buffer('bias', bias_value)
            else:
                self.bias = None

    def forward(self, x, gain=1):
        w = self.weight * self.weight_gain
        b = self.bias.to(x.dtype) if self.bias is not None else None
        x = conv2d_resample.conv2d_resample(x=x, w=w.to(x.dtype), f=self.resample_filter, up=self.up,
                                            down=self.down, padding=self.padding, flip_weight=(self.up == 1))
        act_gain, act_clamp = _scaled_gain_and_clamp(self.act_gain, self.conv_clamp, gain)
        return bias_act.bias_act(x, b, act=self.activation, gain=act_gain, clamp=act_clamp)


# ---------------------------------------------------------------------------------------------
# Generator.


@persistence.persistent_class
class MappingNetwork(torch.nn.Module):
    """Maps (z, c) to intermediate latents w; tracks the running mean of w for truncation."""

    def __init__(self,
        z_dim,                  # Latent z dimensionality (0 = no latent).
        c_dim,                  # Label dimensionality (0 = unconditional).
        w_dim,                  # Output w dimensionality.
        num_ws,                 # Number of broadcast copies of w (None = return [N, w_dim]).
        num_layers=8,           # Number of dense layers.
        embed_features=None,    # Label embedding width (None = w_dim).
        layer_features=None,    # Hidden layer width (None = w_dim).
        activation='lrelu',     # Activation of the dense layers.
        lr_multiplier=0.01,     # Learning-rate multiplier of the dense layers.
        w_avg_beta=0.995,       # Decay of the running w average (None = do not track).
    ):
        if z_dim == 0 and c_dim == 0:
            raise ValueError('MappingNetwork needs an input: z_dim and c_dim are both 0')
        super().__init__()
        self.z_dim = z_dim
        self.c_dim = c_dim
        self.w_dim = w_dim
        self.num_ws = num_ws
        self.num_layers = num_layers
        self.w_avg_beta = w_avg_beta

        if c_dim == 0:
            embed_features = 0
        elif embed_features is None:
            embed_features = w_dim
        hidden = w_dim if layer_features is None else layer_features
        widths = [z_dim + embed_features] + [hidden] * (num_layers - 1) + [w_dim]

        if c_dim > 0:
            self.embed = FullyConnectedLayer(c_dim, embed_features)
        for idx in range(num_layers):
            layer = FullyConnectedLayer(widths[idx], widths[idx + 1], activation=activation,
                                        lr_multiplier=lr_multiplier)
            setattr(self, f'fc{idx}', layer)
        if num_ws is not None and w_avg_beta is not None:
            self.register_buffer('w_avg', torch.zeros([w_dim]))

    def _embed_inputs(self, z, c):
        """Normalized z, normalized label embedding, or their concatenation."""
        parts = []
        if self.z_dim > 0:
            misc.assert_shape(z, [None, self.z_dim])
            parts.append(normalize_2nd_moment(z.to(torch.float32)))
        if self.c_dim > 0:
            misc.assert_shape(c, [None, self.c_dim])
            parts.append(normalize_2nd_moment(self.embed(c.to(torch.float32))))
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)

    def forward(self, z, c, truncation_psi=1, truncation_cutoff=None, skip_w_avg_update=False):
        x = self._embed_inputs(z, c)
        for idx in range(self.num_layers):
            x = getattr(self, f'fc{idx}')(x)

        if self.w_avg_beta is not None and self.training and not skip_w_avg_update:
            # w_avg <- beta * w_avg + (1 - beta) * batch mean
            self.w_avg.copy_(x.detach().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))

        if self.num_ws is not None:
            x = x.unsqueeze(1).repeat([1, self.num_ws, 1])

        if truncation_psi != 1:
            if self.w_avg_beta is None:
                raise ValueError('truncation_psi != 1 needs a mapping network that tracks w_avg '
                                 '(w_avg_beta is None here)')
            if self.num_ws is None or truncation_cutoff is None:
                x = self.w_avg.lerp(x, truncation_psi)
            else:
                x[:, :truncation_cutoff] = self.w_avg.lerp(x[:, :truncation_cutoff], truncation_psi)
        return x


@persistence.persistent_class
class SynthesisLayer(torch.nn.Module):
    """Modulated 3x3 convolution with optional 2x upsampling, per-pixel noise, bias and activation."""

    def __init__(self,
        in_channels,                   # Number of input channels.
        out_channels,                  # Number of output channels.
        w_dim,                         # Latent w dimensionality.
        resolution,                    # Output resolution of this layer.
        kernel_size=3,                 # Square kernel width.
        up=1,                          # Integer upsampling factor.
        use_noise=True,                # Add per-pixel noise?
        activation='lrelu',            # Activation name from bias_act.activation_funcs.
        resample_filter=[1, 3, 3, 1],  # Low-pass FIR filter used when upsampling.
        conv_clamp=None,               # Clamp outputs to +-conv_clamp (None = no clamp).
        channels_last=False,           # Store the weight in channels_last memory format?
    ):
        super().__init__()
        self.resolution = resolution
        self.up = up
        self.use_noise = use_noise
        self.activation = activation
        self.conv_clamp = conv_clamp
        self.register_buffer('resample_filter', upfirdn2d.setup_filter(resample_filter))
        self.padding = kernel_size // 2
        self.act_gain = bias_act.activation_funcs[activation].def_gain

        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = torch.nn.Parameter(_random_weight([out_channels, in_channels, kernel_size, kernel_size],
                                                        channels_last))
        if use_noise:
            self.register_buffer('noise_const', torch.randn([resolution, resolution]))
            self.noise_strength = torch.nn.Parameter(torch.zeros([]))
        self.bias = torch.nn.Parameter(torch.zeros([out_channels]))

    def _noise(self, x, noise_mode):
        """Scaled noise for this call: fresh per sample ('random'), stored ('const') or None."""
        if not self.use_noise or noise_mode == 'none':
            return None
        if noise_mode == 'random':
            return torch.randn([x.shape[0], 1, self.resolution, self.resolution], device=x.device) * self.noise_strength
        return self.noise_const * self.noise_strength

    def forward(self, x, w, noise_mode='random', fused_modconv=True, gain=1):
        if noise_mode not in ('random', 'const', 'none'):
            raise ValueError(f"noise_mode must be 'random', 'const' or 'none', got {noise_mode!r}")
        in_resolution = self.resolution // self.up
        misc.assert_shape(x, [None, self.weight.shape[1], in_resolution, in_resolution])
        styles = self.affine(w)
        x = modulated_conv2d(x=x, weight=self.weight, styles=styles, noise=self._noise(x, noise_mode),
                             up=self.up, padding=self.padding, resample_filter=self.resample_filter,
                             flip_weight=(self.up == 1), fused_modconv=fused_modconv)
        act_gain, act_clamp = _scaled_gain_and_clamp(self.act_gain, self.conv_clamp, gain)
        return bias_act.bias_act(x, self.bias.to(x.dtype), act=self.activation, gain=act_gain, clamp=act_clamp)


@persistence.persistent_class
class ToRGBLayer(torch.nn.Module):
    """Modulated (not demodulated) 1x1 convolution from features to image channels."""

    def __init__(self, in_channels, out_channels, w_dim, kernel_size=1, conv_clamp=None, channels_last=False):
        super().__init__()
        self.conv_clamp = conv_clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = torch.nn.Parameter(_random_weight([out_channels, in_channels, kernel_size, kernel_size],
                                                        channels_last))
        self.bias = torch.nn.Parameter(torch.zeros([out_channels]))
        self.weight_gain = 1 / np.sqrt(in_channels * (kernel_size ** 2))

    def forward(self, x, w, fused_modconv=True):
        styles = self.affine(w) * self.weight_gain
        x = modulated_conv2d(x=x, weight=self.weight, styles=styles, demodulate=False, fused_modconv=fused_modconv)
        return bias_act.bias_act(x, self.bias.to(x.dtype), clamp=self.conv_clamp)


@persistence.persistent_class
class SynthesisBlock(torch.nn.Module):
    """One resolution of the synthesis network: (upsampling) convs plus the image (toRGB/skip) path."""

    def __init__(self,
        in_channels,                   # Input channels (0 = first block, starts from a learned constant).
        out_channels,                  # Output channels.
        w_dim,                         # Latent w dimensionality.
        resolution,                    # Resolution of this block.
        img_channels,                  # Number of image channels.
        is_last,                       # Is this the highest-resolution block?
        architecture='skip',           # 'orig', 'skip' or 'resnet'.
        resample_filter=[1, 3, 3, 1],  # Low-pass FIR filter used when upsampling.
        conv_clamp=None,               # Clamp conv outputs to +-conv_clamp (None = no clamp).
        use_fp16=False,                # Run this block in fp16?
        fp16_channels_last=False,      # Use channels_last memory format together with fp16?
        **layer_kwargs,                # Extra SynthesisLayer arguments.
    ):
        if architecture not in ('orig', 'skip', 'resnet'):
            raise ValueError(f"architecture must be 'orig', 'skip' or 'resnet', got {architecture!r}")
        super().__init__()
        self.in_channels = in_channels
        self.w_dim = w_dim
        self.resolution = resolution
        self.img_channels = img_channels
        self.is_last = is_last
        self.architecture = architecture
        self.use_fp16 = use_fp16
        self.channels_last = (use_fp16 and fp16_channels_last)
        self.register_buffer('resample_filter', upfirdn2d.setup_filter(resample_filter))
        self.num_conv = 0
        self.num_torgb = 0

        if in_channels == 0:
            self.const = torch.nn.Parameter(torch.randn([out_channels, resolution, resolution]))
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim=w_dim, resolution=resolution, up=2,
                                        resample_filter=resample_filter, conv_clamp=conv_clamp,
                                        channels_last=self.channels_last, **layer_kwargs)
            self.num_conv += 1
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim=w_dim, resolution=resolution,
                                    conv_clamp=conv_clamp, channels_last=self.channels_last, **layer_kwargs)
        self.num_conv += 1
        if is_last or architecture == 'skip':
            self.torgb = ToRGBLayer(out_channels, img_channels, w_dim=w_dim, conv_clamp=conv_clamp,
                                    channels_last=self.channels_last)
            self.num_torgb += 1
        if in_channels != 0 and architecture == 'resnet':
            self.skip = Conv2dLayer(in_channels, out_channels, kernel_size=1, bias=False, up=2,
                                    resample_filter=resample_filter, channels_last=self.channels_last)

    def forward(self, x, img, ws, force_fp32=False, fused_modconv=None, **layer_kwargs):
        misc.assert_shape(ws, [None, self.num_conv + self.num_torgb, self.w_dim])
        w_iter = iter(ws.unbind(dim=1))
        dtype, memory_format = _block_dtype_and_format(self.use_fp16, self.channels_last, force_fp32, ws.device)
        if fused_modconv is None:
            # Fused (grouped) modconv is the faster inference path; training and fp16 batches use
            # the separate form, which has cheaper gradients and better fp16 behaviour.
            with misc.suppress_tracer_warnings():
                fused_modconv = (not self.training) and (dtype == torch.float32 or int(ws.shape[0]) == 1)

        if self.in_channels == 0:
            x = self.const.to(dtype=dtype).unsqueeze(0).repeat([ws.shape[0], 1, 1, 1])
            x = x.to(memory_format=memory_format)
            x = self.conv1(x, next(w_iter), fused_modconv=fused_modconv, **layer_kwargs)
        else:
            misc.assert_shape(x, [None, self.in_channels, self.resolution // 2, self.resolution // 2])
            x = x.to(dtype=dtype, memory_format=memory_format)
            if self.architecture == 'resnet':
                y = self.skip(x, gain=np.sqrt(0.5))
                x = self.conv0(x, next(w_iter), fused_modconv=fused_modconv, **layer_kwargs)
                x = self.conv1(x, next(w_iter), fused_modconv=fused_modconv, gain=np.sqrt(0.5), **layer_kwargs)
                x = y.add_(x)
            else:
                x = self.conv0(x, next(w_iter), fused_modconv=fused_modconv, **layer_kwargs)
                x = self.conv1(x, next(w_iter), fused_modconv=fused_modconv, **layer_kwargs)

        if img is not None:
            misc.assert_shape(img, [None, self.img_channels, self.resolution // 2, self.resolution // 2])
            img = upfirdn2d.upsample2d(img, self.resample_filter)
        if self.is_last or self.architecture == 'skip':
            y = self.torgb(x, next(w_iter), fused_modconv=fused_modconv)
            y = y.to(dtype=torch.float32, memory_format=torch.contiguous_format)
            img = img.add_(y) if img is not None else y

        assert x.dtype == dtype
        assert img is None or img.dtype == torch.float32
        return x, img


@persistence.persistent_class
class SynthesisNetwork(torch.nn.Module):
    """Stack of SynthesisBlocks from 4x4 up to img_resolution; consumes num_ws latents."""

    def __init__(self,
        w_dim,                 # Latent w dimensionality.
        img_resolution,        # Output resolution (power of two, >= 4).
        img_channels,          # Number of image channels.
        channel_base=32768,    # Channels at resolution r are channel_base // r ...
        channel_max=512,       # ... capped at channel_max.
        num_fp16_res=0,        # Run the top N resolutions in fp16.
        **block_kwargs,        # Extra SynthesisBlock arguments.
    ):
        if img_resolution < 4 or img_resolution & (img_resolution - 1) != 0:
            raise ValueError(f'img_resolution must be a power of two >= 4, got {img_resolution}')
        super().__init__()
        self.w_dim = w_dim
        self.img_resolution = img_resolution
        self.img_resolution_log2 = int(np.log2(img_resolution))
        self.img_channels = img_channels
        self.block_resolutions = [2 ** i for i in range(2, self.img_resolution_log2 + 1)]
        channels = _channel_counts(self.block_resolutions, channel_base, channel_max)
        fp16_resolution = _first_fp16_resolution(self.img_resolution_log2, num_fp16_res)

        self.num_ws = 0
        for res in self.block_resolutions:
            is_last = (res == self.img_resolution)
            block = SynthesisBlock(channels[res // 2] if res > 4 else 0, channels[res], w_dim=w_dim,
                                   resolution=res, img_channels=img_channels, is_last=is_last,
                                   use_fp16=(res >= fp16_resolution), **block_kwargs)
            # Consecutive blocks share one w: a block's toRGB latent is the next block's first conv latent.
            self.num_ws += block.num_conv + (block.num_torgb if is_last else 0)
            setattr(self, f'b{res}', block)

    def forward(self, ws, **block_kwargs):
        misc.assert_shape(ws, [None, self.num_ws, self.w_dim])
        ws = ws.to(torch.float32)
        x = img = None
        w_idx = 0
        for res in self.block_resolutions:
            block = getattr(self, f'b{res}')
            cur_ws = ws.narrow(1, w_idx, block.num_conv + block.num_torgb)
            w_idx += block.num_conv
            x, img = block(x, img, cur_ws, **block_kwargs)
        return img


@persistence.persistent_class
class Generator(torch.nn.Module):
    """StyleGAN2 generator: MappingNetwork (z, c -> ws) followed by SynthesisNetwork (ws -> image)."""

    def __init__(self,
        z_dim,                 # Latent z dimensionality.
        c_dim,                 # Label dimensionality (0 = unconditional).
        w_dim,                 # Latent w dimensionality.
        img_resolution,        # Output resolution.
        img_channels,          # Number of image channels.
        mapping_kwargs={},     # Extra MappingNetwork arguments (never mutated).
        synthesis_kwargs={},   # Extra SynthesisNetwork arguments (never mutated).
    ):
        super().__init__()
        self.z_dim = z_dim
        self.c_dim = c_dim
        self.w_dim = w_dim
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.synthesis = SynthesisNetwork(w_dim=w_dim, img_resolution=img_resolution, img_channels=img_channels,
                                          **synthesis_kwargs)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, num_ws=self.num_ws, **mapping_kwargs)

    def forward(self, z, c, truncation_psi=1, truncation_cutoff=None, **synthesis_kwargs):
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff)
        return self.synthesis(ws, **synthesis_kwargs)


# ---------------------------------------------------------------------------------------------
# Discriminator.


@persistence.persistent_class
class DiscriminatorBlock(torch.nn.Module):
    """One resolution of the discriminator: (fromRGB) conv, downsampling conv, optional residual skip."""

    def __init__(self,
        in_channels,                   # Input channels (0 = first block, reads the image).
        tmp_channels,                  # Channels inside the block.
        out_channels,                  # Output channels.
        resolution,                    # Resolution of this block.
        img_channels,                  # Number of image channels.
        first_layer_idx,               # Global index of this block's first layer (for Freeze-D).
        architecture='resnet',         # 'orig', 'skip' or 'resnet'.
        activation='lrelu',            # Activation name from bias_act.activation_funcs.
        resample_filter=[1, 3, 3, 1],  # Low-pass FIR filter used when downsampling.
        conv_clamp=None,               # Clamp conv outputs to +-conv_clamp (None = no clamp).
        use_fp16=False,                # Run this block in fp16?
        fp16_channels_last=False,      # Use channels_last memory format together with fp16?
        freeze_layers=0,               # Freeze-D: layers with global index < freeze_layers are frozen.
    ):
        if in_channels not in (0, tmp_channels):
            raise ValueError(f'in_channels must be 0 or tmp_channels ({tmp_channels}), got {in_channels}')
        if architecture not in ('orig', 'skip', 'resnet'):
            raise ValueError(f"architecture must be 'orig', 'skip' or 'resnet', got {architecture!r}")
        super().__init__()
        self.in_channels = in_channels
        self.resolution = resolution
        self.img_channels = img_channels
        self.first_layer_idx = first_layer_idx
        self.architecture = architecture
        self.use_fp16 = use_fp16
        self.channels_last = (use_fp16 and fp16_channels_last)
        self.register_buffer('resample_filter', upfirdn2d.setup_filter(resample_filter))
        self.num_layers = 0

        def next_trainable():
            # Layers are numbered globally in creation order; the first `freeze_layers` are frozen.
            trainable = (self.first_layer_idx + self.num_layers >= freeze_layers)
            self.num_layers += 1
            return trainable

        if in_channels == 0 or architecture == 'skip':
            self.fromrgb = Conv2dLayer(img_channels, tmp_channels, kernel_size=1, activation=activation,
                                       trainable=next_trainable(), conv_clamp=conv_clamp,
                                       channels_last=self.channels_last)
        self.conv0 = Conv2dLayer(tmp_channels, tmp_channels, kernel_size=3, activation=activation,
                                 trainable=next_trainable(), conv_clamp=conv_clamp, channels_last=self.channels_last)
        self.conv1 = Conv2dLayer(tmp_channels, out_channels, kernel_size=3, activation=activation, down=2,
                                 trainable=next_trainable(), resample_filter=resample_filter,
                                 conv_clamp=conv_clamp, channels_last=self.channels_last)
        if architecture == 'resnet':
            self.skip = Conv2dLayer(tmp_channels, out_channels, kernel_size=1, bias=False, down=2,
                                    trainable=next_trainable(), resample_filter=resample_filter,
                                    channels_last=self.channels_last)

    def forward(self, x, img, force_fp32=False):
        device = (x if x is not None else img).device
        dtype, memory_format = _block_dtype_and_format(self.use_fp16, self.channels_last, force_fp32, device)
        if x is not None:
            misc.assert_shape(x, [None, self.in_channels, self.resolution, self.resolution])
            x = x.to(dtype=dtype, memory_format=memory_format)

        if self.in_channels == 0 or self.architecture == 'skip':
            misc.assert_shape(img, [None, self.img_channels, self.resolution, self.resolution])
            img = img.to(dtype=dtype, memory_format=memory_format)
            y = self.fromrgb(img)
            x = x + y if x is not None else y
            img = upfirdn2d.downsample2d(img, self.resample_filter) if self.architecture == 'skip' else None

        if self.architecture == 'resnet':
            y = self.skip(x, gain=np.sqrt(0.5))
            x = self.conv1(self.conv0(x), gain=np.sqrt(0.5))
            x = y.add_(x)
        else:
            x = self.conv1(self.conv0(x))

        assert x.dtype == dtype
        return x, img


@persistence.persistent_class
class MinibatchStdLayer(torch.nn.Module):
    """Appends the average standard deviation over sample groups as extra feature channels."""

    def __init__(self, group_size, num_channels=1):
        super().__init__()
        self.group_size = group_size
        self.num_channels = num_channels

    def forward(self, x):
        N, C, H, W = x.shape
        G = N if self.group_size is None else min(int(self.group_size), int(N))
        F = self.num_channels
        if N % G != 0:
            raise ValueError(f'MinibatchStdLayer: batch size {N} is not divisible by the group size {G}; '
                             f'use a batch (per GPU) that is a multiple of mbstd_group_size')
        # Sample i belongs to group i % (N / G); channels split into F groups of C / F.
        y = x.reshape(G, -1, F, C // F, H, W)
        y = (y - y.mean(dim=0)).square().mean(dim=0)   # [n, F, c, H, W] variance within each group
        y = (y + 1e-8).sqrt().mean(dim=[2, 3, 4])      # [n, F] mean stddev over channels and pixels
        y = y.reshape(-1, F, 1, 1).repeat(G, 1, H, W)  # [N, F, H, W]
        return torch.cat([x, y], dim=1)


@persistence.persistent_class
class DiscriminatorEpilogue(torch.nn.Module):
    """4x4 head of the discriminator: minibatch stddev, conv, dense layers and label projection."""

    def __init__(self,
        in_channels,             # Number of input channels.
        cmap_dim,                # Width of the mapped label (0 = unconditional).
        resolution,              # Resolution of this block (4).
        img_channels,            # Number of image channels.
        architecture='resnet',   # 'orig', 'skip' or 'resnet'.
        mbstd_group_size=4,      # Minibatch-stddev group size (None = whole minibatch).
        mbstd_num_channels=1,    # Minibatch-stddev feature count (0 = disable).
        activation='lrelu',      # Activation name from bias_act.activation_funcs.
        conv_clamp=None,         # Clamp conv outputs to +-conv_clamp (None = no clamp).
    ):
        if architecture not in ('orig', 'skip', 'resnet'):
            raise ValueError(f"architecture must be 'orig', 'skip' or 'resnet', got {architecture!r}")
        super().__init__()
        self.in_channels = in_channels
        self.cmap_dim = cmap_dim
        self.resolution = resolution
        self.img_channels = img_channels
        self.architecture = architecture

        if architecture == 'skip':
            self.fromrgb = Conv2dLayer(img_channels, in_channels, kernel_size=1, activation=activation)
        self.mbstd = (MinibatchStdLayer(group_size=mbstd_group_size, num_channels=mbstd_num_channels)
                      if mbstd_num_channels > 0 else None)
        self.conv = Conv2dLayer(in_channels + mbstd_num_channels, in_channels, kernel_size=3, activation=activation,
                                conv_clamp=conv_clamp)
        self.fc = FullyConnectedLayer(in_channels * (resolution ** 2), in_channels, activation=activation)
        self.out = FullyConnectedLayer(in_channels, 1 if cmap_dim == 0 else cmap_dim)

    def forward(self, x, img, cmap, force_fp32=False):
        misc.assert_shape(x, [None, self.in_channels, self.resolution, self.resolution])
        _ = force_fp32  # the epilogue always runs in fp32
        x = x.to(dtype=torch.float32, memory_format=torch.contiguous_format)
        if self.architecture == 'skip':
            misc.assert_shape(img, [None, self.img_channels, self.resolution, self.resolution])
            img = img.to(dtype=torch.float32, memory_format=torch.contiguous_format)
            x = x + self.fromrgb(img)

        if self.mbstd is not None:
            x = self.mbstd(x)
        x = self.out(self.fc(self.conv(x).flatten(1)))

        if self.cmap_dim > 0:
            # Projection discriminator: score = <features, mapped label> / sqrt(cmap_dim).
            misc.assert_shape(cmap, [None, self.cmap_dim])
            x = (x * cmap).sum(dim=1, keepdim=True) * (1 / np.sqrt(self.cmap_dim))
        assert x.dtype == torch.float32
        return x


@persistence.persistent_class
class Discriminator(torch.nn.Module):
    """StyleGAN2 discriminator: blocks from img_resolution down to 8x8, then the 4x4 epilogue."""

    def __init__(self,
        c_dim,                   # Label dimensionality (0 = unconditional).
        img_resolution,          # Input resolution.
        img_channels,            # Number of image channels.
        architecture='resnet',   # 'orig', 'skip' or 'resnet'.
        channel_base=32768,      # Channels at resolution r are channel_base // r ...
        channel_max=512,         # ... capped at channel_max.
        num_fp16_res=0,          # Run the top N resolutions in fp16.
        conv_clamp=None,         # Clamp conv outputs to +-conv_clamp (None = no clamp).
        cmap_dim=None,           # Width of the mapped label (None = channels at 4x4).
        block_kwargs={},         # Extra DiscriminatorBlock arguments (never mutated).
        mapping_kwargs={},       # Extra MappingNetwork arguments (never mutated).
        epilogue_kwargs={},      # Extra DiscriminatorEpilogue arguments (never mutated).
    ):
        super().__init__()
        self.c_dim = c_dim
        self.img_resolution = img_resolution
        self.img_resolution_log2 = int(np.log2(img_resolution))
        self.img_channels = img_channels
        self.block_resolutions = [2 ** i for i in range(self.img_resolution_log2, 2, -1)]
        channels = _channel_counts(self.block_resolutions + [4], channel_base, channel_max)
        fp16_resolution = _first_fp16_resolution(self.img_resolution_log2, num_fp16_res)
        if c_dim == 0:
            cmap_dim = 0
        elif cmap_dim is None:
            cmap_dim = channels[4]

        common_kwargs = dict(img_channels=img_channels, architecture=architecture, conv_clamp=conv_clamp)
        layer_idx = 0
        for res in self.block_resolutions:
            block = DiscriminatorBlock(channels[res] if res < img_resolution else 0, channels[res], channels[res // 2],
                                       resolution=res, first_layer_idx=layer_idx, use_fp16=(res >= fp16_resolution),
                                       **block_kwargs, **common_kwargs)
            setattr(self, f'b{res}', block)
            layer_idx += block.num_layers
        if c_dim > 0:
            self.mapping = MappingNetwork(z_dim=0, c_dim=c_dim, w_dim=cmap_dim, num_ws=None, w_avg_beta=None,
                                          **mapping_kwargs)
        self.b4 = DiscriminatorEpilogue(channels[4], cmap_dim=cmap_dim, resolution=4, **epilogue_kwargs,
                                        **common_kwargs)

    def forward(self, img, c, **block_kwargs):
        x = None
        for res in self.block_resolutions:
            x, img = getattr(self, f'b{res}')(x, img, **block_kwargs)
        cmap = self.mapping(None, c) if self.c_dim > 0 else None
        return self.b4(x, img, cmap)
