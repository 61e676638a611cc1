""":class:`LoadedModel`: one loaded checkpoint, the object every stage takes.

The registry resolves a name or a path once (:func:`faceedit.checkpoints.load_model`) and
returns this; inversion, editing and the pipeline read its fields and never resolve the
model again.

The alignment recipe stays the ``config.json`` dict here (:attr:`LoadedModel.recipe`):
``AlignmentRecipe`` belongs to ``alignment/``, a room above ``checkpoints/``, so the rooms
that align faces (``faceedit.pipeline.model_recipe``) build it from this dict. Encoders are
not loaded here either: their files and network wrapper belong to ``inversion/``, which
finds them in :attr:`LoadedModel.folder`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch


@dataclass(frozen=True, eq=False)
class LoadedModel:
    """A generator with everything read from its checkpoint.

    Attributes:
        G: the generator (eval mode, no gradients); a ``Generator1`` for StyleGAN v1.
        D: the discriminator, or ``None`` when it was not asked for or the file has none.
        config: the native ``config.json`` dict (architecture, recipe, license, provenance).
        prior: the stored prior statistics (``{name: tensor}``; empty when the file has none).
        sha256: hex digest of the ``model.safetensors`` the weights are (or would be, for a
            converted file) stored as.
        name: the registry name, else the config's name, else the file's stem.
        source: the file or folder read (``None`` for a model built in memory).
    """

    G: torch.nn.Module
    D: torch.nn.Module | None
    config: dict
    sha256: str
    name: str
    prior: dict = field(default_factory=dict)
    source: Path | None = None

    @property
    def model_id(self) -> str:
        """``name@sha256[:12]``: what latents and directions record to say which model they belong to."""
        return f"{self.name}@{self.sha256[:12]}"

    @property
    def recipe(self) -> dict | None:
        """The alignment recipe recorded in ``config.json`` (an ``AlignmentRecipe.to_dict()``), or ``None``."""
        return self.config.get("recipe")

    @property
    def arch(self) -> str:
        """``stylegan2`` or ``stylegan1``."""
        return str(cast(Any, self.G).arch)

    @property
    def resolution(self) -> int:
        return int(cast(Any, self.G).resolution)

    @property
    def folder(self) -> Path | None:
        """The checkpoint folder (where encoders and cached priors live), or ``None`` for a zip or pickle."""
        return self.source if self.source is not None and self.source.is_dir() else None

    def to(self, device) -> LoadedModel:
        """Move G (and D) to ``device`` in place and return ``self``."""
        self.G.to(device)
        if self.D is not None:
            self.D.to(device)
        return self


__all__ = ["LoadedModel"]
