"""From a photo to aligned faces: detect, find landmarks, apply the recipe; zero, one or many faces on purpose."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import Optional, Union

import numpy as np

from .detect import DETECTORS, MIN_SCORES, MTCNN_MIN_SCORE, Detection, check_image, detect_faces, tried_text
from .errors import AlignmentError, FaceNotFoundError, FaceTooSmallError
from .ffhq import align_landmarks, apply_matrix
from .landmarks import landmarks68, landmarks68_averaged
from .mtcnn5 import calibrate_mtcnn5, mtcnn5_refined
from .quadnet import quadnet_points
from .resample import check_path
from .types import FACES64, AlignedFace, AlignmentRecipe

log = logging.getLogger(__name__)

# dlib68: dlib's 68 points averaged over the mirror image and moved boxes, at sub-pixel precision
# (landmarks.landmarks68_averaged). dlib68-single: one pass of dlib's predictor (whole pixels;
# how the shipped data sets were cut). mtcnn5-linear: MTCNN's 5 points re-estimated on an exact (and
# mirrored) crop and calibrated to the 68-point definitions of eyes and mouth corners by a
# linear map (mtcnn5.mtcnn5_refined / calibrate_mtcnn5). mtcnn5: those, with eyes and mouth
# corners re-estimated by QuadNet on the crop they frame, so the quad matches a dlib68 quad
# (quadnet.quadnet_points). mtcnn5-raw: facenet-pytorch's points as they come.
LANDMARK_KINDS = ("dlib68", "dlib68-single", "mtcnn5", "mtcnn5-linear", "mtcnn5-raw")


def landmark_kind(detector: str, landmarks: Optional[str] = None) -> str:
    """The landmark kind :func:`align` uses with ``detector`` (``landmarks=None``: its default).

    Raises:
        AlignmentError: an unknown detector or kind, or a kind of the other detector family
            (the mtcnn5 kinds need MTCNN's points; the dlib68 kinds start from a dlib face box).
    """
    if detector not in DETECTORS:
        raise AlignmentError(f"unknown detector {detector!r}; choose one of {', '.join(DETECTORS)}")
    kind = landmarks or ("mtcnn5" if detector == "mtcnn" else "dlib68")
    if kind not in LANDMARK_KINDS:
        raise AlignmentError(f"unknown landmarks {kind!r}; choose one of {', '.join(LANDMARK_KINDS)}")
    if kind.startswith("mtcnn5") != (detector == "mtcnn"):
        family = "mtcnn" if kind.startswith("mtcnn5") else "dlib"
        raise AlignmentError(f"{kind} landmarks come with the {family} detectors; use --detector {family} "
                             f"(detector='{family}') or leave the landmarks at their default")
    return kind


@dataclass
class SkippedFace:
    """A detection that was not aligned, and why.

    ``index`` is its place among the faces (left to right) for a face skipped for its size,
    ``None`` for a detection below the confidence asked for (it is not counted as a face).
    """

    index: Optional[int]
    box: tuple
    size: float
    reason: str
    score: Optional[float] = None

    def to_dict(self) -> dict:
        return {"index": self.index, "box": [float(v) for v in self.box], "size": round(self.size, 1),
                "score": None if self.score is None else round(float(self.score), 3), "reason": self.reason}


@dataclass
class AlignmentReport:
    """Everything :func:`align_photo` did: aligned faces, skipped faces, what was tried.

    Attributes:
        faces: the aligned faces (the selection asked for).
        skipped: faces found but not aligned (too small), with reasons.
        detections: all detections, left to right, in photo coordinates.
        rotation: degrees counter-clockwise the photo was rotated to find faces (0 normally).
        tried: human-readable list of detector runs.
        landmarks: the landmark kind the faces were aligned with (one of ``LANDMARK_KINDS``).
        notes: what the user should check (faces kept although every detection scored low).
    """

    faces: list = field(default_factory=list)
    skipped: list = field(default_factory=list)
    detections: list = field(default_factory=list)
    rotation: int = 0
    tried: list = field(default_factory=list)
    landmarks: str = ""
    notes: list = field(default_factory=list)


def _rot90_matrix(k: int, w: int, h: int) -> np.ndarray:
    """Continuous-coordinate matrix of ``np.rot90(img, k)`` (counter-clockwise) for a WxH image."""
    m = np.eye(3)
    for _ in range(k % 4):
        # np.rot90 once: new[r, c] = old[c, w - 1 - r] -> x' = y, y' = w - x.
        m = np.array([[0.0, 1.0, 0.0], [-1.0, 0.0, w], [0.0, 0.0, 1.0]]) @ m
        w, h = h, w
    return m


def _map_detection(d: Detection, inv: np.ndarray) -> Detection:
    x0, y0, x1, y1 = d.box
    corners = apply_matrix(inv, np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]]))
    box = (*corners.min(0), *corners.max(0))
    lm5 = None if d.landmarks5 is None else apply_matrix(inv, d.landmarks5)
    return replace(d, box=tuple(float(v) for v in box), landmarks5=lm5)


def _default_min_face(recipe: AlignmentRecipe) -> int:
    return max(24, int(recipe.size) // 16)


def align_photo(image: np.ndarray, *, recipe: AlignmentRecipe = FACES64, detector: str = "dlib",
                face: Union[str, int] = "all", upsample: Optional[int] = None, min_face: Optional[int] = None,
                try_rotations: bool = False, landmarks: Optional[str] = None, coarse: bool = True,
                name: str = "the photo", min_score: Optional[float] = None, device=None,
                path: str = "fast") -> AlignmentReport:
    """Like :func:`align` but returns an :class:`AlignmentReport` (skipped faces, rotation, what was tried).

    ``device`` (``None``: the CPU; ``"cuda"``, ...) is where MTCNN and the mtcnn5 landmark
    networks (its ONet, QuadNet) run; the dlib detectors and landmarks run on the CPU whatever it
    says. Raises the same errors as :func:`align`.
    """
    lm_kind = landmark_kind(detector, landmarks)
    check_path(path)
    if not (face in ("all", "largest") or (isinstance(face, (int, np.integer)) and not isinstance(face, bool))):
        raise AlignmentError(f"face must be 'all', 'largest' or a face index (0 = leftmost), got {face!r}")
    min_face = _default_min_face(recipe) if min_face is None else int(min_face)
    beside = MIN_SCORES.get(detector) if min_score is None else None  # the default: weak beside strong skipped
    # The cut detect_faces applies (MTCNN's own default when none is asked for), for the messages.
    cut = MTCNN_MIN_SCORE if min_score is None and detector == "mtcnn" else min_score
    image = check_image(image)
    H, W = image.shape[:2]
    report = AlignmentReport(landmarks=lm_kind)

    work, inv, dets, upright_low = image, np.eye(3), [], []
    for k in ((0, 1, 2, 3) if try_rotations else (0,)):
        work = np.ascontiguousarray(np.rot90(image, k)) if k else image
        report.tried.append(tried_text(detector, work.shape, upsample, coarse)
                            + (f" rotated {90 * k} deg" if k else ""))
        low = []
        dets = detect_faces(work, detector, upsample, min_score=min_score, coarse=coarse, dropped=low, device=device,
                            path=path)
        if beside is not None and any(d.score >= beside for d in dets):
            low += [d for d in dets if d.score < beside]
            dets = [d for d in dets if d.score >= beside]
        if not k:
            upright_low = low
        if dets:
            if dets[0].upsample is not None:
                copy = f" on a {dets[0].scale:.2f}x copy" if dets[0].scale != 1.0 else ""
                report.tried[-1] = (f"{detector} at upsample {dets[0].upsample}{copy}"
                                    + (f" rotated {90 * k} deg" if k else ""))
            report.rotation = 90 * k
            inv = np.linalg.inv(_rot90_matrix(k, W, H))
            break
    # Photo-coordinate detections, left to right in the photo as the user sees it.
    photo_dets = sorted(((_map_detection(d, inv), d) for d in dets), key=lambda t: t[0].center[0])
    report.detections = [p for p, _ in photo_dets]
    low = low if dets else upright_low  # what was below min_score where faces were found, else upright
    for d in (_map_detection(d, inv) for d in low):
        why = (f"detector score {d.score:.2f} is below the confidence {min_score:g} asked of a face (--min-score)"
               if min_score is not None else
               f"detector score {d.score:.2f} is below MTCNN's default confidence {cut:g} (--min-score lowers it)"
               if cut is not None else
               f"detector score {d.score:.2f} is below {beside:g}, beside a face scoring more: a badge, print or "
               f"pattern more often than a face (--min-score 0 keeps it)")
        report.skipped.append(SkippedFace(None, d.box, d.size, why, d.score))
    if beside is not None and dets and all(d.score < beside for d in dets):
        report.notes.append(f"every detection scores below {beside:g} ({', '.join(f'{d.score:.2f}' for d in dets)}): "
                            f"kept as faces; check them, or pass --min-score to skip them")
        log.warning("%s: %s", name, report.notes[-1])
    if not dets and low:
        scores = ", ".join(f"{s.score:.2f}" for s in report.skipped)
        raise FaceNotFoundError(f"no face in {name} ({W}x{H}; tried {'; '.join(report.tried)}) scoring "
                                f"{cut:g} or more: {len(low)} detection(s) scored {scores}; pass "
                                f"--min-score {_lower(low):g} (min_score=) to take them")
    if not dets:
        hint = "try --detector dlib-cnn or --detector mtcnn" if detector == "dlib" else (
            "try --detector mtcnn" if detector == "dlib-cnn" else "try --detector dlib-cnn")
        if not try_rotations:
            hint += ", or --try-rotations if the photo is turned sideways"
        if upsample is not None and detector != "mtcnn":
            hint += f", or --upsample {upsample + 1} for small faces"
        raise FaceNotFoundError(f"no face in {name} ({W}x{H}; tried {'; '.join(report.tried)}); {hint}")

    chosen = list(range(len(photo_dets)))
    if face == "largest":
        chosen = [max(chosen, key=lambda i: photo_dets[i][0].size)]
    elif not isinstance(face, str):
        if not 0 <= int(face) < len(photo_dets):
            raise FaceNotFoundError(f"face index {face} asked for, but {name} has {len(photo_dets)} face(s) "
                                    f"(indices 0..{len(photo_dets) - 1}, left to right)")
        chosen = [int(face)]

    for i in chosen:
        pd, wd = photo_dets[i]
        if pd.size < min_face:
            report.skipped.append(SkippedFace(i, pd.box, pd.size, f"face of {pd.size:.0f} px is below the minimum "
                                                                    f"face size {min_face} px (--min-face)",
                                              pd.score))
            continue
        if lm_kind == "mtcnn5-raw":
            lm = apply_matrix(inv, wd.landmarks5)
        elif lm_kind.startswith("mtcnn5"):
            lm = calibrate_mtcnn5(mtcnn5_refined(work, wd.box, device=device))
            lm = apply_matrix(inv, quadnet_points(work, lm, device=device) if lm_kind == "mtcnn5" else lm)
        else:
            lm = apply_matrix(inv, (landmarks68 if lm_kind == "dlib68-single" else landmarks68_averaged)(work, wd.box))
        report.faces.append(align_landmarks(image, lm, recipe, score=pd.score, index=i, detector=detector, path=path))
    if not report.faces:
        sizes = ", ".join(f"{s.size:.0f}" for s in report.skipped)
        raise FaceTooSmallError(f"{name}: found {len(report.skipped)} face(s) of {sizes} px, all below the minimum "
                                f"face size {min_face} px; pass a larger photo or lower --min-face")
    for s in report.skipped:
        log.warning("%s: %s skipped: %s", name, "a detection" if s.index is None else f"face {s.index}", s.reason)
    return report


def _lower(dets) -> float:
    """A ``--min-score`` just below the lowest of ``dets``' scores (two decimals, rounded down)."""
    return float(np.floor(min(d.score for d in dets) * 100) / 100)


def face_to_dict(face: AlignedFace) -> dict:
    """JSON-ready record of a face (``AlignedFace.metadata()`` plus its landmarks)."""
    d = face.metadata()
    d["landmarks"] = np.round(np.asarray(face.landmarks, np.float64), 3).tolist()
    return d


def face_from_dict(d: dict, crop: np.ndarray) -> AlignedFace:
    """Rebuild an :class:`AlignedFace` from :func:`face_to_dict`'s record and its crop image
    (e.g. to paste an edited crop back into the photo from the JSON ``faceedit align`` wrote)."""
    try:
        return AlignedFace(crop=np.asarray(crop), matrix=np.asarray(d["matrix"], np.float64),
                           quad=np.asarray(d["quad"], np.float64),
                           landmarks=np.asarray(d.get("landmarks", d["quad"]), np.float64),
                           score=float(d.get("score", 0.0)), source_size=tuple(d["source_size"]),
                           index=int(d.get("index", 0)), detector=str(d.get("detector", "")),
                           recipe=AlignmentRecipe.from_dict(d.get("recipe", {})))
    except (KeyError, TypeError, ValueError) as e:
        raise AlignmentError(f"not an alignment record ({e}); pass the JSON written by faceedit align") from e


def align(image: np.ndarray, *, recipe: AlignmentRecipe = FACES64, detector: str = "dlib",
          face: Union[str, int] = "all", upsample: Optional[int] = None, min_face: Optional[int] = None,
          try_rotations: bool = False, landmarks: Optional[str] = None, min_score: Optional[float] = None,
          coarse: bool = True, path: str = "fast") -> list:
    """Detect and align the faces of a photo with the FFHQ recipe.

    Args:
        image: ``[H, W, 3]`` RGB uint8 (``faceedit.core.images.load_image`` gives one).
        recipe: crop geometry and size; use the recipe of the model you will invert into.
        detector: ``dlib`` (HOG), ``dlib-cnn`` (MMOD) or ``mtcnn``.
        face: ``'all'`` (left to right), ``'largest'``, or an index (0 = leftmost face).
        upsample: dlib upsampling; ``None`` picks by image size (see ``detect.default_upsample``).
        min_face: faces whose detection box is smaller than this (px) are skipped and
            logged, never aligned into mush; default ``max(24, recipe.size // 16)``.
        min_score: detections scoring below this are not faces: skipped and logged, and not
            counted in the indices. By default (``None``) a dlib HOG detection below 0.3
            (``detect.DLIB_MIN_SCORE``) is skipped when the photo holds a face scoring 0.3 or
            more (badges and prints beside a face score about 0.16, faces in photos 0.37 and
            up), and kept, with a warning, when none does (a lone face in a small chip can
            score 0.02); MTCNN keeps 0.95 and up, the CNN every detection. So
            ``align(photo)[0]`` is the leftmost face, not a badge beside it.
        try_rotations: when nothing is found, also try the photo rotated by 90, 180 and
            270 degrees; matrices and quads still refer to the photo as given.
        landmarks: ``dlib68`` (dlib's predictor averaged over the mirror image and moved face
            boxes at sub-pixel precision, ~20 ms); ``dlib68-single`` (one pass); ``mtcnn5-linear``
            (MTCNN's points refined on an exact crop and mapped to the 68-point eye and mouth
            definitions by a linear calibration);
            ``mtcnn5`` (those, re-estimated by QuadNet on the crop they frame, so its quads
            match dlib68 quads more closely) or ``mtcnn5-raw`` (facenet-pytorch's points
            unchanged); default ``mtcnn5`` with the mtcnn detector, else ``dlib68``.
        coarse: with the dlib detector and ``upsample=None``, or with mtcnn, a large photo is
            searched first on a downscaled copy and fully only when that finds no face (see
            ``detect_faces``); the landmarks always run on the photo itself. ``False``: the full
            search only.
        path: ``"fast"`` (default) or ``"reference"``: how the detectors' downscaled copies and
            the crop are resampled (``detect_faces``, ``align_landmarks``); the same search,
            landmarks, quads and matrices either way, the crops within resampling noise.
    Returns:
        list of :class:`AlignedFace`, left to right, each with its ``index`` among all faces
        found (detections below ``min_score`` are not faces; those below ``min_face`` are),
        and its detector ``score``.
    Raises:
        FaceNotFoundError: no face (message says what was tried and what to try next), or
            the requested index does not exist.
        FaceTooSmallError: every requested face is below ``min_face``.
        AlignmentError: bad arguments or image.
    """
    return align_photo(image, recipe=recipe, detector=detector, face=face, upsample=upsample, min_face=min_face,
                       try_rotations=try_rotations, landmarks=landmarks, min_score=min_score,
                       coarse=coarse, path=path).faces
