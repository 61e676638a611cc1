"""StyleGAN2 generator (skip architecture) and residual discriminator, in plain PyTorch.

Faithful to the paper and the official configuration: equalised learning rate, learned
4x4 constant, modulated convolutions with demodulation (toRGB modulated, not
demodulated), per-layer noise with a learned strength, [1, 3, 3, 1] FIR resampling,
skip-connected toRGB outputs, and the choice of mapping network (``mlp`` for W,
``transformer`` for W++). Any power-of-two resolution from 16 to 1024.

Code layout of ``ws`` (``num_ws = 2 * log2(resolution) - 2``): layer 0 is the 4x4 conv,
layer 1 the 4x4 toRGB and, for every later block, ``2k`` / ``2k + 1`` its two convs and
``2k + 1`` also its toRGB -- the toRGB of a block shares its code with the next block's
first conv, as in the official implementation.
"""
from __future__ import annotations

import inspect
import math
import warnings

import torch
from torch import nn
import torch.nn.functional as F

from faceedit.core.errors import NetworkError

from .fastsynth import synthesis_poly
from .layers import EqualConv2d, EqualLinear, add_sizes
from .mapping import MappingMLP, MappingTransformer
from .ops import (_autocast_off, downsample2d, lrelu_gain, make_fir, modulated_conv2d, modulated_conv2d_shared,
                  upfirdn2d, upsample2d, upsample2d_fast)


