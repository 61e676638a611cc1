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


def eye_mouth_points(landmarks: np.ndarray):
    """The four points of the FFHQ recipe from 68 or 5 landmarks.

    Returns:
        ``(eye_left, eye_right, mouth_left, mouth_right)``, each ``[2]``, image-left first.
        For 68 points the eyes are the means of the eye contours and the mouth points
        are the outer mouth corners (48, 54); for MTCNN's 5 points they are points
        0, 1, 3, 4.
    """
    lm = np.asarray(landmarks, dtype=np.float64)
    if lm.shape == (68, 2):
        return lm[EYE_LEFT].mean(0), lm[EYE_RIGHT].mean(0), lm[48], lm[54]
    if lm.shape == (5, 2):
        return lm[0], lm[1], lm[3], lm[4]
    raise AlignmentError(f"landmarks must be [68, 2] (dlib) or [5, 2] (MTCNN: eyes, nose, mouth corners), "
                         f"got shape {lm.shape}")
