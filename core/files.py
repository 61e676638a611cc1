"""File output: atomic writes (a file appears whole under its final name or not at all) and hashes.

Temporary files are named ``.<name>.<pid>.<random>.part`` beside the destination and created
with mode ``0o666`` less the process umask, so a finished file has the permissions any other
file the user creates gets (``tempfile.mkstemp``'s private ``0o600`` would follow the rename).
A process killed outright (SIGKILL, or SIGTERM where no handler runs) cannot delete its
own; :func:`remove_stale_parts` deletes those whose writer process no longer exists, and
never those of a live process (a concurrent run into the same folder).
"""
from __future__ import annotations

import hashlib
import os
import secrets
from pathlib import Path

from .errors import OutputError


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
    fd, tmp = _create_part(path)
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


def _create_part(path: Path) -> tuple:
    """A new temporary file beside ``path``, opened for writing: ``(fd, name)``.

    ``os.open`` with mode ``0o666`` lets the kernel apply the umask (``tempfile.mkstemp``
    always makes ``0o600``); ``O_EXCL`` makes the random name ours alone.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.part"
        try:
            return os.open(tmp, flags, 0o666), str(tmp)
        except FileExistsError:
            continue
    raise FileExistsError(f"could not create a temporary file beside {path}")


def atomic_write_text(path, text: str, **kw) -> Path:
    """Write ``text`` as UTF-8 with :func:`atomic_write_bytes` (same keywords)."""
    return atomic_write_bytes(path, text.encode("utf-8"), **kw)


def check_writable_dir(path, *, what: str = "--out") -> Path:
    """Check, before any work, that files can be written into folder ``path``.

    The folder need not exist: its nearest existing ancestor must be a folder in which a
    file can be created (tried for real with a temporary file, removed at once, since
    permission bits do not tell: root ignores them, read-only mounts and immutable folders
    do not show in them). Nothing is created when the check fails.

    Args:
        path: the output folder.
        what: how the folder is named in the message (``--out``, ``FACEEDIT_HOME``).
    Returns:
        ``path`` as a ``Path``.
    Raises:
        OutputError: ``path`` or an ancestor is a file, or the folder cannot be written;
            the message names the fix.
    """
    path = Path(path)
    probe = path
    while not probe.exists():
        if probe.is_symlink():
            raise OutputError(f"{what} {path}: {probe} is a broken link; choose another folder")
        parent = probe.parent
        if parent == probe:
            break
        probe = parent
    if not probe.is_dir():
        where = "is a file" if probe == path else f"lies under {probe}, which is a file"
        raise OutputError(f"{what} {path} {where}, not a folder; choose a folder")
    try:
        fd, tmp = _create_part(probe / ".faceedit-write-check")
    except OSError as e:
        why = e.strerror or type(e).__name__
        raise OutputError(f"{what} {path}: cannot write into {probe} ({why}); choose a folder you can write to"
                          + (" or set FACEEDIT_HOME to one" if what == "FACEEDIT_HOME" else "")) from e
    os.close(fd)
    os.unlink(tmp)
    return path


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
