"""Gradient signal-to-noise ratio (GSNR) of a GAN's parameters, from per-sample gradients.

For a parameter ``j`` whose per-sample gradient ``g_j`` has mean ``mu_j`` and variance
``sigma_j ** 2`` over the data distribution (Liu et al. 2020, "Understanding why neural
networks generalize well through GSNR of parameters")::

    r_j = mu_j ** 2 / sigma_j ** 2

Per-sample gradients come from ``torch.func`` (``functional_call`` + ``vmap(grad(...))``),
one vectorised pass instead of ``m`` backward passes.

Three estimates from ``m`` samples (sample mean ``gbar``, unbiased sample variance ``s2``):

* ``gsnr`` (plain): ``gbar ** 2 / s2``. Biased upwards by about ``1 / m``: a parameter
  with no signal reads ``1 / m`` on average, the noise floor of this figure.
* ``gsnr_c`` (bias-corrected). The numerator first: ``E[gbar ** 2] = mu ** 2 + sigma ** 2 / m``
  for any distribution, so ``gbar ** 2 - s2 / m`` is unbiased for ``mu ** 2``. The
  denominator has a bias of its own: ``E[1 / s2]`` is not ``1 / sigma ** 2``. For Gaussian
  gradients ``gbar`` and ``s2`` are independent and ``(m - 1) s2 / sigma ** 2`` is
  chi-square with ``m - 1`` degrees of freedom, so ``E[1 / s2] = (m - 1) / ((m - 3) sigma ** 2)``
  and::

      E[gbar ** 2 / s2] = (r + 1 / m) (m - 1) / (m - 3)

  which the estimator inverts exactly::

      gsnr_c = (m - 3) / (m - 1) * gbar ** 2 / s2 - 1 / m        (m > 3)

  Unbiased for Gaussian per-sample gradients (tested), close to it otherwise. A parameter
  without signal reads 0 on average (its floor), and single parameters can read below 0,
  so only the group mean is meaningful. The shorter ``(gbar ** 2 - s2 / m) / s2``
  (``= gbar ** 2 / s2 - 1 / m``) keeps a bias of ``2 r / (m - 3) + 2 / (m (m - 3))``
  (0.002 at ``m = 32`` with no signal).
* ``gsnr_pool`` (pooled over a group): ``sum_j (gbar_j ** 2 - s2_j / m) / sum_j s2_j``,
  a ratio of two unbiased sums, so its bias shrinks with the group's size. It is the
  figure the paper's one-step generalisation ratio is made of: for full-batch gradient
  descent on ``n`` training samples the expected test-loss drop over the expected
  train-loss drop of one small step is ``R = sum mu ** 2 / sum (mu ** 2 + sigma ** 2 / n)``
  (the paper's ``1 - (1/n) sum_j W_j / (r_j + 1/n)``, rewritten), i.e.
  ``R = r_pool / (r_pool + 1 / n)`` over all parameters: see
  :func:`one_step_generalisation_ratio`.

A per-parameter-group figure of the per-parameter estimates is the **mean over the
group's scalar parameters** (parameters whose gradient is equal for every sample, hence
undefined GSNR, are left out and counted in ``undefined``). Its noise (``*_se``) is a
delete-one jackknife over the ``m`` samples (or micro-batches): every parameter of the
group is recomputed without sample ``i``, so the correlation between parameters, which
makes the group mean far noisier than ``1 / sqrt(params)`` would say, is in it.

Micro-batches: with ``micro = k`` the ``m`` samples are split into ``M = m / k``
micro-batches, each micro-batch's mean-loss gradient stands in for one sample. The
variance of a mean of ``k`` independent gradients is ``sigma ** 2 / k``, so the sample
variance ``s2_M`` of the ``M`` micro-batch gradients is multiplied by ``k`` to estimate
the per-sample variance; the mean needs no correction and ``E[gbar ** 2]`` is still
``mu ** 2 + sigma ** 2 / m``. The corrected estimate becomes
``(M - 3) / (M - 1) * gbar ** 2 / (k s2_M) - 1 / m`` (the chi-square has ``M - 1``
degrees of freedom).

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


def _moments(g: torch.Tensor, micro: int) -> tuple:
    """``(mean, s2, ok)`` of ``[M, ...]`` gradients in float64; ``ok``: variance above zero."""
    if g.shape[0] < 2:
        raise TrainingError("GSNR needs at least 2 samples (or micro-batches)")
    if micro < 1:
        raise TrainingError(f"micro must be a positive micro-batch size, got {micro}")
    g = g.detach().double()
    mean = g.mean(dim=0)
    s2 = g.var(dim=0, unbiased=True)
    return mean, s2, s2 > 0


def _correct(plain, n: int, micro: int):
    """The bias-corrected GSNR from the plain one, ``n`` micro-batches of ``micro`` (module docstring)."""
    return (n - 3) / (n - 1) * plain - 1.0 / (n * micro)


def _corrected(mean2: torch.Tensor, s2: torch.Tensor, n: int, micro: int) -> torch.Tensor:
    """The bias-corrected GSNR of ``n`` micro-batches of ``micro`` from their moments."""
    return _correct(mean2 / (micro * s2.clamp_min(1e-300)), n, micro)


def gsnr_from_grads(grads: dict, *, micro: int = 1, corrected: bool = False) -> dict:
    """Elementwise GSNR per parameter from ``[M, ...]`` per-sample (or micro-batch) gradients.

    Args:
        grads: ``{param name: [M, *param.shape]}``, ``M`` samples or micro-batches.
        micro: samples per micro-batch ``k`` (the variance is multiplied by it).
        corrected: the plain ``mean^2 / (k var)`` (False) or the bias-corrected
            ``(M - 3) / (M - 1) * mean^2 / (k var) - 1 / (k M)`` (True), see the module docstring.
    Returns:
        ``{param name: tensor of param.shape}`` (float64); elements with zero variance are NaN.
    Raises:
        TrainingError: fewer than 2 samples (4 for ``corrected``), or ``micro < 1``.
    """
    out = {}
    for name, g in grads.items():
        mean, s2, ok = _moments(g, micro)
        n = g.shape[0]
        if corrected and n < 4:
            raise TrainingError(f"the bias-corrected GSNR needs at least 4 samples (or micro-batches), got {n}")
        est = _corrected(mean.square(), s2, n, micro) if corrected else mean.square() / (micro * s2.clamp_min(1e-300))
        out[name] = torch.where(ok, est, torch.full_like(est, float("nan")))
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


def group_stats(grads: dict, groups: dict | None = None, *, micro: int = 1) -> dict:
    """Plain, bias-corrected and pooled GSNR of each parameter group, with jackknife noise.

    Args:
        grads: ``{param name: [M, *param.shape]}`` per-sample (or micro-batch) gradients.
        groups: ``{param name: group name}`` (default: each parameter its own group).
        micro: samples per micro-batch.
    Returns:
        ``{group: {...}}`` plus ``"all"``, each with ``gsnr`` (plain group mean, as
        :func:`group_means` of :func:`gsnr_from_grads`), ``gsnr_c`` (group mean of the
        bias-corrected estimate; NaN below 4 samples), ``gsnr_pool`` (pooled corrected
        figure), ``gsnr_c_se`` and ``gsnr_pool_se`` (delete-one jackknife standard errors over
        the ``M`` samples; NaN below 5), ``params`` and ``undefined``.
    Raises:
        TrainingError: no gradients, fewer than 2 samples (or micro-batches), unequal sample
            counts, or ``micro < 1``.
    """
    names = list(grads)
    if not names:
        raise TrainingError("no gradients to measure GSNR from")
    n = int(grads[names[0]].shape[0])
    if any(int(g.shape[0]) != n for g in grads.values()):
        raise TrainingError("every parameter's gradients need the same number of samples")
    jack = n >= 5
    keys = lambda name: ((groups or {}).get(name, name), "all")  # noqa: E731
    # per group: sums over its defined parameters of plain, corrected, pooled numerator and denominator
    acc: dict = {}
    # per group and left-out sample i: the same sums without sample i
    loo: dict = {}
    for name in names:
        g = grads[name]
        mean, s2, ok = _moments(g, micro)
        mean2 = mean.square()
        plain = (mean2 / (micro * s2.clamp_min(1e-300)))[ok]
        corr = _corrected(mean2, s2, n, micro)[ok] if n > 3 else torch.full_like(plain, float("nan"))
        num, den = (mean2 - s2 / n)[ok], (micro * s2)[ok]
        part = torch.stack([plain.sum(), corr.sum(), num.sum(), den.sum()]).tolist() + [int(ok.sum()), int((~ok).sum())]
        rows = []
        if jack:
            d = g.detach().double() - mean
            q = (d.square()).sum(dim=0)
            for i in range(n):
                di = d[i]
                mean_i = mean - di / (n - 1)
                q_i = (q - di.square() * n / (n - 1)).clamp_min(0.0)
                ok_i = ok & (q_i > q * 1e-12)
                s2_i = q_i / (n - 2)
                m2_i = mean_i.square()
                zero = torch.zeros_like(s2_i)
                rows.append(torch.stack([torch.where(ok_i, _corrected(m2_i, s2_i, n - 1, micro), zero).sum(),
                                         ok_i.sum().double(),
                                         torch.where(ok_i, m2_i - s2_i / (n - 1), zero).sum(),
                                         torch.where(ok_i, micro * s2_i, zero).sum()]))
            rows = torch.stack(rows).tolist()  # one device sync per parameter tensor
        for key in keys(name):
            a = acc.setdefault(key, [0.0, 0.0, 0.0, 0.0, 0, 0])
            for k, v in enumerate(part):
                a[k] += v
            if jack:
                lo = loo.setdefault(key, [[0.0, 0.0, 0.0, 0.0] for _ in range(n)])
                for i, r in enumerate(rows):
                    for k in range(4):
                        lo[i][k] += r[k]
    out = {}
    for key, (sp, sc, num, den, cnt, und) in acc.items():
        res = {"gsnr": sp / cnt if cnt else float("nan"), "gsnr_c": sc / cnt if cnt else float("nan"),
               "gsnr_pool": num / den if den > 0 else float("nan"), "params": cnt, "undefined": und,
               "gsnr_c_se": float("nan"), "gsnr_pool_se": float("nan")}
        if jack:
            c_loo = [s / c if c else float("nan") for s, c, _, _ in loo[key]]
            p_loo = [a / b if b > 0 else float("nan") for _, _, a, b in loo[key]]
            res["gsnr_c_se"], res["gsnr_pool_se"] = _jackknife_se(c_loo), _jackknife_se(p_loo)
        out[key] = res
    return out


def _jackknife_se(values: list) -> float:
    """Delete-one jackknife standard error from the ``n`` leave-one-out estimates."""
    v = torch.tensor(values, dtype=torch.float64)
    if not bool(torch.isfinite(v).all()):
        return float("nan")
    n = v.numel()
    return float(((n - 1) / n * (v - v.mean()).square().sum()).sqrt())


def one_step_generalisation_ratio(gsnr_pool: float, n: int) -> float:
    """The paper's one-step generalisation ratio ``R`` from the pooled GSNR of all parameters.

    ``R = E[test-loss drop] / E[train-loss drop]`` of one small full-batch gradient step on
    ``n`` training samples, ``R = r / (r + 1 / n)`` with ``r`` the pooled GSNR (module
    docstring): 1 means the step generalises fully, ``1 - R`` is the share of the train-loss
    drop that becomes generalisation gap. A negative estimate (no measurable signal) gives 0.

    Args:
        gsnr_pool: the pooled GSNR (``gsnr_pool`` of the ``"all"`` group).
        n: training-set size.
    Returns:
        ``R`` in ``[0, 1)``.
    Raises:
        TrainingError: ``n < 1``.
    """
    if n < 1:
        raise TrainingError(f"the training-set size n must be positive, got {n}")
    r = max(float(gsnr_pool), 0.0)
    return r / (r + 1.0 / n)


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
        :func:`group_stats` of the per-sample gradients, groups from :func:`param_groups`
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
    res = group_stats(grads, param_groups(G), micro=micro)
    return (res, grads) if return_grads else res


def discriminator_gsnr(D, real: torch.Tensor, fake: torch.Tensor | None, *, micro: int = 1, mbstd: str = "detach",
                       chunk_size: int | None = None, return_grads: bool = False):
    """Per-group GSNR of ``D`` for its logistic loss on (real_i, fake_i) pairs, or on the reals alone.

    Sample ``i``'s loss is ``softplus(D(fake_i)) + softplus(-D(real_i))``; with ``fake=None``
    it is ``softplus(-D(real_i))``, the part of the loss that sees the training faces (the
    one whose train / held-out gap the paper's relation is about: fakes are drawn afresh at
    every step, so there is no gap on them).

    Args:
        D: the discriminator.
        real: the (already augmented) real images the discriminator sees, ``[m, 3, R, R]``.
        fake: the (already augmented) fakes, same shape, or None for the real-only loss.
        micro, mbstd, chunk_size: see the module docstring and :func:`per_sample_grads`.
        return_grads: also return the per-sample gradients ``{param name: [m, ...]}``.
    Returns:
        :func:`group_stats` of the per-sample gradients, groups from :func:`param_groups`
        (and the gradients when asked).
    Raises:
        TrainingError: ``real`` and ``fake`` of different shapes, an unknown ``mbstd``.
    """
    if fake is not None and real.shape != fake.shape:
        raise TrainingError(f"real {tuple(real.shape)} and fake {tuple(fake.shape)} batches must match")
    s_real = _stat_for(D, real, mbstd)
    if fake is None:
        def wrapper_fn(d, r, sr):
            return F.softplus(-d_logits_with_stat(d, r, sr)).mean()

        inputs = (real.detach(), s_real)
    else:
        def wrapper_fn(d, r, sr, f, sf):
            return (F.softplus(d_logits_with_stat(d, f, sf)) + F.softplus(-d_logits_with_stat(d, r, sr))).mean()

        inputs = (real.detach(), s_real, fake.detach(), _stat_for(D, fake, mbstd))

    wrapper = _Call(wrapper_fn, d=D)
    params = {f"mods.d.{k}": v for k, v in D.named_parameters()}

    def fn(p, *args):
        return torch.func.functional_call(wrapper, p, args)

    grads = per_sample_grads(fn, params, inputs, micro=micro, chunk_size=chunk_size)
    grads = {k[len("mods.d."):]: v for k, v in grads.items()}
    res = group_stats(grads, param_groups(D), micro=micro)
    return (res, grads) if return_grads else res


# --------------------------------------------------------------------------- reading gsnr.csv

GAP_GROUPS = ("logit_train", "logit_heldout", "gap")
"""Groups of net ``D`` in ``gsnr.csv`` that hold D's mean logits (and their difference) in the
``gsnr`` column, not a GSNR (:meth:`Trainer.generalisation_gap`)."""

_FLOAT_COLS = ("gsnr", "gsnr_c", "gsnr_c_se", "gsnr_pool", "gsnr_pool_se")


def corrected_from_plain(plain: float, samples: int, micro: int = 1) -> float:
    """The group mean of the bias-corrected GSNR from the group mean of the plain one.

    Exact, not an approximation: per parameter the corrected estimate is an affine function
    of the plain one with the same coefficients for every parameter (module docstring), so
    the group means are related by the same function. It lets logs written before the
    corrected column existed be read on the corrected scale (their pooled figure and the
    jackknife errors cannot be recovered).

    Args:
        plain: the plain group-mean GSNR.
        samples: samples ``m`` it was measured on.
        micro: samples per micro-batch (``Trainer.measure_gsnr`` uses 1).
    Returns:
        ``(M - 3) / (M - 1) * plain - 1 / (M micro)`` with ``M = m // micro``; NaN where ``M < 4``.
    """
    n = samples // micro
    if n < 4:
        return float("nan")
    return _correct(float(plain), n, micro)


def float_or_nan(v) -> float:
    """A CSV cell as a float: NaN where it is empty, missing or not a number."""
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")


def group_order(g: str) -> tuple:
    """Sort key of parameter-group names: by name, then by the resolution the name carries
    (``syn8`` before ``syn16``)."""
    digits = "".join(ch for ch in g if ch.isdigit())
    return (g.rstrip("0123456789"), int(digits) if digits else -1, g)


def read_log_rows(rows) -> list:
    """``gsnr.csv`` rows (``csv.DictReader`` dicts) as numbers, old logs brought to the new columns.

    Args:
        rows: iterable of dicts with at least ``step``, ``kimg``, ``net``, ``group``, ``gsnr``.
    Returns:
        New dicts: ``step`` int, ``kimg`` and every GSNR column float (NaN where absent),
        ``samples`` and ``params`` int (0 where absent), and ``derived`` True where ``gsnr_c``
        was missing and was computed by :func:`corrected_from_plain` (needs ``samples``). Rows of
        :data:`GAP_GROUPS` keep their value in ``gsnr`` and are never derived.
    Raises:
        TrainingError: a row without the columns above.
    """
    out = []
    for r in rows:
        try:
            row = {"step": int(float(r["step"])), "kimg": float(r["kimg"]), "net": r["net"], "group": r["group"]}
        except (KeyError, TypeError, ValueError) as e:
            raise TrainingError(f"not a gsnr.csv row (needs step, kimg, net, group, gsnr): {dict(r)}") from e
        if "gsnr" not in r:
            raise TrainingError(f"not a gsnr.csv row (needs step, kimg, net, group, gsnr): {dict(r)}")
        row.update({k: float_or_nan(r.get(k)) for k in _FLOAT_COLS})
        for k in ("samples", "params"):
            row[k] = int(float_or_nan(r.get(k))) if math.isfinite(float_or_nan(r.get(k))) else 0
        row["derived"] = False
        is_gap = row["net"] == "D" and row["group"] in GAP_GROUPS
        if not is_gap and not math.isfinite(row["gsnr_c"]) and math.isfinite(row["gsnr"]) and row["samples"]:
            row["gsnr_c"] = corrected_from_plain(row["gsnr"], row["samples"])
            row["derived"] = math.isfinite(row["gsnr_c"])
        out.append(row)
    return out
