"""faceedit.inversion: latents, spaces, losses, the Gaussianized prior and the optimiser.

``invert`` and ``Projector`` (``inversion.projector``), their settings ``InversionOptions``
(``inversion.options``), ``Latent`` (``inversion.latent``),
``load_prior``/``fit_prior`` (``inversion.prior``); the spaces are documented in
``inversion.spaces``.
"""
from __future__ import annotations

import importlib

_API = {
    "Latent": "faceedit.inversion.latent",
    "LatentFileError": "faceedit.inversion.latent",
    "invert": "faceedit.inversion.projector",
    "Projector": "faceedit.inversion.projector",
    "target_images": "faceedit.inversion.projector",
    "ProjectionResult": "faceedit.inversion.projector",
    "InversionOptions": "faceedit.inversion.options",
    "Perceptual": "faceedit.inversion.options",
    "Compile": "faceedit.inversion.options",
    "GaussianPrior": "faceedit.inversion.prior",
    "fit_prior": "faceedit.inversion.prior",
    "load_prior": "faceedit.inversion.prior",
    "SPACES": "faceedit.inversion.spaces",
    "check_space": "faceedit.inversion.spaces",
}

__all__ = list(_API)


def __getattr__(name):
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'faceedit.inversion' has no attribute {name!r}")
