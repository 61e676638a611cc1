"""Atomic file writing: a file appears whole under its final name or not at all.

Lives in the lowest room that writes files (checkpoints) so that every room above it,
``faceedit.inversion`` and ``faceedit.editing`` included, shares one implementation.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path


def atomic_write_bytes(path, data: bytes, *, protect=()) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename.

    Args:
        path: destination.
        data: the bytes.
        protect: paths that must never be overwritten (a command's inputs); writing to
            one of them raises ``FileExistsError`` naming the fix.
    Returns:
        The destination path.
    """
    path = Path(path)
    for p in protect:
        try:
            if Path(p).exists() and path.exists() and os.path.samefile(p, path):
                raise FileExistsError(f"refusing to overwrite the input file {p}; choose another --out")
        except FileNotFoundError:
            pass
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def atomic_write_text(path, text: str, **kw) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"), **kw)
