"""Batched work that survives a CUDA out-of-memory error by retrying in smaller batches.

A folder of photos is inverted or edited in batches. The batch that fits depends on the
GPU, the model and what else runs on the card, so the front door starts at the requested
size and, when ``torch.cuda.OutOfMemoryError`` is raised, frees the cache and retries the
same items in halves, down to batch 1. The size that worked is kept for the rest of the
run (memory does not come back by itself), so one OOM costs one retry, not one per batch.

Only the front door (``faceedit/``: the CLI and the ``Pipeline``) uses this: it is where
batches of user inputs are formed. The rooms below take whatever batch they are given.

Example::

    from faceedit.batching import run_batched

    latents = run_batched(lambda chunk: invert(G, torch.stack(chunk)), photos, batch_size=16)
    # -> one result per chunk, in order; chunks may be smaller than 16 after an OOM
"""
from __future__ import annotations

import gc
import logging
from typing import Callable, Sequence

from faceedit.core.errors import FaceeditError, PipelineError

log = logging.getLogger(__name__)


class OutOfMemoryAtBatchOne(FaceeditError, RuntimeError):
    """Even a batch of one item does not fit in GPU memory."""


def is_oom(exc: BaseException) -> bool:
    """True for a CUDA (or other accelerator) out-of-memory error.

    ``torch.cuda.OutOfMemoryError`` is what PyTorch >= 1.13 raises; older versions and some
    backends (MPS, cuDNN/cuBLAS allocation failures) raise a ``RuntimeError`` whose message
    says "out of memory".
    """
    import torch

    oom_type = getattr(torch.cuda, "OutOfMemoryError", None)
    if oom_type is not None and isinstance(exc, oom_type):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def _free_memory() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def run_batched(fn: Callable[[Sequence], object], items: Sequence, batch_size: int, *,
                min_batch: int = 1, on_shrink: Callable[[int, int], None] | None = None) -> list:
    """Call ``fn`` on consecutive chunks of ``items``; halve the chunk on out-of-memory.

    Args:
        fn: called with a slice of ``items`` (``items[i:j]``: a list slice, a tensor
            slice, ...); returns that chunk's result. It must be safe to call again on
            the same items after an out-of-memory error (no partial outputs written).
        items: anything sliceable with ``len()`` (a list of paths, a tensor of images).
        batch_size: the largest chunk to try first (>= 1).
        min_batch: do not go below this size (1 by default).
        on_shrink: called as ``on_shrink(old, new)`` each time the size is halved (the
            CLI uses it to tell the user).

    Returns:
        The results of ``fn``, one per chunk, in order (chunk sizes may vary after an OOM).

    Raises:
        OutOfMemoryAtBatchOne: the error persists at ``min_batch``; the message names
            the fixes (a smaller model or resolution, ``--device cpu``, freeing the GPU).
        ValueError: ``batch_size`` or ``min_batch`` below 1.
        Any other exception from ``fn`` passes through unchanged.
    """
    if int(batch_size) < 1 or int(min_batch) < 1:
        raise PipelineError(f"batch_size and min_batch must be at least 1 (got {batch_size}, {min_batch})")
    size = max(int(batch_size), int(min_batch))
    n = len(items)
    out, i = [], 0
    while i < n:
        j = min(i + size, n)
        try:
            result = fn(items[i:j])
        except BaseException as e:  # noqa: B902 - filtered right below
            if not is_oom(e):
                raise
            del e  # drop the traceback, which pins the failed batch's tensors
            _free_memory()
            if j - i <= min_batch:
                raise OutOfMemoryAtBatchOne(
                    f"out of GPU memory even at batch size {j - i}; free the GPU (other processes), "
                    f"use a smaller model, or run with --device cpu") from None
            new = max(min_batch, (j - i) // 2)
            log.warning("out of GPU memory at batch size %d; retrying with %d", j - i, new)
            if on_shrink is not None:
                on_shrink(j - i, new)
            size = new
            continue
        out.append(result)
        i = j
    return out


def retry_smaller(fn: Callable[[int], object], batch_size: int, *, min_batch: int = 1,
                  on_shrink: Callable[[int, int], None] | None = None):
    """Call ``fn(batch_size)``; on out-of-memory, call it again with half the batch size.

    For callees that chunk their input themselves and take the chunk size as an argument
    (``faceedit.inversion.invert(..., batch_size=)``), so their results stay one object.
    The whole call is repeated, so ``fn`` must not have written anything before failing.

    Raises:
        OutOfMemoryAtBatchOne: still out of memory at ``min_batch``.
    """
    size = max(int(batch_size), int(min_batch), 1)
    while True:
        try:
            return fn(size)
        except BaseException as e:  # noqa: B902 - filtered right below
            if not is_oom(e):
                raise
            del e
            _free_memory()
            if size <= min_batch:
                raise OutOfMemoryAtBatchOne(
                    f"out of GPU memory even at batch size {size}; free the GPU (other processes), use a "
                    f"smaller model, or run with --device cpu") from None
            new = max(min_batch, size // 2)
            log.warning("out of GPU memory at batch size %d; retrying with %d", size, new)
            if on_shrink is not None:
                on_shrink(size, new)
            size = new


__all__ = ["run_batched", "retry_smaller", "is_oom", "OutOfMemoryAtBatchOne"]
