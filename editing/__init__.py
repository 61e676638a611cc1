"""Attribute directions and edits: InterFaceGAN (with conditional manipulation), GANSpace, SeFa.

``faceedit.editing.edit(latent, {"smile": 2})`` moves a latent along shipped or fitted
directions; :mod:`.fit` finds directions; :mod:`.direction` defines the file format.
Positive strength = more of the attribute (more smile, older, more of CelebA's ``Male``,
glasses on, turned to the subject's left); strength 1 = one standard deviation of the
latent distribution along the direction.
"""
from .apply import displacement, edit, resolve_directions, sweep
from .direction import (SIGNS, Direction, DirectionError, DirectionFileError, canonical_attribute,
                        find_direction, list_directions)

__all__ = ["edit", "sweep", "displacement", "resolve_directions", "Direction", "DirectionError",
           "DirectionFileError", "find_direction", "list_directions", "canonical_attribute", "SIGNS"]
