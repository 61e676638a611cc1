"""Reading and aligning photo files in a worker process, overlapped with the caller's own work.

Once dlib's models are loaded, finding the faces of a photo costs little; loading them (the
68-point shape predictor is a 100 MB file, about 0.5 s to read) and reading the photo hold
Python's GIL, so a thread could not overlap them with anything. :class:`BackgroundAligner` runs
them in one worker process instead: started before the caller imports torch and loads a
generator, the worker loads dlib's models meanwhile; each photo submitted is then read and
aligned there while the caller inverts the one before. The worker calls :func:`read_and_align`
(``faceedit.core.images.load_image``, then :func:`~faceedit.alignment.align.align_photo`), so
the faces are exactly those of an alignment in the caller's process (``tests/test_alignment.py``).

``faceedit edit PHOTO`` uses it for its one photo, where starting before torch is the point; a
folder goes through the loader workers of ``faceedit.batchrun``, which need torch anyway and
call the same :func:`read_and_align`, and start by the same rule (:func:`worker_context`).
"""
from __future__ import annotations

import concurrent.futures
import multiprocessing
import signal
import sys
import time

from .align import align_photo, landmark_kind


def load_models(detector: str, landmarks=None) -> None:
    """Load (and cache in this process) the model files an alignment with ``detector`` and
    ``landmarks`` reads, so that the first photo does not wait for them."""
    from . import models

    if detector == "mtcnn":
        models.mtcnn()
    else:
        (models.hog_detector if detector == "dlib" else models.cnn_detector)()
        if landmark_kind(detector, landmarks).startswith("dlib68"):
            models.shape_predictor68()


def worker_signals() -> None:
    """In a worker process: Ctrl-C is the caller's to handle, SIGTERM ends the worker (whatever
    handler the caller had installed before it started)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _start_worker(detector: str, landmarks) -> None:
    """The worker's initializer: its signals set, the models loaded now."""
    worker_signals()
    load_models(detector, landmarks)


def worker_context():
    """The platform's way of starting a worker; spawn instead of fork once torch is loaded here
    (a forked copy of a process whose thread pools are running can hang in them)."""
    ctx = multiprocessing.get_context()
    if ctx.get_start_method() == "fork" and "torch" in sys.modules:
        return multiprocessing.get_context("spawn")
    return ctx


def read_and_align(path, options: dict, *, max_pixels: int | None = None, seconds: dict | None = None) -> tuple:
    """Read a photo file and align its faces: what each worker of :class:`BackgroundAligner` (and of
    ``faceedit.batchrun``'s loader) does with one photo.

    Args:
        path: the photo file.
        options: :func:`~faceedit.alignment.align.align_photo`'s keywords.
        max_pixels: the pixel limit of ``faceedit.core.images.load_image`` (default: its own).
        seconds: a dict that gets ``read`` and ``align`` as they are done (also when one raises).
    Returns:
        ``(photo [H, W, 3] uint8, AlignmentReport, {"read": s, "align": s})``.
    Raises:
        ImageLoadError, AlignmentError: as ``load_image`` and ``align_photo`` raise them.
    """
    from faceedit.core.images import load_image

    seconds = {} if seconds is None else seconds
    t0 = time.perf_counter()
    try:
        photo = load_image(path) if max_pixels is None else load_image(path, max_pixels=max_pixels)
    finally:
        seconds["read"] = time.perf_counter() - t0
    t1 = time.perf_counter()
    try:
        report = align_photo(photo, **options)
    finally:
        seconds["align"] = time.perf_counter() - t1
    return photo, report, seconds


class BackgroundAligner:
    """One worker process that reads photo files and aligns their faces, in the order submitted.

    Args:
        detector: the detector the photos will be aligned with (its models are loaded at once).
        landmarks: the landmark kind (``None``: the detector's default), for the same purpose.

    Use as a context manager, or call :meth:`close`. A failed alignment raises its own
    exception (``FaceNotFoundError``, ...) from the future's ``result()``.
    """

    def __init__(self, detector: str = "dlib", landmarks=None):
        landmark_kind(detector, landmarks)  # a bad name fails here, not in the worker
        self._pool = concurrent.futures.ProcessPoolExecutor(
            1, mp_context=worker_context(), initializer=_start_worker, initargs=(detector, landmarks))
        self._pool.submit(int)  # start the worker (and its model loading) now

    def submit(self, path, **options) -> concurrent.futures.Future:
        """Read ``path`` and align it in the worker: ``options`` are :func:`align_photo`'s keywords.

        Returns:
            A future of ``(photo [H, W, 3] uint8, AlignmentReport, {"read": s, "align": s})``.
        """
        return self._pool.submit(read_and_align, str(path), dict(options))

    def close(self) -> None:
        """Stop the worker (work not started yet is dropped)."""
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> BackgroundAligner:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


__all__ = ["BackgroundAligner", "read_and_align", "load_models", "worker_signals", "worker_context"]
