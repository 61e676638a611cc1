"""A restricted reader for NVIDIA's TensorFlow network pickles (StyleGAN, StyleGAN2, StyleGAN2-ADA TF).

NVIDIA's TensorFlow code saves ``(G, D, Gs)`` with ``pickle.dump``; each network is a
``dnnlib.tflib.network.Network`` whose pickled state (what ``Network.__setstate__``
receives) is a dict::

    version            2 .. 5
    name               "G", "D", "Gs", or a component's name ("G_mapping", "G_synthesis")
    static_kwargs      the build function's keyword arguments (plain values)
    components         {key: Network}  ("mapping", "synthesis" for a generator)
    build_module_src   the source text of the module holding the build function
    build_func_name    "G_main", "G_style", "G_synthesis_stylegan2", "D_stylegan2", "D_basic", ...
    variables          [(name, numpy.ndarray), ...] of the network's own variables
    input_shapes, output_shapes, input_names, output_names (version 5, unused here)

NVIDIA's loader ``exec``s ``build_module_src`` and rebuilds the TensorFlow graph. We never do:
the source stays a string nobody looks at, and the state becomes a :class:`TFNetwork`, a
plain record of names, keyword arguments and numpy arrays. TensorFlow is not needed.

The unpickler resolves exactly these globals, each to an inert function of ours:

* ``dnnlib.tflib.network.Network`` -> a record that only accepts the state above;
* ``numpy.core.multiarray._reconstruct`` (``numpy._core`` in files written by numpy 2),
  ``numpy.ndarray`` and ``numpy.dtype``: how numpy pickles an array at protocols 2 to 4;
  the array's bytes must be exactly ``prod(shape) * itemsize`` of a plain numeric dtype;
* ``numpy.core.multiarray.scalar``, ``dnnlib.util.EasyDict``, ``collections.OrderedDict``,
  ``_codecs.encode`` (latin1 only; how protocol 2 spells ``bytes``): shared with
  :mod:`faceedit.checkpoints.safe_pickle`.

Anything else -- ``os.system``, ``builtins.exec``, a torch tensor, another class -- raises
:class:`~faceedit.checkpoints.safe_pickle.UnsafePickleError` naming it, before it is called.
"""
from __future__ import annotations

import io
import logging
import math
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .budget import Budget, human_bytes
from .native import CheckpointError
from .safe_pickle import NumpyDtype, UnsafePickleError, prescan, safe_container_globals

log = logging.getLogger(__name__)

MAX_DEPTH = 8                      # components nest one level in NVIDIA's files
_STATE_REQUIRED = {"version", "name", "static_kwargs", "build_module_src", "build_func_name", "variables"}
_STATE_OPTIONAL = {"components", "input_shapes", "output_shapes", "input_names", "output_names"}
_VERSIONS = (2, 3, 4, 5)
_ARRAY_KINDS = "biuf"              # bool, signed, unsigned, float: all a network variable ever is


@dataclass(frozen=True)
class TFNetwork:
    """One ``dnnlib.tflib.network.Network`` as plain data (nothing of it is ever run).

    Attributes:
        name: the network's name: ``"G"``, ``"D"``, ``"Gs"``, or a component's ``"G_mapping"``,
            ``"G_synthesis"``.
        build_func_name: the build function NVIDIA's code would call (``"G_main"``, ``"G_style"``,
            ``"G_mapping"``, ``"G_synthesis_stylegan2"``, ``"D_stylegan2"``, ``"D_basic"``, ...).
        static_kwargs: the build function's keyword arguments (plain python values).
        variables: ``{name: np.ndarray}`` of this network *and* its components, flattened the
            way tflib names them: own variables as they are (``"dlatent_avg"``, ``"lod"``),
            a component's prefixed with the component's ``name`` (``"G_mapping/Dense0/weight"``,
            ``"G_synthesis/4x4/Const/const"``, ``"G_synthesis/8x8/Conv0_up/weight"``).
        components: ``{key: TFNetwork}`` keyed as in the pickle (``"mapping"``, ``"synthesis"``);
            each holds its own variables under its own (unprefixed) names.
        version: tflib's pickle format version (2 to 5).
    """

    name: str
    build_func_name: str
    static_kwargs: dict
    variables: dict
    components: dict = field(default_factory=dict)
    version: int = 4


