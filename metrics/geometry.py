"""Geometric face scores from landmarks: smile, mouth open, eyes open, head pose.

From dlib's 68 landmarks (iBUG 300-W markup; ``faceedit.alignment.landmarks68``):

* ``eye_distance``: distance between the two eye centres (means of points 36-41 and
  42-47); every length below is divided by it, so scores do not depend on face size.
  Lengths are measured in the face's own frame, rotated so the eyes are level.
* ``mouth_width``: corner to corner (48-54) / eye distance.
* ``corner_lift``: how far the mouth corners sit above the mouth's centre line (the mean
  height of the lip midpoints 51, 57, 62, 66) / eye distance; positive when they curl up.
* ``smile`` = ``corner_lift + 0.5 * mouth_width`` (both rise with a smile; the weight is a
  plain choice, and the card reports the AUC of each part against CelebA's ``Smiling``).
* ``mouth_open``: outer lip height (top of the upper lip 51 to the bottom of the lower lip
  57, vertical in the face frame) / eye distance. (The inner-lip gap, 61-67, 62-66, 63-65,
  was tried first: on 64 px crops upsampled for dlib it ranked CelebA's
  ``Mouth_Slightly_Open`` *worse* than chance, AUC 0.40 on 133 test faces, against 0.62 for
  the outer height; the inner-lip points are not reliable at that resolution.)
* ``eyes_open``: eye aspect ratio (Soukupova and Cech 2016), mean of both eyes:
  ``(|p2 - p6| + |p3 - p5|) / (2 |p1 - p4|)``.
* ``yaw``, ``pitch``, ``roll`` (degrees): ``cv2.solvePnP`` of six landmarks (nose tip 30,
  chin 8, outer eye corners 36 and 45, mouth corners 48 and 54) against a generic 3D face
  template, pinhole camera with focal length = image width, centre = image centre.
  Convention: angles are 0 for a frontal face; ``yaw > 0`` when the nose points to the
  image's right, ``pitch > 0`` when it points down, ``roll > 0`` when the face is turned
  clockwise in the image.

From MTCNN's 5 points (eyes, nose, mouth corners), an independent ``yaw5``: the nose's
horizontal offset from the midline of the eyes and mouth corners, in the eyes-level
frame, over half the eye distance ``r``; ``yaw5 = atan(r / 0.8)`` in degrees (0.8 is
``2 * nose depth / eye distance`` for an average face, so the two yaws share a scale).

Faces are upsampled before landmarks when small (dlib's HOG finds faces from about 80 px,
and the landmark model is trained on larger faces). A score never silently comes from a
failed fit: :class:`FaceGeometry` carries ``ok`` and ``reason``, with NaN scores on failure.
"""
from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field

import numpy as np

from faceedit.core.errors import MetricsError

log = logging.getLogger(__name__)

# Generic 3D face template (arbitrary units, x right, y down, z away from the camera; the
# nose tip is the origin and nearest the camera). Widely used approximate face proportions.
MODEL_POINTS = np.array([
    (0.0, 0.0, 0.0),          # nose tip (30)
    (0.0, 330.0, 65.0),       # chin (8)
    (-225.0, -170.0, 135.0),  # image-left eye, outer corner (36)
    (225.0, -170.0, 135.0),   # image-right eye, outer corner (45)
    (-150.0, 150.0, 125.0),   # image-left mouth corner (48)
    (150.0, 150.0, 125.0),    # image-right mouth corner (54)
], dtype=np.float64)
POSE_INDICES = (30, 8, 36, 45, 48, 54)
YAW5_K = 0.8
MIN_FACE_PX = 160   # faces are upsampled so that their box is at least this large before landmarks
SCORE_NAMES = ("smile", "corner_lift", "mouth_width", "mouth_open", "eyes_open", "yaw", "pitch", "roll", "yaw5")


@dataclass
class FaceGeometry:
    """Geometric scores of one face (NaN where not measured).

    Attributes:
        ok: landmarks were found and passed the sanity checks.
        reason: why not, when ``ok`` is False ("" otherwise).
        landmarks: ``[68, 2]`` photo coordinates (or None).
        landmarks5: MTCNN's ``[5, 2]`` points used for ``yaw5`` (or None).
        box: the face box used, photo coordinates.
        upsample: factor the face region was enlarged by before landmarks.
    """

    ok: bool
    reason: str = ""
    smile: float = math.nan
    corner_lift: float = math.nan
    mouth_width: float = math.nan
    mouth_open: float = math.nan
    eyes_open: float = math.nan
    yaw: float = math.nan
    pitch: float = math.nan
    roll: float = math.nan
    yaw5: float = math.nan
    eye_distance: float = math.nan
    upsample: float = 1.0
    box: tuple = ()
    landmarks: np.ndarray | None = field(default=None, repr=False)
    landmarks5: np.ndarray | None = field(default=None, repr=False)

    def scores(self) -> dict:
        return {k: getattr(self, k) for k in SCORE_NAMES}

    def to_dict(self, with_landmarks: bool = True) -> dict:
        d = asdict(self)
        for k in ("landmarks", "landmarks5"):
            v = getattr(self, k)
            d[k] = np.round(v, 2).tolist() if (with_landmarks and v is not None) else None
        d["box"] = [float(v) for v in self.box]
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in d.items()}


