"""The latent spaces an image can be inverted into, documented in one place.

Every space is a small object that says three things: which tensor the optimiser
changes (``init``), where that tensor starts, and how it becomes the per-layer codes
``ws [B, num_ws, w_dim]`` that ``G.synthesis`` takes (``to_ws``).

=========  ==========================  ================================  ================================
space      optimised tensor            initialised at                    turned into ws by
=========  ==========================  ================================  ================================
``w``      ``[B, 1, w_dim]``           ``w_avg`` (the mapping's mean)    broadcast to all ``num_ws`` layers
``w+``     ``[B, num_ws, w_dim]``      ``w_avg`` on every layer          used as is (one free code per layer)
``wpp``    ``[B, num_ws, w_dim]``      the W++ mean (per-layer           used as is; the joint W++ prior
                                       ``w_avg`` of the transformer, or  (``inversion.prior``) holds it to
                                       the prior's mean when known)      the W++ distribution
``wpp-z``  ``[B, num_ws, z_dim]``      the one of ``n_init`` random z    ``G.mapping(z)``: the codes stay on
           (one z per token)           whose W++ codes lie nearest the   the transformer's output manifold
                                       W++ mean
=========  ==========================  ================================  ================================

Priors (``inversion.prior``): on an MLP model every space uses the per-layer Gaussianized
prior. On a W++ model ``wpp``/``wpp-z`` use the joint Gaussian over all layers, while
``w``/``w+`` use its layer-wise blocks (each layer its own Gaussian, cross-layer
correlations dropped): without a prior ``w+`` and ``wpp`` are the same free per-layer
codes, with it they differ by exactly the correlations that define W++.

``wpp`` and ``wpp-z`` need a generator whose mapping is a transformer (TransStyleGAN);
asking for them on an MLP-mapping generator raises ``ValueError`` naming the registered
models that have one. ``w`` and ``w+`` work on both kinds (on a transformer generator ``w``
broadcasts one code, which is rarely what you want; ``w+`` is its natural comparison).

The noise scale used for latent-noise annealing is ``w_std``: the root mean square
distance of mapping samples from the start point (NVIDIA's projector), or 1 for ``wpp-z``
(z is standard normal).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from faceedit.core.errors import InversionError

SPACES = ("w", "w+", "wpp", "wpp-z")
TRANSFORMER_SPACES = ("wpp", "wpp-z")


def check_space(G, space: str) -> str:
    """Validate ``space`` for generator ``G``; returns the canonical name.

    Raises:
        ValueError: unknown space, or a W++ space on a generator with an MLP mapping.
    """
    s = str(space).lower().replace("_", "-")
    s = {"wplus": "w+", "w-plus": "w+", "w++": "wpp", "w++-z": "wpp-z", "wppz": "wpp-z"}.get(s, s)
    if s not in SPACES:
        raise InversionError(f"unknown inversion space {space!r}; expected one of {', '.join(SPACES)}")
    if s in TRANSFORMER_SPACES and getattr(G, "mapping_kind", "mlp") != "transformer":
        from faceedit.checkpoints.registry import models_with_mapping

        have = ", ".join(models_with_mapping("transformer")) or "none registered"
        raise InversionError(f"space {s!r} (W++) needs a generator with a transformer mapping, but this one has "
                             f"an {getattr(G, 'mapping_kind', 'mlp')!r} mapping; use --space w or w+ with it, or "
                             f"a W++ model: {have}")
    return s


@dataclass
class Space:
    """How one space is parameterised for generator ``G`` (see the module docstring)."""

    G: torch.nn.Module
    name: str
    n_init: int = 256          # wpp-z: random candidates for the start point
    n_std: int = 2_000         # samples for w_std when no prior supplies it

    def __post_init__(self):
        self.name = check_space(self.G, self.name)

    @property
    def optimizes_z(self) -> bool:
        return self.name == "wpp-z"

    def start(self, mean_ws: torch.Tensor | None = None, *, seed: int = 0) -> torch.Tensor:
        """One start point (no batch dim): ``[1, w_dim]``, ``[num_ws, w_dim]`` or ``[num_ws, z_dim]``.

        Args:
            mean_ws: the W/W++ mean to start from ``[num_ws, w_dim]`` (default ``G.w_avg``,
                replaced by the prior's mean for ``wpp`` when the caller has one).
            seed: seeds the candidate z of ``wpp-z``.
        """
        G = self.G
        dev = G.synthesis.const.device
        mean = (G.w_avg if mean_ws is None else mean_ws).detach().float().to(dev)
        if self.name == "w":
            return mean[:1].clone()
        if self.name in ("w+", "wpp"):
            return mean.clone()
        # wpp-z: pick the candidate z whose codes lie nearest the W++ mean.
        gen = torch.Generator().manual_seed(int(seed))
        z = torch.randn((self.n_init, *G.z_shape), generator=gen).to(dev)
        with torch.no_grad():
            ws = torch.cat([G.mapping(c) for c in z.split(64)])
        d = (ws - mean).flatten(1).square().sum(1)
        return z[int(d.argmin())].clone()

    def to_ws(self, param: torch.Tensor) -> torch.Tensor:
        """Optimised tensor ``[B, ...]`` -> ``ws [B, num_ws, w_dim]`` (differentiable)."""
        if self.name == "w":
            return param.expand(-1, self.G.num_ws, -1)
        if self.name == "wpp-z":
            return self.G.mapping(param)
        return param

    def noise_scale(self, start: torch.Tensor | None = None, *, seed: int = 0) -> float:
        """``w_std``: RMS distance of mapping samples from the start (1.0 for ``wpp-z``)."""
        if self.name == "wpp-z":
            return 1.0
        G = self.G
        dev = G.synthesis.const.device
        gen = torch.Generator().manual_seed(int(seed) + 1)
        z = torch.randn((self.n_std, *G.z_shape), generator=gen).to(dev)
        ref = (G.w_avg if start is None else start.expand(G.num_ws, -1) if start.shape[0] == 1 else start)
        ref = ref.detach().float().to(dev)
        acc, n = 0.0, 0
        with torch.no_grad():
            for c in z.split(1024):
                ws = G.mapping(c).float()
                acc += float((ws - ref).square().sum(-1).mean(1).sum())
                n += len(c)
        return (acc / n) ** 0.5


__all__ = ["SPACES", "TRANSFORMER_SPACES", "Space", "check_space"]
