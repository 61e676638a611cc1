"""The FFHQ alignment recipe, with the transform kept so the crop can go back into the photo.

Steps (as in NVIDIA's FFHQ data-set script, re-implemented with OpenCV):

1. Quad: ``x = eye_to_eye - rot90(eye_to_mouth)``, normalised and scaled to
   ``recipe.scale * max(2 * |eye_to_eye|, 1.8 * |eye_to_mouth|)``; ``y = rot90(x)``;
   centre ``eye_avg + 0.1 * eye_to_mouth``; corners ``c-x-y, c-x+y, c+x+y, c+x-y``
   (top-left, bottom-left, bottom-right, top-right of the crop).
2. Shrink: for faces much larger than the output, downscale the photo by the integer
   ``floor(qsize / size / 2)`` (area filter) first.
3. Crop: cut the quad's bounding box plus a border of ``max(round(0.1 qsize), 3)``.
4. Pad: where the quad leaves the photo by more than ``border - 4`` px, pad by at least
   ``0.3 qsize`` with reflection, blur the padding towards the edge (sigma ``0.02 qsize``)
   and fade it to the median colour (``pad_mode='reflect'``; ``'constant'`` pads black).
5. Transform: warp the quad to a square of ``supersample * size`` px (bilinear), then
   downsample to ``size`` with an area (anti-aliasing) filter.

That is ``path="reference"`` of :func:`align_landmarks`. ``path="fast"`` (the default) keeps
the quad, the matrix and the padding rule and resamples in fewer operations (see
:func:`_warp_fast`): about 6 ms instead of 110 ms for a 1024 px crop of a 2 MP photo, the crops
within 41 dB PSNR of the reference's on every face of the in-the-wild photos (median 49-59 dB).

Convention: coordinates are continuous with pixel centres at integer + 0.5 in both the
photo and the crop (the photo spans ``[0, W] x [0, H]``, the crop ``[0, S] x [0, S]``).
``AlignedFace.matrix`` maps photo coordinates to crop coordinates; the quad's corners
map exactly to the crop's corners. OpenCV indexes pixels by their centres, so its
matrices are ``shift(-0.5) @ M @ shift(+0.5)`` (:func:`to_cv`).
"""
from __future__ import annotations

import math

import numpy as np

from .errors import AlignmentError
from .landmarks import eye_mouth_points
from .resample import check_path, shrink
from .types import FACES64, AlignedFace, AlignmentRecipe


def _shift(dx: float, dy: float) -> np.ndarray:
    return np.array([[1.0, 0.0, dx], [0.0, 1.0, dy], [0.0, 0.0, 1.0]])


def to_cv(matrix: np.ndarray) -> np.ndarray:
    """A continuous-coordinate 3x3 matrix -> OpenCV's 2x3 (pixel centres at integers)."""
    return (_shift(-0.5, -0.5) @ np.asarray(matrix, np.float64) @ _shift(0.5, 0.5))[:2]


