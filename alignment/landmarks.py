"""Facial landmarks: dlib's 68-point predictor, and the eye/mouth points the FFHQ quad needs.

Coordinates follow the room's convention (pixel centres at integer + 0.5; see
:mod:`faceedit.alignment.detect`).
"""
from __future__ import annotations

import numpy as np

from .errors import AlignmentError

# dlib 68-point index ranges (iBUG 300-W markup).
JAW = slice(0, 17)
EYE_LEFT = slice(36, 42)    # image-left eye (the subject's right eye)
EYE_RIGHT = slice(42, 48)   # image-right eye
MOUTH_OUTER = slice(48, 60)


def landmarks68(image: np.ndarray, box) -> np.ndarray:
    """dlib's 68 landmarks inside a face box.

    Args:
        image: ``[H, W, 3]`` RGB uint8.
        box: ``(x0, y0, x1, y1)`` in photo coordinates, e.g. ``Detection.box``.
    Returns:
        ``[68, 2]`` float64 (x, y) photo coordinates, pixel centres at integer + 0.5.
    """
    import dlib

    from .models import shape_predictor68

    x0, y0, x1, y1 = (float(v) for v in box)
    if not (x1 > x0 and y1 > y0):
        raise AlignmentError(f"face box {box} is empty; expected (x0, y0, x1, y1) with x1 > x0 and y1 > y0")
    rect = dlib.rectangle(int(round(x0)), int(round(y0)), int(round(x1)) - 1, int(round(y1)) - 1)
    shape = shape_predictor68()(np.ascontiguousarray(image), rect)
    pts = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)
    return pts + 0.5


# Index of each of the 68 points on the mirrored face (iBUG markup): the jaw runs the other way,
# brows, eyes, nostrils and mouth trade sides, the midline points stay.
MIRROR68 = np.array(
    list(range(16, -1, -1)) + list(range(26, 16, -1)) + [27, 28, 29, 30] + [35, 34, 33, 32, 31]
    + [45, 44, 43, 42, 47, 46] + [39, 38, 37, 36, 41, 40]
    + [54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55] + [64, 63, 62, 61, 60, 67, 66, 65])

# Test-time averaging for landmarks68_averaged: the face region is resampled so the box side is
# at least AVERAGE_MIN_BOX px (dlib returns whole pixels: on a 45 px CelebA box that rounding
# alone is ~1% of the FFHQ quad), and the predictor runs from the box and six moved copies
# (shift 4% of the box side left, right, up, down; grow and shrink 5%), each on the image and on
# its mirror image. Chosen on QuadNet's held-out TRAIN faces (1,200): against QuadNet's quads
# these points agree for 95.3% of faces, a single pass for 92.2%, photo + mirror for 94.4%;
# 12-15 boxes or larger moves gained nothing.
AVERAGE_MIN_BOX = 256
AVERAGE_BOX_MOVES = ((0.0, 0.0, 0.0), (0.04, 0.0, 0.0), (-0.04, 0.0, 0.0), (0.0, 0.04, 0.0), (0.0, -0.04, 0.0),
                     (0.0, 0.0, 0.05), (0.0, 0.0, -0.05))


def landmarks68_averaged(image: np.ndarray, box) -> np.ndarray:
    """dlib's 68 landmarks averaged over the mirror image and moved face boxes, at sub-pixel precision.

    One predictor pass lands on whole pixels and depends on where the box starts it; this
    averages 14 passes (``AVERAGE_BOX_MOVES`` on the face region and its mirror image, points
    of the mirror mapped back with ``MIRROR68``) on the face region resampled (bicubic) so the
    box is at least ``AVERAGE_MIN_BOX`` px. About 20 ms a face (one pass: 2 ms). On the mean
    over faces it moves nothing measurable (quad side -0.08%, centre 0.05 px on CelebA and
    UTKFace); it takes out noise. ``align(landmarks='dlib68')`` uses it.

    Args and returns as :func:`landmarks68`.
    """
    import cv2

    x0, y0, x1, y1 = (float(v) for v in box)
    if not (x1 > x0 and y1 > y0):
        raise AlignmentError(f"face box {box} is empty; expected (x0, y0, x1, y1) with x1 > x0 and y1 > y0")
    H, W = image.shape[:2]
    side = max(x1 - x0, y1 - y0)
    margin = 0.35 * side  # room for the moved boxes and the predictor's reach past the box
    cx0, cy0 = max(0, int(np.floor(x0 - margin))), max(0, int(np.floor(y0 - margin)))
    cx1, cy1 = min(W, int(np.ceil(x1 + margin))), min(H, int(np.ceil(y1 + margin)))
    if cx1 <= cx0 or cy1 <= cy0:
        raise AlignmentError(f"face box {box} lies outside the {W}x{H} photo")
    region = np.ascontiguousarray(image[cy0:cy1, cx0:cx1])
    f = max(1.0, AVERAGE_MIN_BOX / side)
    if f > 1.0:
        region = cv2.resize(region, (int(round(region.shape[1] * f)), int(round(region.shape[0] * f))),
                            interpolation=cv2.INTER_CUBIC)
    fx, fy = region.shape[1] / (cx1 - cx0), region.shape[0] / (cy1 - cy0)
    mirror = np.ascontiguousarray(region[:, ::-1])
    rw = region.shape[1]
    b = np.array([(x0 - cx0) * fx, (y0 - cy0) * fy, (x1 - cx0) * fx, (y1 - cy0) * fy])
    s = b[2] - b[0]
    runs = []
    for dx, dy, grow in AVERAGE_BOX_MOVES:
        m = b + s * np.array([dx - grow, dy - grow, dx + grow, dy + grow])
        runs.append(landmarks68(region, m))
        q = landmarks68(mirror, (rw - m[2], m[1], rw - m[0], m[3]))
        q[:, 0] = rw - q[:, 0]
        runs.append(q[MIRROR68])
    p = np.mean(runs, 0)
    return np.stack([p[:, 0] / fx + cx0, p[:, 1] / fy + cy0], 1)


