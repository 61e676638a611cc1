"""pSp/e4e-family image encoder into W, W+ or W++, and e4e's latent discriminator.

Architecture (any power-of-two input resolution from 16 to 1024):

* **Backbone**: a 1x1 ``from_rgb`` conv, then residual down-sampling blocks (the
  discriminator's ``DiscBlock``: two 3x3 convs, FIR down-sampling, a 1x1 skip) from the
  input resolution down to ``bottom`` px (8 px, or 4 px for 16 px inputs). Channels follow
  NVIDIA's rule ``min(channel_base // res, channel_max)``, floored at ``channel_min``.
* **Feature pyramid** (pSp's FPN): the three smallest maps (``bottom``, ``2 bottom``,
  ``4 bottom`` px, e.g. 8/16/32 px for a 64 px input) are projected by 1x1 laterals to
  ``fpn_channels`` and merged top-down (up-sample the coarser map, add).
* **map2style heads**: one head per layer group -- *coarse* (codes 0-2, the 4-8 px
  synthesis layers) reads the smallest map, *medium* (codes 3-6, 16-32 px) the middle map,
  *fine* (codes 7+, 64 px and up) the largest. A head is a trunk of 3x3 convs with 2x
  average pooling down to 1x1, then one linear map per code of its group.
* **Offsets** (e4e): the heads predict raw vectors ``r_i``; the codes are
  ``w_i = mean_i + r_0 + r_i`` for ``i >= 1`` and ``w_0 = mean_0 + r_0``, where ``mean`` is
  the generator's ``w_avg`` (for W++ the per-layer W++ mean). ``r_1..`` are the *deltas*
  that e4e's delta penalty keeps small. In space ``w`` only ``r_0`` exists and the code is
  broadcast to every layer.

Codes are ordered as ``Generator.synthesis`` expects (see ``networks/stylegan2.py``).
The pyramid levels and groups are chosen from the resolution and ``num_ws`` alone, so the
same architecture runs at 64 px (our models) and at 1024 px (benchmarks).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from faceedit.core.errors import NetworkError

from .layers import EqualConv2d, EqualLinear
from .stylegan2 import DiscBlock

ENCODER_SPACES = ("w", "w+", "wpp")
# Code index ranges of pSp's groups for a 1024 px generator (18 codes): 0-2, 3-6, 7-17.
_GROUP_STARTS = (0, 3, 7)
GROUP_NAMES = ("coarse", "medium", "fine")


def encoder_groups(num_ws: int) -> dict:
    """Code indices per head: ``{'coarse': [0, 1, 2], 'medium': [3..6], 'fine': [7..]}``.

    Groups that would be empty for a small generator (no fine layers at 16-32 px) are left out.
    """
    if num_ws < 1:
        raise NetworkError(f"num_ws must be positive, got {num_ws}")
    ends = (*_GROUP_STARTS[1:], num_ws)
    out = {}
    for name, a, b in zip(GROUP_NAMES, _GROUP_STARTS, ends):
        idx = list(range(a, min(b, num_ws)))
        if idx:
            out[name] = idx
    return out


class _Head(nn.Module):
    """map2style: 3x3 conv + 2x average pool down to 1x1, then one linear map per code."""

    def __init__(self, in_ch: int, ch: int, in_res: int, num_codes: int, w_dim: int, out_gain: float):
        super().__init__()
        convs = []
        c = in_ch
        for _ in range(int(math.log2(in_res))):
            convs.append(EqualConv2d(c, ch, 3, activation="lrelu"))
            c = ch
        self.convs = nn.ModuleList(convs)
        self.linear = EqualLinear(c, num_codes * w_dim)
        with torch.no_grad():
            self.linear.weight.mul_(out_gain)   # start close to the mean code
        self.num_codes, self.w_dim = num_codes, w_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv in self.convs:
            x = F.avg_pool2d(conv(x), 2)
        return self.linear(x.flatten(1)).view(x.shape[0], self.num_codes, self.w_dim)


class Encoder(nn.Module):
    """Image ``[N, 3, R, R]`` in [-1, 1] -> codes ``[N, num_ws, w_dim]`` (see module docstring)."""

    def __init__(self,
                 resolution: int,              # Input resolution (power of two, 16..1024).
                 num_ws: int,                  # Number of per-layer codes of the generator.
                 w_dim: int,                   # Code dimensionality.
                 space: str = "w+",            # 'w' (one code, broadcast), 'w+' or 'wpp' (one per layer).
                 channel_base: int = 4096,     # Backbone channels: min(channel_base // res, channel_max).
                 channel_max: int = 256,       # Largest backbone width.
                 channel_min: int = 32,        # Smallest backbone width (matters at high resolution).
                 fpn_channels: int = 128,      # Width of the pyramid's merged maps.
                 head_channels: int = 128,     # Width of the map2style trunks.
                 out_gain: float = 0.1,        # Initial scale of the predicted offsets.
                 img_channels: int = 3,        # Input colour channels.
                 ):
        super().__init__()
        log = math.log2(resolution) if resolution > 0 else -1
        if log != int(log) or not 16 <= resolution <= 1024:
            raise NetworkError(f"encoder resolution must be a power of two in 16..1024, got {resolution}")
        if space not in ENCODER_SPACES:
            raise NetworkError(f"encoder space must be one of {ENCODER_SPACES}, got {space!r} "
                               f"(encode to z or wpp-z by optimising from the encoder's code instead)")
        self.config = dict(resolution=resolution, num_ws=num_ws, w_dim=w_dim, space=space,
                           channel_base=channel_base, channel_max=channel_max, channel_min=channel_min,
                           fpn_channels=fpn_channels, head_channels=head_channels, out_gain=out_gain,
                           img_channels=img_channels)
        self.resolution, self.num_ws, self.w_dim, self.space = resolution, num_ws, w_dim, space
        self.bottom = 8 if resolution >= 32 else 4
        ch = {2 ** i: max(min(channel_base // 2 ** i, channel_max), channel_min)
              for i in range(int(math.log2(self.bottom)), int(log) + 1)}
        self.channels = ch
        self.from_rgb = EqualConv2d(img_channels, ch[resolution], 1, activation="lrelu")
        self.blocks = nn.ModuleList([DiscBlock(ch[r], ch[r // 2])
                                     for r in (2 ** i for i in range(int(log), int(math.log2(self.bottom)), -1))])
        self.groups = {"coarse": [0]} if space == "w" else encoder_groups(num_ws)
        # Pyramid maps the heads read: coarse (bottom px), medium (2x), fine (4x); only those used.
        self.levels = [self.bottom * 2 ** i for i in range(len(self.groups))]
        self.laterals = nn.ModuleList([EqualConv2d(ch[r], fpn_channels, 1) for r in self.levels])
        self.heads = nn.ModuleDict({
            name: _Head(fpn_channels, head_channels, self.levels[GROUP_NAMES.index(name)], len(idx), w_dim, out_gain)
            for name, idx in self.groups.items()})
        # The mean code the offsets start from: G.w_avg (per layer for W++); set by from_generator().
        self.register_buffer("w_avg", torch.zeros(num_ws, w_dim))

    @classmethod
    def from_generator(cls, G, space: str = "w+", resolution: int | None = None, **kwargs) -> "Encoder":
        """An encoder sized for generator ``G``, its offsets centred on ``G.w_avg``.

        Raises:
            ValueError: ``wpp`` asked of a generator whose mapping is not a transformer.
        """
        if space == "wpp" and getattr(G, "mapping_kind", "mlp") != "transformer":
            raise NetworkError("space 'wpp' needs a generator with a transformer (W++) mapping, e.g. the "
                               "faces64-wpp model; use --space w or w+ for this one")
        E = cls(resolution or G.resolution, G.num_ws, G.w_dim, space, **kwargs)
        with torch.no_grad():
            E.w_avg.copy_(G.w_avg.detach().float().cpu())
        return E

    def pyramid(self, img: torch.Tensor) -> list:
        """The merged feature maps ``[coarse (bottom px), medium, fine]`` (those the heads use)."""
        x = self.from_rgb(img)
        feats = {self.resolution: x}
        for block in self.blocks:
            x = block(x)
            feats[x.shape[-1]] = x
        p = self.laterals[0](feats[self.levels[0]])
        out = [p]
        for lat, r in zip(self.laterals[1:], self.levels[1:]):
            p = F.interpolate(p, scale_factor=2, mode="bilinear", align_corners=False) + lat(feats[r])
            out.append(p)
        return out

    def forward(self, img: torch.Tensor, return_deltas: bool = False):
        """Encode images.

        Args:
            img: ``[N, 3, resolution, resolution]`` in about [-1, 1].
            return_deltas: also return the per-layer deltas ``r_1..`` (``[N, num_ws - 1, w_dim]``,
                empty for space ``w``) that e4e's delta penalty acts on.
        Returns:
            codes ``[N, num_ws, w_dim]`` (and the deltas).
        """
        if img.ndim != 4 or img.shape[1:] != (self.config["img_channels"], self.resolution, self.resolution):
            raise NetworkError(f"encoder expects images [N, {self.config['img_channels']}, {self.resolution}, "
                               f"{self.resolution}] in [-1, 1], got {tuple(img.shape)}; resize or align the "
                               f"faces to {self.resolution} px first")
        maps = self.pyramid(img)
        raw = torch.cat([self.heads[name](maps[GROUP_NAMES.index(name)]) for name in self.groups], dim=1)
        base = raw[:, :1]
        deltas = raw[:, 1:]
        if self.space == "w":
            codes = self.w_avg[:1].to(raw.dtype) + base.expand(-1, self.num_ws, -1)
        else:
            codes = self.w_avg.to(raw.dtype) + base + torch.cat([torch.zeros_like(base), deltas], dim=1)
        return (codes, deltas) if return_deltas else codes


class LatentDiscriminator(nn.Module):
    """e4e's latent discriminator: an MLP scoring codes as mapping outputs (real) or encoder outputs.

    For W and W+ it scores every layer's code on its own (``in_dim = w_dim``), as e4e does;
    for W++ the layers' codes are coupled, so it scores the whole ``[num_ws * w_dim]`` code.
    """

    def __init__(self,
                 in_dim: int,                  # Input features (w_dim, or num_ws * w_dim for W++).
                 hidden: int = 256,            # Hidden width.
                 num_layers: int = 4,          # Hidden layers.
                 ):
        super().__init__()
        dims = [in_dim] + [hidden] * num_layers
        self.net = nn.Sequential(*[EqualLinear(a, b, activation="lrelu") for a, b in zip(dims[:-1], dims[1:])])
        self.out = EqualLinear(hidden, 1)
        self.in_dim = in_dim

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        """``[N, num_ws, w_dim]`` -> logits ``[N * num_ws, 1]`` (per layer) or ``[N, 1]`` (joint)."""
        x = codes.reshape(-1, self.in_dim)
        return self.out(self.net(x))


__all__ = ["Encoder", "LatentDiscriminator", "encoder_groups", "ENCODER_SPACES", "GROUP_NAMES"]
