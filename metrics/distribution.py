"""Distances between two sets of images, measured in a feature space.

Every function here takes feature arrays ``[N, D]`` (float) and knows nothing of images.
faceedit measures them in the attribute network's features
(:meth:`faceedit.metrics.attributes.AttributeScorer.features`) and names the results
after that space: **FD-attr**, **KID-attr**, precision/recall-attr. They are *not* FID/KID
(which need Inception weights and 299 px images) and are not comparable with published
FID/KID figures.

* :func:`kid`: the kernel inception distance's estimator (Binkowski et al. 2018): the
  unbiased estimate of the squared MMD with the cubic polynomial kernel
  ``k(x, y) = (x . y / d + 1) ** 3``, on equal sample sizes, with a bootstrap confidence
  interval.
* :func:`frechet_distance`: ``|mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2))`` between
  Gaussians fitted to the two sets.
* :func:`precision_recall`: improved precision and recall (Kynkaanniemi et al. 2019):
  k-NN balls around each real (generated) feature form the real (generated) manifold.
  :func:`precision_recall_draws` averages them over disjoint draws of the generated set and
  gives intervals; :func:`paired_recall_difference` compares two models' recall face by face.
"""
from __future__ import annotations

import numpy as np

from faceedit.core.errors import MetricsError

NAMES = {"kid": "KID-attr", "fd": "FD-attr", "precision": "precision-attr", "recall": "recall-attr"}


def _as2d(x, name):
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2 or len(a) < 2:
        raise MetricsError(f"{name} must be a [N, D] feature array with N >= 2, got shape {a.shape}")
    if not np.isfinite(a).all():
        raise MetricsError(f"{name} holds NaN or infinite values")
    return a


def polynomial_kernel(x: np.ndarray, y: np.ndarray, degree: int = 3, coef0: float = 1.0) -> np.ndarray:
    """``(x @ y.T / d + coef0) ** degree`` (KID's kernel)."""
    return (x @ y.T / x.shape[1] + coef0) ** degree


def _h_matrix(x, y):
    """The U-statistic kernel ``h(i, j) = k(xi, xj) + k(yi, yj) - k(xi, yj) - k(xj, yi)``, zero diagonal."""
    kxy = polynomial_kernel(x, y)
    h = polynomial_kernel(x, x) + polynomial_kernel(y, y) - kxy - kxy.T
    np.fill_diagonal(h, 0.0)
    return h


def mmd2_unbiased(x, y) -> float:
    """Unbiased squared MMD with KID's kernel on equal-size sets ``x``, ``y`` ``[n, D]``."""
    x, y = _as2d(x, "x"), _as2d(y, "y")
    if len(x) != len(y):
        raise MetricsError(f"equal sample sizes needed, got {len(x)} and {len(y)}")
    n = len(x)
    return float(_h_matrix(x, y).sum() / (n * (n - 1)))


def kid(x, y, *, max_samples: int = 5000, n_boot: int = 200, ci: float = 0.95, seed: int = 0) -> dict:
    """KID (in whatever feature space ``x`` and ``y`` come from) with a bootstrap interval.

    Both sets are cut to the same size ``n = min(len(x), len(y), max_samples)`` by a seeded
    random choice. The estimate is the unbiased MMD^2 over all ``n`` pairs ``(x_i, y_i)``
    (a U-statistic). The interval resamples the ``n`` pairs with replacement ``n_boot``
    times and recomputes the U-statistic over distinct resampled pairs (ties removed, so
    each replicate stays unbiased); its ``(1 - ci) / 2`` and ``(1 + ci) / 2`` quantiles
    are reported.

    Returns:
        ``{"kid", "ci_low", "ci_high", "std", "n", "n_boot"}``; KID is reported as is (it can be
        slightly negative when the sets match).
    """
    x, y = _as2d(x, "x"), _as2d(y, "y")
    if x.shape[1] != y.shape[1]:
        raise MetricsError(f"feature sizes differ: {x.shape[1]} and {y.shape[1]}")
    rng = np.random.default_rng(seed)
    n = min(len(x), len(y), int(max_samples))
    if len(x) > n:
        x = x[rng.choice(len(x), n, replace=False)]
    if len(y) > n:
        y = y[rng.choice(len(y), n, replace=False)]
    h = _h_matrix(x, y)
    est = float(h.sum() / (n * (n - 1)))
    boots = np.empty(n_boot)
    for b in range(n_boot):
        c = np.bincount(rng.integers(0, n, n), minlength=n).astype(np.float64)
        pairs = n * n - (c * c).sum()  # ordered pairs of resampled positions with distinct originals
        boots[b] = (c @ h @ c) / pairs if pairs > 0 else est
    lo, hi = np.quantile(boots, [(1 - ci) / 2, (1 + ci) / 2]) if n_boot else (np.nan, np.nan)
    return {"kid": est, "ci_low": float(lo), "ci_high": float(hi), "std": float(boots.std()) if n_boot else np.nan,
            "n": int(n), "n_boot": int(n_boot)}


