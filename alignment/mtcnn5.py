"""MTCNN's 5 points made to agree with the 68-point model: refined on an exact crop, calibrated.

``mtcnn5_refined`` re-runs MTCNN's output network on a sub-pixel-exact (and mirrored) crop
of the face box; ``calibrate_mtcnn5`` maps the points to the 68-point model's definitions
of eyes and mouth corners (a linear map fitted on train-split faces, shipped as
``mtcnn5_calibration.json``), so an MTCNN quad matches a dlib68 quad.
"""
from __future__ import annotations

import functools

import numpy as np

from .errors import AlignmentError
from .ffhq import warp_quad

# MTCNN's output network (ONet) sees a face as a 48x48 crop.
ONET_SIZE = 48
CALIBRATION_FILE = "mtcnn5_calibration.json"


def mtcnn5_refined(image: np.ndarray, box, *, mirror: bool = True, device=None) -> np.ndarray:
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
        device: where the ONet runs (``None``: the CPU; ``models.mtcnn``'s device argument).
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
    square = np.array([[bx, by], [bx, by + side], [bx + side, by + side], [bx + side, by]])
    crop = warp_quad(np.ascontiguousarray(image), square, ONET_SIZE, fill=127)[0]
    crops = [crop, crop[:, ::-1]] if mirror else [crop]
    net = mtcnn(device=device).onet
    x = torch.from_numpy(np.ascontiguousarray(np.stack(crops))).to(next(net.parameters()).device)
    with torch.no_grad():
        p = net((x.permute(0, 3, 1, 2).float() - 127.5) * 0.0078125)[1].double().cpu().numpy()
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
    (``bench/scripts/alignment.py quads --fit``), predicts the 68-point eyes and mouth corners in the eye
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
