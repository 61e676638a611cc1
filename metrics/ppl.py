"""Perceptual path length (Karras et al. 2019, "A Style-Based Generator Architecture", sec. 3).

For pairs of latents, the image distance between two points ``eps`` apart on the
interpolation path, divided by ``eps ** 2``:

* in Z: ``z0, z1 ~ N(0, I)``, spherical interpolation (slerp) of the normalised codes at
  ``t`` and ``t + eps``; for a transformer mapping (one z per layer) each layer's z is
  slerped on its own;
* in W: ``w0, w1`` from the mapping, linear interpolation (lerp) at ``t`` and ``t + eps``;
* ``full``: ``t ~ U(0, 1)``; ``end``: ``t in {0, 1}`` (``t = 1`` steps back by ``eps``);
* ``eps = 1e-4``; values below the 1st and above the 99th percentile are dropped before
  the mean, as StyleGAN does.

The distance is LPIPS (VGG) when its backbone is present (``distance='lpips'``), else
the squared L2 distance between attribute-network features (``distance='attr'``). The
result is named by both: ``ppl_z_full[lpips-vgg]`` vs ``ppl_z_full[attr]``; they are not
comparable with each other, and StyleGAN's published PPL also crops the face and works
at 256 px, so no value here is comparable with a published PPL.
"""
from __future__ import annotations

import logging

import numpy as np
import torch

from faceedit.core.errors import MetricsError

log = logging.getLogger(__name__)


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation of the normalised vectors along the last dimension.

    ``t`` broadcasts against ``a[..., :1]``. Returns unit vectors.
    """
    a = a / a.norm(dim=-1, keepdim=True)
    b = b / b.norm(dim=-1, keepdim=True)
    d = (a * b).sum(dim=-1, keepdim=True).clamp(-1 + 1e-7, 1 - 1e-7)
    p = t * torch.acos(d)
    c = b - d * a
    c = c / c.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    out = a * torch.cos(p) + c * torch.sin(p)
    return out / out.norm(dim=-1, keepdim=True)


def lerp(a, b, t):
    return a + (b - a) * t


def _distance_fn(distance, device):
    """Returns ``(name, fn(img0, img1) -> [N] distances)`` for images in [-1, 1]."""
    if distance == "auto":
        from .reconstruction import lpips_available

        distance = "lpips" if lpips_available("vgg") else "attr"
        if distance == "attr":
            log.warning("LPIPS backbone not in the torch hub cache: PPL uses attribute-network features")
    if distance == "lpips":
        from .reconstruction import LPIPS

        lp = LPIPS("vgg", device=device)
        return lp.name, lambda x, y: lp.distance_tensor(x, y)
    if distance == "attr":
        from .attributes import AttributeScorer

        sc = AttributeScorer.load(device=device)
        return "attr", lambda x, y: (sc.net.features(x) - sc.net.features(y)).pow(2).sum(dim=1)
    if callable(distance):
        return getattr(distance, "name", "custom"), distance
    raise MetricsError(f"distance must be 'auto', 'lpips', 'attr' or a callable, got {distance!r}")


@torch.no_grad()
def perceptual_path_length(G, *, space: str = "w", sampling: str = "full", num_samples: int = 10000,
                           epsilon: float = 1e-4, distance="auto", batch_size: int = 64, seed: int = 0,
                           noise_mode: str = "const", device=None, progress=None) -> dict:
    """PPL of generator ``G`` (see the module docstring).

    Args:
        G: a faceedit Generator (``mapping``, ``synthesis``, ``z_shape``).
        space: ``z`` or ``w``.
        sampling: ``full`` or ``end``.
        num_samples: pairs (StyleGAN uses 100k; the CPU default here is smaller).
        epsilon: step on the path.
        distance: ``auto`` (LPIPS if present, else attribute features), ``lpips``, ``attr``,
            or a callable ``(img0, img1) -> [N]`` with an optional ``name`` attribute.
        batch_size: pairs per forward pass.
        seed: latent sampling seed.
        noise_mode: synthesis noise (``const`` so that only the latent moves).
    Returns:
        ``{"name", "ppl", "space", "sampling", "epsilon", "distance", "num_samples", "kept",
        "median", "p1", "p99"}``.
    """
    if space not in ("z", "w"):
        raise MetricsError(f"PPL space must be 'z' or 'w', got {space!r}")
    if sampling not in ("full", "end"):
        raise MetricsError(f"PPL sampling must be 'full' or 'end', got {sampling!r}")
    dev = device or next(G.parameters()).device
    dname, dist = _distance_fn(distance, dev)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    zshape = tuple(G.z_shape)
    vals = []
    done = 0
    while done < num_samples:
        b = min(batch_size, num_samples - done)
        z0 = torch.randn((b, *zshape), generator=gen)
        z1 = torch.randn((b, *zshape), generator=gen)
        if sampling == "full":
            t = torch.rand(b, generator=gen)
        else:
            t = (torch.rand(b, generator=gen) < 0.5).float()
        t0 = torch.where(t >= 1.0, t - epsilon, t)  # an end at t = 1 steps back so that t + eps <= 1
        t0, z0, z1 = t0.to(dev), z0.to(dev), z1.to(dev)
        tb = t0.reshape(b, *([1] * len(zshape)))
        if space == "z":
            za = slerp(z0, z1, tb)
            zb = slerp(z0, z1, tb + epsilon)
            ws = G.mapping(torch.cat([za, zb]))
        else:
            w0, w1 = G.mapping(z0), G.mapping(z1)
            tw = t0.reshape(b, 1, 1)
            ws = torch.cat([lerp(w0, w1, tw), lerp(w0, w1, tw + epsilon)])
        img = G.synthesis(ws, noise_mode=noise_mode).float()
        d = dist(img[:b], img[b:]).float() / (epsilon ** 2)
        vals.append(d.cpu().numpy().astype(np.float64))
        done += b
        if progress is not None:
            progress(b)
    v = np.concatenate(vals)
    lo, hi = np.percentile(v, 1, method="lower"), np.percentile(v, 99, method="higher")
    kept = v[(v >= lo) & (v <= hi)]
    return {"name": f"ppl_{space}_{sampling}[{dname}]", "ppl": float(kept.mean()), "space": space,
            "sampling": sampling, "epsilon": epsilon, "distance": dname, "num_samples": int(len(v)),
            "kept": int(len(kept)), "median": float(np.median(v)), "p1": float(lo), "p99": float(hi)}


__all__ = ["perceptual_path_length", "slerp", "lerp"]