def gaussian_stats(x) -> tuple:
    """``(mean [D], covariance [D, D])`` of features ``[N, D]`` (unbiased covariance)."""
    x = _as2d(x, "features")
    return x.mean(0), np.cov(x, rowvar=False)


def frechet_from_stats(mu1, s1, mu2, s2) -> float:
    """Frechet distance between ``N(mu1, s1)`` and ``N(mu2, s2)``.

    ``tr((S1 S2)^(1/2))`` is computed as the sum of the square roots of the eigenvalues of
    ``S1^(1/2) S2 S1^(1/2)`` (symmetric, so ``eigh`` is exact and stable; negative round-off
    eigenvalues are clipped to 0), which equals the trace of scipy's ``sqrtm(S1 @ S2)``.
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    s1, s2 = np.atleast_2d(np.asarray(s1, np.float64)), np.atleast_2d(np.asarray(s2, np.float64))
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (len(mu1), len(mu1)):
        raise MetricsError(f"mismatched statistics: means {mu1.shape} {mu2.shape}, covariances {s1.shape} {s2.shape}")
    w, v = np.linalg.eigh((s1 + s1.T) / 2)
    r1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    m = r1 @ ((s2 + s2.T) / 2) @ r1
    ev = np.linalg.eigvalsh((m + m.T) / 2)
    tr_covmean = np.sqrt(np.clip(ev, 0, None)).sum()
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * tr_covmean)


def frechet_distance(x, y) -> float:
    """Frechet distance between Gaussians fitted to features ``x`` and ``y`` (``FD-attr`` in the
    attribute network's features)."""
    return frechet_from_stats(*gaussian_stats(x), *gaussian_stats(y))


def _knn_radii(feats, k: int, batch: int = 2048) -> np.ndarray:
    import torch

    t = torch.as_tensor(feats, dtype=torch.float32)
    out = []
    for i in range(0, len(t), batch):
        d = torch.cdist(t[i:i + batch], t).pow(2)
        out.append(d.kthvalue(k + 1, dim=1).values)  # +1: the point itself is at distance 0
    return torch.cat(out).numpy()


def _inside(query, ref, radii, batch: int = 2048) -> np.ndarray:
    import torch

    q = torch.as_tensor(query, dtype=torch.float32)
    r = torch.as_tensor(ref, dtype=torch.float32)
    rad = torch.as_tensor(radii, dtype=torch.float32)
    out = []
    for i in range(0, len(q), batch):
        d = torch.cdist(q[i:i + batch], r).pow(2)
        out.append((d <= rad[None]).any(dim=1))
    return torch.cat(out).numpy()


def _real_cut(real, fake, k: int, max_samples: int, seed: int) -> tuple:
    """``(real, fake, n, rng)``: the checked feature arrays, ``real`` cut to ``n = min(len(real), len(fake),
    max_samples)`` by a seeded choice, and the generator that made it (the fake side draws from it next)."""
    real, fake = _as2d(real, "real"), _as2d(fake, "fake")
    rng = np.random.default_rng(seed)
    n = min(len(real), len(fake), int(max_samples))
    if n <= k:
        raise MetricsError(f"precision/recall with k={k} needs more than {k} samples per set, got {n}")
    return (real[rng.choice(len(real), n, replace=False)] if len(real) > n else real), fake, n, rng


def precision_recall(real, fake, *, k: int = 3, max_samples: int = 10000, seed: int = 0) -> dict:
    """Improved precision and recall with k-NN manifolds.

    precision: share of ``fake`` inside the real manifold (union of balls around each real
    feature reaching its k-th nearest real neighbour); recall: share of ``real`` inside the
    fake manifold. Both sets are cut to the same size (at most ``max_samples``).

    Returns:
        ``{"precision", "recall", "k", "n"}``.
    """
    real, fake, n, rng = _real_cut(real, fake, k, max_samples, seed)
    fake = fake[rng.choice(len(fake), n, replace=False)] if len(fake) > n else fake
    prec = _inside(fake, real, _knn_radii(real, k)).mean()
    rec = _inside(real, fake, _knn_radii(fake, k)).mean()
    return {"precision": float(prec), "recall": float(rec), "k": int(k), "n": int(n)}


def _mean_var(values) -> float:
    """The variance of the mean of independent ``values`` (NaN for fewer than two)."""
    v = np.asarray(values, dtype=np.float64)
    return float(v.var(ddof=1)) / len(v) if len(v) > 1 else float("nan")


def precision_recall_draws(real, fake, *, k: int = 3, max_samples: int = 10000, ci: float = 0.95,
                           max_draws: int = 64, seed: int = 0) -> dict:
    """Precision and recall averaged over disjoint draws of ``fake``, with confidence intervals.

    The real set is cut once to ``n = min(len(real), max_samples)`` faces; ``fake`` is split into
    ``R = min(len(fake) // n, max_draws)`` disjoint draws of ``n`` (R >= 1). Each draw gives the
    :func:`precision_recall` figures on equal sample sizes; the estimates are their means.

    The intervals are normal ones, ``estimate +- z * se``, from two sources of variance:

    * the generated sample: the variance of the R per-draw figures over R (needs R >= 2; with
      one draw it is unknown and the interval is NaN);
    * the real sample, for recall only: each real face's share of draws in whose manifold it lies
      is one i.i.d. term of the recall, so their variance over ``n`` is the variance a new real set
      of the same size would add. Precision's real-side variance (the real manifold itself) is
      not estimated: its interval is conditional on this real set, and says so (``precision_given``).

    Returns:
        ``{"precision", "recall", "precision_ci", "recall_ci", "precision_se", "recall_se",
        "precision_draws", "recall_draws", "recall_per_real" [n], "draws", "k", "n", "ci",
        "precision_given"}``; ``recall_per_real`` is what :func:`paired_recall_difference` pairs.
    """
    from statistics import NormalDist

    real, fake, n, rng = _real_cut(real, fake, k, max_samples, seed)
    draws = max(1, min(len(fake) // n, int(max_draws)))
    order = rng.permutation(len(fake))[:draws * n].reshape(draws, n)
    real_radii = _knn_radii(real, k)
    prec, rec, inside = [], [], np.zeros(n)
    for idx in order:
        f = fake[idx]
        prec.append(float(_inside(f, real, real_radii).mean()))
        hit = _inside(real, f, _knn_radii(f, k))
        rec.append(float(hit.mean()))
        inside += hit
    per_real = inside / draws
    prec, rec = np.array(prec), np.array(rec)
    p_se = float(np.sqrt(_mean_var(prec)))
    r_se = float(np.sqrt(_mean_var(rec) + per_real.var(ddof=1) / n))
    zq = NormalDist().inv_cdf((1 + ci) / 2)
    p, r = float(prec.mean()), float(rec.mean())
    return {"precision": p, "recall": r, "precision_ci": (p - zq * p_se, p + zq * p_se),
            "recall_ci": (r - zq * r_se, r + zq * r_se), "precision_se": p_se, "recall_se": r_se,
            "precision_draws": prec.tolist(), "recall_draws": rec.tolist(), "recall_per_real": per_real,
            "draws": int(draws), "k": int(k), "n": int(n), "ci": float(ci),
            "precision_given": "the real set (its manifold's own sampling variance is not in the interval)"}


def paired_recall_difference(a: dict, b: dict, *, ci: float = 0.95) -> dict:
    """``recall(b) - recall(a)`` for two :func:`precision_recall_draws` results on the same real set.

    Pairing by real face removes the variance the two models share (which real faces are easy to
    cover): the real-side term is the variance of the per-face differences over ``n``, and each
    model adds its own between-draw variance. Raises when the two were measured on different
    real sets (sizes differ).
    """
    from statistics import NormalDist

    ra, rb = np.asarray(a["recall_per_real"]), np.asarray(b["recall_per_real"])
    if ra.shape != rb.shape:
        raise MetricsError(f"recall differences need the same real faces: {ra.shape[0]} vs {rb.shape[0]}")
    n = len(ra)
    var = (rb - ra).var(ddof=1) / n
    var += _mean_var(a["recall_draws"]) + _mean_var(b["recall_draws"])
    diff = float(b["recall"] - a["recall"])
    se = float(np.sqrt(var))
    zq = NormalDist().inv_cdf((1 + ci) / 2)
    return {"difference": diff, "ci": (diff - zq * se, diff + zq * se), "se": se, "n": n,
            "draws": (a["draws"], b["draws"]), "level": float(ci)}


def nearest_neighbours(query, ref, *, batch: int = 2048) -> tuple:
    """For each query feature, ``(index of the nearest ref feature, its L2 distance)``."""
    import torch

    q = torch.as_tensor(np.asarray(query), dtype=torch.float32)
    r = torch.as_tensor(np.asarray(ref), dtype=torch.float32)
    idx, dist = [], []
    for i in range(0, len(q), batch):
        d = torch.cdist(q[i:i + batch], r)
        v, j = d.min(dim=1)
        idx.append(j)
        dist.append(v)
    return torch.cat(idx).numpy(), torch.cat(dist).numpy()


__all__ = ["kid", "mmd2_unbiased", "polynomial_kernel", "frechet_distance", "frechet_from_stats",
           "gaussian_stats", "precision_recall", "precision_recall_draws", "paired_recall_difference",
           "nearest_neighbours", "NAMES"]