def apply_matrix(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a 3x3 affine matrix to ``[N, 2]`` points."""
    p = np.asarray(points, np.float64)
    return p @ np.asarray(matrix)[:2, :2].T + np.asarray(matrix)[:2, 2]


def ffhq_quad(landmarks: np.ndarray, scale: float = 1.0):
    """The oriented FFHQ quad of a face.

    Args:
        landmarks: ``[68, 2]`` dlib, ``[5, 2]`` MTCNN or ``[4, 2]`` eye and mouth points
            (photo coordinates; see :func:`~faceedit.alignment.landmarks.eye_mouth_points`).
        scale: multiplier on the FFHQ quad size (``AlignmentRecipe.scale``).
    Returns:
        ``(quad [4, 2], qsize)``: corners top-left, bottom-left, bottom-right, top-right
        and the quad's side length.
    Raises:
        AlignmentError: degenerate landmarks (eyes and mouth on one point).
    """
    el, er, ml, mr = eye_mouth_points(landmarks)
    eye_avg = (el + er) * 0.5
    eye_to_eye = er - el
    mouth_avg = (ml + mr) * 0.5
    eye_to_mouth = mouth_avg - eye_avg
    x = eye_to_eye - np.flipud(eye_to_mouth) * np.array([-1.0, 1.0])
    n = float(np.hypot(*x))
    if not np.isfinite(n) or n < 1e-6:
        raise AlignmentError("degenerate landmarks: eyes and mouth do not span a face; check the landmark array")
    x = x / n * max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8) * float(scale)
    y = np.flipud(x) * np.array([-1.0, 1.0])
    c = eye_avg + eye_to_mouth * 0.1
    quad = np.stack([c - x - y, c - x + y, c + x + y, c + x - y])
    return quad, float(np.hypot(*x) * 2)


# Two quads of one face agree when the centres are within 2% of the reference side and the
# sides within 3% of each other (the alignment issue's test of 68-point vs MTCNN quads).
QUAD_CENTRE_TOL, QUAD_SIDE_TOL = 0.02, 0.03


def quads_agree(differences) -> np.ndarray:
    """Booleans ``[N]`` from ``[N, 2]`` rows of :func:`quad_difference` (see ``QUAD_*_TOL``)."""
    d = np.asarray(differences, np.float64).reshape(-1, 2)
    return (d[:, 0] < QUAD_CENTRE_TOL) & (np.abs(d[:, 1] - 1) < QUAD_SIDE_TOL)


def quad_difference(ref: np.ndarray, other: np.ndarray, scale: float = 1.0):
    """How far the FFHQ quad of ``other`` landmarks is from that of ``ref`` (the same face).

    Returns:
        ``(centre offset / ref's side, other's side / ref's side)``.
    """
    qa, sa = ffhq_quad(ref, scale)
    qb, sb = ffhq_quad(other, scale)
    return float(np.hypot(*(qb.mean(0) - qa.mean(0))) / sa), float(sb / sa)


def quad_to_crop_matrix(quad: np.ndarray, size: float) -> np.ndarray:
    """3x3 affine matrix mapping the quad's corners to ``(0,0), (0,S), (S,S), (S,0)``."""
    q = np.asarray(quad, np.float64)
    dst = np.array([[0, 0], [0, size], [size, size], [size, 0]], np.float64)
    src = np.concatenate([q, np.ones((4, 1))], 1)
    sol, *_ = np.linalg.lstsq(src, dst, rcond=None)  # exact for a parallelogram
    m = np.eye(3)
    m[:2] = sol.T
    return m


def warp_quad(image: np.ndarray, quad: np.ndarray, size: int, *, supersample: int = 4, fill=None):
    """The region a quad frames, resampled to ``size x size`` px, and its photo->crop matrix.

    A plain warp for the landmark networks (not the FFHQ recipe's padding): bilinear at
    ``supersample * size`` px, then area-downsampled; a region larger than that is
    Gaussian-blurred first, so no source pixel is skipped. Outside the photo: edge pixels
    repeated (``fill=None``) or the grey level ``fill``.

    Returns:
        ``(crop [size, size, 3] uint8, M [3, 3])``.
    Raises:
        AlignmentError: the quad lies outside the photo and no ``fill`` is given.
    """
    import cv2

    q = np.asarray(quad, np.float64)
    side = float(np.hypot(*(q[1] - q[0])))
    big = size * supersample
    k = side / big  # photo pixels per warped pixel
    H, W = image.shape[:2]
    m = int(np.ceil(3 * max(k, 1.0))) + 2
    lo = np.floor(q.min(0)).astype(int) - m
    hi = np.ceil(q.max(0)).astype(int) + m
    xa, ya, xb, yb = max(lo[0], 0), max(lo[1], 0), min(hi[0], W), min(hi[1], H)
    if xb > xa and yb > ya:
        region = np.ascontiguousarray(image[ya:yb, xa:xb])
    elif fill is None:
        raise AlignmentError("the face's quad lies outside the photo; check the landmarks' coordinates")
    else:
        region, xa, ya = np.full((1, 1, 3), fill, np.uint8), 0, 0
    if k > 1.0:
        region = cv2.GaussianBlur(region, (0, 0), 0.5 * k)
    A = quad_to_crop_matrix(q - [xa, ya], big)
    border = dict(borderMode=cv2.BORDER_REPLICATE) if fill is None else dict(
        borderMode=cv2.BORDER_CONSTANT, borderValue=(fill, fill, fill))
    out = cv2.warpAffine(region, to_cv(A), (big, big), flags=cv2.INTER_LINEAR, **border)
    crop = cv2.resize(out, (size, size), interpolation=cv2.INTER_AREA) if supersample > 1 else out
    return crop, np.diag([1.0 / supersample, 1.0 / supersample, 1.0]) @ A @ _shift(-xa, -ya)


def _pad_mask(xx: np.ndarray, yy: np.ndarray, w: int, h: int, pad) -> np.ndarray:
    """FFHQ's padding weight at pixel-centre indices ``xx`` (columns) and ``yy`` (rows) of the
    ``w`` x ``h`` padded image: 1 at its outer edge, 0 on the photo's edge, negative inside."""
    P0, P1, P2, P3 = (max(int(v), 1) for v in pad)
    mx = 1.0 - np.minimum(xx / P0, (w - 1 - xx) / P2)
    my = 1.0 - np.minimum(yy / P1, (h - 1 - yy) / P3)
    return np.maximum(mx[None, :], my[:, None])


def _channel_medians(q: np.ndarray) -> list:
    """Per-channel medians of a uint8 ``[H, W, 3]`` image, from histograms."""
    import cv2

    half = q.shape[0] * q.shape[1] / 2.0
    return [float(np.searchsorted(np.cumsum(cv2.calcHist([q], [k], None, [256], [0, 256]).ravel()), half))
            for k in range(3)]


def _reflect_pad(img: np.ndarray, pad, qsize: float) -> np.ndarray:
    """FFHQ's padding: reflect, blur towards the edges, fade to the median colour.

    ``cv2.copyMakeBorder`` with ``BORDER_REFLECT_101`` is numpy's ``'reflect'`` (and
    also handles pads wider than the image); the median is taken per channel from a
    histogram of the blurred image rounded to integers (the original takes it in float;
    the difference is below half a level).
    """
    import cv2

    p0, p1, p2, p3 = (int(v) for v in pad)
    f = cv2.copyMakeBorder(img, p1, p3, p0, p2, cv2.BORDER_REFLECT_101).astype(np.float32)
    h, w = f.shape[:2]
    mask = _pad_mask(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32), w, h, pad)
    sigma = qsize * 0.02
    if sigma > 0.1:
        blurred = cv2.GaussianBlur(f, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)
        wb = cv2.merge([np.clip(mask * 3.0 + 1.0, 0.0, 1.0)] * 3)
        f = cv2.add(f, cv2.multiply(cv2.subtract(blurred, f), wb))
    med = _channel_medians(np.clip(np.rint(f), 0, 255).astype(np.uint8))
    wm = cv2.merge([np.clip(mask, 0.0, 1.0)] * 3)
    f = cv2.add(f, cv2.multiply(cv2.subtract(np.full_like(f, 0) + np.array(med, np.float32), f), wm))
    return np.clip(np.rint(f), 0, 255).astype(np.uint8)


def _crop_box(quad: np.ndarray, border: int, w: int, h: int) -> tuple:
    """The recipe's crop ``(c0, c1, c2, c3)``: the quad's bounding box plus ``border``, inside ``w`` x ``h``
    (integer decisions made on pixel-centre coordinates, like the original script)."""
    q = quad - 0.5
    c = (max(int(math.floor(q[:, 0].min())) - border, 0), max(int(math.floor(q[:, 1].min())) - border, 0),
         min(int(math.ceil(q[:, 0].max())) + border, w), min(int(math.ceil(q[:, 1].max())) + border, h))
    if c[2] <= c[0] or c[3] <= c[1]:
        raise AlignmentError("the face's quad lies outside the photo; check the landmarks' coordinates")
    return c


def _pad_needed(quad: np.ndarray, border: int, w: int, h: int) -> tuple:
    """How far (left, top, right, bottom) the quad plus ``border`` reaches past a ``w`` x ``h`` image."""
    q = quad - 0.5
    return (max(-int(math.floor(q[:, 0].min())) + border, 0), max(-int(math.floor(q[:, 1].min())) + border, 0),
            max(int(math.ceil(q[:, 0].max())) - w + border, 0), max(int(math.ceil(q[:, 1].max())) - h + border, 0))


def _warp_reference(img: np.ndarray, quad: np.ndarray, qsize: float, recipe: AlignmentRecipe):
    """Steps 2-5 of the module docstring as the FFHQ script does them: ``(crop, photo -> crop matrix)``."""
    import cv2

    size = int(recipe.size)
    ss = max(1, int(recipe.supersample))
    T = np.eye(3)  # photo -> working image (continuous coordinates)

    # Shrink.
    shrink_by = int(math.floor(qsize / size * 0.5))
    if shrink_by > 1:
        h, w = img.shape[:2]
        rw, rh = max(1, int(round(w / shrink_by))), max(1, int(round(h / shrink_by)))
        img = cv2.resize(img, (rw, rh), interpolation=cv2.INTER_AREA)
        S = np.diag([rw / w, rh / h, 1.0])
        T = S @ T
        quad = apply_matrix(S, quad)
        qsize = qsize / shrink_by

    # Crop.
    border = max(int(round(qsize * 0.1)), 3)
    h, w = img.shape[:2]
    c0, c1, c2, c3 = _crop_box(quad, border, w, h)
    if c2 - c0 < w or c3 - c1 < h:
        img = img[c1:c3, c0:c2]
        T = _shift(-c0, -c1) @ T
        quad = quad - [c0, c1]

    # Pad.
    h, w = img.shape[:2]
    pad = _pad_needed(quad, border, w, h)
    if recipe.pad_mode == "reflect" and max(pad) > border - 4:
        pad = tuple(int(v) for v in np.maximum(pad, int(np.rint(qsize * 0.3))))
        img = _reflect_pad(img, pad, qsize)
        T = _shift(pad[0], pad[1]) @ T
        quad = quad + [pad[0], pad[1]]

    # Transform at supersample x size, then anti-aliased downsampling.
    big = size * ss
    A = quad_to_crop_matrix(quad, big)
    border_mode = cv2.BORDER_REFLECT_101 if recipe.pad_mode == "reflect" else cv2.BORDER_CONSTANT
    crop = cv2.warpAffine(img, to_cv(A), (big, big), flags=cv2.INTER_LINEAR, borderMode=border_mode)
    if ss > 1:
        crop = cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA)
    return crop, np.diag([1.0 / ss, 1.0 / ss, 1.0]) @ A @ T


