"""The one tensor file type: safetensors with JSON metadata in its header.

Latents, directions, priors, encoders, scorers and training states are all written as
``safetensors.torch.save(tensors, metadata=...)``: the metadata is a flat ``{str: str}``
table (structured values are JSON strings inside it) whose ``format`` entry names what the
file holds (``faceedit.latent``, ``faceedit.direction``, ...). Files are never pickles:
people exchange them, and reading one must not run code.
"""
from __future__ import annotations

import json
import struct
from pathlib import Path

from .errors import TensorFileError
from .files import atomic_write_bytes

#: Leading bytes of files that can run code when loaded: a pickle, a ``torch.save`` zip.
PICKLE_MAGIC = (b"\x80", b"PK\x03\x04")
#: Leading bytes of a numpy ``.npy`` file (refused where people may pass one by mistake).
NUMPY_MAGIC = (b"\x93NUMPY",)


def looks_like_safetensors(data: bytes) -> bool:
    """Whether ``data`` starts like a safetensors file (a length, then a JSON header).

    Checked before sniffing for pickles: a safetensors header of 640, 896, ... bytes
    begins with the byte 0x80, as pickles do.
    """
    if len(data) < 10:
        return False
    (n,) = struct.unpack("<Q", data[:8])
    return n <= len(data) - 8 and data[8:9] == b"{"


def read_safetensors_header(data: bytes) -> dict:
    """The JSON header of a safetensors file (raises ``ValueError`` when malformed)."""
    if len(data) < 8:
        raise ValueError("file too short")
    (n,) = struct.unpack("<Q", data[:8])
    if n > len(data) - 8:
        raise ValueError("header length past end of file")
    return json.loads(data[8:8 + n])


def json_default(o):
    """``json.dumps(default=...)`` for metadata: tensors and arrays as lists, paths as strings."""
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON-serialisable: {type(o).__name__}")


def tensor_file_bytes(tensors: dict, metadata: dict | None = None) -> bytes:
    """The bytes of a tensor file: ``safetensors.torch.save`` of contiguous CPU tensors."""
    from safetensors.torch import save

    return save(tensors, metadata=metadata)


def write_tensor_file(path, tensors: dict, metadata: dict | None = None, *, protect=()) -> Path:
    """Write a tensor file atomically (see :func:`faceedit.core.files.atomic_write_bytes`).

    Args:
        path: destination.
        tensors: ``{name: tensor}``, contiguous and on the CPU.
        metadata: ``{str: str}`` header table, or ``None`` for none.
        protect: paths that must never be overwritten.
    Returns:
        The destination path.
    """
    return atomic_write_bytes(path, tensor_file_bytes(tensors, metadata), protect=protect)


def read_tensor_file(path, *, fmt: str, what: str, fix: str, max_bytes: int, refused: str,
                     error: type = TensorFileError, refuse_magic: tuple = PICKLE_MAGIC,
                     refuse_suffixes: tuple = ()) -> tuple:
    """Read a tensor file whose metadata says ``format == fmt``, refusing anything else.

    Args:
        path: the file.
        fmt: the required ``format`` metadata entry (``faceedit.latent``, ...).
        what: what the file holds, for messages (``latent``, ``direction``).
        fix: how to get a good file, appended to messages.
        max_bytes: larger files are refused before they are read.
        refused: the message tail for a pickle-like file (what this reader accepts instead).
        error: the exception class raised (a subclass of :class:`TensorFileError`'s bases).
        refuse_magic: leading bytes that mark a refused (code-running) file.
        refuse_suffixes: file suffixes refused the same way, whatever the bytes.
    Returns:
        ``(tensors, metadata)``: ``{name: tensor}`` on the CPU and the ``{str: str}`` table.
    Raises:
        error: missing, too large, a pickle/torch/numpy file, not safetensors, or another format.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load

    path = Path(path)
    if not path.is_file():
        raise error(f"{what} file {path} does not exist; {fix}")
    size = path.stat().st_size
    if size > max_bytes:
        raise error(f"{path} is {size} bytes, over the {max_bytes}-byte limit for {what} files; {fix}")
    data = path.read_bytes()
    if not looks_like_safetensors(data) and (any(data.startswith(m) for m in refuse_magic)
                                              or path.suffix in refuse_suffixes):
        kinds = "pickle/torch" + ("/numpy" if any(m in refuse_magic for m in NUMPY_MAGIC) else "")
        raise error(f"{path} is a {kinds} file; {refused}")
    try:
        tensors = load(data)
        meta = read_safetensors_header(data).get("__metadata__") or {}
    except (SafetensorError, ValueError, RecursionError) as e:
        raise error(f"{path} is not a valid faceedit {what} file ({e}); {fix}") from e
    if meta.get("format") != fmt:
        raise error(f"{path} is a safetensors file but not a faceedit {what} "
                    f"(format={meta.get('format')!r}); {fix}")
    return tensors, meta