def _level(lm: np.ndarray) -> tuple:
    """Rotate landmarks so the eyes are level; returns ``(points, eye_distance, roll_degrees)``."""
    el, er = lm[36:42].mean(0), lm[42:48].mean(0)
    v = er - el
    ang = math.atan2(v[1], v[0])
    c, s = math.cos(-ang), math.sin(-ang)
    R = np.array([[c, -s], [s, c]])
    return (lm - el) @ R.T, float(np.hypot(*v)), math.degrees(ang)


def check_landmarks(lm: np.ndarray) -> str:
    """Sanity checks on a 68-point fit; returns "" when plausible, else the reason."""
    p, ed, roll = _level(lm)
    if not np.isfinite(lm).all():
        return "landmarks are not finite"
    if ed < 4:
        return f"eye distance of {ed:.1f} px is too small for a landmark fit"
    mouth_y, nose_y, chin_y = p[48:68, 1].mean(), p[30, 1], p[8, 1]
    if not (0 < nose_y < mouth_y < chin_y):
        return "landmarks are not in face order (eyes, nose, mouth, chin from top to bottom)"
    if not (0.3 < (mouth_y / ed) < 2.5):
        return "mouth-to-eye distance is implausible for a face"
    return ""


def scores_from_landmarks(lm68: np.ndarray, image_size: tuple) -> dict:
    """All 68-point scores (see the module docstring).

    Args:
        lm68: ``[68, 2]`` landmarks in image coordinates.
        image_size: ``(width, height)`` of the image the landmarks are in (camera for solvePnP).
    """
    import cv2

    lm = np.asarray(lm68, np.float64)
    if lm.shape != (68, 2):
        raise MetricsError(f"expected [68, 2] landmarks, got {lm.shape}")
    p, ed, _ = _level(lm)
    width = np.hypot(*(p[54] - p[48]))
    centre_y = p[[51, 57, 62, 66], 1].mean()
    lift = (centre_y - (p[48, 1] + p[54, 1]) / 2) / ed
    height = p[57, 1] - p[51, 1]

    def ear(e):
        return (np.hypot(*(e[1] - e[5])) + np.hypot(*(e[2] - e[4]))) / (2 * np.hypot(*(e[0] - e[3])))

    w, h = image_size
    cam = np.array([[w, 0, w / 2], [0, w, h / 2], [0, 0, 1]], np.float64)
    img_pts = lm[list(POSE_INDICES)].astype(np.float64)
    ok, rvec, tvec = cv2.solvePnP(MODEL_POINTS, img_pts, cam, np.zeros(4), flags=cv2.SOLVEPNP_ITERATIVE)
    yaw = pitch = roll = math.nan
    if ok:
        R, _ = cv2.Rodrigues(rvec)
        # R maps template to camera: x-rotation = pitch, y-rotation = yaw, z-rotation = roll.
        angles = cv2.RQDecomp3x3(R)[0]
        pitch, yaw, roll = -float(angles[0]), -float(angles[1]), float(angles[2])
    return {"smile": float(lift + 0.5 * width / ed), "corner_lift": float(lift), "mouth_width": float(width / ed),
            "mouth_open": float(height / ed), "eyes_open": float((ear(p[36:42]) + ear(p[42:48])) / 2),
            "yaw": yaw, "pitch": pitch, "roll": roll, "eye_distance": ed}


def yaw_from_5points(pts5: np.ndarray) -> float:
    """Yaw in degrees from MTCNN's 5 points (eyes, nose, mouth corners; image-left first)."""
    p = np.asarray(pts5, np.float64)
    if p.shape != (5, 2):
        raise MetricsError(f"expected [5, 2] points, got {p.shape}")
    v = p[1] - p[0]
    ed = float(np.hypot(*v))
    if ed <= 0:
        return math.nan
    a = -math.atan2(v[1], v[0])
    R = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    q = (p - p[0]) @ R.T
    mid = (q[0, 0] + q[1, 0] + q[3, 0] + q[4, 0]) / 4
    r = (q[2, 0] - mid) / (ed / 2)
    return float(math.degrees(math.atan(r / YAW5_K)))


def _enlarge(image, box, min_face: int):
    """Cut the region around ``box`` (1.6x margin) and scale it so the box is >= min_face px.

    Returns ``(region, matrix region->photo 3x3, factor)``.
    """
    import cv2

    x0, y0, x1, y1 = box
    side = max(x1 - x0, y1 - y0)
    f = max(1.0, min_face / max(side, 1.0))
    cx, cy, half = (x0 + x1) / 2, (y0 + y1) / 2, side * 0.8 + 2
    H, W = image.shape[:2]
    rx0, ry0 = max(0, int(math.floor(cx - half))), max(0, int(math.floor(cy - half)))
    rx1, ry1 = min(W, int(math.ceil(cx + half))), min(H, int(math.ceil(cy + half)))
    reg = image[ry0:ry1, rx0:rx1]
    if f > 1:
        reg = cv2.resize(reg, (max(1, round(reg.shape[1] * f)), max(1, round(reg.shape[0] * f))),
                         interpolation=cv2.INTER_CUBIC)
    fx = reg.shape[1] / max(rx1 - rx0, 1)
    fy = reg.shape[0] / max(ry1 - ry0, 1)
    back = np.array([[1 / fx, 0, rx0], [0, 1 / fy, ry0], [0, 0, 1]], np.float64)
    return np.ascontiguousarray(reg), back, fx


