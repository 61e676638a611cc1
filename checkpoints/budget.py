"""One size budget for every checkpoint reader: no small file may make faceedit allocate GiBs.

A checkpoint declares sizes before it holds data: a zip entry its inflated size, a tensor its
shape over a storage, a config its widths and depths. Every reader (native folder or zip,
safetensors, NVIDIA and stylegan3-repository pickles, rosinality ``.pt``, TensorFlow StyleGAN
and StyleGAN2 pickles) checks those declarations here *before* it reads, inflates or builds
anything:

* :class:`Budget`: the bytes one load may allocate, charged as it goes: the declared size of
  every file, zip entry or nested storage it reads, and the fp32 size of every network it
  builds (counted from the config by ``Generator.size`` and its kin in ``faceedit.networks``,
  nothing built). Over the limit, a :class:`CheckpointSizeError` names what asked for how
  much. The limit is ``max_bytes`` when a caller passes one, else
  ``$FACEEDIT_MAX_CHECKPOINT_GIB`` (GiB), else :data:`DEFAULT_MAX_BYTES` (4 GiB: a 1024 px
  StyleGAN2 with its discriminator, read and built in fp32, charges about 0.5 GB).
* :func:`check_zip_entry`: a zip entry's declared size against the budget, and its compression
  ratio against :data:`MAX_ZIP_RATIO` (weights do not compress 1000:1; an entry that does is a
  compression bomb or all constant), before it is inflated.
* :func:`check_tensor_geometry`: a tensor's elements against the bytes of its storage, so a
  stride-0 view of one stored value cannot pose as 2^31 elements that a later ``.float()``
  would materialize.

Whether a file's tensors *back* the network its config describes is checked by the callers
(``native.check_holds``: they must hold at least half its values) before it is built, and
name by name once it is.
"""
from __future__ import annotations

import math
import os
import zipfile

import torch

from faceedit.core.errors import CheckpointError

ENV_VAR = "FACEEDIT_MAX_CHECKPOINT_GIB"
DEFAULT_MAX_BYTES = 4 << 30
#: Largest inflated/stored size ratio accepted for a zip entry of more than ``_RATIO_FLOOR``
#: bytes. Weights in fp16/fp32 deflate by 1.1 to 1.5; JSON by 5 to 10.
MAX_ZIP_RATIO = 20
_RATIO_FLOOR = 1 << 20


class CheckpointSizeError(CheckpointError):
    """A checkpoint that declares more than the size budget allows, or sizes its bytes cannot back."""


