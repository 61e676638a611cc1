"""How well an edit does what it says: attribute change per unit strength, identity kept,
other attributes left alone.

Input is a strength sweep over the same faces: for each strength ``s_k`` (0 = unedited),
the attribute scores of the edited images and, optionally, an identity similarity (or
distance) of each edited image to the unedited one. Every figure is a least-squares slope
against strength, fitted per face and averaged over faces, so sweeps with different
strength grids compare.

* ``target``: slope of the target attribute, in logit units and in probability units, per
  unit strength, plus the mean probability at each strength;
* ``identity``: mean identity figure at each strength, and its slope;
* ``drift``: for every other attribute, the slope of its probability per unit strength
  (``age`` in years per unit); ``mean_abs_drift`` over the binary ones and the largest few.
"""
from __future__ import annotations

import numpy as np

from faceedit.core.errors import MetricsError


def _slopes(s: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Per-column least-squares slope of ``values [K, N]`` against strengths ``s [K]``."""
    sc = s - s.mean()
    den = (sc ** 2).sum()
    if den <= 0:
        raise MetricsError("a sweep needs at least two different strengths")
    return (sc[:, None] * (values - values.mean(0, keepdims=True))).sum(0) / den


def _logit(p, eps=1e-4):
    p = np.clip(np.asarray(p, np.float64), eps, 1 - eps)
    return np.log(p / (1 - p))


def editing_metrics(strengths, scores_by_strength, target: str, *, identity_by_strength=None,
                    identity_name: str = "identity_similarity", top: int = 5) -> dict:
    """Figures of one edit sweep (see the module docstring).

    Args:
        strengths: ``[K]`` strengths (any order; include 0 for the unedited images).
        scores_by_strength: ``K`` dicts ``{attribute: [N] probabilities, 'age': [N] years}``, one per
            strength, over the same ``N`` faces in the same order.
        target: the attribute the edit is meant to change.
        identity_by_strength: optional ``K`` arrays ``[N]``: identity similarity (or distance) of
            each edited face to its unedited version.
        identity_name: what the identity figures are (reported as is).
        top: how many of the most drifting attributes to list.
    Returns:
        ``{"target": {...}, "identity": {...} | None, "drift": {...}, "strengths": [...], "n": N}``.
    """
    s = np.asarray(strengths, np.float64)
    if len(s) != len(scores_by_strength):
        raise MetricsError(f"{len(s)} strengths but {len(scores_by_strength)} score sets")
    if target not in scores_by_strength[0]:
        raise MetricsError(f"target attribute {target!r} is not among the scores "
                           f"({', '.join(sorted(scores_by_strength[0]))})")
    order = np.argsort(s)
    s = s[order]
    sets = [scores_by_strength[i] for i in order]
    stack = lambda k: np.stack([np.asarray(d[k], np.float64) for d in sets])  # noqa: E731  [K, N]
    tp = stack(target)
    out = {"strengths": s.tolist(), "n": int(tp.shape[1]), "target": {
        "attribute": target,
        "slope_logit": float(_slopes(s, _logit(tp)).mean()),
        "slope_prob": float(_slopes(s, tp).mean()),
        "mean_prob": tp.mean(1).tolist(),
        "flip_rate": None,
    }}
    if 0.0 in s:
        base = tp[list(s).index(0.0)] > 0.5
        out["target"]["flip_rate"] = [float(((p > 0.5) != base).mean()) for p in tp]
    if identity_by_strength is not None:
        idv = np.stack([np.asarray(identity_by_strength[i], np.float64) for i in order])
        out["identity"] = {"name": identity_name, "mean": idv.mean(1).tolist(),
                           "slope": float(_slopes(s, idv).mean())}
    else:
        out["identity"] = None
    drift = {}
    for k in sets[0]:
        if k == target:
            continue
        drift[k] = float(_slopes(s, stack(k)).mean())
    binary = {k: v for k, v in drift.items() if k != "age"}
    worst = sorted(binary.items(), key=lambda kv: -abs(kv[1]))[:top]
    out["drift"] = {"per_attribute": drift, "mean_abs_drift": float(np.mean([abs(v) for v in binary.values()]))
                    if binary else float("nan"), "largest": worst,
                    "age_years_per_unit": drift.get("age")}
    return out


__all__ = ["editing_metrics"]