def _apply(m, pts):
    pts = np.asarray(pts, np.float64)
    return pts @ m[:2, :2].T + m[:2, 2]


def geometry_for_box(image: np.ndarray, box, *, landmarks5=None, min_face: int = MIN_FACE_PX) -> FaceGeometry:
    """Geometric scores of the face in ``box`` (photo coordinates, e.g. a ``Detection.box``).

    Small faces are cut out with a margin and upsampled so the box is ``min_face`` px before
    the 68-point fit; landmarks are reported in photo coordinates. ``landmarks5`` (MTCNN's
    points for this face, photo coordinates) adds ``yaw5``.
    """
    from faceedit.alignment import landmarks68

    reg, back, f = _enlarge(image, box, min_face)
    inv = np.linalg.inv(back)
    rbox = tuple(_apply(inv, [box[:2], box[2:]]).reshape(-1))
    try:
        lm_r = landmarks68(reg, rbox)
    except Exception as e:  # dlib errors are RuntimeErrors of its own
        return FaceGeometry(ok=False, reason=f"landmark fit failed: {e}", box=tuple(box), upsample=f)
    lm = _apply(back, lm_r)
    why = check_landmarks(lm_r)
    g = FaceGeometry(ok=not why, reason=why, box=tuple(box), upsample=f, landmarks=lm)
    if not why:
        s = scores_from_landmarks(lm_r, (reg.shape[1], reg.shape[0]))
        for k, v in s.items():
            setattr(g, k, v)
    if landmarks5 is not None:
        g.landmarks5 = np.asarray(landmarks5, np.float64)
        g.yaw5 = yaw_from_5points(g.landmarks5)
    return g


def _iou(a, b):
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def photo_geometry(image: np.ndarray, *, detector: str = "dlib", with_yaw5: bool = True) -> list:
    """Every face of a photo: detect, fit landmarks (upsampling small faces), score.

    Returns:
        list of :class:`FaceGeometry`, left to right (empty when no face is found). ``yaw5``
        comes from the MTCNN detection that overlaps the face best (IoU >= 0.3), NaN if none.
    """
    from faceedit.alignment import detect_faces

    dets = detect_faces(image, detector)
    m5 = detect_faces(image, "mtcnn") if with_yaw5 else []
    out = []
    for d in dets:
        best = max(m5, key=lambda m: _iou(m.box, d.box), default=None)
        pts = best.landmarks5 if (best is not None and _iou(best.box, d.box) >= 0.3) else None
        out.append(geometry_for_box(image, d.box, landmarks5=pts))
    return out


def crop_geometry(crop: np.ndarray, *, scale: int = 4, with_yaw5: bool = True) -> FaceGeometry:
    """Geometric scores of one aligned crop (e.g. a 64 px FACES64 face or a generated image).

    The crop is upsampled ``scale`` times (bicubic), dlib's HOG detector looks for the face
    (upsample 0, then 1), and the largest face found is scored. When no face is found the
    result says so (``ok=False``) instead of guessing a box. Coordinates are those of the crop.
    """
    import cv2

    from faceedit.alignment import detect_faces

    a = np.asarray(crop)
    if a.ndim != 3 or a.shape[2] != 3 or a.dtype != np.uint8:
        raise MetricsError(f"crop must be [H, W, 3] uint8, got {a.shape} {a.dtype}")
    big = cv2.resize(a, (a.shape[1] * scale, a.shape[0] * scale), interpolation=cv2.INTER_CUBIC)
    dets = []
    for up in (0, 1):
        dets = detect_faces(big, "dlib", up)
        if dets:
            break
    if not dets:
        return FaceGeometry(ok=False, reason=f"dlib HOG found no face in the {scale}x-upsampled crop")
    d = max(dets, key=lambda d: d.size)
    pts = None
    if with_yaw5:
        m5 = detect_faces(big, "mtcnn")
        best = max(m5, key=lambda m: _iou(m.box, d.box), default=None)
        if best is not None and _iou(best.box, d.box) >= 0.3:
            pts = best.landmarks5
    g = geometry_for_box(big, d.box, landmarks5=pts, min_face=0)
    # report coordinates in the crop's pixels
    g.box = tuple(float(v) / scale for v in g.box)
    if g.landmarks is not None:
        g.landmarks = g.landmarks / scale
    if g.landmarks5 is not None:
        g.landmarks5 = g.landmarks5 / scale
    g.upsample = float(scale)
    return g


__all__ = ["FaceGeometry", "scores_from_landmarks", "yaw_from_5points", "geometry_for_box", "photo_geometry",
           "crop_geometry", "check_landmarks", "SCORE_NAMES", "MODEL_POINTS"]