def eye_mouth_points(landmarks: np.ndarray):
    """The four points of the FFHQ recipe from 68 or 5 landmarks.

    Returns:
        ``(eye_left, eye_right, mouth_left, mouth_right)``, each ``[2]``, image-left first.
        For 68 points the eyes are the means of the eye contours and the mouth points
        are the outer mouth corners (48, 54); for MTCNN's 5 points they are points
        0, 1, 3, 4; 4 points are taken as they are.
    """
    lm = np.asarray(landmarks, dtype=np.float64)
    if lm.shape == (68, 2):
        return lm[EYE_LEFT].mean(0), lm[EYE_RIGHT].mean(0), lm[48], lm[54]
    if lm.shape == (5, 2):
        return lm[0], lm[1], lm[3], lm[4]
    if lm.shape == (4, 2):
        return lm[0], lm[1], lm[2], lm[3]
    raise AlignmentError(f"landmarks must be [68, 2] (dlib), [5, 2] (MTCNN: eyes, nose, mouth corners) or [4, 2] "
                         f"(eyes, mouth corners), got shape {lm.shape}")


# The face box dlib's HOG detector returns on a crop of the ``faces64`` geometry (0.6x the FFHQ
# quad), as fractions of the crop side (x0, y0, x1, y1): the median over 280 aligned train crops
# at 256 px (CelebA and UTKFace). HOG's own boxes on such crops jump by 7-20 px with its pyramid
# level; a fixed box gives the shape predictor the same start on every crop. Other quad scales
# scale it about the crop centre.
TEMPLATE_BOX_SCALE = 0.6
TEMPLATE_BOX = (-0.055, 0.172, 0.957, 1.184)
# Grey margin added around a crop before the predictor runs (a quarter of the side): the box
# reaches past the crop's bottom and left edges.
CROP_MARGIN_FRAC = 0.25


def template_box(size: int, scale: float = TEMPLATE_BOX_SCALE) -> tuple:
    """The face box on an aligned ``size`` px crop of quad scale ``scale`` (``AlignmentRecipe.scale``)."""
    k = TEMPLATE_BOX_SCALE / float(scale)
    return tuple(float(size) * (0.5 + (f - 0.5) * k) for f in TEMPLATE_BOX)


def landmarks68_on_crop(crop: np.ndarray, scale: float = TEMPLATE_BOX_SCALE, *, averaged: bool = True) -> np.ndarray:
    """dlib's 68 landmarks on an aligned crop, started from the recipe's template face box (no detector).

    The crop is framed by the FFHQ recipe, so where the face is is known; running the HOG
    detector again would only add its box jitter. Use crops of 128 px or more (at 64 px the
    eye contours are 2-3 px wide).

    Args:
        crop: ``[S, S, 3]`` RGB uint8 aligned crop (``AlignedFace.crop``).
        scale: the quad scale of the recipe that made the crop (``AlignedFace.recipe.scale``).
        averaged: :func:`landmarks68_averaged` (default) or one predictor pass (:func:`landmarks68`).
    Returns:
        ``[68, 2]`` float64 crop coordinates (pixel centres at integer + 0.5).
    """
    import cv2

    c = np.ascontiguousarray(crop)
    if c.ndim != 3 or c.shape[2] != 3 or c.shape[0] != c.shape[1] or c.dtype != np.uint8:
        raise AlignmentError(f"expected a square [S, S, 3] uint8 aligned crop, got {c.shape} {c.dtype}")
    m = int(round(CROP_MARGIN_FRAC * c.shape[0]))
    padded = cv2.copyMakeBorder(c, m, m, m, m, cv2.BORDER_CONSTANT, value=(127, 127, 127))
    x0, y0, x1, y1 = template_box(c.shape[0], scale)
    return (landmarks68_averaged if averaged else landmarks68)(padded, (x0 + m, y0 + m, x1 + m, y1 + m)) - m
