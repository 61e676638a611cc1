"""Mapping networks: StyleGAN2's MLP (space W) and TransStyleGAN's transformer (space W++).

Both return per-layer codes ``ws`` shaped ``[N, num_ws, w_dim]`` and keep a running mean
``w_avg`` used for truncation and as the start of inversion. They differ in their input:

* ``MappingMLP`` takes one ``z`` per image, ``[N, z_dim]``; every layer gets the same code.
* ``MappingTransformer`` takes one ``z`` per synthesis layer, ``[N, num_ws, z_dim]``; the
  tokens attend to each other, so the layers' codes differ but are coupled.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from faceedit.core.errors import NetworkError

from .layers import EqualLinear, add_sizes, normalize_2nd_moment


def _truncate(ws: torch.Tensor, w_avg: torch.Tensor, psi: float, cutoff: int | None) -> torch.Tensor:
    if psi == 1:
        return ws
    if w_avg.shape[-1] != ws.shape[-1] or w_avg.numel() not in (ws.shape[-1], ws.shape[1] * ws.shape[2]):
        raise NetworkError(f"w_avg shape {tuple(w_avg.shape)} does not fit ws {tuple(ws.shape)}")
    trunc = torch.lerp(w_avg.to(ws.dtype).reshape(1, -1, ws.shape[-1]).expand_as(ws), ws, psi)
    if cutoff is None:
        return trunc
    return torch.cat([trunc[:, :cutoff], ws[:, cutoff:]], dim=1)


class MappingMLP(nn.Module):
    """StyleGAN2 mapping: normalised z through ``num_layers`` leaky-ReLU FC layers."""

    kind = "mlp"

    def __init__(self,
                 z_dim: int,                  # Input latent (Z) dimensionality.
                 w_dim: int,                  # Intermediate latent (W) dimensionality.
                 num_ws: int,                 # Number of per-layer codes to broadcast to.
                 num_layers: int = 8,         # Number of FC layers.
                 lr_mul: float = 0.01,        # Learning-rate multiplier of the FC layers.
                 w_avg_beta: float = 0.995,   # Decay of the tracked W mean during training.
                 ):
        super().__init__()
        self.z_dim, self.w_dim, self.num_ws = z_dim, w_dim, num_ws
        self.w_avg_beta = w_avg_beta
        dims = [z_dim] + [w_dim] * num_layers
        self.net = nn.Sequential(*[EqualLinear(a, b, lr_mul=lr_mul, activation="lrelu")
                                   for a, b in zip(dims[:-1], dims[1:])])
        self.register_buffer("w_avg", torch.zeros(w_dim))

    @staticmethod
    def size(z_dim: int, w_dim: int, num_ws: int, num_layers: int = 8, *_, **__) -> tuple:
        """``(state elements, other buffer elements)`` of this mapping, computed without building it."""
        (first, _), (rest, _) = EqualLinear.size(z_dim, w_dim), EqualLinear.size(w_dim, w_dim)
        return first + rest * (num_layers - 1) + w_dim, 0  # the layers, then w_avg

    @property
    def z_shape(self) -> tuple:
        return (self.z_dim,)

    def forward(self, z: torch.Tensor, truncation_psi: float = 1.0,
                truncation_cutoff: int | None = None, update_w_avg: bool = False) -> torch.Tensor:
        if z.ndim != 2 or z.shape[1] != self.z_dim:
            raise NetworkError(f"MLP mapping expects z of shape [N, {self.z_dim}], got {tuple(z.shape)}")
        w = self.net(normalize_2nd_moment(z))
        if update_w_avg:
            self.w_avg.copy_(w.detach().float().mean(0).lerp(self.w_avg, self.w_avg_beta))
        ws = w.unsqueeze(1).repeat(1, self.num_ws, 1)
        return _truncate(ws, self.w_avg, truncation_psi, truncation_cutoff)


class _TokenBlock(nn.Module):
    """Pre-norm transformer block; the layer norms span tokens and channels together."""

    def __init__(self, num_tokens: int, dim: int, num_heads: int, mlp_ratio: float, lr_mul: float):
        super().__init__()
        if dim % num_heads:
            raise NetworkError(f"transformer width {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.norm1 = nn.LayerNorm([num_tokens, dim])
        self.qkv = EqualLinear(dim, 3 * dim, lr_mul=lr_mul)
        self.proj = EqualLinear(dim, dim, lr_mul=lr_mul)
        self.norm2 = nn.LayerNorm([num_tokens, dim])
        hidden = int(dim * mlp_ratio)
        self.fc1 = EqualLinear(dim, hidden, lr_mul=lr_mul)
        self.fc2 = EqualLinear(hidden, dim, lr_mul=lr_mul)

    @staticmethod
    def size(num_tokens: int, dim: int, num_heads: int, mlp_ratio: float, *_, **__) -> tuple:
        """``(state elements, other buffer elements)`` of this block, computed without building it."""
        hidden = int(dim * mlp_ratio)
        norms = (4 * num_tokens * dim, 0)  # two layer norms, weight and bias over [num_tokens, dim]
        return add_sizes(norms, EqualLinear.size(dim, 3 * dim), EqualLinear.size(dim, dim),
                         EqualLinear.size(dim, hidden), EqualLinear.size(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(n, t, 3, self.num_heads, d // self.num_heads).unbind(2)
        a = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        x = x + self.proj(a.transpose(1, 2).reshape(n, t, d))
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


class MappingTransformer(nn.Module):
    """TransStyleGAN's W++ mapping: one token per synthesis layer.

    Token ``i`` is the normalised ``z_i`` concatenated with the one-hot id of layer ``i``,
    embedded to the model width, passed through ``num_blocks`` residual attention blocks
    (layer norm over the whole ``[num_tokens, width]`` slab, as in the reference), and
    projected to one ``w_dim`` code per layer.
    """

    kind = "transformer"

    def __init__(self,
                 z_dim: int,                  # Per-token input latent dimensionality.
                 w_dim: int,                  # Output code dimensionality.
                 num_ws: int,                 # Number of tokens = number of synthesis layers.
                 num_blocks: int = 4,         # Attention blocks.
                 num_heads: int = 4,          # Attention heads per block.
                 mlp_ratio: float = 2.0,      # Hidden width of the GELU MLP over the model width.
                 lr_mul: float = 0.01,        # Learning-rate multiplier (as for the MLP mapping).
                 w_avg_beta: float = 0.995,   # Decay of the tracked per-layer mean.
                 ):
        super().__init__()
        self.z_dim, self.w_dim, self.num_ws = z_dim, w_dim, num_ws
        self.w_avg_beta = w_avg_beta
        self.embed = EqualLinear(z_dim + num_ws, w_dim, lr_mul=lr_mul)
        self.blocks = nn.ModuleList([_TokenBlock(num_ws, w_dim, num_heads, mlp_ratio, lr_mul)
                                     for _ in range(num_blocks)])
        self.out = EqualLinear(w_dim, w_dim, lr_mul=lr_mul)
        self.register_buffer("token_ids", torch.eye(num_ws), persistent=False)
        self.register_buffer("w_avg", torch.zeros(num_ws, w_dim))

    @staticmethod
    def size(z_dim: int, w_dim: int, num_ws: int, num_blocks: int = 4, num_heads: int = 4, mlp_ratio: float = 2.0,
             *_, **__) -> tuple:
        """``(state elements, other buffer elements)`` of this mapping, computed without building it."""
        block = _TokenBlock.size(num_ws, w_dim, num_heads, mlp_ratio)
        return add_sizes(EqualLinear.size(z_dim + num_ws, w_dim), (block[0] * num_blocks, block[1] * num_blocks),
                         EqualLinear.size(w_dim, w_dim), (num_ws * w_dim, num_ws * num_ws))

    @property
    def z_shape(self) -> tuple:
        return (self.num_ws, self.z_dim)

    def forward(self, z: torch.Tensor, truncation_psi: float = 1.0,
                truncation_cutoff: int | None = None, update_w_avg: bool = False) -> torch.Tensor:
        if z.ndim != 3 or z.shape[1:] != (self.num_ws, self.z_dim):
            raise NetworkError(f"transformer mapping expects z of shape [N, {self.num_ws}, {self.z_dim}] "
                               f"(one z per synthesis layer), got {tuple(z.shape)}")
        ids = self.token_ids.to(z.dtype).expand(z.shape[0], -1, -1)
        x = self.embed(torch.cat([normalize_2nd_moment(z), ids], dim=2))
        for block in self.blocks:
            x = block(x)
        ws = self.out(x)
        if update_w_avg:
            self.w_avg.copy_(ws.detach().float().mean(0).lerp(self.w_avg, self.w_avg_beta))
        return _truncate(ws, self.w_avg, truncation_psi, truncation_cutoff)