def channels_for(resolution: int, channel_base: int, channel_max: int) -> dict:
    """Channels per resolution: ``min(channel_base // res, channel_max)`` (NVIDIA's rule)."""
    return {2 ** i: min(channel_base // 2 ** i, channel_max) for i in range(2, int(math.log2(resolution)) + 1)}


#: Elements of the [1, 3, 3, 1] resampling filter each resampling layer keeps (a non-persistent buffer).
FIR_TAPS = 4


def bind_defaults(cls, kwargs: dict) -> dict:
    """``kwargs`` completed with the defaults of ``cls``'s constructor (for the ``size`` methods)."""
    bound = inspect.signature(cls).bind(**kwargs)
    bound.apply_defaults()
    return dict(bound.arguments)


def _check_resolution(resolution: int) -> int:
    log = math.log2(resolution) if resolution > 0 else -1
    if log != int(log) or not 16 <= resolution <= 1024:
        raise NetworkError(f"resolution must be a power of two in 16..1024, got {resolution}")
    return int(log)


class StyledConv(nn.Module):
    """Modulated 3x3 conv + noise + bias + leaky ReLU."""

    def __init__(self, in_ch: int, out_ch: int, w_dim: int, resolution: int, up: bool = False,
                 conv_clamp: float | None = None):
        super().__init__()
        self.conv_clamp = conv_clamp
        self.affine = EqualLinear(w_dim, in_ch, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_ch, in_ch, 3, 3))
        self.scale = 1 / math.sqrt(in_ch * 9)
        self.noise_strength = nn.Parameter(torch.zeros([]))
        self.bias = nn.Parameter(torch.zeros(out_ch))
        self.register_buffer("noise_const", torch.randn(1, 1, resolution, resolution))
        self.register_buffer("fir", make_fir(), persistent=False)
        self.up, self.resolution = up, resolution

    @staticmethod
    def size(in_ch: int, out_ch: int, w_dim: int, resolution: int, *_, **__) -> tuple:
        """``(state elements, other buffer elements)`` of this layer, computed without building it."""
        own = out_ch * in_ch * 9 + 1 + out_ch + resolution ** 2  # weight, noise strength, bias, noise map
        return add_sizes(EqualLinear.size(w_dim, in_ch), (own, FIR_TAPS))

    def forward(self, x, w, noise_mode="const", noise=None, fused_modconv=True):
        styles = self.affine(w)
        if noise is None and noise_mode == "random":
            noise = torch.randn(x.shape[0], 1, self.resolution, self.resolution, device=x.device, dtype=x.dtype)
        elif noise is None and noise_mode == "const":
            noise = self.noise_const
        if not fused_modconv:
            return self._forward_fast(x, styles, noise)
        x = modulated_conv2d(x, self.weight * self.scale, styles, up=self.up, fir=self.fir, fused=True)
        if noise is not None:
            x = x + noise.to(x.dtype) * self.noise_strength.to(x.dtype)
        x = lrelu_gain(x + self.bias.to(x.dtype).view(1, -1, 1, 1))
        return x if self.conv_clamp is None else x.clamp(-self.conv_clamp, self.conv_clamp)

    def _forward_fast(self, x, styles, noise):
        """Shared-weight conv, then demodulation, noise, bias and gain in one ``addcmul`` and an
        in-place leaky ReLU. Uses ``lrelu(g * y) = g * lrelu(y)`` for ``g > 0`` to fold the gain
        into the coefficients. Equal to the reference to float rounding (tested)."""
        y, dcoefs = modulated_conv2d_shared(x, self.weight * self.scale, styles, up=self.up, fir=self.fir)
        g = math.sqrt(2)
        add = self.bias.view(1, -1, 1, 1) * g
        if noise is not None:
            add = add + noise.to(add.dtype) * (self.noise_strength * g)
        y = torch.addcmul(add.to(y.dtype), y, (dcoefs * g).to(y.dtype).view(*dcoefs.shape, 1, 1))
        y = torch.nn.functional.leaky_relu_(y, 0.2)
        return y if self.conv_clamp is None else y.clamp(-self.conv_clamp, self.conv_clamp)  # not clamp_: autograd


class ToRGB(nn.Module):
    """Modulated 1x1 conv to RGB, not demodulated, plus the up-sampled skip."""

    def __init__(self, in_ch: int, w_dim: int, img_channels: int = 3, conv_clamp: float | None = None):
        super().__init__()
        self.conv_clamp = conv_clamp
        self.affine = EqualLinear(w_dim, in_ch, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(img_channels, in_ch, 1, 1))
        self.scale = 1 / math.sqrt(in_ch)
        self.bias = nn.Parameter(torch.zeros(img_channels))
        self.register_buffer("fir", make_fir(), persistent=False)

    @staticmethod
    def size(in_ch: int, w_dim: int, img_channels: int = 3, *_, **__) -> tuple:
        """``(state elements, other buffer elements)`` of this layer, computed without building it."""
        return add_sizes(EqualLinear.size(w_dim, in_ch), (img_channels * in_ch + img_channels, FIR_TAPS))

    def forward(self, x, w, skip=None, fused_modconv=True):
        y = modulated_conv2d(x, self.weight * self.scale, self.affine(w), demodulate=False, fused=fused_modconv)
        if not fused_modconv:  # shared-conv path: the image itself is summed in fp32 even under bf16 autocast
            y = y.float()
        y = y + self.bias.to(y.dtype).view(1, -1, 1, 1)
        if self.conv_clamp is not None:
            y = y.clamp(-self.conv_clamp, self.conv_clamp)
        if skip is not None:
            if fused_modconv:
                y = y + upsample2d(skip, self.fir)
            else:
                with _autocast_off(y.device.type):
                    y = y + upsample2d_fast(skip.float(), self.fir)
        return y


#: The synthesis paths, all equal to float rounding (``SynthesisNetwork.forward(path=...)``):
#: ``reference``: per-sample grouped convolutions (NVIDIA's ``fused_modconv=True``);
#: ``shared``: one shared convolution per layer, the styles scaling the activations and the
#: demodulation a small matmul (faster for batches, under bf16 autocast and ``channels_last``);
#: ``poly``: the polyphase rewrite of :mod:`networks.fastsynth` (for GPUs; returns fp32).
SYNTHESIS_PATHS = ("reference", "shared", "poly")

_FUSED_TO_PATH = {True: "reference", False: "shared", "poly": "poly"}


def resolve_synthesis_path(path: str, fused=None) -> str:
    """The synthesis path to run, from ``path`` or the deprecated ``fused`` keyword.

    Args:
        path: one of :data:`SYNTHESIS_PATHS`.
        fused: the old keyword (``True`` = ``reference``, ``False`` = ``shared``,
            ``"poly"``); ``None`` when not given. Warns with ``DeprecationWarning``.

    Returns:
        The path name.

    Raises:
        NetworkError: ``path`` (or ``fused``) is not one of the known values.
    """
    if fused is not None:
        if fused not in _FUSED_TO_PATH:
            raise NetworkError(f"fused={fused!r} is not True, False or 'poly'; pass path= one of {SYNTHESIS_PATHS}")
        # stacklevel: this function, forward, nn.Module's two call wrappers, the caller
        warnings.warn(f"synthesis(fused={fused!r}) is deprecated; use path={_FUSED_TO_PATH[fused]!r}",
                      DeprecationWarning, stacklevel=5)
        path = _FUSED_TO_PATH[fused]
    if not isinstance(path, str) or path not in SYNTHESIS_PATHS:
        raise NetworkError(f"synthesis path must be one of {', '.join(SYNTHESIS_PATHS)}, got {path!r}")
    return path


def check_synthesis_args(ws, num_ws: int, w_dim: int, noise_mode: str, noise, num_noise: int) -> None:
    """The input checks of a synthesis network's forward (shared by StyleGAN v1 and v2).

    Raises:
        NetworkError: ``ws`` not ``[N, num_ws, w_dim]``, an unknown ``noise_mode``, or a
            noise list of another length than ``num_noise``.
    """
    if ws.ndim != 3 or ws.shape[1:] != (num_ws, w_dim):
        raise NetworkError(f"synthesis expects ws of shape [N, {num_ws}, {w_dim}], got {tuple(ws.shape)}")
    if noise_mode not in ("const", "random", "none"):
        raise NetworkError(f"noise_mode must be const, random or none, got {noise_mode!r}")
    if noise is not None and len(noise) != num_noise:
        raise NetworkError(f"expected {num_noise} noise maps, got {len(noise)}")


class SynthesisNetwork(nn.Module):
    """Synthesis network: ``ws [N, num_ws, w_dim] -> image [N, 3, R, R]`` in about [-1, 1]."""

    def __init__(self,
                 w_dim: int,                  # Intermediate latent (W) dimensionality.
                 resolution: int,             # Output resolution (power of two, 16..1024).
                 channel_base: int = 32768,   # Overall multiplier for the number of channels.
                 channel_max: int = 512,      # Maximum number of channels in any layer.
                 img_channels: int = 3,       # Number of output colour channels.
                 conv_clamp: float | None = None,  # Clamp conv outputs to +-X (NVIDIA's ADA models: 256).
                 ):
        super().__init__()
        self.log_res = _check_resolution(resolution)
        self.w_dim, self.resolution = w_dim, resolution
        self.channels = channels_for(resolution, channel_base, channel_max)
        self.num_ws = 2 * self.log_res - 2
        ch = self.channels
        self.const = nn.Parameter(torch.randn(1, ch[4], 4, 4))
        self.conv1 = StyledConv(ch[4], ch[4], w_dim, 4, conv_clamp=conv_clamp)
        self.torgb1 = ToRGB(ch[4], w_dim, img_channels, conv_clamp)
        self.convs_up, self.convs, self.torgbs = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        for i in range(3, self.log_res + 1):
            r = 2 ** i
            self.convs_up.append(StyledConv(ch[r // 2], ch[r], w_dim, r, up=True, conv_clamp=conv_clamp))
            self.convs.append(StyledConv(ch[r], ch[r], w_dim, r, conv_clamp=conv_clamp))
            self.torgbs.append(ToRGB(ch[r], w_dim, img_channels, conv_clamp))

    @staticmethod
    def size(w_dim: int, resolution: int, channel_base: int = 32768, channel_max: int = 512, img_channels: int = 3,
             *_, **__) -> tuple:
        """``(state elements, other buffer elements)`` of this network, computed without building it."""
        log_res = _check_resolution(resolution)
        ch = channels_for(resolution, channel_base, channel_max)
        parts = [(ch[4] * 16, 0), StyledConv.size(ch[4], ch[4], w_dim, 4), ToRGB.size(ch[4], w_dim, img_channels)]
        for r in (2 ** i for i in range(3, log_res + 1)):
            parts += [StyledConv.size(ch[r // 2], ch[r], w_dim, r), StyledConv.size(ch[r], ch[r], w_dim, r),
                      ToRGB.size(ch[r], w_dim, img_channels)]
        return add_sizes(*parts)

    def noise_buffers(self) -> list:
        """The constant noise maps, one per styled conv, in layer order."""
        return [self.conv1.noise_const] + [b for c, d in zip(self.convs_up, self.convs)
                                           for b in (c.noise_const, d.noise_const)]

    def forward(self, ws: torch.Tensor, noise_mode: str = "const", noise: list | None = None,
                path: str = "reference", *, fused=None) -> torch.Tensor:
        """Synthesise images.

        Args:
            ws: ``[N, num_ws, w_dim]`` per-layer codes.
            noise_mode: ``const`` (the stored maps), ``random`` or ``none``.
            noise: optional explicit list of noise maps (one per styled conv), overriding
                ``noise_mode``; used by inversion when noise is optimised.
            path: one of :data:`SYNTHESIS_PATHS`: ``reference`` (per-sample grouped convs),
                ``shared`` (one shared conv per layer, see
                :func:`networks.ops.modulated_conv2d`) or ``poly`` (the polyphase path of
                :mod:`networks.fastsynth`: up-sampling convs as one dense low-resolution
                conv, for GPUs; returns fp32). All three are equal to float rounding.
            fused: deprecated spelling of ``path`` (``True``/``False``/``"poly"``).

        Raises:
            NetworkError: an unknown ``path``, wrong ``ws`` shape, unknown ``noise_mode``,
                wrong number of noise maps.
        """
        path = resolve_synthesis_path(path, fused)
        check_synthesis_args(ws, self.num_ws, self.w_dim, noise_mode, noise, 1 + 2 * len(self.convs))
        if path == "poly":
            return synthesis_poly(self, ws, noise_mode, noise)
        fm = path == "reference"
        nz = (lambda i: noise[i]) if noise is not None else (lambda i: None)
        x = self.const.to(ws.dtype).expand(ws.shape[0], -1, -1, -1)
        x = self.conv1(x, ws[:, 0], noise_mode, nz(0), fm)
        img = self.torgb1(x, ws[:, 1], fused_modconv=fm)
        for k, (cu, cv, rgb) in enumerate(zip(self.convs_up, self.convs, self.torgbs)):
            x = cu(x, ws[:, 2 * k + 1], noise_mode, nz(2 * k + 1), fm)
            x = cv(x, ws[:, 2 * k + 2], noise_mode, nz(2 * k + 2), fm)
            img = rgb(x, ws[:, 2 * k + 3], img, fused_modconv=fm)
        return img


class Generator(nn.Module):
    """Mapping + synthesis with the seam inversion needs.

    Attributes:
        mapping: ``MappingMLP`` (space W) or ``MappingTransformer`` (space W++).
        synthesis: ``SynthesisNetwork``.
        num_ws, w_dim, z_dim, resolution, mapping_kind, arch (``"stylegan2"``): the facts callers need.
    """

    arch = "stylegan2"

    def __init__(self,
                 z_dim: int = 512,            # Input latent (Z) dimensionality.
                 w_dim: int = 512,            # Intermediate latent (W) dimensionality.
                 resolution: int = 1024,      # Output resolution.
                 mapping_kind: str = "mlp",   # 'mlp' (StyleGAN2, W) or 'transformer' (W++).
                 mapping_layers: int = 8,     # FC layers of the MLP mapping.
                 mapping_blocks: int = 4,     # Attention blocks of the transformer mapping.
                 mapping_heads: int = 4,      # Attention heads of the transformer mapping.
                 mapping_lr_mul: float = 0.01,  # Learning-rate multiplier of the mapping.
                 channel_base: int = 32768,   # Channel multiplier (32768 = config-f).
                 channel_max: int = 512,      # Maximum channels.
                 img_channels: int = 3,       # Output colour channels.
                 conv_clamp: float | None = None,  # Clamp conv outputs to +-X; None = off (ADA models: 256).
                 ):
        super().__init__()
        self.synthesis = SynthesisNetwork(w_dim, resolution, channel_base, channel_max, img_channels, conv_clamp)
        self.num_ws, self.w_dim, self.z_dim, self.resolution = self.synthesis.num_ws, w_dim, z_dim, resolution
        if mapping_kind == "mlp":
            self.mapping = MappingMLP(z_dim, w_dim, self.num_ws, mapping_layers, mapping_lr_mul)
        elif mapping_kind == "transformer":
            self.mapping = MappingTransformer(z_dim, w_dim, self.num_ws, mapping_blocks, mapping_heads,
                                              lr_mul=mapping_lr_mul)
        else:
            raise NetworkError(f"mapping_kind must be 'mlp' or 'transformer', got {mapping_kind!r}")
        self.mapping_kind = mapping_kind
        self.config = dict(z_dim=z_dim, w_dim=w_dim, resolution=resolution, mapping_kind=mapping_kind,
                           mapping_layers=mapping_layers, mapping_blocks=mapping_blocks,
                           mapping_heads=mapping_heads, mapping_lr_mul=mapping_lr_mul,
                           channel_base=channel_base, channel_max=channel_max, img_channels=img_channels)
        if conv_clamp is not None:  # only present when set, so existing configs stay unchanged
            self.config["conv_clamp"] = float(conv_clamp)

    @classmethod
    def size(cls, **kwargs) -> tuple:
        """``(state elements, other buffer elements)`` of ``Generator(**kwargs)``, computed without building it.

        The first is what ``state_dict()`` holds (what a checkpoint must provide), the second
        the non-persistent buffers (resampling filters, token ids); times 4 bytes, their sum is
        what building the network allocates. Plain integer arithmetic, so any widths can be
        sized before they are refused (checkpoint readers bound a file's networks with it).
        ``tests/test_networks.py`` checks it against built networks.

        Raises:
            TypeError: an argument the constructor does not take.
            NetworkError: a resolution the constructor refuses.
        """
        a = bind_defaults(cls, kwargs)
        num_ws = 2 * _check_resolution(a["resolution"]) - 2
        synthesis = SynthesisNetwork.size(a["w_dim"], a["resolution"], a["channel_base"], a["channel_max"],
                                          a["img_channels"])
        if a["mapping_kind"] == "transformer":
            mapping = MappingTransformer.size(a["z_dim"], a["w_dim"], num_ws, a["mapping_blocks"], a["mapping_heads"])
        else:
            mapping = MappingMLP.size(a["z_dim"], a["w_dim"], num_ws, a["mapping_layers"])
        return add_sizes(synthesis, mapping)

    @property
    def z_shape(self) -> tuple:
        """Shape of one z sample: ``(z_dim,)`` for W, ``(num_ws, z_dim)`` for W++."""
        return self.mapping.z_shape

    @property
    def w_avg(self) -> torch.Tensor:
        """Mean code broadcast to ``[num_ws, w_dim]``."""
        return self.mapping.w_avg.reshape(-1, self.w_dim).expand(self.num_ws, -1)

    def sample_z(self, n: int, *, seed: int | None = None, generator: torch.Generator | None = None,
                 device=None) -> torch.Tensor:
        """Standard-normal z of the shape this mapping takes (deterministic for a seed)."""
        if seed is not None:
            generator = torch.Generator().manual_seed(int(seed))
        z = torch.randn((n, *self.z_shape), generator=generator)
        return z.to(device if device is not None else self.synthesis.const.device)

    def forward(self, z: torch.Tensor, truncation_psi: float = 1.0, truncation_cutoff: int | None = None,
                noise_mode: str = "const", mixing_z: torch.Tensor | None = None,
                mixing_cutoff: int | None = None) -> torch.Tensor:
        """z -> image; optional style mixing: layers from ``mixing_cutoff`` on use ``mixing_z``."""
        ws = self.mapping(z, truncation_psi, truncation_cutoff)
        if mixing_z is not None:
            ws2 = self.mapping(mixing_z, truncation_psi, truncation_cutoff)
            cut = self.num_ws // 2 if mixing_cutoff is None else mixing_cutoff
            ws = torch.cat([ws[:, :cut], ws2[:, cut:]], dim=1)
        return self.synthesis(ws, noise_mode=noise_mode)


def _clamp(c: float | None, x: torch.Tensor) -> torch.Tensor:
    """Clamp to +-c (NVIDIA's conv_clamp); None = unchanged."""
    return x if c is None else x.clamp(-c, c)


class MinibatchStd(nn.Module):
    """Appends the std of features over groups of ``group_size`` samples as one channel.

    ``group_size=1`` makes every sample its own group (std 0): the layer then carries no
    cross-sample information, which per-sample gradients (GSNR) need.
    """

    def __init__(self, group_size: int = 4):
        super().__init__()
        self.group_size = group_size

    def forward(self, x):
        n, c, h, w = x.shape
        g = min(self.group_size, n)
        if n % g:
            g = 1
        y = x.float().reshape(g, -1, c, h, w)
        y = (y.var(dim=0, unbiased=False) + 1e-8).sqrt().mean(dim=[1, 2, 3])  # [n/g]
        y = y.reshape(-1, 1, 1, 1).repeat(g, 1, h, w).to(x.dtype)
        return torch.cat([x, y], dim=1)


DOWN_IMPLS = ("reference", "taps")


def downsample2d_taps(x: torch.Tensor, fir: torch.Tensor) -> torch.Tensor:
    """:func:`ops.downsample2d` computed at the output samples only, as a sum of strided slices.

    The reference filters at full resolution with two depthwise convolutions and then drops
    three samples in four; those depthwise convolutions took 59 of 206 ms of GPU time in an
    eager faces64 training step at batch 512 on an H100 (``torch.profiler``). Here each of the
    ``taps x taps`` products is a strided slice of the padded input scaled by one tap: plain
    element-wise kernels (which ``torch.compile`` can fuse). Equal to the reference up to float
    rounding (``tests/test_networks.py``).
    """
    if x.ndim != 4 or x.shape[2] % 2 or x.shape[3] % 2:
        raise NetworkError(f"downsample2d_taps expects [N, C, H, W] with even H and W, got {tuple(x.shape)}")
    n_taps = fir.numel()
    p = n_taps - 2
    h, w = x.shape[2], x.shape[3]
    xp = F.pad(x, [(p + 1) // 2, p // 2, (p + 1) // 2, p // 2])
    f = fir.flip(0).to(x.dtype)  # flipped: a true convolution, as upfirdn2d
    rows = sum(f[k] * xp[:, :, k:k + h - 1:2, :] for k in range(n_taps))
    return sum(f[k] * rows[:, :, :, k:k + w - 1:2] for k in range(n_taps))


class DiscBlock(nn.Module):
    """Residual discriminator block: two 3x3 convs with down-sampling and a 1x1 skip.

    ``down_conv="decimate"`` (faceedit's own) down-samples before the second conv, which then
    runs at the lower resolution; ``"strided"`` (NVIDIA's and rosinality's) blurs at full
    resolution and convolves with stride 2. The skip is ``1x1(downsample(x))`` in both.
    """

    def __init__(self, in_ch: int, out_ch: int, down_conv: str = "decimate", conv_clamp: float | None = None):
        super().__init__()
        if down_conv not in ("decimate", "strided"):
            raise NetworkError(f"down_conv must be 'decimate' or 'strided', got {down_conv!r}")
        self.down_conv, self.conv_clamp = down_conv, conv_clamp
        self.conv0 = EqualConv2d(in_ch, in_ch, 3, activation="lrelu")
        self.conv1 = EqualConv2d(in_ch, out_ch, 3, activation="lrelu")
        self.skip = EqualConv2d(in_ch, out_ch, 1, bias=False)
        self.register_buffer("fir", make_fir(), persistent=False)
        self.down_impl = "reference"  # or "taps" (downsample2d_taps); set by Discriminator.set_down_impl

    @staticmethod
    def size(in_ch: int, out_ch: int, *_, **__) -> tuple:
        """``(state elements, other buffer elements)`` of this block, computed without building it."""
        return add_sizes(EqualConv2d.size(in_ch, in_ch, 3), EqualConv2d.size(in_ch, out_ch, 3),
                         EqualConv2d.size(in_ch, out_ch, 1, bias=False), (0, FIR_TAPS))

    def forward(self, x):
        down = downsample2d_taps if self.down_impl == "taps" else downsample2d
        y = _clamp(self.conv_clamp, self.skip(down(x, self.fir)))
        x = _clamp(self.conv_clamp, self.conv0(x))
        if self.down_conv == "strided":
            p = self.fir.numel() - 2 + 2  # filter taps - down + kernel - 1, split evenly
            c = self.conv1
            x = F.conv2d(upfirdn2d(x, self.fir, pad=((p + 1) // 2, p // 2, (p + 1) // 2, p // 2)),
                         c.weight.to(x.dtype) * c.scale, c.bias.to(x.dtype), stride=2)
            x = lrelu_gain(x)
        else:
            x = self.conv1(down(x, self.fir))
        return (_clamp(self.conv_clamp, x) + y) * (1 / math.sqrt(2))


class Discriminator(nn.Module):
    """StyleGAN2 residual discriminator; ``features()`` exposes its per-scale activations."""

    def __init__(self,
                 resolution: int,             # Input resolution.
                 channel_base: int = 32768,   # Channel multiplier.
                 channel_max: int = 512,      # Maximum channels.
                 img_channels: int = 3,       # Input colour channels.
                 mbstd_group: int = 4,        # Minibatch-std group size (1 = per sample).
                 down_conv: str = "decimate",  # 'decimate' (faceedit's) or 'strided' (NVIDIA's, rosinality's D).
                 conv_clamp: float | None = None,  # Clamp conv outputs to +-X; None = off (NVIDIA's ADA D: 256).
                 ):
        super().__init__()
        log = _check_resolution(resolution)
        ch = channels_for(resolution, channel_base, channel_max)
        self.resolution, self.conv_clamp = resolution, conv_clamp
        self.config = dict(resolution=resolution, channel_base=channel_base, channel_max=channel_max,
                           img_channels=img_channels, mbstd_group=mbstd_group)
        if down_conv != "decimate":  # only present when set, so existing configs stay unchanged
            self.config["down_conv"] = down_conv
        if conv_clamp is not None:
            self.config["conv_clamp"] = float(conv_clamp)
        self.from_rgb = EqualConv2d(img_channels, ch[resolution], 1, activation="lrelu")
        self.blocks = nn.ModuleList([DiscBlock(ch[2 ** i], ch[2 ** (i - 1)], down_conv, conv_clamp)
                                     for i in range(log, 2, -1)])
        self.mbstd = MinibatchStd(mbstd_group)
        self.conv = EqualConv2d(ch[4] + 1, ch[4], 3, activation="lrelu")
        self.fc = EqualLinear(ch[4] * 16, ch[4], activation="lrelu")
        self.out = EqualLinear(ch[4], 1)

    @classmethod
    def size(cls, **kwargs) -> tuple:
        """``(state elements, other buffer elements)`` of ``Discriminator(**kwargs)``, computed without
        building it (see :meth:`Generator.size`)."""
        a = bind_defaults(cls, kwargs)
        log_res, res = _check_resolution(a["resolution"]), a["resolution"]
        ch = channels_for(res, a["channel_base"], a["channel_max"])
        return add_sizes(EqualConv2d.size(a["img_channels"], ch[res], 1),
                         *[DiscBlock.size(ch[2 ** i], ch[2 ** (i - 1)]) for i in range(log_res, 2, -1)],
                         EqualConv2d.size(ch[4] + 1, ch[4], 3), EqualLinear.size(ch[4] * 16, ch[4]),
                         EqualLinear.size(ch[4], 1))

    def set_down_impl(self, impl: str) -> "Discriminator":
        """How the blocks down-sample: ``"reference"`` (:func:`ops.downsample2d`) or ``"taps"``
        (:func:`downsample2d_taps`, the fast training step's; equal up to float rounding).
        Not part of the checkpoint: a loaded discriminator uses the reference."""
        if impl not in DOWN_IMPLS:
            raise NetworkError(f"down-sampling implementation must be one of {DOWN_IMPLS}, got {impl!r}")
        for block in self.blocks:
            block.down_impl = impl
        return self

    def features(self, img: torch.Tensor) -> list:
        """Activations after ``from_rgb`` and after each block (for a perceptual loss)."""
        if img.ndim != 4 or img.shape[2:] != (self.resolution, self.resolution):
            raise NetworkError(f"discriminator expects [N, C, {self.resolution}, {self.resolution}], "
                               f"got {tuple(img.shape)}")
        x = _clamp(self.conv_clamp, self.from_rgb(img))
        feats = [x]
        for block in self.blocks:
            x = block(x)
            feats.append(x)
        return feats

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        x = self.features(img)[-1]
        x = _clamp(self.conv_clamp, self.conv(self.mbstd(x)))
        return self.out(self.fc(x.flatten(1)))
