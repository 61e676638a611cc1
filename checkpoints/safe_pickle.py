"""A restricted unpickler for StyleGAN2 checkpoints written by NVIDIA's code.

stylegan2-ada-pytorch saves its networks with ``pickle.dump``; each network object is
a ``torch_utils.persistence`` reconstruction record: a call to
``torch_utils.persistence._reconstruct_persistent_obj(meta)`` whose ``meta`` dict holds the
*source code* of the module that defined the class (``module_src``), the class name and
the object's ``__dict__`` (``state``: constructor arguments, parameters, buffers,
sub-modules). NVIDIA's loader ``exec``s that source. We never do: a record becomes a
:class:`PersistentRecord`, inert data from which constructor arguments and tensors are
read.

Only the globals such a file legitimately references are resolved (see ``_ALLOWED``),
each to a function of ours that validates its arguments:

* ``torch_utils.persistence._reconstruct_persistent_obj`` -> :class:`PersistentRecord`;
* ``dnnlib.util.EasyDict`` -> :class:`EasyDict` (a plain dict subclass);
* ``torch._utils._rebuild_tensor_v2`` / ``_rebuild_parameter(_with_state)`` -> tensors;
* ``torch.storage._load_from_bytes``: in a plain pickle, each tensor storage is nested
  ``torch.save`` bytes which PyTorch would load with *full* unpickling; we load those bytes
  with ``torch.load(..., weights_only=True)`` instead;
* ``torch.<Dtype>Storage`` (only as the storage type in ``torch.save``-style persistent ids);
* ``collections.OrderedDict``, ``builtins.set``/``frozenset``, numpy scalars and dtypes of
  numeric kinds (NVIDIA's layers keep gains as ``numpy.float64``), and ``_codecs.encode``
  with ``latin1`` (how protocol-2 pickles spell ``bytes``).

Anything else -- ``os.system``, ``builtins.eval``, ``subprocess.Popen``, an arbitrary class --
raises :class:`UnsafePickleError` naming what was found, before it is ever called.

Two containers are understood: a plain pickle stream (what NVIDIA's training loop writes)
and a ``torch.save`` zip archive (``data.pkl`` + ``data/<key>`` storages), in case someone
re-saved NVIDIA objects with ``torch.save``.
"""
from __future__ import annotations

import collections
import functools
import io
import logging
import pickle
import re
import zipfile
from pathlib import Path

import numpy as np
import torch

from .budget import Budget, check_tensor_geometry, check_zip_archive, check_zip_entry, human_bytes
from .native import CheckpointError, is_zip

log = logging.getLogger(__name__)

# torch.save's legacy (non-zip) format starts with this pickled integer.
LEGACY_TORCH_MAGIC = 0x1950A86A20F9469CFC6C
MAX_NESTED_BYTES = 4 << 30


class UnsafePickleError(CheckpointError):
    """The pickle references something a StyleGAN2 checkpoint never holds; nothing was run."""


class EasyDict(dict):
    """Stand-in for ``dnnlib.util.EasyDict``: a dict whose keys are also attributes."""

    def __getattr__(self, name):
        if name.startswith("__"):  # never let a key pose as a protocol method (e.g. __setstate__)
            raise AttributeError(name)
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name, value):
        self[name] = value


