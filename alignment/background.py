"""Reading and aligning photo files in a worker process, overlapped with the caller's own work.

Once dlib's models are loaded, finding the faces of a photo costs little; loading them (the
68-point shape predictor is a 100 MB file, about 0.5 s to read) and reading the photo hold
Python's GIL, so a thread could not overlap them with anything. :class:`BackgroundAligner` runs
them in one worker process instead: started before the caller imports torch and loads a
generator, the worker loads dlib's models meanwhile; each photo submitted is then read and
aligned there while the caller inverts the one before. The worker calls
:func:`faceedit.core.images.load_image` and :func:`~faceedit.alignment.align.align_photo`, so
the faces are exactly those of an alignment in the caller's process (``tests/test_alignment.py``).
"""
from __future__ import annotations

import concurrent.futures
import multiprocessing
import signal
import sys
import time

from .align import align_photo, landmark_kind


def _start_worker(detector: str, landmarks) -> None:
    """The worker's initializer: Ctrl-C is the caller's to handle, SIGTERM ends the worker (whatever
    handler the caller had installed before it started); the models are loaded now."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    from . import models

    if detector == "mtcnn":
        models.mtcnn()
    else:
        (models.hog_detector if detector == "dlib" else models.cnn_detector)()
        if landmark_kind(detector, landmarks).startswith("dlib68"):
            models.shape_predictor68()


def _context():
    """The platform's way of starting the worker; spawn instead of fork once torch is loaded here
    (a forked copy of a process whose thread pools are running can hang in them)."""
    ctx = multiprocessing.get_context()
    if ctx.get_start_method() == "fork" and "torch" in sys.modules:
        return multiprocessing.get_context("spawn")
    return ctx


def _read_and_align(path: str, options: dict) -> tuple:
    from faceedit.core.images import load_image

    t0 = time.perf_counter()
    photo = load_image(path)
    t1 = time.perf_counter()
    report = align_photo(photo, **options)
    return photo, report, {"read": t1 - t0, "align": time.perf_counter() - t1}


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
            1, mp_context=_context(), initializer=_start_worker, initargs=(detector, landmarks))
        self._pool.submit(int)  # start the worker (and its model loading) now

    def submit(self, path, **options) -> concurrent.futures.Future:
        """Read ``path`` and align it in the worker: ``options`` are :func:`align_photo`'s keywords.

        Returns:
            A future of ``(photo [H, W, 3] uint8, AlignmentReport, {"read": s, "align": s})``.
        """
        return self._pool.submit(_read_and_align, str(path), dict(options))

    def close(self) -> None:
        """Stop the worker (work not started yet is dropped)."""
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> BackgroundAligner:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


__all__ = ["BackgroundAligner"]
