"""Latent codes for seeds, drawn the way the model's authors draw them.

NVIDIA's scripts (``generate.py``, ``style_mixing.py`` in stylegan2-ada-pytorch and the TF
repositories) draw the code of seed ``s`` as ``np.random.RandomState(s).randn(1, z_dim)``;
every paper figure and sample sheet of their models is indexed by those seeds. faceedit's
own sample sheets (the shipped models' cards) were drawn with torch's generator
(:meth:`faceedit.networks.Generator.sample_z`). Both are offered; NVIDIA's is the default so
that seed 0 of an NVIDIA model is the face NVIDIA shows.
"""
from __future__ import annotations

import numpy as np
import torch

from faceedit.core.errors import PipelineError

Z_SOURCES = ("numpy", "torch")


def seed_z(G, seeds, source: str = "numpy", device=None) -> torch.Tensor:
    """One z per seed, stacked: ``[len(seeds), *G.z_shape]`` float32.

    Args:
        G: a generator with ``z_shape`` (``(z_dim,)``, or ``(num_ws, z_dim)`` for W++) and
            ``sample_z``.
        seeds: non-negative integers below 2**32 (numpy's ``RandomState`` range).
        source: ``"numpy"``: ``np.random.RandomState(seed).randn(1, *z_shape)`` (NVIDIA's);
            ``"torch"``: ``G.sample_z(1, seed=seed)`` (faceedit's shipped sample sheets).
        device: where the codes go (default: the generator's).
    Returns:
        The codes, float32.
    Raises:
        ValueError: an unknown ``source`` or a seed outside ``0 .. 2**32 - 1``.
    """
    if source not in Z_SOURCES:
        raise PipelineError(f"z source must be one of {Z_SOURCES}, got {source!r}")
    seeds = [int(s) for s in seeds]
    bad = [s for s in seeds if not 0 <= s < 2 ** 32]
    if bad:
        raise PipelineError(f"seeds must be in 0 .. 2**32 - 1 (numpy's RandomState), got {bad[:3]}")
    if device is None:
        device = next(G.parameters()).device
    if source == "torch":
        return torch.cat([G.sample_z(1, seed=s, device=device) for s in seeds])
    z = np.concatenate([np.random.RandomState(s).randn(1, *G.z_shape) for s in seeds])
    return torch.from_numpy(z).to(device=device, dtype=torch.float32)


__all__ = ["seed_z", "Z_SOURCES"]