class PersistentRecord:
    """An unexecuted ``torch_utils.persistence`` object: class name, source text and state.

    Attributes:
        class_name: name of the class in the pickled module (``Generator``, ``SynthesisLayer``...).
        module_src: the pickled module source, kept as text and never executed.
        version: persistence format version (6 for stylegan2-ada-pytorch).
        state: the object's ``__dict__`` as pickled (plain containers, tensors, records).
    """

    __slots__ = ("class_name", "module_src", "version", "state")

    def __init__(self, meta):
        if not isinstance(meta, dict):
            raise UnsafePickleError(f"persistence record metadata is a {type(meta).__name__}, not a dict")
        if meta.get("type") != "class":
            raise UnsafePickleError(f"persistence record of type {meta.get('type')!r}; only 'class' is known")
        name, src, state = meta.get("class_name"), meta.get("module_src"), meta.get("state")
        if not isinstance(name, str) or not isinstance(src, str):
            raise UnsafePickleError("persistence record without a class name or module source string")
        if not isinstance(state, dict):
            raise UnsafePickleError(f"persistence record {name} has a {type(state).__name__} state, not a dict")
        self.class_name, self.module_src, self.version, self.state = name, src, meta.get("version"), state

    def __setstate__(self, state):  # a BUILD opcode aimed at a record is not something NVIDIA writes
        raise UnsafePickleError("the pickle tries to set the state of a persistence record after building it")

    def __repr__(self) -> str:
        return f"PersistentRecord({self.class_name})"

    @property
    def init_args(self) -> tuple:
        return tuple(self.state.get("_init_args", ()))

    @property
    def init_kwargs(self) -> dict:
        return dict(self.state.get("_init_kwargs", {}))

    def child(self, name: str) -> "PersistentRecord":
        """The sub-module ``name`` (a record), or raise :class:`CheckpointError`."""
        c = (self.state.get("_modules") or {}).get(name)
        if not isinstance(c, PersistentRecord):
            raise CheckpointError(f"{self.class_name} has no sub-network {name!r}")
        return c

    def tensors(self, prefix: str = "", where: str = "checkpoint") -> dict:
        """Parameters and buffers of this record and its sub-records, keyed like ``state_dict()``.

        Each tensor's geometry is checked against its storage first
        (:func:`~faceedit.checkpoints.budget.check_tensor_geometry`: no stride-0 view may pose
        as more elements than the file holds), before anything copies it.

        Raises:
            CheckpointError: an entry that is not a tensor or a record.
            CheckpointSizeError: a tensor declaring more elements than its storage holds.
        """
        out = {}
        for group in ("_parameters", "_buffers"):
            for k, v in (self.state.get(group) or {}).items():
                if v is None:
                    continue
                if not isinstance(v, torch.Tensor):
                    raise CheckpointError(f"{self.class_name}.{k} is a {type(v).__name__}, not a tensor")
                check_tensor_geometry(v, prefix + k, where)
                out[prefix + k] = v
        for k, m in (self.state.get("_modules") or {}).items():
            if m is None:
                continue
            if not isinstance(m, PersistentRecord):
                raise CheckpointError(f"sub-module {prefix + k} is a {type(m).__name__}, not a persistence record")
            out.update(m.tensors(f"{prefix}{k}.", where))
        return out


# --- safe replacements for the few callables a checkpoint pickle references -------------

def _reconstruct_persistent_obj(meta):
    return PersistentRecord(meta)


def _check_storage(storage, what: str):
    if not isinstance(storage, (torch.storage.TypedStorage, torch.UntypedStorage)):
        raise UnsafePickleError(f"{what}: expected a tensor storage, found a {type(storage).__name__}")


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None,
                       metadata=None):
    _check_storage(storage, "_rebuild_tensor_v2")
    ints = lambda t: isinstance(t, tuple) and all(type(i) is int and i >= 0 for i in t)  # noqa: E731
    if type(storage_offset) is not int or storage_offset < 0 or not ints(tuple(size)) or not ints(tuple(stride)) \
            or len(size) != len(stride):
        raise UnsafePickleError(f"_rebuild_tensor_v2 with malformed geometry: offset {storage_offset!r}, "
                                f"size {size!r}, stride {stride!r}")
    if backward_hooks:
        raise UnsafePickleError("a pickled tensor carries backward hooks")
    if isinstance(storage, torch.UntypedStorage):
        storage = torch.storage.TypedStorage(wrap_storage=storage, dtype=torch.uint8, _internal=True)
    # as_strided checks the geometry against the storage size and raises on overflow.
    t = torch.empty((0,), dtype=storage.dtype)
    try:
        t.set_(storage._untyped_storage, storage_offset, tuple(size), tuple(stride))
    except RuntimeError as e:
        raise UnsafePickleError(f"a pickled tensor does not fit its storage ({e})") from e
    return t


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, state=None):
    if not isinstance(data, torch.Tensor):
        raise UnsafePickleError(f"_rebuild_parameter of a {type(data).__name__}")
    if backward_hooks:
        raise UnsafePickleError("a pickled parameter carries backward hooks")
    return data


# Sentences of torch's weights_only refusal that advise loading the file unsafely (or
# allow-listing what it holds); faceedit never passes them on.
_TORCH_ADVICE = re.compile(r"weights_only|[Rr]e-?running|trust|safe_globals|Check the documentation|two options|"
                           r"Alternatively|arbitrary code")


