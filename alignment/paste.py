"""Put an (edited) crop back into the photo at the photo's full resolution.

The crop is warped back with the inverse of ``AlignedFace.matrix`` (OpenCV
``warpAffine`` with ``WARP_INVERSE_MAP``: every photo pixel samples the crop where the
photo->crop matrix sends it) and blended through a feathered mask drawn in photo
coordinates. The mask is the convex hull of the face's landmarks (``'hull'``) or the
quad (``'quad'``); feathering ramps the weight from 0 on the polygon's edge to 1 at
``feather * quad side`` inside it, so pixels outside the polygon are never touched.
"""
from __future__ import annotations

import numpy as np

from .errors import AlignmentError
from .ffhq import to_cv
from .types import AlignedFace

MODES = ("replace", "residual")
MASKS = ("hull", "quad")


def _as_float_crop(crop, name: str) -> np.ndarray:
    c = np.asarray(crop)
    if c.ndim != 3 or c.shape[2] != 3 or c.shape[0] != c.shape[1]:
        raise AlignmentError(f"{name} must be a square [S, S, 3] RGB crop, got shape {c.shape}")
    if c.dtype == np.uint8:
        return c.astype(np.float32)
    c = c.astype(np.float32)
    if c.size and (np.nanmax(c) > 255.5 or np.nanmin(c) < -255.5 or not np.isfinite(c).all()):
        raise AlignmentError(f"{name} must hold pixel values in 0..255 (uint8 or float); convert a [-1, 1] "
                             f"tensor with faceedit.core.images.tensor_to_uint8")
    return c


def face_polygon(face: AlignedFace, mask: str = "hull") -> np.ndarray:
    """The mask polygon in photo coordinates: landmark hull (68 points; 5 points are
    widened around their centre) or the quad."""
    import cv2

    if mask == "quad":
        return np.asarray(face.quad, np.float64)
    lm = np.asarray(face.landmarks, np.float64)
    if len(lm) < 68:
        # MTCNN's 5 points hug the inner face: widen them and add a chin point.
        c = lm.mean(0)
        chin = lm[3:5].mean(0) + (lm[3:5].mean(0) - lm[0:2].mean(0)) * 0.9
        lm = np.concatenate([c + (lm - c) * 1.8, chin[None]])
    hull = cv2.convexHull(lm.astype(np.float32)).reshape(-1, 2)
    return hull.astype(np.float64)


def _feathered_mask(poly: np.ndarray, x0: int, y0: int, w: int, h: int, feather_px: float) -> np.ndarray:
    """Weight in [0, 1] over the region ``[x0, x0+w) x [y0, y0+h)``: 0 outside the polygon."""
    import cv2

    shift = 4
    pts = np.round((poly - [x0, y0] - 0.5) * (1 << shift)).astype(np.int32)  # to pixel-centre coordinates
    hard = np.zeros((h, w), np.uint8)
    cv2.fillPoly(hard, [pts], 255, lineType=cv2.LINE_8, shift=shift)
    if feather_px <= 0.5:
        return (hard > 0).astype(np.float32)
    dist = cv2.distanceTransform(np.pad(hard, 1), cv2.DIST_L2, 5)[1:-1, 1:-1]
    t = np.clip(dist / float(feather_px), 0.0, 1.0)
    return (t * t * (3.0 - 2.0 * t)).astype(np.float32)  # smoothstep; exactly 0 outside the polygon


