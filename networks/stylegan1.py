"""StyleGAN (v1) generator in plain PyTorch, with the same seam as the StyleGAN2 ``Generator``.

Faithful to the paper and the official configuration: an 8-layer MLP mapping (pixel norm
of z, equalised learning rate, lr multiplier 0.01), a learned 4x4 constant (initialised to
ones), and per synthesis layer: 3x3 conv (equalised lr, gain sqrt 2 folded into the
weight's run-time scale), noise with learned per-channel strengths, bias, leaky ReLU 0.2,
instance norm, then AdaIN from the layer's style ``(1 + y_s) * x + y_b`` (an affine of w).
Each block up-samples 2x (nearest + conv, or one transposed conv from 128 px on, NVIDIA's
``fused_scale='auto'``), then blurs with [1, 2, 1]; one toRGB at the final resolution.

Code layout of ``ws`` (``num_ws = 2 * log2(resolution) - 2``, as in StyleGAN2): layer 0 is
the constant's epilogue, layer 1 the 4x4 conv, and for every later block ``2k + 2`` its
up-sampling conv and ``2k + 3`` its second conv. Layer ``i`` has its own noise map, at
``2 ** (i // 2 + 2)`` px. The toRGB has no style.

Convention (truncation): ``psi`` moves the first ``truncation_cutoff`` layers' codes
towards ``w_avg`` (default 8, as v1 ships); ``None`` truncates every layer (as for SG2).
"""
from __future__ import annotations

import math

import torch
from torch import nn
import torch.nn.functional as F

from faceedit.core.errors import NetworkError

from .layers import EqualConv2d, EqualLinear, add_sizes
from .mapping import MappingMLP
from .ops import make_fir, upfirdn2d
from .stylegan2 import (Generator, _check_resolution, bind_defaults, channels_for, check_synthesis_args,
                        resolve_synthesis_path)

V1_TRUNCATION_CUTOFF = 8


def fused_up_kernel(weight: torch.Tensor) -> torch.Tensor:
    """``[out, in, 3, 3]`` conv weight -> the ``[in, out, 4, 4]`` kernel of NVIDIA's fused
    up-sampling (``conv_transpose2d``, stride 2, padding 1): the 3x3 kernel summed at its
    four one-pixel shifts.

    The transposed conv is the adjoint of a cross-correlation, so it equals nearest 2x
    up-sampling followed by the conv with the *spatially flipped* kernel (tested).
    """
    k = F.pad(weight.transpose(0, 1), [1, 1, 1, 1])
    return k[..., 1:, 1:] + k[..., :-1, 1:] + k[..., 1:, :-1] + k[..., :-1, :-1]