def torch_refusal_reason(e: BaseException) -> str:
    """What ``torch.load(weights_only=True)`` found, from its exception, without torch's advice.

    torch's message tells the user to re-run with ``weights_only=False`` (which runs any code
    in the file) or to allow-list the global; faceedit keeps only the finding ("Unsupported
    global: GLOBAL posix.system ...") and gives its own advice. Allocation failures become a
    plain statement that the file declares more memory than there is.
    """
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(e))
    if "DefaultCPUAllocator" in text or "can't allocate memory" in text:
        return "it declares tensors larger than the memory of this machine"
    kept = []
    for line in text.splitlines():
        line = line.strip()
        line = re.sub(r"^WeightsUnpickler error:\s*", "", line)
        line = re.split(r"\s*Please use `torch\.serialization", line)[0].strip()
        if line and not _TORCH_ADVICE.search(line):
            kept.append(line)
    return " ".join(kept)[:300] or type(e).__name__


def _load_from_bytes(b, *, budget: Budget | None = None, source: str = "<pickle>"):
    """``torch.storage._load_from_bytes(b)`` done safely: ``torch.load(weights_only=True)`` of ``b``
    after its size is checked (a nested zip's entries by their declared sizes, before inflating)."""
    if not isinstance(b, (bytes, bytearray)) or len(b) > MAX_NESTED_BYTES:
        raise UnsafePickleError("torch.storage._load_from_bytes with a non-bytes or oversized argument")
    budget = budget if budget is not None else Budget(None, source)
    if bytes(b[:4]) == b"PK\x03\x04":
        try:
            with zipfile.ZipFile(io.BytesIO(bytes(b))) as z:
                check_zip_archive(z, f"{source}: a nested tensor storage", budget)
        except CheckpointError:
            raise
        except (zipfile.BadZipFile, ValueError, NotImplementedError, OSError) as e:
            raise UnsafePickleError(f"{source}: a nested tensor storage is a damaged zip ({e})") from e
    else:
        budget.charge(len(b), f"a nested tensor storage ({human_bytes(len(b))})")
    try:
        obj = torch.load(io.BytesIO(bytes(b)), weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as e:
        raise UnsafePickleError(f"{source}: a nested tensor storage holds a pickle that torch.load(weights_only=True) "
                                f"refuses ({torch_refusal_reason(e)}); nothing was executed. A tensor storage is "
                                f"plain bytes: the file is malicious or damaged") from e
    except (RuntimeError, EOFError, ValueError, MemoryError) as e:
        raise UnsafePickleError(f"{source}: a nested tensor storage could not be read safely "
                                f"({torch_refusal_reason(e)})") from e
    _check_storage(obj, "torch.storage._load_from_bytes")
    return obj


def _codecs_encode(text, encoding="utf-8"):
    """Protocol-2 pickles spell ``bytes`` as ``_codecs.encode(str, 'latin1')``."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise UnsafePickleError(f"_codecs.encode with unexpected arguments ({type(text).__name__}, {encoding!r})")
    return text.encode("latin1")


_NUMERIC_DTYPES = {"?", "b1", "i1", "u1", "i2", "u2", "i4", "u4", "i8", "u8", "f2", "f4", "f8", "c8", "c16"}


class NumpyDtype:
    """What ``numpy.dtype(spec, align, copy)`` resolves to: a plain numeric spec and, once the
    pickle's BUILD state arrives, its byte order. Never a live ``np.dtype`` whose
    ``__setstate__`` the file could drive."""

    __slots__ = ("spec", "order", "_built")

    def __init__(self, spec, align=False, copy=True):
        if not isinstance(spec, str) or spec not in _NUMERIC_DTYPES:
            raise UnsafePickleError(f"numpy.dtype({spec!r:.40}) is not a plain numeric dtype")
        self.spec, self.order, self._built = spec, "=", False

    def __setstate__(self, state):
        if self._built:
            raise UnsafePickleError("a numpy dtype is given its state twice")
        if not (isinstance(state, tuple) and len(state) == 8 and state[0] == 3 and isinstance(state[1], str)
                and state[1] in ("<", ">", "|", "=") and state[2:5] == (None, None, None)):
            raise UnsafePickleError(f"numpy dtype state {state!r:.80} is not that of a plain numeric dtype")
        self.order, self._built = state[1], True

    @property
    def dtype(self) -> np.dtype:
        d = np.dtype(self.spec)
        return d if self.order in ("|", "=") else d.newbyteorder(self.order)


def _np_scalar(dtype, data=None):
    if not isinstance(dtype, NumpyDtype) or not isinstance(data, bytes) or len(data) != dtype.dtype.itemsize:
        raise UnsafePickleError("numpy scalar with a non-numeric dtype or malformed bytes")
    return np.frombuffer(data, dtype=dtype.dtype)[0]


def safe_container_globals() -> dict:
    """The allow-list entries every faceedit pickle reader shares: plain containers, ``bytes`` as
    protocol 2 spells them, numpy dtypes and scalars, ``dnnlib.util.EasyDict``."""
    return {
        ("dnnlib.util", "EasyDict"): EasyDict,
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("builtins", "set"): set,
        ("builtins", "frozenset"): frozenset,
        ("__builtin__", "set"): set,            # protocol-2 pickles (torch.save) use Python 2 names
        ("__builtin__", "frozenset"): frozenset,
        ("_codecs", "encode"): _codecs_encode,
        ("numpy", "dtype"): NumpyDtype,
        ("numpy.core.multiarray", "scalar"): _np_scalar,
        ("numpy._core.multiarray", "scalar"): _np_scalar,
    }


class _StorageType:
    """What ``torch.<Dtype>Storage`` resolves to: only usable inside a persistent id."""

    def __init__(self, dtype: torch.dtype):
        self.dtype = dtype

    def __call__(self, *a, **k):
        raise UnsafePickleError("the pickle calls a torch storage class directly")


_STORAGE_DTYPES = {
    "FloatStorage": torch.float32, "DoubleStorage": torch.float64, "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
}

_ALLOWED = {
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_persistent_obj,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch.storage", "_load_from_bytes"): _load_from_bytes,
    **safe_container_globals(),
}
_ALLOWED.update({("torch", k): _StorageType(v) for k, v in _STORAGE_DTYPES.items()})


class RestrictedUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` that resolves only the globals listed in ``_ALLOWED``.

    Args:
        file: binary stream positioned at the pickle.
        source: name used in error messages.
        storages: for a ``torch.save`` zip, ``(key, nbytes) -> bytes`` reader of its ``data/``
            entries (refusing an entry whose declared size is not ``nbytes`` before reading it);
            ``None`` for a plain pickle (which then may not use persistent ids).
        budget: the load's size budget, charged with nested storages (default: a new one).
    """

    def __init__(self, file, *, source: str = "<pickle>", storages=None, budget: Budget | None = None):
        super().__init__(file)
        self.source = source
        self.storages = storages
        self.budget = budget if budget is not None else Budget(None, source)
        self._cache = {}

    def find_class(self, module, name):
        fn = _ALLOWED.get((module, name))
        if fn is _load_from_bytes:
            return functools.partial(_load_from_bytes, budget=self.budget, source=self.source)
        if fn is None:
            raise UnsafePickleError(
                f"{self.source}: refused to load: the pickle references {module}.{name}, which a StyleGAN2 "
                f"checkpoint never holds (only network records, tensors and plain containers are accepted). "
                f"The file may be malicious or of an unsupported kind; nothing in it was executed.")
        return fn

    def persistent_load(self, pid):
        if self.storages is None:
            raise UnsafePickleError(f"{self.source}: a plain pickle with a persistent id {pid!r}; refused")
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"
                and isinstance(pid[1], _StorageType) and isinstance(pid[2], str) and type(pid[4]) is int):
            raise UnsafePickleError(f"{self.source}: unexpected persistent id {pid!r}")
        _, stype, key, _location, numel = pid
        if key not in self._cache:
            itemsize = torch.empty((), dtype=stype.dtype).element_size()
            if numel < 0:
                raise UnsafePickleError(f"{self.source}: storage {key} declares {numel} elements")
            raw = self.storages(key, numel * itemsize)
            if len(raw) != numel * itemsize:
                raise CheckpointError(f"{self.source}: storage {key} holds {len(raw)} bytes, expected "
                                      f"{numel} x {itemsize}; the file is truncated or damaged")
            buf = torch.frombuffer(bytearray(raw), dtype=torch.uint8) if raw else torch.empty(0, dtype=torch.uint8)
            self._cache[key] = torch.storage.TypedStorage(wrap_storage=buf.untyped_storage(), dtype=stype.dtype,
                                                          _internal=True)
        return self._cache[key]


