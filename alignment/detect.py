"""Face detectors: dlib HOG (default), dlib CNN (MMOD) and MTCNN, behind one function.

Coordinate convention (the whole alignment room): x to the right, y down, in photo
pixels, with pixel centres at integer + 0.5, so the photo covers ``[0, W] x [0, H]``.
dlib and OpenCV index pixels by their centres; their coordinates are shifted by +0.5
on the way in.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Optional

import numpy as np

from .errors import AlignmentError

log = logging.getLogger(__name__)

DETECTORS = ("dlib", "dlib-cnn", "mtcnn")
# Detection runs on a downscaled copy of photos larger than this (boxes are mapped back),
# so a 12 MP photo costs what a 2 MP one does; faces in such photos are large anyway.
DETECT_MAX_PIXELS = 2_500_000
# The automatic HOG search (``upsample=None``) on a photo larger than this first runs at upsample
# 0 on a copy of this many pixels, where HOG finds faces from about 80 px: 160 px in a 2 MP
# photo, 240 px in a 4.5 MP one. Only when that finds no face do the levels of the full search
# run (default_upsample on the DETECT_MAX_PIXELS view, one more level, as before). Faces are
# still located on the photo itself (the landmarks run at full resolution on the mapped box).
# On the 95 photos of ../shared/datasets/photos the coarse pass finds 99 of the 100 faces the
# full search finds, about 8x faster (bench/results/alignment/photos.json, ``dlib`` vs ``dlib-full``).
COARSE_DETECT_PIXELS = 500_000
# With ``coarse`` (the default), MTCNN first runs on a copy whose longer side is at most this many
# pixels, and on the DETECT_MAX_PIXELS view only when that keeps no face; the landmarks are refined
# on the photo itself (align's mtcnn5 kinds). Its pyramid looks for faces from 20 px in the copy:
# 29 px in a 1480x832 photo, 39 px in a 2 MP one (1920x1080). On the 95 photos of ../shared/datasets/photos
# (``bench/results/alignment/mtcnn_coarse.json``): the same 105 faces as the reference, every FFHQ quad
# agreeing (centre within 0.21% of the side, side within 0.57%), and 2.1x faster on the 36 photos
# larger than the copy (12.8 s against 27.5 s on one CPU core).
MTCNN_COARSE_LONG_SIDE = 1024
# MTCNN's final-stage probability below which a detection is dropped by default. Its
# false positives on ../shared/datasets/photos scored 0.76-0.92, its real faces >= 0.97.
MTCNN_MIN_SCORE = 0.95
# dlib HOG's SVM margin below which a detection is not taken for a face when the photo holds one
# scoring at least this much. On the 95 photos of ../shared/datasets/photos (about 130 faces a
# person counts, tests/data/photo_face_counts.json) HOG's real faces scored 0.37 (a tilted head)
# to 2.8, except one girl looking down at 0.16 beside two faces at 1.7; examples/astronaut.jpg's
# mission patch scored 0.16 beside her face at 1.21. A face alone in a chip can score far less
# (0.02-0.3 for 5.5% of 200 UTKFace and 2% of 200 CelebA images), so a photo whose detections all
# score below it keeps them (``align`` says so). The CNN detector keeps every detection.
DLIB_MIN_SCORE = 0.3
#: The confidence ``align`` asks of a face beside a better one, per detector (``None``: no such rule;
#: MTCNN's own 0.95 applies to every detection, alone or not).
MIN_SCORES = {"dlib": DLIB_MIN_SCORE, "dlib-cnn": None, "mtcnn": None}
# Grey margin around the image given to MTCNN, as a fraction of its shorter side.
MTCNN_MARGIN_FRAC = 0.25
# An automatically upsampled copy is never larger than this many pixels (HOG; the CNN is
# about 30x slower, so its cap is lower: ~10 s for 4 MP on one core).
UPSAMPLE_MAX_PIXELS = 12_000_000
CNN_MAX_PIXELS = 4_000_000


@dataclass(frozen=True)
class Detection:
    """One detected face.

    Attributes:
        box: ``(x0, y0, x1, y1)`` photo coordinates (see the module's convention).
        score: detector confidence (HOG: SVM margin; CNN: MMOD confidence; MTCNN: probability).
        landmarks5: ``[5, 2]`` (MTCNN: eye, eye, nose, mouth corner, mouth corner, in image
            left-to-right order) or ``None``.
        detector: which detector found it.
        upsample: the dlib upsampling that found it (``None`` for MTCNN).
        scale: the size of the copy of the photo it was found on, relative to the photo (1.0:
            the photo itself; see ``DETECT_MAX_PIXELS`` and ``COARSE_DETECT_PIXELS``).
    """

    box: tuple
    score: float
    landmarks5: Optional[np.ndarray] = None
    detector: str = "dlib"
    upsample: Optional[int] = None
    scale: float = 1.0

    @property
    def size(self) -> float:
        """Side of the box (geometric mean of width and height)."""
        x0, y0, x1, y1 = self.box
        return float(np.sqrt(max(x1 - x0, 0) * max(y1 - y0, 0)))

    @property
    def center(self) -> tuple:
        x0, y0, x1, y1 = self.box
        return ((x0 + x1) / 2, (y0 + y1) / 2)


def check_image(image) -> np.ndarray:
    """Validate an ``[H, W, 3]`` uint8 RGB array (greyscale ``[H, W]`` is expanded)."""
    a = np.asarray(image)
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=2)
    if a.ndim != 3 or a.shape[2] != 3:
        raise AlignmentError(f"expected an [H, W, 3] RGB image, got shape {a.shape}; "
                             f"load photos with faceedit.core.images.load_image")
    if a.dtype != np.uint8:
        raise AlignmentError(f"expected uint8 pixels, got {a.dtype}; convert with np.clip(x, 0, 255).astype(np.uint8)")
    if min(a.shape[:2]) < 8:
        raise AlignmentError(f"image of {a.shape[1]}x{a.shape[0]} pixels is too small to hold a face")
    return np.ascontiguousarray(a)


def default_upsample(height: int, width: int) -> int:
    """dlib upsampling picked by image size (HOG's smallest face is about 80 px at 0).

    - shorter side < 160 px (thumbnails, CelebA's 89x109): 1, faces there are ~40-60 px;
    - shorter side < 400 px (face chips like UTKFace's 200x200): 0, the face fills the image;
    - up to 2.5 MP (typical web photos, group photos): 1;
    - larger: 0 (detection runs on a copy scaled to 2.5 MP, where faces are large).
    When nothing is found, :func:`detect_faces` tries one more level if it stays small.
    """
    short = min(height, width)
    if short < 160:
        return 1
    if short < 400:
        return 0
    return 1 if height * width <= DETECT_MAX_PIXELS else 0


def _pixels_size(h: int, w: int, max_pixels: int) -> tuple:
    """``(width, height)`` of the copy of an ``h`` x ``w`` photo with at most about ``max_pixels`` pixels."""
    if h * w <= max_pixels:
        return w, h
    s = float(np.sqrt(max_pixels / (h * w)))
    return max(1, int(round(w * s))), max(1, int(round(h * s)))


def _long_side_size(h: int, w: int, long_side: int) -> tuple:
    """``(width, height)`` of the copy of an ``h`` x ``w`` photo whose longer side is at most ``long_side``."""
    if max(h, w) <= long_side:
        return w, h
    s = long_side / max(h, w)
    return max(1, int(round(w * s))), max(1, int(round(h * s)))


def _view(image: np.ndarray, size: tuple, path: str = "fast"):
    """The photo reduced to ``size`` (``(width, height)``) and the scales ``(sx, sy)`` of copy / photo.

    The reference path keeps one area resize and one scale for both axes (``width / W``), as
    the detectors always had; the fast one reduces by :func:`~faceedit.alignment.resample.shrink`
    (block average, then a bilinear rest: on the in-the-wild photos the HOG detector finds the
    same faces on it as on the reference copy, ``bench/scripts/alignment.py speed``) and maps each
    axis by its own scale.
    """
    from .resample import shrink

    h, w = image.shape[:2]
    if tuple(size) == (w, h):
        return image, (1.0, 1.0)
    if path == "reference":
        import cv2

        s = size[0] / w
        return cv2.resize(image, tuple(size), interpolation=cv2.INTER_AREA), (s, s)
    return shrink(image, *size, path=path, rest="linear")


def _detection_view(image: np.ndarray, max_pixels: int = DETECT_MAX_PIXELS, path: str = "fast"):
    """A copy scaled to at most ``max_pixels`` and its scales ``(sx, sy)`` (view = photo * s)."""
    return _view(image, _pixels_size(*image.shape[:2], max_pixels), path)


def _long_side_view(image: np.ndarray, long_side: int, path: str = "fast"):
    """A copy whose longer side is at most ``long_side`` pixels and its scales ``(sx, sy)`` (view = photo * s)."""
    return _view(image, _long_side_size(*image.shape[:2], long_side), path)


def _to_photo(box, s) -> tuple:
    """A box ``(x0, y0, x1, y1)`` of a copy with scales ``s = (sx, sy)`` in photo coordinates."""
    x0, y0, x1, y1 = (float(v) for v in box)
    return (x0 / s[0], y0 / s[1], x1 / s[0], y1 / s[1])


def _mtcnn_run(view: np.ndarray, s: tuple, device, keep) -> list:
    """MTCNN on ``view`` (the photo scaled by ``s = (sx, sy)``), detections in photo coordinates, kept by ``keep``."""
    import cv2

    from . import models

    # MTCNN's landmarks drift badly (10-20 px on a 200 px chip) when the face touches the
    # image border, as in tight face chips; a grey margin of a quarter of the shorter
    # side brings them back to 1-2 px (measured on UTKFace chips).
    m = MTCNN_MARGIN_FRAC and int(round(MTCNN_MARGIN_FRAC * min(view.shape[:2])))
    if m:
        view = cv2.copyMakeBorder(view, m, m, m, m, cv2.BORDER_CONSTANT, value=(127, 127, 127))
    boxes, probs, points = models.mtcnn(device=device).detect(view, landmarks=True)
    if boxes is None:
        return []
    boxes = (np.asarray(boxes, np.float64) - m) / np.tile(s, 2)
    points = (np.asarray(points, np.float64) - m) / np.asarray(s)
    return keep([Detection(tuple(float(v) for v in b), float(p), pts, "mtcnn", None, s[0])
                 for b, p, pts in zip(boxes, probs, points)])


def _dlib_run(view: np.ndarray, detector: str, up: int):
    from . import models

    out = []
    if detector == "dlib":
        rects, scores, _ = models.hog_detector().run(view, up, 0.0)
        for r, s in zip(rects, scores):
            out.append(((r.left(), r.top(), r.right() + 1, r.bottom() + 1), float(s)))
    else:
        for d in models.cnn_detector()(view, up):
            r = d.rect
            out.append(((r.left(), r.top(), r.right() + 1, r.bottom() + 1), float(d.confidence)))
    return out


def detect_faces(image: np.ndarray, detector: str = "dlib", upsample: Optional[int] = None, *,
                 min_score: Optional[float] = None, retry: bool = True, coarse: bool = True,
                 dropped: Optional[list] = None, device=None, path: str = "fast") -> list:
    """Find faces in a photo, ordered left to right by box centre.

    Args:
        image: ``[H, W, 3]`` RGB uint8.
        detector: ``dlib`` (HOG, fast), ``dlib-cnn`` (MMOD CNN, slower, finds more poses)
            or ``mtcnn`` (facenet-pytorch; also gives 5 landmarks).
        upsample: dlib upsampling count (0-3); ``None`` picks one by image size
            (:func:`default_upsample`) and, if that finds nothing, tries one more
            level, as long as the upsampled image stays under 12 MP (HOG) or 4 MP
            (CNN; larger photos get less upsampling). Ignored by MTCNN.
        min_score: drop detections below this score (default: dlib keeps detections with
            a non-negative SVM/MMOD margin; MTCNN keeps probabilities >= 0.95; ``align``
            asks for :data:`MIN_SCORES`); an upsampling level whose detections are all
            dropped counts as finding nothing.
        retry: allow the automatic extra upsampling described above.
        coarse: with ``dlib`` and ``upsample=None``, a photo larger than
            ``COARSE_DETECT_PIXELS`` is searched first at upsample 0 on a copy of that size, and
            the search above runs only when that keeps no face (faster; faces smaller than about
            80 px in the copy are then not looked for). With ``mtcnn``, the photo is searched first on a
            copy whose longer side is ``MTCNN_COARSE_LONG_SIDE`` (1024) pixels at most, and on the
            ``DETECT_MAX_PIXELS`` view only when that keeps no face (faces under about 20 px in the
            copy are then not looked for). ``False``: the search on that view alone (the reference).
        dropped: a list that receives the detections dropped for their score, if given.
        device: where MTCNN runs (``None``: the CPU; ``"cuda"``: the GPU, where its pyramid of
            convolutions is faster). The dlib detectors run on the CPU and ignore it.
        path: how the downscaled copies are made: ``"fast"`` (block average, then a bilinear
            rest) or ``"reference"`` (one area resize); see :func:`_view`. The same sizes either way.
    Returns:
        list of :class:`Detection` (possibly empty).
    Raises:
        AlignmentError: unknown detector or path, or bad image.
    """
    from .resample import check_path

    check_path(path)
    if detector not in DETECTORS:
        raise AlignmentError(f"unknown detector {detector!r}; choose one of {', '.join(DETECTORS)}")
    image = check_image(image)
    h, w = image.shape[:2]
    if min_score is None and detector == "mtcnn":
        min_score = MTCNN_MIN_SCORE
    low = []

    def keep(dets):
        if min_score is None:
            return dets
        low.extend(d for d in dets if d.score < min_score)
        return [d for d in dets if d.score >= min_score]

    found = []
    if detector == "mtcnn":
        if coarse and max(_pixels_size(h, w, DETECT_MAX_PIXELS)) > MTCNN_COARSE_LONG_SIDE:
            small, sc = _long_side_view(image, MTCNN_COARSE_LONG_SIDE, path)
            found = _mtcnn_run(small, sc, device, keep)
            if not found:
                log.debug("mtcnn on a %dx%d copy kept no face", small.shape[1], small.shape[0])
        if not found:
            found = _mtcnn_run(*_detection_view(image, path=path), device, keep)
    else:
        if upsample is not None and not 0 <= int(upsample) <= 4:
            raise AlignmentError(f"upsample must be in 0..4, got {upsample}")
        if upsample is None and coarse and _coarse_pass(h, w, detector):
            small, sc = _detection_view(image, COARSE_DETECT_PIXELS, path)
            found = keep([Detection(_to_photo(box, sc), score, None, detector, 0, sc[0])
                          for box, score in _dlib_run(small, detector, 0)])
            if not found:
                log.debug("%s at upsample 0 on a %dx%d copy kept no face", detector, small.shape[1], small.shape[0])
        if not found:  # the full search: by image size (and one more level), or the upsampling asked for
            view, s = _detection_view(image, path=path)
            ups = _auto_upsamples(h, w, view.shape[0] * view.shape[1], detector, retry) if upsample is None \
                else [int(upsample)]
            for up in ups:
                found = keep([Detection(_to_photo(box, s), score, None, detector, up, s[0])
                              for box, score in _dlib_run(view, detector, up)])
                if found:
                    break
                log.debug("%s at upsample %d found no face%s", detector, up,
                          f" scoring {min_score} or more ({len(low)} below)" if low else "")
    if dropped is not None:
        dropped.extend(sorted(low, key=lambda d: d.center[0]))
    return sorted(found, key=lambda d: d.center[0])


def _coarse_pass(h: int, w: int, detector: str) -> bool:
    """Whether the automatic search of an ``h`` x ``w`` photo starts with the coarse pass."""
    return detector == "dlib" and h * w > COARSE_DETECT_PIXELS


def _auto_upsamples(h: int, w: int, view_pixels: int, detector: str, retry: bool = True) -> list:
    """The upsampling levels ``detect_faces(upsample=None)`` tries, in order."""
    cap = UPSAMPLE_MAX_PIXELS if detector == "dlib" else CNN_MAX_PIXELS
    u = default_upsample(h, w)
    while u > 0 and view_pixels * 4 ** u > cap:
        u -= 1
    ups = [u]
    if retry and view_pixels * 4 ** (u + 1) <= cap:
        ups.append(u + 1)
    return ups


def tried_text(detector: str, image_shape, upsample: Optional[int] = None, coarse: bool = True) -> str:
    """Human description of what :func:`detect_faces` tries for this image (for errors)."""
    if detector == "mtcnn":
        return "mtcnn"
    h, w = image_shape[:2]
    if upsample is not None:
        return f"{detector} at upsample {upsample}"
    s = min(1.0, float(np.sqrt(DETECT_MAX_PIXELS / (h * w))))
    ups = _auto_upsamples(h, w, h * w * s * s, detector)
    first = (f"upsample 0 on a {COARSE_DETECT_PIXELS / 1e6:.1f} MP copy, then "
             if coarse and _coarse_pass(h, w, detector) else "")
    return f"{detector} at {first}upsample {' and '.join(map(str, ups))}"
