"""faceedit: GAN inversion and real-face editing for StyleGAN2-family models.

The public API is re-exported here lazily, so ``import faceedit`` stays light (no dlib,
lpips, facenet or scikit-learn until a stage that needs them is called).
"""
from __future__ import annotations

import importlib

from ._version import __version__

_API = {
    "load_generator": "faceedit.checkpoints.registry",
    "load_model": "faceedit.checkpoints.registry",
    "LoadedModel": "faceedit.checkpoints.loaded",
    "list_models": "faceedit.checkpoints.registry",
    "AlignedFace": "faceedit.alignment.types",
    "AlignmentRecipe": "faceedit.alignment.types",
    "Latent": "faceedit.inversion.latent",
    "align": "faceedit.alignment",
    "paste_back": "faceedit.alignment",
    "invert": "faceedit.inversion",
    "Projector": "faceedit.inversion",
    "Direction": "faceedit.editing",
    "edit": "faceedit.editing",
    "load_image": "faceedit.core.images",
    "save_image": "faceedit.core.images",
    "Pipeline": "faceedit.pipeline",
}

__all__ = ["__version__", *_API]


def __getattr__(name):
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'faceedit' has no attribute {name!r}")