# The fast path's padding is computed on a grid this many times coarser than the blur's sigma
# (0.02 qsize): 3 cells per sigma, so bilinear interpolation of the blurred padding and of its
# weights (both smooth on that scale) adds well under a grey level.
PAD_GRID_CELLS_PER_SIGMA = 3.0


def _padding_layers(region: np.ndarray, pad, qsize: float):
    """The reference's reflect padding (:func:`_reflect_pad`) as two layers on a coarse grid.

    The reference pads the working image, blurs it, blends the blur in with weight
    ``w_b = clip(3 m + 1)`` and the median colour with ``w_m = clip(m)`` (``m``: :func:`_pad_mask`),
    all in float at full resolution: 0.1-0.8 s for a close-up at 1024 px. That is, per pixel,
    ``photo * alpha + fill`` with ``alpha = (1 - w_b)(1 - w_m)`` and ``fill = blur w_b (1 - w_m) + median w_m``.
    ``alpha`` and ``fill`` vary on the scale of the blur, so they are computed here on a grid of
    ``sigma / PAD_GRID_CELLS_PER_SIGMA`` working pixels per cell (the reference's padded image,
    reflected at full resolution as it does, then reduced by :func:`~faceedit.alignment.resample.shrink`)
    and only then warped to the crop; the photo's own pixels stay at full resolution. The median
    is that of the coarse cells.

    Returns:
        ``(layers [h, w, 4] float32 (fill RGB, alpha), M [3, 3])``, ``M`` mapping the layers'
        continuous coordinates to the working image's.
    """
    import cv2

    p0, p1, p2, p3 = (int(v) for v in pad)
    padded = cv2.copyMakeBorder(region, p1, p3, p0, p2, cv2.BORDER_REFLECT_101)
    Hp, Wp = padded.shape[:2]
    sigma = qsize * 0.02
    k = max(1.0, sigma / PAD_GRID_CELLS_PER_SIGMA)
    ws, hs = max(1, int(round(Wp / k))), max(1, int(round(Hp / k)))
    f, (fx, fy) = shrink(padded, ws, hs) if (ws, hs) != (Wp, Hp) else (padded, (1.0, 1.0))
    f = f.astype(np.float32)
    blurred = cv2.GaussianBlur(f, (0, 0), sigma * fx, borderType=cv2.BORDER_REFLECT) if sigma > 0.1 else f
    # each cell's centre in the padded image's pixel-centre indices
    m = _pad_mask(((np.arange(ws) + 0.5) / fx - 0.5).astype(np.float32),
                  ((np.arange(hs) + 0.5) / fy - 0.5).astype(np.float32), Wp, Hp, pad)
    wb, wm = np.clip(m * 3.0 + 1.0, 0.0, 1.0)[..., None], np.clip(m, 0.0, 1.0)[..., None]
    med = np.array(_channel_medians(np.clip(np.rint(f + (blurred - f) * wb), 0, 255).astype(np.uint8)), np.float32)
    layers = np.concatenate([blurred * (wb * (1.0 - wm)) + med * wm, (1.0 - wb) * (1.0 - wm)], 2)
    M = np.array([[1.0 / fx, 0.0, -p0], [0.0, 1.0 / fy, -p1], [0.0, 0.0, 1.0]])
    return np.ascontiguousarray(layers, np.float32), M