def human_bytes(n: float) -> str:
    """``n`` bytes as a short binary-unit string (``512 B``, ``3.25 GiB``, ``36.4 TiB``)."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024:
            return f"{int(n)} B" if unit == "B" else f"{n:.3g} {unit}"
        n /= 1024
    return f"{n:.3g} EiB"


def resolve_max_bytes(max_bytes: int | None = None) -> int:
    """The byte limit: ``max_bytes``, else ``$FACEEDIT_MAX_CHECKPOINT_GIB`` (GiB), else 4 GiB.

    Raises:
        CheckpointSizeError: ``max_bytes`` or the variable is not a positive number.
    """
    if max_bytes is not None:
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes <= 0:
            raise CheckpointSizeError(f"max_bytes must be a positive integer number of bytes, got {max_bytes!r}")
        return max_bytes
    raw = os.environ.get(ENV_VAR, "").strip()
    if not raw:
        return DEFAULT_MAX_BYTES
    try:
        gib = float(raw)
    except ValueError:
        gib = math.nan
    if not (math.isfinite(gib) and gib > 0):
        raise CheckpointSizeError(f"{ENV_VAR}={raw!r} is not a positive number of GiB (e.g. {ENV_VAR}=16)")
    return int(gib * (1 << 30))


def raise_hint(need: int) -> str:
    """How to raise the limit on purpose to ``need`` bytes, rounded up to whole GiB (the tail of budget messages)."""
    gib = max(1, math.ceil(need / (1 << 30)))
    return (f"if you trust the file and have the memory, raise the limit on purpose: set {ENV_VAR}={gib} or pass "
            f"max_bytes={gib << 30} to load_model (or the reader)")


class Budget:
    """The bytes one checkpoint load may allocate, charged as the load goes.

    Args:
        max_bytes: the limit (``None``: :func:`resolve_max_bytes`'s default).
        where: the checkpoint, for messages.
    """

    def __init__(self, max_bytes: int | None = None, where: str = "checkpoint"):
        self.limit = resolve_max_bytes(max_bytes)
        self.where = where
        self.used = 0

    @classmethod
    def of(cls, max_bytes: "int | Budget | None", where: str) -> "Budget":
        """``max_bytes`` itself when it is a :class:`Budget` (a load shared by nested readers), else a new one."""
        return max_bytes if isinstance(max_bytes, Budget) else cls(max_bytes, where)

    def check(self, nbytes: int, what: str) -> None:
        """Raise unless ``nbytes`` more would fit; charges nothing.

        Raises:
            CheckpointSizeError: naming ``what``, the bytes, what was charged before and the limit.
        """
        if self.used + nbytes > self.limit:
            before = f" (on top of {human_bytes(self.used)} already read or built)" if self.used else ""
            raise CheckpointSizeError(f"{self.where}: {what} would need {human_bytes(nbytes)}{before}, above the "
                                      f"{human_bytes(self.limit)} limit for loading a checkpoint; "
                                      f"{raise_hint(self.used + nbytes)}")

    def charge(self, nbytes: int, what: str) -> None:
        """:meth:`check`, then count ``nbytes`` as allocated."""
        self.check(nbytes, what)
        self.used += nbytes


def check_zip_entry(info: zipfile.ZipInfo, where: str, budget: Budget | None = None, *, charge: bool = True) -> None:
    """Refuse a zip entry before inflating it: declared size over the budget, or a ratio no weights have.

    Args:
        info: the entry (``ZipInfo.file_size`` is the declared inflated size,
            ``compress_size`` the bytes stored).
        where: the archive, for messages.
        budget: charged with ``file_size`` (``None``: only the ratio is checked).
        charge: ``False`` checks against the budget without charging it (a second look at an entry).
    Raises:
        CheckpointSizeError: named entry, sizes and limit.
    """
    size, stored = info.file_size, info.compress_size
    if info.compress_type != zipfile.ZIP_STORED and size > _RATIO_FLOOR and size > MAX_ZIP_RATIO * max(stored, 1):
        raise CheckpointSizeError(
            f"{where}: zip entry {info.filename} declares {human_bytes(size)} compressed into {human_bytes(stored)} "
            f"({size / max(stored, 1):.0f}:1); model weights do not compress beyond {MAX_ZIP_RATIO}:1, so this is a "
            f"compression bomb or a damaged file (if you trust it, unzip it and load the folder)")
    if budget is not None:
        (budget.charge if charge else budget.check)(size, f"zip entry {info.filename} (declared {human_bytes(size)})")


def check_zip_archive(z: zipfile.ZipFile, where: str, budget: Budget | None = None) -> None:
    """:func:`check_zip_entry` for every entry of ``z`` (what ``torch.load`` of a zip will inflate)."""
    for info in z.infolist():
        check_zip_entry(info, where, budget)


def check_declared_tensor(shape, stride, itemsize: int, storage_bytes: int, offset: int, name: str,
                          where: str) -> None:
    """Refuse a tensor whose declared elements need more bytes than its storage holds past ``offset``.

    A stride-0 view of one stored value can declare 2^31 elements; any copy of it (``.float()``,
    ``.contiguous()``, a NaN check) would then allocate them all. Weights never repeat stored
    values, so such a tensor is refused whatever the budget.

    Args:
        shape, stride: the declared geometry (elements).
        itemsize: bytes per element.
        storage_bytes: bytes the storage holds.
        offset: the tensor's first element in the storage (elements).
        name, where: the tensor and the checkpoint, for messages.
    Raises:
        CheckpointSizeError: naming the tensor, its shape, elements, bytes, storage and stride.
    """
    numel = math.prod(shape)
    need, have = numel * itemsize, storage_bytes - offset * itemsize
    if numel and need > have:
        raise CheckpointSizeError(
            f"{where}: tensor {name} declares shape {list(shape)} ({numel} elements, {human_bytes(need)}) over a "
            f"storage of {human_bytes(max(have, 0))} (stride {list(stride)}): it repeats the same stored values, "
            f"which no checkpoint weight does; the file is damaged or hostile")


def check_tensor_geometry(t: torch.Tensor, name: str, where: str) -> None:
    """:func:`check_declared_tensor` for a built tensor, which must also be a plain dense CPU
    tensor (sparse, quantized or meta tensors are no network weights).

    Raises:
        CheckpointSizeError: as :func:`check_declared_tensor`, or naming the tensor's kind.
    """
    if t.layout is not torch.strided or t.is_quantized or t.device.type != "cpu":
        raise CheckpointSizeError(f"{where}: tensor {name} is a {t.layout} tensor on {t.device.type}"
                                  f"{' (quantized)' if t.is_quantized else ''}; checkpoint weights are dense CPU "
                                  f"tensors")
    check_declared_tensor(t.shape, t.stride(), t.element_size(), t.untyped_storage().nbytes(), t.storage_offset(),
                          name, where)


__all__ = ["Budget", "CheckpointSizeError", "DEFAULT_MAX_BYTES", "ENV_VAR", "MAX_ZIP_RATIO", "check_tensor_geometry",
           "check_declared_tensor", "check_zip_archive", "check_zip_entry", "human_bytes", "raise_hint",
           "resolve_max_bytes"]
