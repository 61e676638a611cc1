"""Download registered public checkpoints into the cache, checking their sha256.

Files land in :func:`faceedit.checkpoints.registry.cache_dir` under the registry's file
name, written atomically (``.part`` then rename) so that an interrupted download never
leaves a file that looks complete. When the registry knows the file's sha256 a mismatch
deletes the download and raises; when it does not, the hash is logged and stored beside
the file (``<file>.sha256``) so later checks and bug reports can quote it. Whatever was
downloaded is only ever read through the safe readers.

On a machine without a network the error says where to put a file fetched elsewhere.
"""
from __future__ import annotations

import hashlib
import logging
import os
import urllib.error
import urllib.request
from pathlib import Path

from faceedit.core.files import atomic_write_text

from .native import CheckpointError
from .registry import REGISTRY, cache_dir, locate

log = logging.getLogger(__name__)

CHUNK = 1 << 20


def _fetch(url: str, dst: Path, timeout: float, progress) -> str:
    """Stream ``url`` to ``dst`` (via ``dst.part``); return the sha256 of what was written."""
    part = dst.with_name(dst.name + ".part")
    h = hashlib.sha256()
    req = urllib.request.Request(url, headers={"User-Agent": "faceedit"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r, open(part, "wb") as f:
            total = int(r.headers.get("Content-Length") or 0) or None
            done = 0
            while True:
                chunk = r.read(CHUNK)
                if not chunk:
                    break
                f.write(chunk)
                h.update(chunk)
                done += len(chunk)
                if progress is not None:
                    progress(done, total)
            if total is not None and done != total:
                raise CheckpointError(f"download of {url} stopped at {done} of {total} bytes; try again")
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    os.replace(part, dst)
    return h.hexdigest()


def download_model(name: str, *, timeout: float = 60.0, progress=None, force: bool = False) -> Path:
    """Download the registered model ``name`` into the cache and return its path.

    Args:
        name: a registry name (``faceedit models`` lists them).
        timeout: socket timeout in seconds.
        progress: optional ``callback(bytes_done, bytes_total_or_None)``.
        force: download again even if the file is already present.
    Returns:
        Path of the file in the cache (or where it already is).
    Raises:
        CheckpointError: unknown name, a shipped model that is missing, no network (the
            message names the URL and the path to place the file at), or a sha256 mismatch.
    """
    if name not in REGISTRY:
        raise CheckpointError(f"unknown model {name!r}; known models: {', '.join(REGISTRY)}")
    e = REGISTRY[name]
    have = locate(name)
    if have is not None and not force:
        log.info("%s is already at %s", name, have)
        return have
    if e.source == "shipped":
        raise CheckpointError(f"{name} ships inside the faceedit package but is missing from this installation; "
                              f"reinstall faceedit (its weights live in checkpoints/weights/{e.filename})")
    dst = cache_dir() / e.filename
    if not e.source.lower().startswith(("https://", "http://", "file://")) or e.source.startswith("https://github.com"):
        raise CheckpointError(f"{name} has no direct download link; get {e.filename} from {e.source} and place it "
                              f"at {dst}")
    dst.parent.mkdir(parents=True, exist_ok=True)
    log.info("downloading %s from %s to %s", name, e.source, dst)
    try:
        digest = _fetch(e.source, dst, timeout, progress)
    except (urllib.error.URLError, OSError, TimeoutError) as err:
        reason = getattr(err, "reason", err)
        raise CheckpointError(
            f"could not download {name} from {e.source} ({reason}). This machine may have no network: download "
            f"the file elsewhere, check that its sha256 is {e.sha256 or '(not recorded; compare with the source)'}, "
            f"and place it at {dst} (the cache folder is $FACEEDIT_HOME, else $XDG_CACHE_HOME/faceedit, "
            f"else ~/.cache/faceedit)") from err
    if e.sha256 and digest != e.sha256.lower():
        dst.unlink(missing_ok=True)
        raise CheckpointError(f"downloaded {name} has sha256 {digest}, expected {e.sha256}; the file was deleted "
                              f"(a truncated download or a changed file at {e.source})")
    if not e.sha256:
        log.warning("%s: no sha256 recorded in the registry; downloaded file has sha256 %s", name, digest)
    atomic_write_text(dst.with_name(dst.name + ".sha256"), f"{digest}  {dst.name}\n")
    return dst


__all__ = ["download_model"]
