"""Low-level StyleGAN2 operations in plain PyTorch.

Everything here is the reference path: it runs on CPU and CUDA with no compiled
extension. Faster variants live beside the modules that use them and are tested
against these functions.

Convention (all functions in this file):
    * Tensors are NCHW, float.
    * FIR filters are separable 1-D taps, normalised to sum 1 (then scaled by ``gain``).
    * ``upfirdn2d`` follows the usual definition: insert ``up - 1`` zeros after each
      sample, pad (``pad = (x0, x1, y0, y1)``, negative values crop), convolve with the
      *flipped* filter (a true convolution, not a correlation), keep every ``down``-th
      sample. Pixel centres sit at integer + 0.5, so a 2x up-sample with the 4-tap
      [1, 3, 3, 1] filter and pad (2, 1) is centred and shift-free.
"""
from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F

from faceedit.core.errors import NetworkError


def make_fir(taps=(1, 3, 3, 1), *, device=None) -> torch.Tensor:
    """Normalised 1-D FIR filter (sum 1) as a float32 tensor."""
    k = torch.as_tensor(taps, dtype=torch.float32, device=device)
    if k.ndim != 1 or k.numel() < 1:
        raise NetworkError(f"FIR taps must be a non-empty 1-D sequence, got shape {tuple(k.shape)}")
    return k / k.sum()


def upfirdn2d(x: torch.Tensor, fir: torch.Tensor, *, up: int = 1, down: int = 1,
              pad=(0, 0, 0, 0), gain: float = 1.0) -> torch.Tensor:
    """Up-sample, FIR-filter and down-sample a batch of images (see module convention).

    Args:
        x: ``[N, C, H, W]`` input.
        fir: 1-D separable filter taps (already normalised).
        up: integer up-sampling factor (zero insertion).
        down: integer down-sampling factor (decimation).
        pad: ``(x0, x1, y0, y1)`` padding applied after up-sampling.
        gain: overall gain; the filter is scaled by ``gain`` (use ``up ** 2`` for
            up-sampling so the mean is preserved).
    """
    if x.ndim != 4:
        raise NetworkError(f"upfirdn2d expects [N, C, H, W], got {tuple(x.shape)}")
    n, c, h, w = x.shape
    if up > 1:
        x = x.reshape(n, c, h, 1, w, 1)
        x = F.pad(x, [0, up - 1, 0, 0, 0, up - 1])
        x = x.reshape(n, c, h * up, w * up)
    x0, x1, y0, y1 = pad
    x = F.pad(x, [max(x0, 0), max(x1, 0), max(y0, 0), max(y1, 0)])
    x = x[:, :, max(-y0, 0): x.shape[2] - max(-y1, 0), max(-x0, 0): x.shape[3] - max(-x1, 0)]
    f = (fir * (gain ** 0.5)).to(x.dtype).flip(0)  # flip: true convolution
    kx = f.view(1, 1, 1, -1).repeat(c, 1, 1, 1)
    ky = f.view(1, 1, -1, 1).repeat(c, 1, 1, 1)
    x = F.conv2d(x, kx, groups=c)
    x = F.conv2d(x, ky, groups=c)
    if down > 1:
        x = x[:, :, ::down, ::down]
    return x