def _warp_fast(img: np.ndarray, quad: np.ndarray, qsize: float, recipe: AlignmentRecipe):
    """Steps 2-5 in fewer operations, to the same matrix: ``(crop, photo -> crop matrix)``.

    What the reference spends its time on, and what this does instead (2 MP photo, 1024 px crop,
    one core):

    - the transform at 4x the output (a 4096 px warp, 100 ms, and its reduction, 16 ms): where
      the quad is not larger than the output (upsampling, where supersampling only adds a blur)
      it is warped once at the output size, bilinear (6 ms); else the region is area-reduced
      (:func:`~faceedit.alignment.resample.shrink`) until the quad is at most twice the output,
      warped at twice the output size and area-reduced by 2 (the reference shrinks by an
      integer factor and supersamples 4x);
    - the shrink of the whole photo before the crop: the crop is cut first;
    - the padding at full resolution: computed on a coarse grid and warped (:func:`_padding_layers`).

    Chosen by the PSNR against the reference crops of all 99 dlib faces of the in-the-wild photos
    (median dB at 1024 / 256 / 64 px): this rule 59 / 53 / 49. Warping every quad at twice the
    output: 57 / 55 / 50, at four times the warp's cost for the common upsampling case. One
    warp at the output size after reducing the quad to it: bilinear 60 / 48 / 39, bicubic
    45 / 44 / 41, Lanczos 45 / 45 / 41 (slower; both sharpen where the reference smooths).

    The crop, border and pad decisions are the reference's rules at the working resolution,
    so the matrix is the reference's (to float rounding) and the crops differ by resampling
    noise (``python bench/scripts/alignment.py speed``: crop PSNR).
    """
    import cv2

    size = int(recipe.size)
    H, W = img.shape[:2]
    c0, c1, c2, c3 = _crop_box(quad, max(int(round(qsize * 0.1)), 3), W, H)
    region, T, quad = img[c1:c3, c0:c2], _shift(-c0, -c1), quad - [c0, c1]
    ss = 1 if qsize <= size else 2
    big = size * ss
    if qsize > big:
        h, w = region.shape[:2]
        region, (sx, sy) = shrink(region, max(1, int(round(w * big / qsize))), max(1, int(round(h * big / qsize))))
        S = np.diag([sx, sy, 1.0])
        T, quad, qsize = S @ T, apply_matrix(S, quad), qsize * sx
    region = np.ascontiguousarray(region)
    border = max(int(round(qsize * 0.1)), 3)
    h, w = region.shape[:2]
    pad = _pad_needed(quad, border, w, h)
    A = quad_to_crop_matrix(quad, big)
    border_mode = cv2.BORDER_REFLECT_101 if recipe.pad_mode == "reflect" else cv2.BORDER_CONSTANT
    crop = cv2.warpAffine(region, to_cv(A), (big, big), flags=cv2.INTER_LINEAR, borderMode=border_mode)
    if ss > 1:
        crop = cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA)
    A = np.diag([1.0 / ss, 1.0 / ss, 1.0]) @ A
    if recipe.pad_mode == "reflect" and max(pad) > border - 4:
        pad = tuple(int(v) for v in np.maximum(pad, int(np.rint(qsize * 0.3))))
        layers, G = _padding_layers(region, pad, qsize)
        lw = cv2.warpAffine(layers, to_cv(A @ G), (size, size), flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_REPLICATE)
        crop = np.clip(np.rint(crop * lw[..., 3:] + lw[..., :3]), 0, 255).astype(np.uint8)
    return crop, A @ T