def _torch_zip_reader(path: Path, budget: Budget):
    """``(data.pkl bytes, storage reader)`` of a ``torch.save`` zip; every entry is checked by its
    declared size (against the budget, which it is charged to, and the declared tensor size) and
    compression ratio before it is inflated."""
    z = zipfile.ZipFile(path)
    names = z.namelist()
    pkls = [n for n in names if n.endswith("/data.pkl") or n == "data.pkl"]
    if len(pkls) != 1:
        raise CheckpointError(f"{path} is a zip but not a torch.save archive (no single data.pkl)")
    prefix = pkls[0][: -len("data.pkl")]
    if prefix + "byteorder" in names:
        check_zip_entry(z.getinfo(prefix + "byteorder"), str(path), budget)
        if z.read(prefix + "byteorder").strip() not in (b"little", b""):
            raise CheckpointError(f"{path} was saved on a big-endian machine; re-save it on a little-endian one")

    def storages(key: str, nbytes: int) -> bytes:
        name = f"{prefix}data/{key}"
        if "/" in key or ".." in key or name not in names:
            raise CheckpointError(f"{path}: storage {key!r} is missing from the archive")
        info = z.getinfo(name)
        if info.file_size != nbytes:
            raise CheckpointError(f"{path}: storage {key} declares {info.file_size} bytes in the archive, the pickle "
                                  f"expects {nbytes}; the file is truncated or damaged")
        check_zip_entry(info, str(path), budget)
        return z.read(name)

    check_zip_entry(z.getinfo(pkls[0]), str(path), budget)
    return z.read(pkls[0]), storages


