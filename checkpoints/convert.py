"""Any supported checkpoint -> faceedit's native format (in memory or on disk).

The kind of a file is told from its bytes, not its name:

* a folder, or a zip holding ``config.json``: native;
* a plain pickle stream naming ``dnnlib.tflib.network``: NVIDIA's TensorFlow StyleGAN or
  StyleGAN2 (:mod:`.tf_pickle`; StyleGAN2 mapped by :mod:`.tf_stylegan2`, StyleGAN v1 by
  ``faceedit.checkpoints.tf_stylegan1``);
* any other plain pickle stream: NVIDIA stylegan2-ada-pytorch or stylegan3-repo StyleGAN2
  (restricted unpickler);
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
import zlib
from dataclasses import replace
from pathlib import Path

from faceedit.core.errors import CheckpointError
from faceedit.core.files import atomic_write_bytes, sha256_file

from .budget import Budget, check_zip_entry
from .loaded import LoadedModel
from .native import FORMAT, folder_to_zip_bytes, is_zip, load_native, model_safetensors_bytes, read_config, save_native

log = logging.getLogger(__name__)


# How far into a TF pickle its first global (the Network class) can sit: after the PROTO
# opcode and the opening of the (G, D, Gs) tuple, a few dozen bytes in every protocol.
_TF_HEAD = 256
_PERSISTENCE = b"torch_utils.persistence"


def _names_persistence(z: zipfile.ZipFile, name: str) -> bool:
    """Whether the zip entry ``name`` (a ``data.pkl``) contains ``torch_utils.persistence``, read
    as a stream in 1 MiB pieces (never held whole)."""
    tail = b""
    with z.open(name) as f:
        while chunk := f.read(1 << 20):
            if _PERSISTENCE in tail + chunk:
                return True
            tail = chunk[-len(_PERSISTENCE):]
    return False


def sniff(path, *, max_bytes: int | Budget | None = None) -> str:
    """``'native'``, ``'nvidia'``, ``'nvidia-tf'`` or ``'rosinality'`` from the file's content.

    Args:
        path: the file or folder.
        max_bytes: the size budget (as for :func:`convert_to_native_in_memory`): a torch
            zip's ``data.pkl`` is checked against it (and its compression ratio) before it is
            inflated to be looked into; nothing is charged.
    Raises:
        CheckpointError: not a kind faceedit reads, or a damaged zip.
        CheckpointSizeError: a ``data.pkl`` larger than the budget or inflating like a bomb.
    """
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
                    check_zip_entry(z.getinfo(pkls[0]), str(path), Budget.of(max_bytes, str(path)), charge=False)
                    return "nvidia" if _names_persistence(z, pkls[0]) else "rosinality"
        except CheckpointError:
            raise
        except (zipfile.BadZipFile, zlib.error, OSError, EOFError, NotImplementedError, RuntimeError, ValueError) as e:
            raise CheckpointError(f"{path} is a damaged zip ({e}); download or convert it again") from e
        raise CheckpointError(f"{path} is a zip that is neither a faceedit checkpoint nor a torch.save archive")
    with open(path, "rb") as f:
        head = f.read(_TF_HEAD)
    if head[:1] != b"\x80":
        raise CheckpointError(f"{path} is not a checkpoint faceedit knows (expected a native folder/zip, an NVIDIA "
                              f".pkl or a rosinality .pt)")
    # torch.save's legacy format starts with a pickled magic number (LONG1 opcode, 10 bytes).
    if head[2:4] == b"\x8a\x0a" and head[4:14] == (0x1950A86A20F9469CFC6C).to_bytes(10, "little"):
        return "rosinality"
    if b"dnnlib.tflib.network" in head or (b"dnnlib.tflib" in head and b"Network" in head):
        return "nvidia-tf"
    return "nvidia"


def _native_config(G, name: str, provenance: dict, license: str = "", D=None, recipe: dict | None = None) -> dict:
    return {"format": FORMAT, "version": 1, "name": name, "generator": G.config,
            "discriminator": None if D is None else D.config, "recipe": recipe, "license": license,
            "provenance": provenance}


def _stylegan1_from_tf(net, where: str, budget: Budget) -> dict:
    """``{"G": Generator1, "provenance": ...}`` from a StyleGAN v1 TF generator record."""
    from .tf_stylegan1 import stylegan1_from_tf

    G, info = stylegan1_from_tf(net, where, max_bytes=budget)
    return {"G": G, "provenance": {"source_format": "nvidia-stylegan1-tf-pkl", "source": where,
                                   **{k: v for k, v in info.items() if k == "unused" or k.startswith("tf_truncation")}}}


def read_tf(path, *, max_bytes: int | Budget | None = None) -> dict:
    """Read an NVIDIA TensorFlow pickle (StyleGAN2 or StyleGAN v1).

    Args:
        path: the ``.pkl``.
        max_bytes: the size budget (see :func:`convert_to_native_in_memory`).
    Returns:
        ``{"G": generator, "D": Discriminator | None, "provenance": dict}``: ``Gs`` (else ``G``)
        converted; ``D`` when it is StyleGAN2's resnet discriminator, otherwise ``None`` with the
        reason in ``provenance["discriminator"]``.
    Raises:
        CheckpointError: unreadable, unsafe, or a generator faceedit cannot map (named).
    """
    from .tf_pickle import read_tf_pickle, sniff_generation

    path = Path(path)
    budget = Budget.of(max_bytes, str(path))
    nets = read_tf_pickle(path, max_bytes=budget)
    key = "Gs" if nets["Gs"] is not None else "G"
    if nets[key] is None:
        raise CheckpointError(f"{path} holds no generator")
    if key == "G":
        log.warning("%s has no Gs; using the training generator G", path)
    gen = sniff_generation(nets[key])
    where = f"{path} ({key})"
    if gen == "stylegan1":
        out = dict(_stylegan1_from_tf(nets[key], where, budget))
    else:
        from .tf_stylegan2 import stylegan2_from_tf

        out = dict(stylegan2_from_tf(nets[key], where, max_bytes=budget))
    prov = dict(out.get("provenance") or {}, source_key=key, source_file=path.name)
    D, note = out.get("D"), "the file has no discriminator"
    if D is None and nets["D"] is not None:
        if gen != "stylegan2":
            note = f"not converted: faceedit has no network for the {gen} discriminator ({nets['D'].build_func_name})"
            log.warning("%s: %s; the model converts without a discriminator", path, note)
        else:
            from .tf_stylegan2 import discriminator_from_tf

            try:
                D, note = discriminator_from_tf(nets["D"], f"{path} (D)", max_bytes=budget), "converted"
            except CheckpointError as e:
                note = f"not converted: {e}"
                log.warning("%s; the model converts without a discriminator", e)
    elif D is not None:
        note = "converted"
    prov["discriminator"] = note
    return {"G": out["G"], "D": D, "provenance": prov}


def _read_foreign(path: Path, kind: str, budget: Budget) -> dict:
    if kind == "nvidia":
        from .nvidia import read_nvidia

        return read_nvidia(path, max_bytes=budget)
    if kind == "nvidia-tf":
        return read_tf(path, max_bytes=budget)
    from .rosinality import read_rosinality

    return read_rosinality(path, max_bytes=budget)


def convert_to_native_in_memory(path, *, recipe: dict | None = None,
                                max_bytes: int | Budget | None = None) -> LoadedModel:
    """Read any supported checkpoint without writing anything.

    Args:
        path: the checkpoint.
        recipe: the alignment recipe (an ``AlignmentRecipe.to_dict()``) to record for a
            converted model; its ``size`` is set to the model's resolution. ``None`` records
            none (``invert``/``edit`` then fall back to FFHQ's and say so). Ignored for native
            checkpoints, which carry their own.
        max_bytes: the size budget of the load (``None``: ``$FACEEDIT_MAX_CHECKPOINT_GIB`` GiB,
            else 4 GiB): declared file and tensor sizes and the networks the file describes
            are charged to it before they are read or built (:mod:`faceedit.checkpoints.budget`).
    Returns:
        A :class:`LoadedModel`, as :func:`faceedit.checkpoints.native.load_native` gives: ``G`` (eval, fp32),
        ``D`` (NVIDIA's or rosinality's resnet discriminator when the file has one faceedit can
        map, else ``None``; the provenance's ``discriminator`` entry says which), ``config`` (a
        native ``config.json`` dict), ``prior`` (``{}``) and ``sha256`` (of the
        ``model.safetensors`` that :func:`convert_file` would write, so the model id is the same
        before and after conversion).
    Raises:
        CheckpointError (and its subclasses ``UnsafePickleError``, ``CheckpointSizeError``):
            unreadable, unsafe, unsupported, or over the size budget.
    """
    path = Path(path)
    budget = Budget.of(max_bytes, str(path))
    kind = sniff(path, max_bytes=budget)
    if kind == "native":
        return load_native(path, max_bytes=budget)
    out = _read_foreign(path, kind, budget)
    G, D = out["G"], out.get("D")
    prov = dict(out["provenance"], source_sha256=sha256_file(path))
    if recipe is not None:
        recipe = {**recipe, "size": int(G.resolution)}
    sha = hashlib.sha256(model_safetensors_bytes(G)).hexdigest()
    return LoadedModel(G=G, D=D, config=_native_config(G, path.stem, prov, D=D, recipe=recipe), sha256=sha,
                       name=path.stem, source=path)


def convert_file(src, dst, *, recipe: dict | None = None, max_bytes: int | None = None) -> Path:
    """Convert ``src`` (NVIDIA PyTorch or TensorFlow ``.pkl``, rosinality ``.pt`` or native) to a
    native checkpoint, keeping its discriminator where faceedit can run it.

    Args:
        src: input file or folder; never modified.
        dst: output folder, or a path ending in ``.zip`` for a zipped checkpoint.
        recipe: alignment recipe recorded for a converted model (see
            :func:`convert_to_native_in_memory`); for a native ``src``, replaces its recipe
            when given.
        max_bytes: the size budget of reading ``src`` (see :func:`convert_to_native_in_memory`).
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
    if sniff(src, max_bytes=max_bytes) == "native":  # re-save (e.g. folder <-> zip), keeping the discriminator
        out = load_native(src, with_discriminator=read_config(src).get("discriminator") is not None,
                          max_bytes=max_bytes)
        if recipe is not None:
            out = replace(out, config={**out.config, "recipe": {**recipe, "size": out.resolution}})
    else:
        out = convert_to_native_in_memory(src, recipe=recipe, max_bytes=max_bytes)
    cfg = out.config
    if cfg.get("recipe") is None:
        log.warning("%s: no alignment recipe recorded; invert and edit will align faces with FFHQ's recipe "
                    "(pass recipe=... / --recipe to choose)", src)
    name = cfg.get("name") or src.stem
    kw = dict(name=name, D=out.D, recipe=cfg.get("recipe"), license=cfg.get("license", ""),
              provenance=cfg.get("provenance") or {}, prior=out.prior or None)
    if dst.suffix.lower() == ".zip":
        tmp = Path(tempfile.mkdtemp(prefix=".faceedit-convert-", dir=dst.parent if dst.parent.exists() else None))
        try:
            save_native(tmp / name, out.G, **kw)
            atomic_write_bytes(dst, folder_to_zip_bytes(tmp / name), protect=[src])
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    else:
        save_native(dst, out.G, **kw)
    log.info("converted %s -> %s (%s)", src, dst, cfg.get("provenance", {}).get("source_format", "native"))
    return dst


__all__ = ["convert_file", "convert_to_native_in_memory", "read_tf", "sniff"]