def paste_back(photo: np.ndarray, face: AlignedFace, crop, *, mode: str = "replace", reference=None,
               mask: str = "hull", feather: float = 0.06, color_match: bool = False,
               return_mask: bool = False):
    """Blend a crop back into the photo it was aligned from.

    Args:
        photo: ``[H, W, 3]`` uint8, the photo ``face`` was aligned from (same size).
        face: the :class:`AlignedFace` (its matrix, quad and landmarks place the crop).
        crop: ``[S, S, 3]`` the edited crop, uint8 or float in 0..255; any ``S`` (a 64 px
            generator output goes back onto a 1024 px alignment's face fine).
        mode: ``'replace'`` puts the crop's pixels in; ``'residual'`` adds only
            ``crop - reference`` (upsampled), keeping the photo's own detail.
        reference: for ``residual``: the unedited reconstruction of the same face (same
            size as ``crop``); required there.
        mask: ``'hull'`` (convex hull of the landmarks) or ``'quad'`` (the whole crop).
        feather: width of the soft edge, as a fraction of the quad's side, inside the mask.
        color_match: ``replace`` only: match the crop's per-channel mean and spread to the
            photo under the mask first.
        return_mask: also return the ``[H, W]`` float32 blending weight.
    Returns:
        the new photo ``[H, W, 3]`` uint8 (the input is not modified), and the mask if asked.
    Convention:
        ``face.matrix`` maps photo coordinates to coordinates of a crop of
        ``face.recipe.size`` px (pixel centres at +0.5); a crop of another size is
        scaled accordingly. Sampling is bilinear (``replace``) or bilinear on the residual.
    Raises:
        AlignmentError: wrong shapes, unknown mode or mask, missing reference.
    """
    import cv2

    if mode not in MODES:
        raise AlignmentError(f"mode must be one of {MODES}, got {mode!r}")
    if mask not in MASKS:
        raise AlignmentError(f"mask must be one of {MASKS}, got {mask!r}")
    if not 0 <= float(feather) <= 0.5:
        raise AlignmentError(f"feather is a fraction of the face size in 0..0.5, got {feather}")
    photo = np.asarray(photo)
    if photo.ndim != 3 or photo.shape[2] != 3 or photo.dtype != np.uint8:
        raise AlignmentError(f"photo must be [H, W, 3] uint8, got {photo.shape} {photo.dtype}")
    H, W = photo.shape[:2]
    if tuple(face.source_size) != (W, H):
        raise AlignmentError(f"the face was aligned from a {face.source_size[0]}x{face.source_size[1]} photo, but "
                             f"the photo given is {W}x{H}; paste back into the photo it came from")
    c = _as_float_crop(crop, "crop")
    if mode == "residual":
        if reference is None:
            raise AlignmentError("mode='residual' needs reference=, the unedited reconstruction of the face")
        r = _as_float_crop(reference, "reference")
        if r.shape != c.shape:
            raise AlignmentError(f"reference {r.shape} and crop {c.shape} must have the same shape")
        c = c - r
    elif color_match and mode != "replace":
        raise AlignmentError("color_match applies to mode='replace' only")

    S = c.shape[0]
    M = np.diag([S / face.recipe.size, S / face.recipe.size, 1.0]) @ np.asarray(face.matrix, np.float64)
    poly = face_polygon(face, mask)
    x0 = max(int(np.floor(poly[:, 0].min())) - 1, 0)
    y0 = max(int(np.floor(poly[:, 1].min())) - 1, 0)
    x1 = min(int(np.ceil(poly[:, 0].max())) + 1, W)
    y1 = min(int(np.ceil(poly[:, 1].max())) + 1, H)
    out = photo.copy()
    full_mask = np.zeros((H, W), np.float32) if return_mask else None
    if x1 <= x0 or y1 <= y0:
        return (out, full_mask) if return_mask else out
    w, h = x1 - x0, y1 - y0
    side = float(np.hypot(*(np.asarray(face.quad)[1] - np.asarray(face.quad)[0])))
    m = _feathered_mask(poly, x0, y0, w, h, float(feather) * side)
    # Region -> crop: photo = region + (x0, y0).
    Mr = M @ np.array([[1.0, 0.0, x0], [0.0, 1.0, y0], [0.0, 0.0, 1.0]])
    warped = cv2.warpAffine(c, to_cv(Mr), (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                            borderMode=cv2.BORDER_REPLICATE)
    region = photo[y0:y1, x0:x1].astype(np.float32)
    if mode == "replace":
        if color_match:
            wts = m[..., None]
            tot = max(float(wts.sum()), 1e-6)
            mu_p, mu_c = (region * wts).sum((0, 1)) / tot, (warped * wts).sum((0, 1)) / tot
            sd_p = np.sqrt(((region - mu_p) ** 2 * wts).sum((0, 1)) / tot)
            sd_c = np.sqrt(((warped - mu_c) ** 2 * wts).sum((0, 1)) / tot)
            warped = (warped - mu_c) * (sd_p / np.maximum(sd_c, 1e-3)) + mu_p
        blended = region + (warped - region) * m[..., None]
    else:
        blended = region + warped * m[..., None]
    new = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
    inside = m > 0
    out[y0:y1, x0:x1][inside] = new[inside]  # outside the mask the photo's bytes stay as they were
    if return_mask:
        full_mask[y0:y1, x0:x1] = m
        return out, full_mask
    return out