_MEMO_OPS = {"PUT", "BINPUT", "LONG_BINPUT", "GET", "BINGET", "LONG_BINGET"}


def prescan(data: bytes, source: str) -> None:
    """Walk the opcodes of a pickle (``pickletools.genops``: parsing only, nothing is built or
    called) and refuse memo indices larger than the file could hold.

    CPython's C unpickler grows its memo table to twice the largest index it is given, so a
    300-byte file with ``LONG_BINPUT 0x20000000`` would make it allocate and zero gigabytes
    before failing. Length fields beyond the end of the data make ``genops`` raise here too.
    """
    import pickletools

    limit = len(data)
    try:
        for op, arg, _pos in pickletools.genops(data):
            if op.name in _MEMO_OPS and isinstance(arg, int) and not 0 <= arg <= limit:
                raise CheckpointError(f"{source}: pickle memo index {arg} is larger than the file ({limit} bytes) "
                                      f"could need; the file is damaged or hostile")
    except CheckpointError:
        raise
    except (ValueError, TypeError, IndexError, KeyError, UnicodeDecodeError, OverflowError, MemoryError) as e:
        raise CheckpointError(f"{source} is not a readable checkpoint pickle ({type(e).__name__}: {e})") from e


def load_restricted(path, *, max_bytes: int | Budget | None = None) -> object:
    """Load a plain pickle or a ``torch.save`` zip through :class:`RestrictedUnpickler`.

    Args:
        path: the file.
        max_bytes: the size budget (``None``: the default of :mod:`faceedit.checkpoints.budget`):
            the file (or each zip entry, by its declared size) and every nested storage are
            charged to it before they are read.
    Returns:
        The unpickled object: dicts, :class:`EasyDict`, :class:`PersistentRecord`, tensors.
    Raises:
        UnsafePickleError: the file references anything outside the allow-list.
        CheckpointError: the file is damaged or of another kind.
        CheckpointSizeError: over the size budget, or a zip entry inflating like a bomb.
    """
    path = Path(path)
    budget = Budget.of(max_bytes, str(path))
    try:
        if is_zip(path):
            data, storages = _torch_zip_reader(path, budget)
        else:
            size = path.stat().st_size
            budget.charge(size, f"the pickle ({human_bytes(size)})")
            data, storages = path.read_bytes(), None
        prescan(data, str(path))
        obj = RestrictedUnpickler(io.BytesIO(data), source=str(path), storages=storages, budget=budget).load()
    except UnsafePickleError:
        raise
    except CheckpointError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError,
            RuntimeError, zipfile.BadZipFile, OSError) as e:
        raise CheckpointError(f"{path} is not a readable checkpoint pickle ({type(e).__name__}: {e})") from e
    except (MemoryError, RecursionError, OverflowError) as e:  # length fields or nesting far beyond the file
        raise CheckpointError(f"{path} is not a readable checkpoint pickle: it declares sizes or nesting no real "
                              f"checkpoint has ({type(e).__name__}); the file is damaged or hostile") from e
    if type(obj) is int and obj == LEGACY_TORCH_MAGIC:
        raise CheckpointError(f"{path} is a torch.save file in the legacy format, not a NVIDIA pickle")
    return obj


__all__ = ["UnsafePickleError", "PersistentRecord", "EasyDict", "NumpyDtype", "RestrictedUnpickler", "load_restricted",
           "prescan", "safe_container_globals", "torch_refusal_reason"]
