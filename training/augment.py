"""Differentiable augmentation (DiffAugment: colour, translation, cutout) for small data sets.

With ~30k training faces a discriminator over-fits within a few hundred kimg; DiffAugment
(Zhao et al. 2020) applies the same random, differentiable transforms to the real and the
generated images every time the discriminator sees them (in the D and in the G losses),
so D cannot memorise the train set and G still learns the un-augmented distribution
(every transform here is a bijection in distribution that does not leak: colour jitter,
integer translation with zero fill, and cutout are all "non-leaking" at these strengths).
We chose it over ADA because it has no adaptive state to carry between resumable chunks
and no per-step tuning; the three policies are the ones its authors recommend for
limited data.

The random draws are separate from their application (:func:`sample_params` and
:func:`apply`), so a caller can draw them once for a batch and apply them per sample
inside ``torch.func.vmap`` (the GSNR diagnostics do this).

Convention: images are ``[N, C, H, W]`` floats in about [-1, 1]; ``params`` is a dict of
``[N]`` tensors; translation shifts by whole pixels and fills with 0 (mid-grey), cutout
zeroes a square of ``cutout`` x the side.
"""
from __future__ import annotations

import torch

from faceedit.core.errors import TrainingError

POLICIES = ("color", "translation", "cutout")


def parse_policy(policy: str | None) -> tuple:
    """``"color,translation,cutout"`` -> tuple of policy names (empty string or None -> none)."""
    if not policy:
        return ()
    names = tuple(p.strip() for p in str(policy).split(",") if p.strip())
    bad = [p for p in names if p not in POLICIES]
    if bad:
        raise TrainingError(f"unknown augmentation {bad}; choose from {', '.join(POLICIES)} (comma separated) "
                            f"or an empty string for none")
    return names


def sample_params(n: int, size: int, *, policy=POLICIES, translation: float = 0.125, cutout: float = 0.5,
                  device=None, generator: torch.Generator | None = None) -> dict:
    """Draw the random parameters of one augmentation per image.

    Args:
        n: batch size.
        size: image side (square images).
        policy: names from :data:`POLICIES`.
        translation: largest shift as a fraction of the side (DiffAugment: 1/8).
        cutout: side of the cut-out square as a fraction of the side (DiffAugment: 1/2).
    Returns:
        dict of ``[n]`` tensors (float for colour, int64 for pixel offsets).
    """
    kw = dict(device=device, generator=generator)
    p = {}
    if "color" in policy:
        p["brightness"] = torch.rand(n, **kw) - 0.5           # added, in [-0.5, 0.5)
        p["saturation"] = torch.rand(n, **kw) * 2             # chroma gain in [0, 2)
        p["contrast"] = torch.rand(n, **kw) + 0.5             # gain in [0.5, 1.5)
    if "translation" in policy:
        s = int(size * translation + 0.5)
        p["shift_x"] = torch.randint(-s, s + 1, (n,), **kw)
        p["shift_y"] = torch.randint(-s, s + 1, (n,), **kw)
    if "cutout" in policy:
        c = int(size * cutout + 0.5)
        p["cut_x"] = torch.randint(0, size + (1 - c % 2), (n,), **kw) - c // 2  # top-left corner
        p["cut_y"] = torch.randint(0, size + (1 - c % 2), (n,), **kw) - c // 2
        p["cut_size"] = torch.full((n,), c, dtype=torch.int64, device=device)
    return p


def apply(x: torch.Tensor, params: dict) -> torch.Tensor:
    """Apply drawn augmentations (differentiable in ``x``; works per sample under ``vmap``)."""
    if x.ndim != 4:
        raise TrainingError(f"augment expects [N, C, H, W], got {tuple(x.shape)}")
    n, c, h, w = x.shape
    view = lambda t: t.to(x.dtype).view(n, 1, 1, 1)  # noqa: E731
    if "brightness" in params:
        x = x + view(params["brightness"])
        m = x.mean(dim=1, keepdim=True)
        x = (x - m) * view(params["saturation"]) + m
        m = x.mean(dim=[1, 2, 3], keepdim=True)
        x = (x - m) * view(params["contrast"]) + m
    if "shift_x" in params:
        x = _translate(x, params["shift_x"], params["shift_y"])
    if "cut_x" in params:
        ys = torch.arange(h, device=x.device).view(1, h, 1)
        xs = torch.arange(w, device=x.device).view(1, 1, w)
        cy, cx, cs = (params[k].to(x.device).view(n, 1, 1) for k in ("cut_y", "cut_x", "cut_size"))
        inside = (ys >= cy) & (ys < cy + cs) & (xs >= cx) & (xs < cx + cs)
        x = x * (~inside).unsqueeze(1).to(x.dtype)
    return x


def _translate(x: torch.Tensor, dx: torch.Tensor, dy: torch.Tensor) -> torch.Tensor:
    """Shift each image by whole pixels (``out[y, x] = in[y - dy, x - dx]``), zero fill.

    Gather with clamped indices and a validity mask: no host sync, vmap-friendly.
    """
    n, c, h, w = x.shape
    rows = torch.arange(h, device=x.device).view(1, h) - dy.to(x.device).view(n, 1)  # [n, h]
    cols = torch.arange(w, device=x.device).view(1, w) - dx.to(x.device).view(n, 1)  # [n, w]
    valid = ((rows >= 0) & (rows < h)).view(n, 1, h, 1) & ((cols >= 0) & (cols < w)).view(n, 1, 1, w)
    x = x.gather(2, rows.clamp(0, h - 1).view(n, 1, h, 1).expand(n, c, h, w))
    x = x.gather(3, cols.clamp(0, w - 1).view(n, 1, 1, w).expand(n, c, h, w))
    return x * valid.to(x.dtype)


class DiffAugment:
    """Callable augmentation: ``aug(x)`` draws fresh parameters and applies them.

    Args:
        policy: comma-separated names from :data:`POLICIES` (``""`` = identity).
        translation: largest shift as a fraction of the side.
        cutout: cut-out square side as a fraction of the side.
    """

    def __init__(self, policy: str = "color,translation,cutout", translation: float = 0.125,
                 cutout: float = 0.5):
        self.policy = parse_policy(policy)
        self.translation, self.cutout = float(translation), float(cutout)

    def sample(self, n: int, size: int, device=None, generator: torch.Generator | None = None) -> dict:
        return sample_params(n, size, policy=self.policy, translation=self.translation, cutout=self.cutout,
                             device=device, generator=generator)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if not self.policy:
            return x
        return apply(x, self.sample(x.shape[0], x.shape[-1], device=x.device))
