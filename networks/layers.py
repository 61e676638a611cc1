"""Equalised-learning-rate building blocks shared by every network."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from faceedit.core.errors import NetworkError

from .ops import lrelu_gain


class EqualLinear(nn.Module):
    """Fully connected layer with StyleGAN's equalised learning rate.

    The stored weight is N(0, 1/lr_mul); it is scaled by ``lr_mul / sqrt(in_features)``
    at run time, so every layer learns at the same speed under Adam.
    """

    def __init__(self,
                 in_features: int,          # Input features.
                 out_features: int,         # Output features.
                 bias: bool = True,         # Learn an additive bias.
                 bias_init: float = 0.0,    # Initial bias value.
                 lr_mul: float = 1.0,       # Learning-rate multiplier.
                 activation: str = "linear",  # 'linear' or 'lrelu' (leaky ReLU 0.2 with gain sqrt 2).
                 ):
        super().__init__()
        if activation not in ("linear", "lrelu"):
            raise NetworkError(f"activation must be 'linear' or 'lrelu', got {activation!r}")
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_mul)
        self.bias = nn.Parameter(torch.full([out_features], float(bias_init))) if bias else None
        self.scale = lr_mul / math.sqrt(in_features)
        self.lr_mul = lr_mul
        self.activation = activation
        self.in_features, self.out_features = in_features, out_features

    @staticmethod
    def size(in_features: int, out_features: int, bias: bool = True, *_, **__) -> tuple:
        """``(state elements, other buffer elements)`` of ``EqualLinear(in_features, out_features, bias)``,
        computed without building it (see ``Generator.size``)."""
        return in_features * out_features + (out_features if bias else 0), 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.in_features:
            raise NetworkError(f"EqualLinear expects last dim {self.in_features}, got {tuple(x.shape)}")
        w = self.weight.to(x.dtype) * self.scale
        b = None if self.bias is None else self.bias.to(x.dtype) * self.lr_mul
        x = F.linear(x, w, b)
        return lrelu_gain(x) if self.activation == "lrelu" else x

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, lr_mul={self.lr_mul}, act={self.activation}"


class EqualConv2d(nn.Module):
    """Plain convolution with equalised learning rate (used by the discriminator)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int,
                 bias: bool = True, activation: str = "linear"):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.scale = 1 / math.sqrt(in_channels * kernel_size ** 2)
        self.padding = kernel_size // 2
        self.activation = activation

    @staticmethod
    def size(in_channels: int, out_channels: int, kernel_size: int, bias: bool = True, *_, **__) -> tuple:
        """``(state elements, other buffer elements)`` of this conv, computed without building it."""
        return out_channels * in_channels * kernel_size ** 2 + (out_channels if bias else 0), 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = None if self.bias is None else self.bias.to(x.dtype)
        x = F.conv2d(x, self.weight.to(x.dtype) * self.scale, b, padding=self.padding)
        return lrelu_gain(x) if self.activation == "lrelu" else x


def add_sizes(*sizes: tuple) -> tuple:
    """The sum of ``(state elements, other buffer elements)`` pairs (the ``size`` methods' results)."""
    return sum(a for a, _ in sizes), sum(b for _, b in sizes)


def normalize_2nd_moment(x: torch.Tensor, dim: int = -1, eps: float = 1e-8) -> torch.Tensor:
    """Scale ``x`` to unit mean square along ``dim`` (StyleGAN's pixel norm of z)."""
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()
