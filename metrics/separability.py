"""Linear separability (Karras et al. 2019, "A Style-Based Generator Architecture", sec. 4.2).

Per binary attribute: label generated images with a classifier (here the attribute
network), keep the most confident half, fit a linear SVM that predicts the label from
the latent code, and measure the conditional entropy ``H(Y | X)`` of the classifier's
label ``Y`` given the SVM's side ``X``. The separability is ``exp(sum of H over
attributes)`` with H in nats (the same number as StyleGAN's ``2 ** sum`` with H in bits):
1 is perfectly linear, larger is worse.

One change from StyleGAN's script, on purpose: the SVM is fitted on one part of the kept
samples and ``H(Y | X)`` is measured on the other part (``held_out``), so an SVM that
merely memorises a high-dimensional code cannot score well. With ``held_out=0`` the
in-sample figure (StyleGAN's) is returned.
"""
from __future__ import annotations

import logging

import numpy as np

from faceedit.core.errors import MetricsError

log = logging.getLogger(__name__)


def conditional_entropy(y: np.ndarray, x: np.ndarray) -> float:
    """``H(Y | X)`` in nats for two binary (or discrete) label arrays of the same length."""
    y, x = np.asarray(y), np.asarray(x)
    if y.shape != x.shape or y.ndim != 1:
        raise MetricsError(f"y and x must be 1-D arrays of one length, got {y.shape} and {x.shape}")
    n = len(y)
    h = 0.0
    for xv in np.unique(x):
        m = x == xv
        px = m.sum() / n
        _, counts = np.unique(y[m], return_counts=True)
        p = counts / counts.sum()
        h -= px * float((p * np.log(p)).sum())
    return float(h)


def attribute_entropy(latents: np.ndarray, prob: np.ndarray, *, keep: float = 0.5, held_out: float = 0.5,
                      seed: int = 0, C: float = 1.0) -> dict:
    """One attribute's ``H(Y | X)``.

    Args:
        latents: ``[N, D]`` codes (flatten W+ codes before calling).
        prob: ``[N]`` classifier probabilities of the positive class.
        keep: most confident share kept (StyleGAN: half).
        held_out: share of the kept samples the SVM is evaluated on (0: in-sample, as StyleGAN).
        seed: split seed.
        C: the SVM's regularisation.
    Returns:
        ``{"entropy", "svm_accuracy", "positives", "kept", "fit", "eval"}``.
    """
    from sklearn.svm import LinearSVC

    lat = np.asarray(latents, np.float64).reshape(len(latents), -1)
    p = np.asarray(prob, np.float64)
    if len(lat) != len(p):
        raise MetricsError(f"{len(lat)} latents for {len(p)} scores")
    conf = np.abs(p - 0.5)
    n_keep = max(4, int(round(len(p) * keep)))
    idx = np.argsort(-conf, kind="stable")[:n_keep]
    y = (p[idx] > 0.5).astype(int)
    x = lat[idx]
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(idx))
    n_eval = int(round(len(idx) * held_out))
    ev, fit = (order[:n_eval], order[n_eval:]) if n_eval > 0 else (order, order)
    if len(np.unique(y[fit])) < 2:
        pred = np.full(len(ev), y[fit][0])  # one class only: the SVM's answer is that class
    else:
        # Standardise the codes (W's coordinates have very different scales); the SVM stays linear.
        mu, sd = x[fit].mean(0), x[fit].std(0) + 1e-8
        # Same optimum either way; the primal solver takes ~40x longer when there are fewer
        # samples than dimensions (W++ codes: 10 x 256), the dual one when there are more.
        svm = LinearSVC(C=C, dual=bool(len(fit) < x.shape[1]), max_iter=5000)
        svm.fit((x[fit] - mu) / sd, y[fit])
        pred = svm.predict((x[ev] - mu) / sd)
    return {"entropy": conditional_entropy(y[ev], pred), "svm_accuracy": float((pred == y[ev]).mean()),
            "positives": int(y.sum()), "kept": int(n_keep), "fit": int(len(fit)), "eval": int(len(ev))}


def linear_separability(latents: np.ndarray, scores: dict, *, attributes=None, keep: float = 0.5,
                        held_out: float = 0.5, seed: int = 0, min_minority: int = 10) -> dict:
    """Linear separability of ``latents`` for each attribute in ``scores``.

    Args:
        latents: ``[N, ...]`` codes of the generated images (Z or W).
        scores: ``{attribute: probabilities [N]}`` (e.g. :meth:`AttributeScorer.scores`).
        attributes: which attributes (default: every key except ``age``).
        min_minority: attributes whose kept labels have fewer than this many of either class
            are skipped (reported under ``skipped``): their entropy says nothing.
    Returns:
        ``{"separability": exp(sum H), "per_attribute": {name: {...}}, "skipped": [...], ...}``.
    """
    names = list(attributes) if attributes is not None else [k for k in scores if k != "age"]
    per, skipped = {}, []
    for a in names:
        r = attribute_entropy(latents, scores[a], keep=keep, held_out=held_out, seed=seed)
        if min(r["positives"], r["kept"] - r["positives"]) < min_minority:
            skipped.append(a)
            continue
        per[a] = r
    total = sum(r["entropy"] for r in per.values())
    return {"separability": float(np.exp(total)) if per else float("nan"), "sum_entropy_nats": float(total),
            "per_attribute": per, "skipped": skipped, "keep": keep, "held_out": held_out, "n": int(len(latents))}


__all__ = ["linear_separability", "attribute_entropy", "conditional_entropy"]
