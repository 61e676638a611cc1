"""Defaults of the front door that the CLI and :class:`faceedit.Pipeline` share (no heavy imports).

``DEFAULT_STRENGTH`` is the strength an attribute named without one gets (``faceedit edit
--attr smile``, ``Pipeline.edit_photo(photo, ["smile"])``), in the editing room's ``std``
unit: 1 moves the latent by one standard deviation of the latent distribution along the
direction. Chosen by ``benchmarks/edit_strength.py`` (its docstring states the rule):
the smallest strength whose edit of the shipped ``faces64`` smile direction changes the
face crop by at least 6 levels on average inside the face mask.
"""
from __future__ import annotations

DEFAULT_STRENGTH = 2.0

__all__ = ["DEFAULT_STRENGTH"]
