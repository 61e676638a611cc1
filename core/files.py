"""File output: atomic writes (a file appears whole under its final name or not at all) and hashes.

Temporary files are named ``.<name>.<pid>.<random>.part`` beside the destination. A
process killed outright (SIGKILL, or SIGTERM where no handler runs) cannot delete its
own; :func:`remove_stale_parts` deletes those whose writer process no longer exists, and
never those of a live process (a concurrent run into the same folder).
"""
from __future__ import annotations

import hashlib
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
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".part", dir=path.parent)
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
    """Write ``text`` as UTF-8 with :func:`atomic_write_bytes` (same keywords)."""
    return atomic_write_bytes(path, text.encode("utf-8"), **kw)


def sha256_file(path) -> str:
    """The hex sha256 of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def remove_stale_parts(folder, *, recursive: bool = True) -> list:
    """Delete temporary ``.part`` files left in ``folder`` by writers that no longer run.

    Args:
        folder: an output folder (missing folders are fine).
        recursive: also look in sub-folders.
    Returns:
        The removed paths.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for p in (folder.rglob(".*.part") if recursive else folder.glob(".*.part")):
        parts = p.name[: -len(".part")].rsplit(".", 2)
        if len(parts) != 3 or not parts[1].isdigit() or _pid_alive(int(parts[1])):
            continue
        try:
            p.unlink()
            removed.append(p)
        except FileNotFoundError:
            pass
    return removed
