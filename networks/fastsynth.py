"""Polyphase fast path of StyleGAN2 synthesis (``synthesis(ws, path="poly")``).

The reference up-sampling layer is a stride-2 transposed 3x3 convolution at the high
resolution followed by the 4x4 [1, 3, 3, 1] FIR blur; the shared-conv fast path
(``path="shared"``) keeps that structure. Both are slow on GPUs: the transposed conv and the
depthwise blur run at the high resolution with few channels, where no tensor-core kernel
is efficient. This module rewrites the whole synthesis network with operations that are:

* **Polyphase up-convolution.** Transposed conv + blur is one linear, stride-2
  shift-equivariant operator with an effective 6x6 kernel at the high resolution (the 3x3
  weight convolved with the 4x4 filter). Each of the four output phases (even/odd row and
  column) sees a 3x3 window of the *low*-resolution input, so the layer equals ONE dense
  3x3 convolution at the low resolution with ``4 * Cout`` outputs, followed by a
  depth-to-space shuffle (:func:`phase_shuffle`). The polyphase kernel is
  ``K[p, q] = M[p] @ w @ M[q]^T`` per (out, in) channel pair with ``M`` the 2x3x3 phase
  matrices of the filter (:func:`phase_matrices`): a differentiable function of the
  weight, cached per weight version when no gradient can flow to it. It costs 4x the
  multiply-adds of the transposed conv but runs as a large implicit GEMM and removes the
  blur pass.
* **Demodulation exactly as StyleGAN2:** the norm of the modulated 3x3 weight, per sample
  and output channel, applied after the convolution (one ``[N, Cin] x [Cin, Cout]``
  matmul, in fp32).
* **Skip up-sampling** of the RGB image by the same polyphase rule, written as shifted
  slices (:func:`upsample2d_poly`), in fp32.
* **toRGB** with the styles folded into per-sample 1x1 weights (a batched matmul; under
  ``torch.compile`` channel reductions that fuse with the producing epilogue): the
  activations are read once and never rescaled.
* **One epilogue** per conv (demodulation, noise, bias, leaky ReLU with its gain, clamp):
  no data-dependent Python branches, no host synchronisation, so ``torch.compile`` fuses
  each into one kernel (together with the next layer's input scaling and the shuffle).
* On CUDA the activations run ``channels_last`` (what cuDNN's tensor-core kernels use).

Equal to the reference path (``path="reference"``) up to float rounding, forward and backward
(``tests/test_fastsynth.py``). Only 4-tap filters are supported (StyleGAN2's).

Convention: NCHW tensors (the memory may be ``channels_last``); ``fir`` holds the 1-D taps
normalised to sum 1, as in :mod:`networks.ops`; phase ``p = 2 * py + px`` is the output
pixel ``(2 * m + py, 2 * n + px)``; the polyphase channels are phase-major
(channel ``p * Cout + c``).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from faceedit.core.errors import NetworkError

from .ops import _autocast_off

_SQRT2 = math.sqrt(2.0)

# M[p, k, a] = g[a + 2k - p - 1] (zero outside 0..3) with g = 2 * flip(fir); the index table
# below is that argument + 2, looked up in g padded by two zeros on each side.
_PHASE_INDEX = torch.tensor([[[a + 2 * k - p - 1 + 2 for a in range(3)] for k in range(3)] for p in range(2)])


_CONSTS: dict = {}


def _const_on(t: torch.Tensor, device) -> torch.Tensor:
    """A module constant on ``device``, copied there once (a host-to-device copy per call
    would wait for the GPU); under ``torch.compile`` the graph holds it as a constant."""
    if _compiling():
        return t.to(device)
    key = (id(t), str(device))
    if key not in _CONSTS:
        _CONSTS[key] = t.to(device)
    return _CONSTS[key]


def _check_fir(fir: torch.Tensor) -> None:
    if fir.ndim != 1 or fir.numel() != 4:
        raise NetworkError(f"the polyphase path supports 4-tap FIR filters (StyleGAN2's [1, 3, 3, 1]); got "
                           f"shape {tuple(fir.shape)}; use path='shared' or path='reference' for other filters")


def phase_matrices(fir: torch.Tensor) -> torch.Tensor:
    """The ``[2, 3, 3]`` phase matrices of 2x up-sampling by transposed conv + ``fir`` blur.

    For one spatial axis, transposed conv (stride 2, 3 taps ``w``) then the blur (pad 1,
    gain 2 per axis) gives ``out[2m + p] = sum_k x[m + k - 1] * (M[p] @ w)[k]``.
    """
    _check_fir(fir)
    g = F.pad(fir.flip(0) * 2, (2, 2))
    return g[_const_on(_PHASE_INDEX, fir.device)]


def upconv_poly_weight(weight: torch.Tensor, fir: torch.Tensor) -> torch.Tensor:
    """Polyphase kernel of the up-sampling conv: ``[Cout, Cin, 3, 3] -> [4 * Cout, Cin, 3, 3]``.

    ``phase_shuffle(conv2d(x, K, padding=1))`` equals ``conv_transpose2d(x, weight^T,
    stride=2)`` followed by ``upfirdn2d(., fir, pad=(1, 1, 1, 1), gain=4)``. Differentiable
    in ``weight`` (and ``fir``).
    """
    if weight.ndim != 4 or weight.shape[2:] != (3, 3):
        raise NetworkError(f"upconv_poly_weight expects a [Cout, Cin, 3, 3] weight, got {tuple(weight.shape)}")
    cout, cin = weight.shape[:2]
    m = phase_matrices(fir).to(weight.dtype)
    k = torch.einsum("pka,oiab,qlb->pqoikl", m, weight, m)   # [2, 2, Cout, Cin, 3, 3]
    return k.reshape(4 * cout, cin, 3, 3)


# A[p, k, a] = 1 where a stride-2 transposed conv puts weight tap a of input x[m - 1 + k]
# into its output 2m + p: the 2x2-window form of the transposed conv (T[2m+p], m = 0..H).
_TCONV_PHASES = torch.tensor([[[1.0 if (a - p) % 2 == 0 and k == 1 - (a - p) // 2 else 0.0 for a in range(3)]
                               for k in range(2)] for p in range(2)])


def upconv_phase2_weight(weight: torch.Tensor) -> torch.Tensor:
    """The stride-2 transposed conv as one 2x2 conv: ``[Cout, Cin, 3, 3] -> [4 * Cout, Cin, 2, 2]``.

    ``conv2d(x, K, padding=1)`` gives the four phases of ``conv_transpose2d(x, weight^T,
    stride=2)`` (``[N, 4 Cout, H + 1, W + 1]``, phase-major; the odd phases' last row and
    column are zero); ``padding=2`` adds a zero row and column in front (and one at the
    end), which :func:`blur_phases` takes. 16/9 of the transposed conv's multiply-adds,
    against 4x for the 3x3 polyphase kernel.
    """
    if weight.ndim != 4 or weight.shape[2:] != (3, 3):
        raise NetworkError(f"upconv_phase2_weight expects a [Cout, Cin, 3, 3] weight, got {tuple(weight.shape)}")
    cout, cin = weight.shape[:2]
    a = _const_on(_TCONV_PHASES, weight.device).to(weight.dtype)
    return torch.einsum("pka,oiab,qlb->pqoikl", a, weight, a).reshape(4 * cout, cin, 2, 2)


def blur_phases(t: torch.Tensor, fir: torch.Tensor) -> torch.Tensor:
    """The FIR blur (pad 1, gain 4) of a transposed conv's output held as phases, shuffled.

    ``t``: ``conv2d(x, upconv_phase2_weight(w), padding=2)``, ``[N, 4C, H + 3, W + 3]``;
    shuffled, it is the transposed conv's output ``T`` shifted by two pixels with zeros
    around. Returns the up-sampled ``[N, C, 2H, 2W]``: sixteen shifted slices of the
    shuffled ``t`` summed, with no intermediate tensor and no concatenation, so that
    ``torch.compile`` folds the shuffle, the blur and the layer's epilogue into one kernel
    (slow in eager mode: use ``poly3`` there).
    """
    _check_fir(fir)
    h, w = t.shape[2] - 3, t.shape[3] - 3
    g = fir.flip(0).to(t.dtype) * 2
    g2 = torch.outer(g, g)
    big = phase_shuffle(t)                         # T[Y, X] at [Y + 2, X + 2]
    z = None
    for ty in range(4):                            # z[Y] = sum_t g[t] T[Y + t - 1]
        for tx in range(4):
            term = g2[ty, tx] * big[:, :, ty + 1:ty + 1 + 2 * h, tx + 1:tx + 1 + 2 * w]
            z = term if z is None else z + term
    return z


def phase_shuffle(t: torch.Tensor) -> torch.Tensor:
    """Depth-to-space for phase-major channels: ``[N, 4C, H, W] -> [N, C, 2H, 2W]``.

    ``out[n, c, 2m + py, 2k + px] = t[n, (2 * py + px) * C + c, m, k]``. Keeps ``channels_last``.
    """
    n, c4, h, w = t.shape
    if c4 % 4:
        raise NetworkError(f"phase_shuffle expects 4 * C channels, got {c4}")
    c = c4 // 4
    if t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous():  # one NHWC copy
        y = t.permute(0, 2, 3, 1).reshape(n, h, w, 2, 2, c).permute(0, 1, 3, 2, 4, 5)
        return y.reshape(n, 2 * h, 2 * w, c).permute(0, 3, 1, 2)
    return t.reshape(n, 2, 2, c, h, w).permute(0, 3, 4, 1, 5, 2).reshape(n, c, 2 * h, 2 * w)


def upsample2d_poly(x: torch.Tensor, fir: torch.Tensor) -> torch.Tensor:
    """2x FIR up-sampling (equal to :func:`networks.ops.upsample2d`) as shifted slices.

    Per axis, with ``g = 2 * flip(fir)``: ``out[2m] = g0 x[m-1] + g2 x[m]`` and
    ``out[2m+1] = g1 x[m] + g3 x[m+1]`` (zero outside the image). Pointwise work only:
    ``torch.compile`` fuses it with the skip addition.
    """
    _check_fir(fir)
    g = fir.flip(0).to(x.dtype) * 2
    if _compiling():  # zero-stuffing and a 16-tap stencil: one fused kernel, no concatenation
        n, c, h, w = x.shape
        u = F.pad(x.reshape(n, c, h, 1, w, 1), (0, 1, 0, 0, 0, 1)).reshape(n, c, 2 * h, 2 * w)
        u = F.pad(u, (2, 1, 2, 1))                 # out[Y] = sum_t g[t] u[Y + t - 2]
        g2 = torch.outer(g, g)
        out = None
        for ty in range(4):
            for tx in range(4):
                term = g2[ty, tx] * u[:, :, ty:ty + 2 * h, tx:tx + 2 * w]
                out = term if out is None else out + term
        return out
    for dim in (3, 2):
        n = x.shape[dim]
        xp = F.pad(x, (1, 1) if dim == 3 else (0, 0, 1, 1))
        left, mid, right = xp.narrow(dim, 0, n), xp.narrow(dim, 1, n), xp.narrow(dim, 2, n)
        even = g[0] * left + g[2] * mid
        odd = g[1] * mid + g[3] * right
        x = torch.stack([even, odd], dim=dim + 1).flatten(dim, dim + 1)
    return x


def _weights(layer, up: str | None, channels_last: bool = False) -> tuple:
    """(conv kernel, per (out, in) sum of squared 3x3 taps) of a styled conv, cached when possible.

    The cache is used only where no gradient can reach the weight and outside
    ``torch.compile`` tracing (there the few small ops are part of the graph); it is keyed
    by the parameter's version counter, so in-place updates (optimiser steps, loading)
    invalidate it, except those that bypass the counter (fused optimisers, ``.data`` writes):
    a module whose weights change that way turns the cache off (:func:`set_weight_cache`).
    """
    weight = layer.weight
    usable = (not (torch.is_grad_enabled() and weight.requires_grad) and not _compiling()
              and getattr(layer, "_poly_cache_on", True))
    key = (weight._version, weight.data_ptr(), weight.dtype, weight.device, up, layer.scale, channels_last)
    if usable:
        hit = getattr(layer, "_poly_cache", None)
        if hit is not None and hit[0] == key:
            return hit[1]
    w = weight * layer.scale
    with _autocast_off(weight.device.type):
        w2 = _acc(w).square().sum(dim=[2, 3])  # [Cout, Cin]
        k = w if up is None else upconv_poly_weight(w, layer.fir) if up == "poly3" else upconv_phase2_weight(w)
    if channels_last:
        k = k.contiguous(memory_format=torch.channels_last)
    out = (k, w2)
    if usable:
        layer._poly_cache = (key, tuple(t.detach() for t in out))
    return out


def set_weight_cache(module: torch.nn.Module, on: bool) -> torch.nn.Module:
    """Turn the polyphase path's per-weight caches on or off in every layer of ``module``.

    The caches are keyed by the weights' version counters, which ``torch.optim.Adam(fused=True)``
    and writes through ``.data`` do not advance: a generator trained that way must turn them off,
    or its no-gradient passes (a training step's fakes for the discriminator) keep using the
    first weights they saw. Clearing drops what was cached. Returns ``module``.
    """
    for m in module.modules():
        m._poly_cache_on = bool(on)
        for attr in ("_poly_cache", "_poly_affine_cache"):
            if hasattr(m, attr):
                delattr(m, attr)
    return module


def _acc(t: torch.Tensor) -> torch.Tensor:
    """``t`` in at least fp32 (the demodulation coefficients set every layer's scale)."""
    return t if t.dtype == torch.float64 else t.float()


def _compiling() -> bool:
    comp = getattr(torch, "compiler", None)
    if comp is not None and hasattr(comp, "is_compiling"):
        return comp.is_compiling()
    return False


def _noise(layer, x_ref: torch.Tensor, res: int, noise_mode: str, noise):
    if noise is not None:
        return noise
    if noise_mode == "random":
        return torch.randn(x_ref.shape[0], 1, res, res, device=x_ref.device, dtype=x_ref.dtype)
    if noise_mode == "const":
        return layer.noise_const
    return None


def prepare_conv(layer, styles: torch.Tensor, up: str | None) -> tuple:
    """The per-call constants of one styled conv: its kernel (``up``: None, ``poly3`` or
    ``phase2``) and StyleGAN2's demodulation coefficients ``[N, Cout]`` (fp32), the norm of
    the modulated 3x3 weight (one matmul)."""
    k, w2 = _weights(layer, up, channels_last=styles.is_cuda)
    with _autocast_off(styles.device.type):
        dcoefs = (_acc(styles).square() @ w2.to(_acc(styles).dtype).t() + 1e-8).rsqrt()
    return k, dcoefs


def apply_conv(layer, x: torch.Tensor, styles: torch.Tensor, k: torch.Tensor, dcoefs: torch.Tensor,
               noise: torch.Tensor | None, up: str | None) -> torch.Tensor:
    """Modulate, convolve (and up-sample), then the epilogue: demodulation, noise, bias,
    leaky ReLU with its gain, clamp."""
    n = x.shape[0]
    h = x * styles.to(x.dtype).view(n, -1, 1, 1)
    if up == "phase2":
        y = blur_phases(F.conv2d(h, k.to(h.dtype), padding=2), layer.fir)
    elif up == "poly3":
        y = phase_shuffle(F.conv2d(h, k.to(h.dtype), padding=1))
    else:
        y = F.conv2d(h, k.to(h.dtype), padding=1)
    # lrelu(g * (y * d + noise * strength + bias)) = lrelu(y * (g d) + g (noise * strength + bias))
    add = layer.bias.view(1, -1, 1, 1) * _SQRT2
    if noise is not None:
        add = add + noise.to(add.dtype) * (layer.noise_strength * _SQRT2)
        if y.is_contiguous(memory_format=torch.channels_last) and not y.is_contiguous():
            add = add.contiguous(memory_format=torch.channels_last)  # else addcmul's output is NCHW
    y = torch.addcmul(add.to(y.dtype), y, (dcoefs * _SQRT2).to(y.dtype).view(n, -1, 1, 1))
    y = F.leaky_relu_(y, 0.2)  # in place on the epilogue's own output (autograd-safe)
    if layer.conv_clamp is not None:
        y = y.clamp(-layer.conv_clamp, layer.conv_clamp)
    return y


def styled_conv_poly(layer, x: torch.Tensor, styles: torch.Tensor, noise: torch.Tensor | None,
                     up_impl: str = "poly3") -> torch.Tensor:
    """One ``StyledConv`` (plain or up-sampling) on the polyphase path.

    ``up_impl`` (up-sampling layers): ``poly3`` (transposed conv and blur folded into one
    3x3 kernel) or ``phase2`` (the transposed conv as a 2x2 conv, the blur as shifted
    slices that ``torch.compile`` fuses into the epilogue; fewer FLOPs, slow in eager).
    """
    up = up_impl if layer.up else None
    k, dcoefs = prepare_conv(layer, styles, up)
    return apply_conv(layer, x, styles, k, dcoefs, noise, up)


def torgb_poly(layer, x: torch.Tensor, styles: torch.Tensor, skip: torch.Tensor | None) -> torch.Tensor:
    """One ``ToRGB`` (``styles = layer.affine(w)``): per-sample modulated 1x1 weights (no
    demodulation) as a batched matmul, then bias, clamp and the polyphase up-sampled skip,
    summed in fp32."""
    n, c, hh, ww = x.shape
    wm = (layer.weight * layer.scale).reshape(1, -1, c) * styles.view(n, 1, c)   # [N, 3, C]
    if _compiling():
        # one channel reduction per colour: inductor fuses the three (x is read once) and, where x
        # has no other reader (the last block), the producing epilogue too, so x is never written
        wx = wm.to(x.dtype)
        y = torch.stack([(x * wx[:, o].view(n, c, 1, 1)).sum(1) for o in range(wx.shape[1])], 1)
    elif x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        y = torch.bmm(x.permute(0, 2, 3, 1).reshape(n, hh * ww, c), wm.transpose(1, 2).to(x.dtype))
        y = y.reshape(n, hh, ww, -1).permute(0, 3, 1, 2)
    else:
        y = torch.bmm(wm.to(x.dtype), x.reshape(n, c, hh * ww)).reshape(n, -1, hh, ww)
    y = _acc(y) + layer.bias.to(_acc(y).dtype).view(1, -1, 1, 1)
    if layer.conv_clamp is not None:
        y = y.clamp(-layer.conv_clamp, layer.conv_clamp)
    if skip is not None:
        with _autocast_off(y.device.type):
            y = y + upsample2d_poly(skip.to(y.dtype), layer.fir)
    return y


def all_styles(layers: list, ws: torch.Tensor) -> list:
    """Every layer's styles ``affine(ws[:, i])`` from one batched matmul.

    ``layers``: ``(module with .affine, ws index)`` pairs. The affine weights are zero-padded
    to the widest layer and stacked (cached per parameter version when no gradient can reach
    them); one ``[L, N, w_dim] x [L, w_dim, C]`` matmul replaces one launch per layer and,
    in a traced graph, makes every style available before the first convolution.
    """
    affs = [m.affine for m, _ in layers]
    params = [t for a in affs for t in (a.weight, a.bias)]
    owner = layers[0][0]
    usable = (not (torch.is_grad_enabled() and any(t.requires_grad for t in params)) and not _compiling()
              and getattr(owner, "_poly_cache_on", True))
    key = (tuple((t._version, t.data_ptr()) for t in params), ws.dtype, ws.device)
    hit = getattr(owner, "_poly_affine_cache", None) if usable else None
    if hit is not None and hit[0] == key:
        wt, b = hit[1]
    else:
        cmax = max(a.out_features for a in affs)
        wt = torch.stack([F.pad((a.weight * a.scale).t(), (0, cmax - a.out_features)) for a in affs])  # [L, w, C]
        b = torch.stack([F.pad(a.bias * a.lr_mul, (0, cmax - a.out_features)) for a in affs])          # [L, C]
        if usable:
            owner._poly_affine_cache = (key, (wt.detach(), b.detach()))
    wsl = torch.stack([ws[:, i] for _, i in layers])                                                # [L, N, w]
    st = torch.baddbmm(b.to(ws.dtype).unsqueeze(1), wsl, wt.to(ws.dtype))
    return [st[j, :, :a.out_features] for j, a in enumerate(affs)]   # each [N, C_j]


UP_IMPLS = ("poly3", "phase2")


def synthesis_poly(net, ws: torch.Tensor, noise_mode: str = "const", noise: list | None = None,
                   up_impl: str | None = None) -> torch.Tensor:
    """The whole ``SynthesisNetwork`` forward on the polyphase path (inputs already checked).

    Every layer's styles, kernel and demodulation coefficients are computed first, so that
    in the traced graph nothing but the convolutions separates one layer's epilogue from
    the next layer's input scaling (``torch.compile`` then fuses the two).

    Args:
        up_impl: ``poly3``, ``phase2`` (see :func:`styled_conv_poly`) or None: ``poly3``
            in eager mode, ``phase2`` under ``torch.compile`` (where its blur is fused).
    Returns:
        the image ``[N, 3, R, R]`` in fp32 (fp64 for fp64 inputs), contiguous.
    """
    if up_impl is None:
        up_impl = "phase2" if _compiling() else "poly3"
    if up_impl not in UP_IMPLS:
        raise NetworkError(f"up_impl must be one of {UP_IMPLS} or None, got {up_impl!r}")
    n = ws.shape[0]
    convs = [(net.conv1, 0, None)]
    rgbs = [(net.torgb1, 1)]
    for k, (cu, cv, rgb) in enumerate(zip(net.convs_up, net.convs, net.torgbs)):
        convs += [(cu, 2 * k + 1, up_impl), (cv, 2 * k + 2, None)]
        rgbs.append((rgb, 2 * k + 3))
    styles = all_styles([(layer, i) for layer, i, _ in convs] + rgbs, ws)
    conv_styles, rgb_styles = styles[:len(convs)], styles[len(convs):]
    prepared = [prepare_conv(layer, s, up) for (layer, _, up), s in zip(convs, conv_styles)]

    x = net.const.to(ws.dtype).expand(n, -1, -1, -1)
    if ws.is_cuda:  # cuDNN's tensor-core kernels want NHWC; every later activation follows
        x = x.contiguous(memory_format=torch.channels_last)
    img = None
    for j, ((layer, _i, up), s, (k, d)) in enumerate(zip(convs, conv_styles, prepared)):
        nz = _noise(layer, x, layer.resolution, noise_mode, None if noise is None else noise[j])
        x = apply_conv(layer, x, s, k, d, nz, up)
        if j % 2 == 0:  # after the 4x4 conv and after each block's second conv
            rgb, _ = rgbs[j // 2]
            img = torgb_poly(rgb, x, rgb_styles[j // 2], img)
    return img.contiguous()
