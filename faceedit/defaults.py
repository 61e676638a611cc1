"""Defaults of the front door that the CLI and :class:`faceedit.Pipeline` share (no heavy imports).

``DEFAULT_STRENGTH`` is the strength an attribute named without one gets (``faceedit edit
--attr smile``, ``Pipeline.edit_photo(photo, ["smile"])``), in the editing room's ``std``
unit: 1 moves the latent by one standard deviation of the latent distribution along the
direction. Chosen by ``bench/scripts/edit_strength.py`` (its docstring states the rule):
the smallest strength of its grid whose ``faces64`` (W+) smile edit changes the face crop
by at least 6 levels on average inside the face mask, on 20 train-split photos (6.85 levels
at 10, 5.46 at 8), with the edit's identity cost kept small (median dlib distance to the
reconstruction 0.19; same-person below 0.6); checked on 20 test-split photos (6.52 levels).
``bench/results/edit_strength/README.md`` has the table, W++ included (it moves about 2.4x
further per unit: 16 levels at 10).
"""
from __future__ import annotations

DEFAULT_STRENGTH = 10.0

__all__ = ["DEFAULT_STRENGTH"]