def upsample2d(x: torch.Tensor, fir: torch.Tensor) -> torch.Tensor:
    """2x up-sampling with the FIR filter, shape-exact (``H -> 2H``)."""
    p = fir.numel() - 2
    return upfirdn2d(x, fir, up=2, pad=((p + 1) // 2 + 1, p // 2, (p + 1) // 2 + 1, p // 2), gain=4)


def downsample2d(x: torch.Tensor, fir: torch.Tensor) -> torch.Tensor:
    """2x down-sampling with the FIR filter, shape-exact (``H -> H/2``)."""
    p = fir.numel() - 2
    return upfirdn2d(x, fir, down=2, pad=((p + 1) // 2, p // 2, (p + 1) // 2, p // 2))


def lrelu_gain(x: torch.Tensor, slope: float = 0.2, gain: float = math.sqrt(2)) -> torch.Tensor:
    """Leaky ReLU followed by StyleGAN's variance-preserving gain (sqrt 2)."""
    return F.leaky_relu(x, slope) * gain


def modulated_conv2d(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, *,
                     demodulate: bool = True, up: bool = False, fir: torch.Tensor | None = None,
                     fused: bool = True, eps: float = 1e-8) -> torch.Tensor:
    """StyleGAN2 modulated convolution (weight modulation and demodulation).

    Args:
        x: ``[N, Cin, H, W]`` activations.
        weight: ``[Cout, Cin, k, k]`` weights, already multiplied by the equalised-lr scale.
        styles: ``[N, Cin]`` per-sample input-channel scales.
        demodulate: divide each output channel by the norm of its modulated weights.
        up: 2x up-sampling (transposed convolution followed by the FIR blur).
        fir: FIR taps for ``up``.
        fused: exactly NVIDIA's ``fused_modconv``: ``True`` folds the styles into
            per-sample weights and runs one grouped convolution (the synthesis path
            ``reference``). ``False`` scales the activations instead, runs one shared
            convolution and computes the demodulation coefficients with one small matmul
            (the synthesis path ``shared``); mathematically identical, equal to float
            rounding, and much faster for large batches (and under bf16 autocast /
            ``channels_last``). The synthesis network's public keyword is ``path``.
    Returns:
        ``[N, Cout, H', W']``.
    """
    if x.ndim != 4 or weight.ndim != 4 or styles.ndim != 2:
        raise NetworkError(f"modulated_conv2d expects x [N, Cin, H, W], weight [Cout, Cin, k, k], styles [N, Cin]; "
                           f"got {tuple(x.shape)}, {tuple(weight.shape)}, {tuple(styles.shape)}")
    n, cin, h, w = x.shape
    cout, cin_w, kh, kw = weight.shape
    if up and fir is None:
        raise NetworkError("modulated_conv2d(up=True) needs the FIR taps `fir`")
    if cin_w != cin or styles.shape != (n, cin):
        raise NetworkError(f"modulated_conv2d: x {tuple(x.shape)}, weight {tuple(weight.shape)}, "
                           f"styles {tuple(styles.shape)} do not agree")
    dcoefs = None
    if fused:
        wmod = weight.unsqueeze(0) * styles.view(n, 1, cin, 1, 1)  # [N, Cout, Cin, k, k]
        if demodulate:
            dcoefs = (wmod.square().sum(dim=[2, 3, 4]) + eps).rsqrt()  # [N, Cout]
            wmod = wmod * dcoefs.view(n, cout, 1, 1, 1)
        x = x.reshape(1, n * cin, h, w)
        if up:
            wt = wmod.transpose(1, 2).reshape(n * cin, cout, kh, kw)
            x = F.conv_transpose2d(x, wt.to(x.dtype), stride=2, groups=n)
        else:
            x = F.conv2d(x, wmod.reshape(n * cout, cin, kh, kw).to(x.dtype), padding=kh // 2, groups=n)
        x = x.reshape(n, cout, *x.shape[2:])
    else:
        x, dcoefs = modulated_conv2d_shared(x, weight, styles, demodulate=demodulate, up=up, fir=fir, eps=eps)
        if dcoefs is not None:
            x = x * dcoefs.to(x.dtype).view(n, cout, 1, 1)
        return x
    if up:
        # transposed 3x3 stride-2 conv gives 2H+1; the blur brings it to exactly 2H.
        fw = fir.numel()
        p0, p1 = (fw + 1) // 2 - 1, (fw - 2) // 2
        x = upfirdn2d(x, fir, pad=(p0, p1, p0, p1), gain=4)
    return x


def modulated_conv2d_shared(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, *,
                            demodulate: bool = True, up: bool = False, fir: torch.Tensor | None = None,
                            eps: float = 1e-8) -> tuple:
    """The shared-conv (``fused=False``) modulated convolution, leaving the demodulation to the caller.

    Scales the activations by the styles, runs one convolution shared by the whole batch
    (plus the FIR blur when ``up``), and returns the demodulation coefficients unapplied
    so that the caller can fold them into its epilogue (bias, noise, activation) in one
    pass. ``out * dcoefs[:, :, None, None]`` equals :func:`modulated_conv2d` to float rounding.

    Returns:
        ``(out [N, Cout, H', W'], dcoefs [N, Cout] in fp32 or None)``.
    """
    n, cin = x.shape[:2]
    cout, _, kh, _ = weight.shape
    dcoefs = None
    if demodulate:
        # sum_{i,k} (w_oik s_i)^2 = sum_i s_i^2 sum_k w_oik^2: one [N,Cin]x[Cin,Cout] matmul
        # instead of materialising the [N, Cout, Cin, k, k] modulated weights. Kept in fp32
        # under autocast: the coefficients set every layer's output scale.
        with _autocast_off(x.device.type):
            w2 = weight.float().square().sum(dim=[2, 3])  # [Cout, Cin]
            dcoefs = (styles.float().square() @ w2.t() + eps).rsqrt()  # [N, Cout]
    x = x * styles.to(x.dtype).view(n, cin, 1, 1)
    wt = weight.to(x.dtype)
    if up:
        x = F.conv_transpose2d(x, wt.transpose(0, 1), stride=2)
        fw = fir.numel()
        p0, p1 = (fw + 1) // 2 - 1, (fw - 2) // 2
        if p0 == p1:  # the 4-tap case: one depthwise conv with built-in padding
            x = F.conv2d(x, _fir2d(fir, x, gain=4), padding=p0, groups=x.shape[1])
        else:
            x = upfirdn2d(x, fir, pad=(p0, p1, p0, p1), gain=4)
    else:
        x = F.conv2d(x, wt, padding=kh // 2)
    return x, dcoefs


def _fir2d(fir: torch.Tensor, x: torch.Tensor, gain: float) -> torch.Tensor:
    """Depthwise 2-D kernel ``[C, 1, k, k]`` (flipped: a true convolution) for ``x``'s channels."""
    f = fir.flip(0)
    k = torch.outer(f, f) * gain
    return k.to(x.dtype).view(1, 1, *k.shape).expand(x.shape[1], 1, -1, -1).contiguous()


def upsample2d_fast(x: torch.Tensor, fir: torch.Tensor) -> torch.Tensor:
    """:func:`upsample2d` as one depthwise transposed convolution (stride 2, padding 1).

    Zero insertion, padding ``(2, 1)`` and a 4-tap convolution equal a stride-2 transposed
    convolution with the same kernel and padding 1; equal to float rounding (tested).
    Only for 4-tap filters; other lengths fall back to :func:`upsample2d`.
    """
    if fir.numel() != 4:
        return upsample2d(x, fir)
    k = torch.outer(fir, fir) * 4
    k = k.to(x.dtype).view(1, 1, 4, 4).expand(x.shape[1], 1, 4, 4).contiguous()
    return F.conv_transpose2d(x, k, stride=2, padding=1, groups=x.shape[1])


def _autocast_off(device_type: str):
    """``torch.autocast(device_type, enabled=False)``, or nothing where autocast does not exist (meta)."""
    try:
        return torch.autocast(device_type=device_type, enabled=False)
    except RuntimeError:
        return contextlib.nullcontext()
