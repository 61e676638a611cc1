"""Gradient signal-to-noise ratio (GSNR) of a GAN's parameters, from per-sample gradients.

For a parameter ``j`` and per-sample gradients ``g_ij`` of a minibatch of ``m`` samples
(Liu et al. 2020, "Understanding why neural networks generalize well through GSNR of
parameters")::

    GSNR_j = mean_i(g_ij) ** 2 / var_i(g_ij)

``var`` is the unbiased sample variance. Per-sample gradients come from ``torch.func``
(``functional_call`` + ``vmap(grad(...))``), one vectorised pass instead of ``m`` backward
passes. A per-parameter-group figure is the **mean over the group's scalar parameters**
of their GSNR (parameters whose gradient is exactly zero for every sample, hence
undefined GSNR, are left out and counted in ``undefined``).

Estimation bias: ``mean_i(g)^2`` over ``m`` samples over-estimates the squared true mean
by ``var / m``, so a parameter with no signal at all reads about ``1 / m`` (the noise
floor printed beside the figures); compare GSNR values measured with the same ``m``.

Micro-batches: with ``micro = k`` the ``m`` samples are split into ``m / k`` micro-batches,
each micro-batch's mean-loss gradient stands in for one sample, and since the variance of
a mean of ``k`` independent gradients is ``var / k`` the variance is multiplied by ``k``
to estimate the per-sample variance (the mean needs no correction).

The discriminator's minibatch-standard-deviation layer couples the samples of a group,
so "the gradient of sample i's loss" is not defined for it as trained. Two ways are
offered (``mbstd=``):

* ``"detach"`` (default): the per-sample statistic the layer appends is computed from
  the whole minibatch *outside* the per-sample pass, exactly as training computes it,
  and fed in as a constant. The forward values equal those of training (tested);
  the gradient leaves out only the path through the group statistic.
* ``"group1"``: every sample is its own group (statistic ``sqrt(1e-8)``), i.e. the
  function a ``mbstd_group=1`` discriminator computes; exact per-sample gradients of a
  slightly different function than the one trained.
"""
from __future__ import annotations

import math
import re

import torch
import torch.nn.functional as F
from torch import nn

from faceedit.core.errors import TrainingError

from . import augment as _augment

MBSTD_EPS = 1e-8


# --------------------------------------------------------------------------- core