class StyledLayer(nn.Module):
    """One synthesis layer: [conv (up 2x + blur)], noise, bias, leaky ReLU, instance norm, AdaIN.

    Not ``layers.EqualConv2d``: v1 adds noise between the conv and the bias, and folds the
    leaky ReLU's gain sqrt 2 into the conv's run-time scale (the SG2 layers apply it after
    the activation), so the weights read from NVIDIA's files keep their meaning.
    """

    def __init__(self,
                 in_ch: int,                  # Input channels.
                 out_ch: int,                 # Output channels.
                 w_dim: int,                  # Dimensionality of the style code w.
                 resolution: int,             # Output resolution (noise map size).
                 conv: bool = True,           # False: the constant's layer (no conv, in_ch == out_ch).
                 up: str | None = None,       # None, 'nearest' (up-sample, conv) or 'transposed' (fused).
                 ):
        super().__init__()
        if up not in (None, "nearest", "transposed"):
            raise NetworkError(f"up must be None, 'nearest' or 'transposed', got {up!r}")
        if not conv and (up is not None or in_ch != out_ch):
            raise NetworkError("a layer without conv keeps its channels and resolution")
        self.up, self.resolution, self.channels = up, resolution, out_ch
        self.weight = nn.Parameter(torch.randn(out_ch, in_ch, 3, 3)) if conv else None
        self.scale = math.sqrt(2) / math.sqrt(in_ch * 9)
        self.noise_strength = nn.Parameter(torch.zeros(out_ch))
        self.bias = nn.Parameter(torch.zeros(out_ch))
        self.affine = EqualLinear(w_dim, 2 * out_ch)  # the paper's "A": w -> [y_s, y_b] (bias starts at 0)
        self.register_buffer("noise_const", torch.randn(1, 1, resolution, resolution))
        self.register_buffer("blur", make_fir((1, 2, 1)), persistent=False)

    @staticmethod
    def size(in_ch: int, out_ch: int, w_dim: int, resolution: int, conv: bool = True, *_, **__) -> tuple:
        """``(state elements, other buffer elements)`` of this layer, computed without building it."""
        own = (out_ch * in_ch * 9 if conv else 0) + 2 * out_ch + resolution ** 2  # weight, noise, bias, noise map
        return add_sizes(EqualLinear.size(w_dim, 2 * out_ch), (own, 3))

    def _conv(self, x: torch.Tensor) -> torch.Tensor:
        w = (self.weight * self.scale).to(x.dtype)
        if self.up == "transposed":
            x = F.conv_transpose2d(x, fused_up_kernel(w), stride=2, padding=1)
        else:
            if self.up == "nearest":
                x = F.interpolate(x, scale_factor=2, mode="nearest")
            x = F.conv2d(x, w, padding=1)
        if self.up is not None:
            x = upfirdn2d(x, self.blur, pad=(1, 1, 1, 1))
        return x

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise_mode: str = "const",
                noise: torch.Tensor | None = None) -> torch.Tensor:
        if self.weight is not None:
            x = self._conv(x)
        if noise is None and noise_mode == "random":
            noise = torch.randn(x.shape[0], 1, self.resolution, self.resolution, device=x.device, dtype=x.dtype)
        elif noise is None and noise_mode == "const":
            noise = self.noise_const
        if noise is not None:
            x = x + noise.to(x.dtype) * self.noise_strength.to(x.dtype).view(1, -1, 1, 1)
        x = F.leaky_relu(x + self.bias.to(x.dtype).view(1, -1, 1, 1), 0.2)
        x = F.instance_norm(x, eps=1e-8)
        ys, yb = self.affine(w).unsqueeze(-1).unsqueeze(-1).chunk(2, dim=1)
        return x * (ys + 1) + yb


