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

``MAX_STRENGTH`` and ``FAR_FROM_PRIOR`` are where an edit stops being a measured edit and
:class:`faceedit.Pipeline` refuses it unless ``force=True`` (``faceedit edit --force``). Refused
rather than warned about: past them the output is noise pasted into the face, written with
exit code 0 like a result, and a warning scrolls by unread in a batch; someone exploring on
purpose passes one flag.

* ``MAX_STRENGTH``: the largest ``|strength|`` (``std`` unit; ``distance`` is converted with
  the direction's ``latent_std``) the shipped directions were measured at: the grid of
  ``bench/scripts/edit_strength.py`` goes to 12 (the editing benchmark to 2).
* ``FAR_FROM_PRIOR``: the largest squared Mahalanobis distance per dimension under the model's
  Gaussianized prior (``prior.mahalanobis(codes) / (num_ws * w_dim)``; a model without one gets
  a diagonal Gaussian of 4096 mapping samples) that a latent may have, before or after the
  edit. Measured on ``examples/astronaut.jpg`` and 10 photos of ``../shared/datasets/photos``
  (hybrid W+ / W++ inversions; mapping samples read about 1): ``faces64`` W+ inversions 8-13,
  their smile edits at strength 10 100-123 and at 12 138-172, smile and age both at 10 522 and
  at 12 752 (still a face), smile at 30 about 1000 (a face dissolving), six attributes at 10
  3385 and codes negated 3727 (noise), codes scaled by 1e6 about 1e13; ``faces64-wpp`` W++
  inversions 1.5-4, every edit above under 6, codes x10 511, x1e6 about 5e12. 1000 keeps every
  edit of measured strengths, two of them together included, and refuses the noise. The
  distance does not see every bad latent: on ``faces64-wpp`` six attributes at 10 read 5.3 and
  codes set to zero 2, and both draw a blur; it catches the far ones.
"""
from __future__ import annotations

DEFAULT_STRENGTH = 10.0
MAX_STRENGTH = 12.0
FAR_FROM_PRIOR = 1000.0

__all__ = ["DEFAULT_STRENGTH", "MAX_STRENGTH", "FAR_FROM_PRIOR"]