def per_sample_grads(loss_fn, params: dict, inputs: tuple, *, micro: int = 1, chunk_size: int | None = None) -> dict:
    """Gradients of ``loss_fn`` for each sample (or micro-batch) of ``inputs``.

    Args:
        loss_fn: ``loss_fn(params, *inputs_of_one_sample) -> scalar`` where each input
            keeps a leading batch axis of size ``micro`` (pytrees of tensors allowed).
        params: ``{name: tensor}`` the gradients are taken with respect to.
        inputs: tuple of pytrees whose tensors all have the batch ``m`` as first axis.
        micro: micro-batch size ``k`` (``m`` must be divisible by it).
        chunk_size: ``vmap`` chunking to bound memory (None: all at once).
    Returns:
        ``{name: [m // micro, *param.shape]}``.
    """
    from torch.func import grad, vmap
    from torch.utils._pytree import tree_flatten, tree_map

    leaves, _ = tree_flatten(inputs)
    sizes = {t.shape[0] for t in leaves if isinstance(t, torch.Tensor)}
    if len(sizes) != 1:
        raise TrainingError(f"all per-sample inputs need the same batch size, got {sorted(sizes)}")
    m = sizes.pop()
    if micro < 1 or m % micro:
        raise TrainingError(f"batch of {m} is not divisible into micro-batches of {micro}")
    split = tree_map(lambda t: t.reshape(m // micro, micro, *t.shape[1:]) if isinstance(t, torch.Tensor) else t,
                     inputs)
    params = {k: v.detach() for k, v in params.items()}
    fn = vmap(grad(loss_fn), in_dims=(None, *([0] * len(inputs))), chunk_size=chunk_size)
    with _math_attention():
        return fn(params, *split)


def _math_attention():
    """Plain-math attention kernels: the fused (flash / memory-efficient) ones have no
    ``vmap`` batching rules and would fall back to a slow per-sample loop."""
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel

        return sdpa_kernel([SDPBackend.MATH])
    except ImportError:  # pragma: no cover - torch < 2.3
        import contextlib

        return contextlib.nullcontext()


def gsnr_from_grads(grads: dict, *, micro: int = 1) -> dict:
    """Elementwise GSNR ``mean^2 / (k * var)`` per parameter from ``[m, ...]`` gradients.

    Elements with zero variance are NaN (undefined). Needs ``m >= 2``.
    """
    out = {}
    for name, g in grads.items():
        if g.shape[0] < 2:
            raise TrainingError("GSNR needs at least 2 samples (or micro-batches)")
        g = g.detach().double()
        var = g.var(dim=0, unbiased=True) * micro
        mean2 = g.mean(dim=0).square()
        out[name] = torch.where(var > 0, mean2 / var.clamp_min(1e-300), torch.full_like(var, float("nan")))
    return out


def group_means(gsnr: dict, groups: dict | None = None) -> dict:
    """Mean GSNR over each group's scalar parameters.

    Args:
        gsnr: ``{param name: elementwise GSNR}``.
        groups: ``{param name: group name}`` (default: each parameter its own group).
    Returns:
        ``{group: {"gsnr": mean, "params": count, "undefined": count}}`` plus ``"all"``.
    """
    acc = {}
    for name, v in gsnr.items():
        for key in ((groups or {}).get(name, name), "all"):
            s, n, u = acc.get(key, (0.0, 0, 0))
            ok = torch.isfinite(v)
            acc[key] = (s + float(v[ok].sum()), n + int(ok.sum()), u + int((~ok).sum()))
    return {k: {"gsnr": (s / n if n else float("nan")), "params": n, "undefined": u} for k, (s, n, u) in acc.items()}


# --------------------------------------------------------------------------- the GAN's networks


def param_groups(module: nn.Module, prefix: str = "") -> dict:
    """``{param name: group}`` by resolution for the StyleGAN2 / v1 G and D (else top module).

    Generator: ``mapping``, ``syn4`` (constant, 4x4 conv, first toRGB), ``syn8``... (the
    up-sampling conv, conv and toRGB of each block; for StyleGAN v1 the two layers of each
    resolution, its one toRGB in the last group). Discriminator: ``rgb`` (fromRGB),
    ``b64``, ``b32``... (residual block at that input resolution), ``epilogue`` (4x4 conv, FC, output).
    """
    out = {}
    res = getattr(module, "resolution", None)
    for name, _ in module.named_parameters():
        parts = name.split(".")
        g = parts[0]
        if parts[0] == "mapping":
            g = "mapping"
        elif parts[0] == "synthesis":
            m = re.match(r"(convs_up|convs|torgbs)\.(\d+)", ".".join(parts[1:3]))
            v1 = re.fullmatch(r"layers\.(\d+)", ".".join(parts[1:3]))  # StyleGAN v1: layer i at 2 ** (i // 2 + 2)
            if m:
                g = f"syn{2 ** (int(m.group(2)) + 3)}"
            elif v1:
                g = f"syn{2 ** (int(v1.group(1)) // 2 + 2)}"
            elif parts[1] == "torgb" and res:
                g = f"syn{res}"  # v1's one toRGB, at the output resolution
            else:
                g = "syn4"
        elif parts[0] == "from_rgb":
            g = "rgb"
        elif parts[0] == "blocks" and res:
            g = f"b{res >> int(parts[1])}"
        elif parts[0] in ("conv", "fc", "out", "mbstd"):
            g = "epilogue"
        out[prefix + name] = g
    return out


def mbstd_stats(D: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The value the minibatch-std layer appends for each image of the batch ``x``: ``[N]``.

    Mirrors ``networks.stylegan2.MinibatchStd`` applied inside ``D(x)`` (same grouping).
    """
    with torch.no_grad():
        f = D.features(x)[-1].float()
        n = f.shape[0]
        g = min(D.mbstd.group_size, n)
        if n % g:
            g = 1
        y = (f.reshape(g, -1, *f.shape[1:]).var(dim=0, unbiased=False) + MBSTD_EPS).sqrt().mean(dim=[1, 2, 3])
        return y.repeat(g)


def d_logits_with_stat(D: nn.Module, img: torch.Tensor, stat: torch.Tensor) -> torch.Tensor:
    """``D(img)`` with the minibatch-std channel replaced by the given per-image ``stat``."""
    x = D.features(img)[-1]
    n, _, h, w = x.shape
    x = torch.cat([x, stat.to(x.dtype).view(n, 1, 1, 1).expand(n, 1, h, w)], dim=1)
    return D.out(D.fc(D.conv(x).flatten(1)))


class _Call(nn.Module):
    """Wraps a function of modules so ``torch.func.functional_call`` can swap their parameters."""

    def __init__(self, fn, **modules):
        super().__init__()
        self.fn = fn
        self.mods = nn.ModuleDict(modules)

    def forward(self, *args):
        return self.fn(*self.mods.values(), *args)


def _stat_for(D, x, mbstd):
    if mbstd == "detach":
        return mbstd_stats(D, x)
    if mbstd == "group1":
        return torch.full((x.shape[0],), math.sqrt(MBSTD_EPS), device=x.device)
    raise TrainingError(f"mbstd must be 'detach' or 'group1', got {mbstd!r}")


def generator_gsnr(G, D, z: torch.Tensor, *, noise: list | None = None, aug_params: dict | None = None,
                   micro: int = 1, mbstd: str = "detach", chunk_size: int | None = None,
                   return_grads: bool = False):
    """Per-group GSNR of ``G`` for the non-saturating loss ``softplus(-D(aug(G(z))))``.

    Args:
        G, D: the networks (``D`` is held fixed).
        z: ``[m, *G.z_shape]``.
        noise: per-layer noise maps ``[m, 1, r, r]`` (default: drawn here), so the batch
            pass that gives the minibatch-std statistics sees the same images.
        aug_params: augmentation drawn with :func:`augment.sample_params` (None: none).
        micro, mbstd, chunk_size: see the module docstring and :func:`per_sample_grads`.
        return_grads: also return the per-sample gradients ``{param name: [m, ...]}``.
    Returns:
        :func:`group_means` of the elementwise GSNR, groups from :func:`param_groups`
        (and the gradients when asked).
    """
    m = z.shape[0]
    if noise is None:
        noise = [torch.randn(m, 1, b.shape[-2], b.shape[-1], device=z.device) for b in G.synthesis.noise_buffers()]
    aug_params = aug_params or {}

    def image(g, zz, nn_):
        return g.synthesis(g.mapping(zz), noise=list(nn_), path="shared")

    with torch.no_grad():
        fake = image(G, z, noise)
        stat = _stat_for(D, _augment.apply(fake, aug_params) if aug_params else fake, mbstd)

    def loss(g, d, zz, nn_, ap, st):
        x = image(g, zz, nn_)
        x = _augment.apply(x, ap) if ap else x
        return F.softplus(-d_logits_with_stat(d, x, st)).mean()

    wrapper = _Call(loss, g=G, d=D)
    params = {f"mods.g.{k}": v for k, v in G.named_parameters()}

    def fn(p, zz, nn_, ap, st):
        return torch.func.functional_call(wrapper, p, (zz, nn_, ap, st))

    grads = per_sample_grads(fn, params, (z, list(noise), aug_params, stat), micro=micro, chunk_size=chunk_size)
    grads = {k[len("mods.g."):]: v for k, v in grads.items()}
    res = group_means(gsnr_from_grads(grads, micro=micro), param_groups(G))
    return (res, grads) if return_grads else res


def discriminator_gsnr(D, real: torch.Tensor, fake: torch.Tensor, *, micro: int = 1, mbstd: str = "detach",
                       chunk_size: int | None = None, return_grads: bool = False):
    """Per-group GSNR of ``D`` for its logistic loss on (real_i, fake_i) pairs.

    Sample ``i``'s loss is ``softplus(D(fake_i)) + softplus(-D(real_i))``; ``real`` and
    ``fake`` are the (already augmented) images the discriminator sees, ``[m, 3, R, R]``.
    """
    if real.shape != fake.shape:
        raise TrainingError(f"real {tuple(real.shape)} and fake {tuple(fake.shape)} batches must match")
    s_real, s_fake = _stat_for(D, real, mbstd), _stat_for(D, fake, mbstd)

    def loss(d, r, f, sr, sf):
        return (F.softplus(d_logits_with_stat(d, f, sf)) + F.softplus(-d_logits_with_stat(d, r, sr))).mean()

    wrapper = _Call(loss, d=D)
    params = {f"mods.d.{k}": v for k, v in D.named_parameters()}

    def fn(p, r, f, sr, sf):
        return torch.func.functional_call(wrapper, p, (r, f, sr, sf))

    grads = per_sample_grads(fn, params, (real.detach(), fake.detach(), s_real, s_fake), micro=micro,
                             chunk_size=chunk_size)
    grads = {k[len("mods.d."):]: v for k, v in grads.items()}
    res = group_means(gsnr_from_grads(grads, micro=micro), param_groups(D))
    return (res, grads) if return_grads else res
