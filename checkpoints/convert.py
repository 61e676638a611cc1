"""Any supported checkpoint -> faceedit's native format (in memory or on disk).

The kind of a file is told from its bytes, not its name:

* a folder, or a zip holding ``config.json``: native;
* a plain pickle stream: NVIDIA stylegan2-ada-pytorch (restricted unpickler);
* a ``torch.save`` zip whose ``data.pkl`` names ``torch_utils.persistence``: NVIDIA objects
  re-saved with ``torch.save`` (restricted unpickler);
* any other ``torch.save`` file (zip or legacy): rosinality (``weights_only=True``).

Nothing read from a file is ever executed.
"""
from __future__ import annotations

import hashlib
import logging
import shutil
import tempfile
import zipfile
from pathlib import Path

from faceedit.core.errors import CheckpointError
from faceedit.core.files import atomic_write_bytes, sha256_file

from .native import FORMAT, folder_to_zip_bytes, is_zip, load_native, model_safetensors_bytes, read_config, save_native

log = logging.getLogger(__name__)


def sniff(path) -> str:
    """``'native'``, ``'nvidia'`` or ``'rosinality'`` from the file's content."""
    path = Path(path)
    if path.is_dir():
        return "native"
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist")
    if is_zip(path):
        try:
            with zipfile.ZipFile(path) as z:
                names = z.namelist()
                if any(n == "config.json" or n.endswith("/config.json") for n in names):
                    return "native"
                pkls = [n for n in names if n == "data.pkl" or n.endswith("/data.pkl")]
                if len(pkls) == 1:
                    return "nvidia" if b"torch_utils.persistence" in z.read(pkls[0]) else "rosinality"
        except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError, RuntimeError, ValueError) as e:
            raise CheckpointError(f"{path} is a damaged zip ({e}); download or convert it again") from e
        raise CheckpointError(f"{path} is a zip that is neither a faceedit checkpoint nor a torch.save archive")
    with open(path, "rb") as f:
        head = f.read(64)
    if head[:1] != b"\x80":
        raise CheckpointError(f"{path} is not a checkpoint faceedit knows (expected a native folder/zip, an NVIDIA "
                              f".pkl or a rosinality .pt)")
    # torch.save's legacy format starts with a pickled magic number (LONG1 opcode, 10 bytes).
    if head[2:4] == b"\x8a\x0a" and head[4:14] == (0x1950A86A20F9469CFC6C).to_bytes(10, "little"):
        return "rosinality"
    return "nvidia"


def _native_config(G, name: str, provenance: dict, license: str = "") -> dict:
    return {"format": FORMAT, "version": 1, "name": name, "generator": G.config, "discriminator": None,
            "recipe": None, "license": license, "provenance": provenance}


def convert_to_native_in_memory(path) -> dict:
    """Read any supported checkpoint without writing anything.

    Returns:
        The same keys as :func:`faceedit.checkpoints.native.load_native`: ``G`` (eval, fp32),
        ``D`` (``None`` for converted files: NVIDIA's and rosinality's discriminators are other
        architectures), ``config`` (a native ``config.json`` dict), ``prior`` (``{}``) and
        ``sha256`` (of the ``model.safetensors`` that :func:`convert_file` would write, so the
        model id is the same before and after conversion).
    Raises:
        CheckpointError (and its subclass ``UnsafePickleError``): unreadable, unsafe or unsupported.
    """
    path = Path(path)
    kind = sniff(path)
    if kind == "native":
        return load_native(path)
    if kind == "nvidia":
        from .nvidia import read_nvidia

        out = read_nvidia(path)
    else:
        from .rosinality import read_rosinality

        out = read_rosinality(path)
    G = out["G"]
    prov = dict(out["provenance"], source_sha256=sha256_file(path))
    sha = hashlib.sha256(model_safetensors_bytes(G)).hexdigest()
    return {"G": G, "D": None, "config": _native_config(G, path.stem, prov), "prior": {}, "sha256": sha}


def convert_file(src, dst) -> Path:
    """Convert ``src`` (NVIDIA ``.pkl``, rosinality ``.pt`` or native) to a native checkpoint.

    Args:
        src: input file or folder; never modified.
        dst: output folder, or a path ending in ``.zip`` for a zipped checkpoint.
    Returns:
        The written path.
    Raises:
        CheckpointError: unreadable/unsafe input, or ``dst`` is the input or a non-empty
            folder that is not a checkpoint.
    """
    src, dst = Path(src), Path(dst)
    if dst.exists() and src.exists() and dst.resolve() == src.resolve():
        raise CheckpointError(f"refusing to overwrite the input {src}; choose another output path")
    if dst.is_dir() and any(dst.iterdir()) and not (dst / "config.json").is_file():
        raise CheckpointError(f"{dst} is a non-empty folder that is not a faceedit checkpoint; choose an empty "
                              f"or new folder")
    if sniff(src) == "native":  # re-save (e.g. folder <-> zip), keeping the discriminator if there is one
        out = load_native(src, with_discriminator=read_config(src).get("discriminator") is not None)
    else:
        out = convert_to_native_in_memory(src)
    cfg = out["config"]
    name = cfg.get("name") or src.stem
    kw = dict(name=name, D=out.get("D"), recipe=cfg.get("recipe"), license=cfg.get("license", ""),
              provenance=cfg.get("provenance") or {}, prior=out.get("prior") or None)
    if dst.suffix.lower() == ".zip":
        tmp = Path(tempfile.mkdtemp(prefix=".faceedit-convert-", dir=dst.parent if dst.parent.exists() else None))
        try:
            save_native(tmp / name, out["G"], **kw)
            atomic_write_bytes(dst, folder_to_zip_bytes(tmp / name), protect=[src])
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    else:
        save_native(dst, out["G"], **kw)
    log.info("converted %s -> %s (%s)", src, dst, cfg.get("provenance", {}).get("source_format", "native"))
    return dst


__all__ = ["convert_file", "convert_to_native_in_memory", "sniff"]
