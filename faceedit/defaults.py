"""Defaults of the front door that the CLI and :class:`faceedit.Pipeline` share (no heavy imports).

``DEFAULT_STRENGTH`` is the strength an attribute named without one gets (``faceedit edit
--attr smile``, ``Pipeline.edit_photo(photo, ["smile"])``), in the editing room's ``std``
unit: 1 moves the latent by one standard deviation of the latent distribution along the
direction. Chosen by ``bench/scripts/edit_strength.py`` (its docstring states the rule):
the smallest strength of its grid whose ``faces64`` (W+) smile edit changes the face crop
by at least 6 levels on average inside the face mask, on 20 train-split photos (6.45 levels
at 1, 4.88 at 0.75, on the models shipped with issue 17's retraining), with the edit's identity
cost kept moderate (median dlib distance to the reconstruction 0.21; same-person below 0.6);
checked on 20 test-split photos (6.26 levels, median identity distance 0.21).
``bench/results/edit_strength/README.md`` has the table, W++ included (its smile moves about
two thirds as far per unit: 4.1 levels at 1, 6.1 at 1.5).

``MAX_STRENGTH`` and ``FAR_FROM_PRIOR`` are where an edit stops being a measured edit and
:class:`faceedit.Pipeline` refuses it unless ``force=True`` (``faceedit edit --force``). Refused
rather than warned about: past them the output is noise pasted into the face, written with
exit code 0 like a result, and a warning scrolls by unread in a batch; someone exploring on
purpose passes one flag.

* ``MAX_STRENGTH``: the largest ``|strength|`` (``std`` unit; ``distance`` is converted with
  the direction's ``latent_std``) the shipped directions were measured at: the grid of
  ``bench/results/edit_strength`` goes to 10 (the editing benchmark to 2). At 10 the ``faces64``
  smile changes the crop by 45 levels inside the mask and the median identity distance to the
  reconstruction is 0.67-0.68 on the shipped model; on the previous release's
  model one of its 40 photos' edits at 12 lay past ``FAR_FROM_PRIOR``.
* ``FAR_FROM_PRIOR``: the largest squared Mahalanobis distance per dimension under the model's
  Gaussianized prior (``prior.mahalanobis(codes) / (num_ws * w_dim)``; a model without one gets
  a diagonal Gaussian of 4096 mapping samples) that a latent may have, before or after the
  edit. Measured on the previous release's models (the figures below; on the shipped ones all
  80 smile edits of ``bench/results/edit_strength`` up to strength 10 pass it), on
  ``examples/astronaut.jpg`` and the 40 photos of
  ``bench/results/edit_strength`` (hybrid W+ / W++ inversions; mapping samples read about 1):
  ``faces64`` W+ inversions 8-31, their smile edits at strength 1 11-34, at 10 456-717 (a
  distorted face) and at 12 721-1085, age, male, eyeglasses, young or bald at 10 288-746, smile
  and age both at 6 407-735 and at 8 848-1410 (a face dissolving), smile at 30 6600-8600, six
  attributes at 10 5000-7300 and codes negated 1600-4300 (noise), codes scaled by 10 800-3100
  and by 1e6 about 1e13; ``faces64-wpp`` W++ inversions 1.4-5.6, each of those edits of one
  attribute (up to 12) under 6.3, codes x10 300-730, x1e6 about 5e12. 1000 keeps every edit of
  one of those attributes at measured strengths and two of them together up to 6, and refuses
  the noise. The distance does not see every bad latent: on ``faces64-wpp`` six attributes at
  10 read 4-8.6 and codes set to zero 2, and both draw a blur; it catches the far ones.
"""
from __future__ import annotations

DEFAULT_STRENGTH = 1.0
MAX_STRENGTH = 10.0
FAR_FROM_PRIOR = 1000.0

__all__ = ["DEFAULT_STRENGTH", "MAX_STRENGTH", "FAR_FROM_PRIOR"]