# --- inert stand-ins for the globals a TF network pickle references ------------------------

class _NdarrayType:
    """What ``numpy.ndarray`` resolves to: usable only as ``_reconstruct``'s first argument."""

    def __call__(self, *a, **k):
        raise UnsafePickleError("the pickle calls numpy.ndarray directly")


_NDARRAY = _NdarrayType()


class _ArraySpec:
    """``numpy.core.multiarray._reconstruct(ndarray, (0,), b'b')`` waiting for its BUILD state."""

    __slots__ = ("array",)

    def __init__(self):
        self.array = None

    def __setstate__(self, state):
        if self.array is not None:
            raise UnsafePickleError("a numpy array is given its state twice")
        if not (isinstance(state, tuple) and len(state) == 5):
            raise UnsafePickleError("numpy array state is not a 5-tuple (version, shape, dtype, fortran, data)")
        _version, shape, dt, fortran, raw = state
        if not isinstance(shape, tuple) or not all(type(s) is int and s >= 0 for s in shape) or len(shape) > 8:
            raise UnsafePickleError(f"numpy array with a malformed shape {shape!r:.80}")
        if not isinstance(dt, NumpyDtype):
            raise UnsafePickleError(f"numpy array with a {type(dt).__name__} dtype (an object array?)")
        if not isinstance(raw, (bytes, bytearray)) or type(fortran) is not bool:
            raise UnsafePickleError("numpy array whose data is not a byte string")
        d = dt.dtype
        if d.kind not in _ARRAY_KINDS:
            raise UnsafePickleError(f"numpy array of dtype {d}; network variables are real numbers")
        need = math.prod(shape) * d.itemsize
        if len(raw) != need:
            raise UnsafePickleError(f"numpy array claims shape {shape} of {d} ({need} bytes) but holds "
                                    f"{len(raw)} bytes")
        a = np.frombuffer(bytes(raw), dtype=d).reshape(shape, order="F" if fortran else "C")
        self.array = a.astype(d.newbyteorder("="), copy=True)


def _np_reconstruct(cls, shape, typecode):
    if cls is not _NDARRAY or shape != (0,) or typecode not in (b"b", "b"):
        raise UnsafePickleError("numpy _reconstruct called with arguments numpy's own pickles never use")
    return _ArraySpec()


class _NetworkState:
    """What ``dnnlib.tflib.network.Network`` resolves to: an empty object that takes one state dict."""

    __slots__ = ("state",)

    def __new__(cls, *args, **kwargs):
        if args or kwargs:
            raise UnsafePickleError("dnnlib.tflib.network.Network is constructed with arguments; NVIDIA's "
                                    "pickles build it empty and then set its state")
        obj = super().__new__(cls)
        obj.state = None
        return obj

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        if self.state is not None:
            raise UnsafePickleError("a Network is given its state twice")
        if not isinstance(state, dict):
            raise UnsafePickleError(f"a Network state is a {type(state).__name__}, not a dict")
        self.state = state

    def __reduce__(self):  # never re-pickle a half-validated record
        raise TypeError("a TF network record cannot be pickled")


_TF_ALLOWED = {
    ("dnnlib.tflib.network", "Network"): _NetworkState,
    ("numpy.core.multiarray", "_reconstruct"): _np_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _np_reconstruct,
    ("numpy", "ndarray"): _NDARRAY,
}


class TFUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` resolving only NVIDIA's TF network records, numpy arrays and plain containers.

    Args:
        file: binary stream positioned at the pickle.
        source: name used in error messages.
    """

    def __init__(self, file, *, source: str = "<pickle>"):
        super().__init__(file)
        self.source = source
        self._allowed = {**safe_container_globals(), **_TF_ALLOWED}

    def find_class(self, module, name):
        fn = self._allowed.get((module, name))
        if fn is None:
            raise UnsafePickleError(
                f"{self.source}: refused to load: the pickle references {module}.{name}, which a TensorFlow "
                f"StyleGAN pickle never holds (only dnnlib.tflib.network.Network records, numpy arrays and "
                f"plain containers are accepted). The file may be malicious or of another kind; nothing in it "
                f"was executed.")
        return fn

    def persistent_load(self, pid):
        raise UnsafePickleError(f"{self.source}: a TensorFlow network pickle with a persistent id; refused")


# --- records -> TFNetwork ----------------------------------------------------------------

def _plain(value, where: str, depth: int = 0):
    """``value`` as plain python data (numpy scalars to python numbers), or raise."""
    if depth > 16:
        raise CheckpointError(f"{where}: keyword arguments nested deeper than any network's")
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, np.generic) and value.dtype.kind in _ARRAY_KINDS:
        return value.item()
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v, where, depth + 1) for v in value)
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise CheckpointError(f"{where}: keyword argument keys must be strings")
        return {k: _plain(v, f"{where}.{k}", depth + 1) for k, v in value.items()}
    raise CheckpointError(f"{where}: a {type(value).__name__} among the keyword arguments; expected plain values")


def _to_network(rec, where: str, seen: set, depth: int = 0) -> TFNetwork:
    if not isinstance(rec, _NetworkState) or rec.state is None:
        raise CheckpointError(f"{where} is a {type(rec).__name__}, not a dnnlib.tflib.network.Network with a state")
    if id(rec) in seen or depth > MAX_DEPTH:
        raise CheckpointError(f"{where}: network components form a cycle or nest deeper than {MAX_DEPTH}")
    seen = seen | {id(rec)}
    st = rec.state
    missing = sorted(_STATE_REQUIRED - set(st))
    if missing:
        raise CheckpointError(f"{where}: the Network state lacks {missing}; not a tflib network pickle")
    unknown = sorted(set(map(str, st)) - _STATE_REQUIRED - _STATE_OPTIONAL)
    if unknown:
        log.info("%s: ignoring unknown Network state fields %s", where, unknown)
    version, name, func = st["version"], st["name"], st["build_func_name"]
    if type(version) is not int or version not in _VERSIONS:
        raise CheckpointError(f"{where}: tflib Network pickle version {version!r}; faceedit reads {_VERSIONS}")
    if not isinstance(name, str) or not isinstance(func, str) or not isinstance(st["build_module_src"], str):
        raise CheckpointError(f"{where}: the Network's name, build_func_name and build_module_src must be strings")
    where = f"{where} ({name})"
    if not isinstance(st["static_kwargs"], dict):
        raise CheckpointError(f"{where}: static_kwargs is a {type(st['static_kwargs']).__name__}, not a dict")
    kwargs = _plain(dict(st["static_kwargs"]), f"{where} static_kwargs")
    raw_vars = st["variables"]
    if not isinstance(raw_vars, (list, tuple)):
        raise CheckpointError(f"{where}: variables is a {type(raw_vars).__name__}, not a list of (name, array)")
    own = {}
    for item in raw_vars:
        if not (isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str)):
            raise CheckpointError(f"{where}: a variable entry is not a (name, array) pair")
        vname, value = item
        if isinstance(value, _ArraySpec) and value.array is not None:
            value = value.array
        elif isinstance(value, np.generic) and value.dtype.kind in _ARRAY_KINDS:
            value = np.asarray(value)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            value = np.asarray(value, dtype=np.float32)
        else:
            raise CheckpointError(f"{where}: variable {vname} is a {type(value).__name__}, not a numpy array")
        if vname in own:
            raise CheckpointError(f"{where}: variable {vname} appears twice")
        own[vname] = value
    comps_raw = st.get("components") or {}
    if not isinstance(comps_raw, dict):
        raise CheckpointError(f"{where}: components is a {type(comps_raw).__name__}, not a dict")
    components, flat = {}, dict(own)
    for key, comp in comps_raw.items():
        if not isinstance(key, str):
            raise CheckpointError(f"{where}: a component key is not a string")
        sub = _to_network(comp, f"{where} component {key}", seen, depth + 1)
        components[key] = sub
        for vname, value in sub.variables.items():
            full = f"{sub.name}/{vname}"
            if full in flat:
                raise CheckpointError(f"{where}: variable {full} is defined twice")
            flat[full] = value
    return TFNetwork(name=name, build_func_name=func, static_kwargs=kwargs, variables=flat,
                     components=components, version=version)


def load_tf_records(path, *, max_bytes: int | Budget | None = None) -> object:
    """Unpickle ``path`` with :class:`TFUnpickler` (raw records, not yet :class:`TFNetwork`).

    The file is charged to the size budget (``max_bytes``, see :mod:`faceedit.checkpoints.budget`)
    before it is read; every array it holds is refused unless its bytes are in the file.
    """
    path = Path(path)
    budget = Budget.of(max_bytes, str(path))
    try:
        size = path.stat().st_size
        budget.charge(size, f"the pickle ({human_bytes(size)})")
        data = path.read_bytes()
        prescan(data, str(path))
        return TFUnpickler(io.BytesIO(data), source=str(path)).load()
    except CheckpointError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError,
            RuntimeError, OSError) as e:
        raise CheckpointError(f"{path} is not a readable TensorFlow network pickle ({type(e).__name__}: {e})") from e
    except (MemoryError, RecursionError, OverflowError) as e:
        raise CheckpointError(f"{path} is not a readable TensorFlow network pickle: it declares sizes or nesting "
                              f"no real network has ({type(e).__name__}); the file is damaged or hostile") from e


def read_tf_pickle(path, *, max_bytes: int | Budget | None = None) -> dict:
    """Read an NVIDIA TensorFlow network pickle without TensorFlow and without running anything.

    Args:
        path: a ``.pkl`` holding ``(G, D, Gs)`` (what NVIDIA's training writes and publishes) or a
            single network.
        max_bytes: the size budget (see :mod:`faceedit.checkpoints.budget`).
    Returns:
        ``{"G": TFNetwork | None, "D": TFNetwork | None, "Gs": TFNetwork | None}``; a single
        network is returned as ``Gs``.
    Raises:
        UnsafePickleError: the pickle references anything outside the allow-list.
        CheckpointError: not a tflib network pickle, or a damaged one; the message says what was found.
    """
    path = Path(path)
    obj = load_tf_records(path, max_bytes=max_bytes)
    if isinstance(obj, _NetworkState):
        return {"G": None, "D": None, "Gs": _to_network(obj, f"{path}", set())}
    if isinstance(obj, tuple) and len(obj) == 3 and all(isinstance(o, _NetworkState) for o in obj):
        return {k: _to_network(o, f"{path} {k}", set()) for k, o in zip(("G", "D", "Gs"), obj)}
    raise CheckpointError(f"{path} holds a {type(obj).__name__}"
                          f"{f' of {len(obj)}' if isinstance(obj, tuple) else ''}, not a tflib Network or a "
                          f"(G, D, Gs) tuple of them")


def sniff_generation(net: TFNetwork) -> str:
    """``"stylegan1"`` or ``"stylegan2"`` for a TF generator (``G``/``Gs``) or discriminator.

    StyleGAN2 (``G_main`` + ``G_synthesis_stylegan2``; ``D_stylegan2``) has modulated convs
    (``.../Conv0_up/mod_weight``) and one ``ToRGB`` per resolution; StyleGAN v1 (``G_style`` +
    ``G_synthesis``; ``D_basic``) has progressive-growing ``ToRGB_lod*`` layers and per-layer
    ``Noise/weight`` strengths.

    Raises:
        CheckpointError: neither, naming the build functions and a few variables found.
    """
    funcs = {net.build_func_name} | {c.build_func_name for c in net.components.values()}
    names = list(net.variables)
    has = lambda s: any(s in n for n in names)  # noqa: E731
    if "G_synthesis_stylegan2" in funcs or "D_stylegan2" in funcs or has("Conv0_up/mod_weight") \
            or has("/Conv/mod_weight"):
        return "stylegan2"
    if ("G_style" in funcs or "G_synthesis" in funcs or "D_basic" in funcs) and \
            (has("ToRGB_lod") or has("FromRGB_lod") or has("Noise/weight")):
        return "stylegan1"
    raise CheckpointError(f"TF network {net.name!r} is neither StyleGAN nor StyleGAN2: build functions "
                          f"{sorted(funcs)}, variables {names[:5]}...; faceedit reads NVIDIA's StyleGAN (v1) and "
                          f"StyleGAN2 TensorFlow generators only")


__all__ = ["TFNetwork", "TFUnpickler", "read_tf_pickle", "sniff_generation", "load_tf_records"]
