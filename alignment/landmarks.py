"""Facial landmarks: dlib's 68-point predictor, and the eye/mouth points the FFHQ quad needs.

Coordinates follow the room's convention (pixel centres at integer + 0.5; see
:mod:`faceedit.alignment.detect`).
"""
from __future__ import annotations

import functools

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


def landmarks68_on_crop(crop: np.ndarray, scale: float = TEMPLATE_BOX_SCALE) -> np.ndarray:
    """dlib's 68 landmarks on an aligned crop, started from the recipe's template face box (no detector).

    The crop is framed by the FFHQ recipe, so where the face is is known; running the HOG
    detector again would only add its box jitter. Use crops of 128 px or more (at 64 px the
    eye contours are 2-3 px wide).

    Args:
        crop: ``[S, S, 3]`` RGB uint8 aligned crop (``AlignedFace.crop``).
        scale: the quad scale of the recipe that made the crop (``AlignedFace.recipe.scale``).
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
    return landmarks68(padded, (x0 + m, y0 + m, x1 + m, y1 + m)) - m


# --------------------------------------------------------------------------- MTCNN's 5 points

# MTCNN's output network (ONet) sees a face as a 48x48 crop.
ONET_SIZE = 48
CALIBRATION_FILE = "mtcnn5_calibration.json"


def _square_crop(image: np.ndarray, x0: float, y0: float, side: float, n: int, supersample: int = 4) -> np.ndarray:
    """The continuous square ``[x0, x0 + side]^2`` of a photo resampled to ``n x n`` (grey outside).

    Warped bilinearly at ``supersample * n`` px and area-downsampled; a face larger than that
    is Gaussian-blurred first, so no source pixel is skipped.
    """
    import cv2

    from .ffhq import to_cv

    big = n * supersample
    k = side / big  # source pixels per warped pixel
    H, W = image.shape[:2]
    m = int(np.ceil(3 * max(k, 1.0))) + 2
    xa, ya = max(int(np.floor(x0)) - m, 0), max(int(np.floor(y0)) - m, 0)
    xb, yb = min(int(np.ceil(x0 + side)) + m, W), min(int(np.ceil(y0 + side)) + m, H)
    region = image[ya:yb, xa:xb] if xb > xa and yb > ya else np.full((1, 1, 3), 127, np.uint8)
    if k > 1.0:
        region = cv2.GaussianBlur(region, (0, 0), 0.5 * k)
    M = np.array([[big / side, 0.0, -(x0 - xa) * big / side], [0.0, big / side, -(y0 - ya) * big / side], [0, 0, 1.0]])
    out = cv2.warpAffine(np.ascontiguousarray(region), to_cv(M), (big, big), flags=cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_CONSTANT, borderValue=(127, 127, 127))
    return cv2.resize(out, (n, n), interpolation=cv2.INTER_AREA) if supersample > 1 else out


def mtcnn5_refined(image: np.ndarray, box, *, mirror: bool = True) -> np.ndarray:
    """MTCNN's 5 points re-estimated by its output network on an exact crop of the face box.

    facenet-pytorch cuts the ONet's input at whole pixels but maps the points back from the
    fractional box, which shifts them by a random 0-1 px (+0.5 px on average in x and y; on
    CelebA's 19 px eye distance that alone moves the quad centre by up to 2%). Here the
    square around ``box`` is resampled with sub-pixel accuracy and, with ``mirror``, the
    mirrored crop is run too (points mapped back, left and right swapped) and both averaged.

    Args:
        image: ``[H, W, 3]`` RGB uint8 photo.
        box: ``(x0, y0, x1, y1)`` face box, e.g. ``Detection.box`` of ``detect_faces(img, 'mtcnn')``.
        mirror: also run the mirrored crop and average (two ONet passes; a few ms).
    Returns:
        ``[5, 2]`` float64 photo coordinates: eye, eye, nose, mouth corner, mouth corner
        (image left first), MTCNN's own definitions (see :func:`calibrate_mtcnn5`).
    """
    import torch

    from .models import mtcnn

    x0, y0, x1, y1 = (float(v) for v in box)
    if not (x1 > x0 and y1 > y0):
        raise AlignmentError(f"face box {box} is empty; expected (x0, y0, x1, y1) with x1 > x0 and y1 > y0")
    side = max(x1 - x0, y1 - y0)
    bx, by = (x0 + x1 - side) / 2, (y0 + y1 - side) / 2
    crop = _square_crop(np.ascontiguousarray(image), bx, by, side, ONET_SIZE)
    crops = [crop, crop[:, ::-1]] if mirror else [crop]
    x = torch.from_numpy(np.ascontiguousarray(np.stack(crops))).permute(0, 3, 1, 2).float()
    with torch.no_grad():
        p = mtcnn().onet((x - 127.5) * 0.0078125)[1].double().numpy()
    pts = [np.stack([p[0, :5], p[0, 5:]], 1)]
    if mirror:
        q = np.stack([1.0 - p[1, :5], p[1, 5:]], 1)
        pts.append(q[[1, 0, 2, 4, 3]])
    return np.array([bx, by]) + np.mean(pts, 0) * side


def _eye_frame(p5: np.ndarray):
    """Origin (eye midpoint), unit (eye distance) and axes of a face from its 5 points."""
    eye_mid = (p5[0] + p5[1]) * 0.5
    e = p5[1] - p5[0]
    d = float(np.hypot(*e))
    if not np.isfinite(d) or d < 1e-6:
        raise AlignmentError("degenerate 5 points: both eyes on one spot; check the landmark array")
    ux = e / d
    return eye_mid, d, ux, np.array([-ux[1], ux[0]])


def mtcnn5_features(p5: np.ndarray) -> np.ndarray:
    """Nose and mouth corners in the eye frame (origin eye midpoint, unit eye distance): ``[6]``."""
    o, d, ux, uy = _eye_frame(np.asarray(p5, np.float64))
    v = np.asarray(p5, np.float64)[2:] - o
    return (np.stack([v @ ux, v @ uy], 1) / d).ravel()


def dlib4_in_eye_frame(p5: np.ndarray, points4: np.ndarray) -> np.ndarray:
    """The 68-point model's four quad points (eyes, mouth corners) in the 5 points' eye frame: ``[8]``."""
    o, d, ux, uy = _eye_frame(np.asarray(p5, np.float64))
    v = np.asarray(points4, np.float64) - o
    return (np.stack([v @ ux, v @ uy], 1) / d).ravel()


@functools.lru_cache(maxsize=1)
def mtcnn5_calibration() -> dict:
    """The shipped calibration of refined MTCNN points to the 68-point definitions (``mtcnn5_calibration.json``)."""
    import json
    import os

    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), CALIBRATION_FILE)
    try:
        with open(path) as f:
            cal = json.load(f)
        W = np.asarray(cal["weights"], np.float64)
    except (OSError, KeyError, ValueError) as e:
        raise AlignmentError(f"cannot read the MTCNN calibration {path} ({e}); reinstall faceedit, or "
                             f"align with landmarks='mtcnn5-raw'") from e
    if W.shape != (7, 8):
        raise AlignmentError(f"{path}: weights must be 7x8, got {W.shape}; reinstall faceedit")
    return {**cal, "weights": W}


def calibrate_mtcnn5(p5: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Map refined MTCNN points to what dlib's 68-point model calls eyes and mouth corners.

    MTCNN marks the pupils and the lip corners; the FFHQ quad is defined on the 68-point
    eye-contour means and outer mouth corners (48, 54). On CelebA and UTKFace train faces
    MTCNN's eyes sit higher and ~2% further apart and its mouth corners lower, which alone
    makes quads 2% larger. A linear map, fitted by least squares on train faces
    (``benchmarks/alignment.py quads --fit``), predicts the 68-point eyes and mouth corners in the eye
    frame of the 5 points (origin eye midpoint, unit eye distance) from the nose and mouth
    corners in that frame (6 numbers and a constant).

    Args:
        p5: ``[5, 2]`` points of :func:`mtcnn5_refined` (the calibration is fitted for those).
        weights: ``[7, 8]`` map (default: the shipped one, :func:`mtcnn5_calibration`).
    Returns:
        ``[5, 2]``: calibrated eyes and mouth corners, MTCNN's nose unchanged.
    """
    p5 = np.asarray(p5, np.float64)
    if p5.shape != (5, 2):
        raise AlignmentError(f"expected MTCNN's [5, 2] points, got shape {p5.shape}")
    W = mtcnn5_calibration()["weights"] if weights is None else np.asarray(weights, np.float64)
    q = (np.append(mtcnn5_features(p5), 1.0) @ W).reshape(4, 2)
    o, d, ux, uy = _eye_frame(p5)
    pts = o + d * (q[:, :1] * ux + q[:, 1:] * uy)
    return np.stack([pts[0], pts[1], p5[2], pts[2], pts[3]])