class SynthesisNetwork1(nn.Module):
    """StyleGAN v1 synthesis: ``ws [N, num_ws, w_dim] -> image [N, 3, R, R]`` in about [-1, 1].

    ``layers[i]`` reads ``ws[:, i]`` and its AdaIN affine is ``layers[i].affine``.
    """

    arch = "stylegan1"

    def __init__(self,
                 w_dim: int,                  # Intermediate latent (W) dimensionality.
                 resolution: int,             # Output resolution (power of two, 16..1024).
                 channel_base: int = 16384,   # Channels at res r: min(channel_base // r, channel_max); 2 x fmap_base.
                 channel_max: int = 512,      # Maximum number of channels in any layer.
                 img_channels: int = 3,       # Number of output colour channels.
                 fused_scale: bool | str = "auto",  # Transposed-conv up-sampling: True, False or 'auto' (>= 128 px).
                 ):
        super().__init__()
        if not (fused_scale == "auto" or isinstance(fused_scale, bool)):
            raise NetworkError(f"fused_scale must be True, False or 'auto', got {fused_scale!r}")
        self.log_res = _check_resolution(resolution)
        self.w_dim, self.resolution = w_dim, resolution
        self.num_ws = 2 * self.log_res - 2
        ch = self.channels = channels_for(resolution, channel_base, channel_max)
        self.const = nn.Parameter(torch.ones(1, ch[4], 4, 4))
        self.layers = nn.ModuleList([StyledLayer(ch[4], ch[4], w_dim, 4, conv=False),
                                     StyledLayer(ch[4], ch[4], w_dim, 4)])
        for i in range(3, self.log_res + 1):
            r = 2 ** i
            fused = fused_scale is True or (fused_scale == "auto" and r >= 128)
            self.layers.append(StyledLayer(ch[r // 2], ch[r], w_dim, r, up="transposed" if fused else "nearest"))
            self.layers.append(StyledLayer(ch[r], ch[r], w_dim, r))
        self.torgb = EqualConv2d(ch[resolution], img_channels, 1)

    @staticmethod
    def size(w_dim: int, resolution: int, channel_base: int = 16384, channel_max: int = 512, img_channels: int = 3,
             *_, **__) -> tuple:
        """``(state elements, other buffer elements)`` of this network, computed without building it."""
        log_res = _check_resolution(resolution)
        ch = channels_for(resolution, channel_base, channel_max)
        parts = [(ch[4] * 16, 0), StyledLayer.size(ch[4], ch[4], w_dim, 4, conv=False),
                 StyledLayer.size(ch[4], ch[4], w_dim, 4)]
        for r in (2 ** i for i in range(3, log_res + 1)):
            parts += [StyledLayer.size(ch[r // 2], ch[r], w_dim, r), StyledLayer.size(ch[r], ch[r], w_dim, r)]
        return add_sizes(*parts, EqualConv2d.size(ch[resolution], img_channels, 1))

    def noise_buffers(self) -> list:
        """The constant noise maps, one per layer (``num_ws`` of them), in layer order."""
        return [layer.noise_const for layer in self.layers]

    def forward(self, ws: torch.Tensor, noise_mode: str = "const", noise: list | None = None,
                path: str = "reference", *, fused=None) -> torch.Tensor:
        """Synthesise images.

        Args:
            ws: ``[N, num_ws, w_dim]`` per-layer codes.
            noise_mode: ``const`` (the stored maps), ``random`` or ``none``.
            noise: optional explicit list of ``num_ws`` noise maps ``[N or 1, 1, r, r]``,
                overriding ``noise_mode``; used by inversion when noise is optimised.
            path: one of :data:`networks.stylegan2.SYNTHESIS_PATHS`, accepted for the StyleGAN2
                seam (its fast paths); v1 has one path and ignores the choice.
            fused: deprecated spelling of ``path``, validated and ignored the same way.

        Raises:
            NetworkError: an unknown ``path``, wrong ``ws`` shape, unknown ``noise_mode``,
                wrong number of noise maps.
        """
        resolve_synthesis_path(path, fused)
        check_synthesis_args(ws, self.num_ws, self.w_dim, noise_mode, noise, self.num_ws)
        x = self.const.to(ws.dtype).expand(ws.shape[0], -1, -1, -1)
        for i, layer in enumerate(self.layers):
            x = layer(x, ws[:, i], noise_mode, None if noise is None else noise[i])
        return self.torgb(x)


class MappingMLP1(MappingMLP):
    """The v1 mapping: StyleGAN2's MLP (the same function of the same weights), with v1's
    truncation default (the first 8 layers)."""

    def forward(self, z: torch.Tensor, truncation_psi: float = 1.0,
                truncation_cutoff: int | None = V1_TRUNCATION_CUTOFF, update_w_avg: bool = False) -> torch.Tensor:
        return super().forward(z, truncation_psi, truncation_cutoff, update_w_avg)


def style_mix(ws: torch.Tensor, ws2: torch.Tensor, crossover: int) -> torch.Tensor:
    """Style mixing: layers ``< crossover`` from ``ws``, layers ``>= crossover`` from ``ws2``.

    Raises:
        NetworkError: the two code sets differ in shape, or ``crossover`` is outside 0..num_ws.
    """
    if ws.ndim != 3 or ws.shape != ws2.shape:
        raise NetworkError(f"style mixing needs two [N, num_ws, w_dim] code sets of one shape, got "
                         f"{tuple(ws.shape)} and {tuple(ws2.shape)}")
    if not 0 <= int(crossover) <= ws.shape[1]:
        raise NetworkError(f"crossover must be a layer index in 0..{ws.shape[1]}, got {crossover}")
    return torch.cat([ws[:, :crossover], ws2[:, crossover:]], dim=1)


class Generator1(nn.Module):
    """StyleGAN v1: mapping + synthesis with the seam inversion and editing use.

    Attributes:
        mapping: ``MappingMLP1`` (space W).
        synthesis: ``SynthesisNetwork1``.
        num_ws, w_dim, z_dim, resolution, mapping_kind (``"mlp"``), arch (``"stylegan1"``).
        config: the constructor's keyword arguments plus ``arch`` (what native checkpoints store).
    """

    arch = "stylegan1"
    mapping_kind = "mlp"

    def __init__(self,
                 z_dim: int = 512,            # Input latent (Z) dimensionality.
                 w_dim: int = 512,            # Intermediate latent (W) dimensionality.
                 resolution: int = 1024,      # Output resolution.
                 mapping_layers: int = 8,     # FC layers of the mapping.
                 mapping_lr_mul: float = 0.01,  # Learning-rate multiplier of the mapping.
                 channel_base: int = 16384,   # Channel multiplier (16384 = NVIDIA's fmap_base 8192).
                 channel_max: int = 512,      # Maximum channels.
                 img_channels: int = 3,       # Output colour channels.
                 fused_scale: bool | str = "auto",  # Transposed-conv up-sampling: True, False or 'auto' (>= 128 px).
                 ):
        super().__init__()
        self.synthesis = SynthesisNetwork1(w_dim, resolution, channel_base, channel_max, img_channels, fused_scale)
        self.num_ws, self.w_dim, self.z_dim, self.resolution = self.synthesis.num_ws, w_dim, z_dim, resolution
        self.mapping = MappingMLP1(z_dim, w_dim, self.num_ws, mapping_layers, mapping_lr_mul)
        self.config = dict(arch=self.arch, z_dim=z_dim, w_dim=w_dim, resolution=resolution,
                           mapping_layers=mapping_layers, mapping_lr_mul=mapping_lr_mul, channel_base=channel_base,
                           channel_max=channel_max, img_channels=img_channels, fused_scale=fused_scale)

    @classmethod
    def size(cls, **kwargs) -> tuple:
        """``(state elements, other buffer elements)`` of ``Generator1(**kwargs)``, computed without
        building it (see ``Generator.size``)."""
        a = bind_defaults(cls, kwargs)
        num_ws = 2 * _check_resolution(a["resolution"]) - 2
        return add_sizes(SynthesisNetwork1.size(a["w_dim"], a["resolution"], a["channel_base"], a["channel_max"],
                                                a["img_channels"]),
                         MappingMLP1.size(a["z_dim"], a["w_dim"], num_ws, a["mapping_layers"]))

    # The same functions of mapping and synthesis as StyleGAN2's: z_shape, the [num_ws, w_dim] w_avg, seeded z.
    z_shape = Generator.z_shape
    w_avg = Generator.w_avg
    sample_z = Generator.sample_z

    def forward(self, z: torch.Tensor, truncation_psi: float = 1.0,
                truncation_cutoff: int | None = V1_TRUNCATION_CUTOFF, noise_mode: str = "const",
                mixing_z: torch.Tensor | None = None, mixing_cutoff: int | None = None) -> torch.Tensor:
        """z -> image; with ``mixing_z``, layers from ``mixing_cutoff`` (default ``num_ws // 2``) use its codes."""
        ws = self.mapping(z, truncation_psi, truncation_cutoff)
        if mixing_z is not None:
            ws2 = self.mapping(mixing_z, truncation_psi, truncation_cutoff)
            ws = style_mix(ws, ws2, self.num_ws // 2 if mixing_cutoff is None else mixing_cutoff)
        return self.synthesis(ws, noise_mode=noise_mode)