def align_landmarks(image: np.ndarray, landmarks: np.ndarray, recipe: AlignmentRecipe = FACES64, *,
                    score: float = 0.0, index: int = 0, detector: str = "", path: str = "fast") -> AlignedFace:
    """Cut one face out of a photo with the FFHQ recipe, given its landmarks.

    Args:
        image: ``[H, W, 3]`` RGB uint8 photo.
        landmarks: ``[68, 2]`` or ``[5, 2]`` photo coordinates (pixel centres at +0.5).
        recipe: output size, quad scale, supersampling and padding.
        score, index, detector: recorded in the result.
        path: ``"fast"`` (:func:`_warp_fast`) or ``"reference"`` (the FFHQ script's steps,
            :func:`_warp_reference`, ``recipe.supersample`` times supersampled; the fast path
            chooses its own, so a recipe with another ``supersample`` than the default 4 takes the
            reference warp). The same quad and matrix either way.
    Returns:
        :class:`AlignedFace` with the crop, the photo->crop matrix and the quad.
    Raises:
        AlignmentError: a bad image, landmarks or path, or a quad outside the photo.
    """
    img = np.ascontiguousarray(image)
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise AlignmentError(f"expected an [H, W, 3] uint8 RGB image, got {img.shape} {img.dtype}")
    # a supersampling other than the recipe default is an explicit choice: only the reference warp has one
    fast = check_path(path) == "fast" and recipe.supersample == AlignmentRecipe.supersample
    warp = _warp_fast if fast else _warp_reference
    H, W = img.shape[:2]
    quad, qsize = ffhq_quad(landmarks, recipe.scale)
    crop, M = warp(img, quad.copy(), qsize, recipe)
    return AlignedFace(crop=np.ascontiguousarray(crop), matrix=M, quad=quad,
                       landmarks=np.asarray(landmarks, np.float64),
                       score=float(score), source_size=(W, H), index=int(index), detector=detector, recipe=recipe)
