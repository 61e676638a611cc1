"""Download registered public checkpoints into the cache, checking their sha256.

Files land in :func:`faceedit.checkpoints.registry.cache_dir` under the registry's file
name, written atomically (``.part`` then rename) so that an interrupted download never
leaves a file that looks complete. Every file is checked, never silently:

* when the registry knows the file's sha256, a mismatch deletes the download and raises;
* otherwise trust on first use: the first download's sha256 is logged (a warning, so the
  command line shows it) and recorded in ``cache_dir()/known_hashes.json``; every later
  download, and a file found already in the cache, is verified against that record.

The hash is also written beside the file (``<file>.sha256``) so bug reports can quote it.
Whatever was downloaded is only ever read through the safe readers.

On a machine without a network the error says where to put a file fetched elsewhere.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import urllib.error
import urllib.request
from pathlib import Path

from faceedit.core.files import atomic_write_text, sha256_file

from .native import CheckpointError
from .registry import REGISTRY, cache_dir, locate

log = logging.getLogger(__name__)

CHUNK = 1 << 20
KNOWN_HASHES = "known_hashes.json"


def known_hashes_path() -> Path:
    """The trust-on-first-use record: ``cache_dir()/known_hashes.json``."""
    return cache_dir() / KNOWN_HASHES


def known_hashes() -> dict:
    """``{name: {"sha256", "url", "file", "recorded"}}`` of files first downloaded without a registry hash.

    Raises:
        CheckpointError: the record exists but is not valid JSON (it is never overwritten then).
    """
    p = known_hashes_path()
    if not p.is_file():
        return {}
    try:
        data = json.loads(p.read_text())
    except (ValueError, OSError) as e:
        raise CheckpointError(f"{p} is damaged ({e}); repair or delete it (it records the sha256 of files "
                              f"first downloaded without a registry hash)") from e
    if not isinstance(data, dict):
        raise CheckpointError(f"{p} is not a JSON object; repair or delete it")
    return data


def _record_hash(name: str, digest: str, url: str, path: Path, how: str) -> None:
    data = known_hashes()
    data[name] = {"sha256": digest, "url": url, "file": path.name, "recorded": time.strftime("%Y-%m-%d %H:%M:%S"),
                  "how": how}
    atomic_write_text(known_hashes_path(), json.dumps(data, indent=2, sort_keys=True))
    log.warning("%s: no sha256 in the registry; trusting this first copy: sha256 %s (%s), recorded in %s. "
                "Compare it with the publisher's; later downloads are checked against it", name, digest, how,
                known_hashes_path())


def expected_sha256(name: str) -> tuple:
    """``(sha256 or "", where it comes from: "registry", "known_hashes.json" or "")``."""
    e = REGISTRY[name]
    if e.sha256:
        return e.sha256.lower(), "registry"
    rec = known_hashes().get(name)
    if isinstance(rec, dict) and rec.get("sha256"):
        return str(rec["sha256"]).lower(), KNOWN_HASHES
    return "", ""


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
            message names the URL and the path to place the file at), a sha256 mismatch against
            the registry or against the hash recorded on first use (``known_hashes.json``), or a
            damaged record.
    """
    if name not in REGISTRY:
        raise CheckpointError(f"unknown model {name!r}; known models: {', '.join(REGISTRY)}")
    e = REGISTRY[name]
    have = locate(name)
    if have is not None and not force:
        if e.source != "shipped" and have.is_file():
            digest = sha256_file(have)
            want, where = expected_sha256(name)
            if want and digest != want:
                raise CheckpointError(f"{have} has sha256 {digest}, but the {where} expects {want}; the file is "
                                      f"damaged or another one: delete it and download again (`faceedit download "
                                      f"{name}`)")
            if not want:
                _record_hash(name, digest, e.source, have, "found in the cache")
            else:
                log.info("%s is already at %s (sha256 matches the %s)", name, have, where)
        else:
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
    want, where = expected_sha256(name)
    if want and digest != want:
        dst.unlink(missing_ok=True)
        hint = ("" if where == "registry" else f"; if the publisher really changed the file, remove the entry "
                f"{name!r} from {known_hashes_path()} and download again")
        raise CheckpointError(f"downloaded {name} has sha256 {digest}, but the {where} expects {want}; the file was "
                              f"deleted (a truncated download or a changed file at {e.source}){hint}")
    if not want:
        _record_hash(name, digest, e.source, dst, "first download")
    else:
        log.info("%s: sha256 %s matches the %s", name, digest, where)
    atomic_write_text(dst.with_name(dst.name + ".sha256"), f"{digest}  {dst.name}\n")
    return dst


__all__ = ["download_model", "expected_sha256", "known_hashes", "known_hashes_path"]
