"""Downscaled copies of a photo, and the switch between the fast and the reference implementations.

``path="reference"`` keeps the alignment room's first implementation of every resampling step
(detection copies by one exact area resize, the crop by the FFHQ script's 4x supersampled
transform); ``path="fast"`` (the default) does the same steps with fewer operations. Both give
the same faces and quads; the crops differ by resampling noise (``bench/results/alignment``,
``python bench/scripts/alignment.py speed``).
"""
from __future__ import annotations

import numpy as np

from .errors import AlignmentError

#: The implementations ``align``, ``detect_faces`` and ``align_landmarks`` offer.
ALIGN_PATHS = ("fast", "reference")


def check_path(path: str) -> str:
    """``path`` if it is one of :data:`ALIGN_PATHS`.

    Raises:
        AlignmentError: any other value.
    """
    if path not in ALIGN_PATHS:
        raise AlignmentError(f"unknown alignment path {path!r}; choose one of {', '.join(ALIGN_PATHS)}")
    return path


def shrink(image: np.ndarray, width: int, height: int, *, path: str = "fast", rest: str = "area"):
    """A copy of ``image`` reduced to about ``width`` x ``height``, and the scales ``(sx, sy)`` of copy / photo.

    The reference is one ``cv2.resize`` with ``INTER_AREA`` to exactly that size: an exact
    area filter, but OpenCV's general (non-integer) area resize costs about 4 ms per source
    megapixel (2 MP to 820x579: 8.4 ms on one core of the 2-core dev machine, against 0.6 ms for the
    integer halving; a one-off timing, not in a benchmark). The fast path first averages ``k x k`` blocks,
    ``k = floor(photo / copy)`` (OpenCV's integer area resize), over the photo
    cut to a multiple of ``k`` (at most ``k - 1`` edge rows and columns are dropped; the scales
    returned account for it), then resizes the remaining factor, below 1.5 when ``k >= 2``, with
    ``rest``: ``"area"`` or ``"linear"`` (bilinear; enough for a detector's copy: on the
    in-the-wild photos it gives the HOG detector the same boxes as the reference copy). With
    ``k = 1`` both paths are the one area resize.

    Args:
        image: ``[H, W, C]`` array.
        width, height: the size of the copy (each at most the photo's).
        path: ``"fast"`` or ``"reference"``.
        rest: the filter of the fast path's second step, ``"area"`` or ``"linear"``.
    Returns:
        ``(copy, (sx, sy))``: ``copy`` is ``[height, width, C]``; a point ``(x, y)`` of the
        photo (continuous coordinates) is ``(x * sx, y * sy)`` in the copy.
    """
    import cv2

    h, w = image.shape[:2]
    width, height = int(width), int(height)
    if not (1 <= width <= w and 1 <= height <= h):
        raise AlignmentError(f"cannot shrink a {w}x{h} image to {width}x{height}")
    k = min(w // width, h // height)
    if check_path(path) == "reference" or k < 2:
        return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA), (width / w, height / h)
    cw, ch = w - w % k, h - h % k
    blocks = cv2.resize(image[:ch, :cw], (cw // k, ch // k), interpolation=cv2.INTER_AREA)
    if (cw // k, ch // k) != (width, height):
        flag = {"area": cv2.INTER_AREA, "linear": cv2.INTER_LINEAR}[rest]
        blocks = cv2.resize(blocks, (width, height), interpolation=flag)
    return blocks, (width / cw, height / ch)
