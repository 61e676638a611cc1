"""Builders of hostile checkpoint files: small files that declare huge sizes.

Each builder writes one file (or folder) that a careless reader would turn into gigabytes or
terabytes of allocation: a zip entry that inflates to GiBs, a stride-0 tensor that claims 2^31
elements over one stored value, a generator record with ``w_dim = 10**9``, ... They are used by
the hostile-file tests (``tests/test_size_budget.py``) and by ``bench/scripts/hostile_rss.py``,
which loads each in a fresh process and reports its peak RSS.

Nothing here is part of the installed package. The NVIDIA and TensorFlow files are written
with stand-ins for ``torch_utils.persistence`` and ``dnnlib.tflib.network`` that exist in
``sys.modules`` only while :func:`pickle.dumps` runs, as the other checkpoint tests do.

``KINDS`` lists every hostile file: ``name -> (builder, needle)``; a builder takes the folder
to write into and the declared size of zip bombs, and returns the path to load; ``needle`` is
a regular expression the refusal message must match: it names the field with its value and
its limit (or the sizes at stake), whatever the wording.
"""
from __future__ import annotations

import collections
import contextlib
import io
import json
import pickle
import struct
import sys
import types
import zipfile
import zlib
from pathlib import Path

import numpy as np
import torch

from faceedit.checkpoints import save_native
from faceedit.checkpoints.nvidia import native_to_nvidia_state
from faceedit.networks import Discriminator, Generator

TINY = dict(z_dim=16, w_dim=16, resolution=16, channel_base=64, channel_max=16, mapping_layers=2)
GIB = 1 << 30
BOMB_BYTES = 3 * GIB + GIB // 4          # the 3.25 GiB entry of the report in issue #23
CHUNK = 1 << 20


# --------------------------------------------------------------------------- zip bombs
class _CachedDeflate:
    """A raw-deflate compressor that full-flushes after every write, and compresses the
    all-zero chunk once: after a full flush the deflate stream restarts without history, so
    every all-zero chunk compresses to the same bytes. Makes a GiB-sized entry in seconds."""

    def __init__(self):
        self._co = zlib.compressobj(9, zlib.DEFLATED, -15)
        self._zero_block = None

    def compress(self, data) -> bytes:
        if data is _ZEROS and self._zero_block is not None:
            return self._zero_block
        out = self._co.compress(data) + self._co.flush(zlib.Z_FULL_FLUSH)
        if data is _ZEROS:
            self._zero_block = out
        return out

    def flush(self) -> bytes:
        return self._co.flush()


_ZEROS = bytes(CHUNK)


def write_bomb_entry(z: zipfile.ZipFile, name: str, prefix: bytes, size: int) -> None:
    """Add ``name`` to ``z``: ``prefix`` then zeros up to ``size`` bytes, deflated (about 1000:1).

    The entry is a valid zip member (CRC and sizes written by :mod:`zipfile`); only the
    compressor is swapped for :class:`_CachedDeflate`.
    """
    info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_DEFLATED
    with z.open(info, "w", force_zip64=size >= zipfile.ZIP64_LIMIT) as w:
        w._compressor = _CachedDeflate()  # noqa: SLF001 - the only way to feed zipfile a precomputed stream
        w.write(prefix)
        left = size - len(prefix)
        head = left % CHUNK
        if head:
            w.write(bytes(head))
            left -= head
        for _ in range(left // CHUNK):
            w.write(_ZEROS)


def safetensors_header(tensors: dict, dtype: str = "F32") -> bytes:
    """The leading bytes of a safetensors file holding ``{name: shape}`` (the data not included)."""
    size = {"F32": 4, "F16": 2}[dtype]
    header, off = {}, 0
    for name, shape in tensors.items():
        n = int(np.prod(shape, dtype=np.int64)) * size
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [off, off + n]}
        off += n
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw


def _big_state_shapes(kw: dict, width: int) -> dict:
    """``{name: shape}`` of ``Generator(**kw, w_dim=width)`` without allocating it: the shapes of the
    same generator with ``w_dim=7`` (a number no other dimension of these configs has), 7 -> width."""
    small = Generator(**dict(kw, w_dim=7)).state_dict()
    shapes = {k: tuple(width if d == 7 else d for d in v.shape) for k, v in small.items()}
    assert sum(int(np.prod(s, dtype=np.int64)) for s in shapes.values()) == \
        Generator.size(**dict(kw, w_dim=width))[0]
    return shapes


def _tiny_dir(folder: Path) -> Path:
    torch.manual_seed(0)
    d = folder / "tiny"
    if not d.exists():
        save_native(d, Generator(**TINY), name="tiny", D=Discriminator(16, channel_base=64, channel_max=16))
    return d


def _config(gen: dict) -> bytes:
    return json.dumps({"format": "faceedit.checkpoint", "version": 1, "name": "bomb", "generator": gen,
                       "discriminator": None, "recipe": None, "license": "", "provenance": {}}).encode()


def native_zip_zeros(folder: Path, size: int = BOMB_BYTES) -> Path:
    """A native zip whose ``model.safetensors`` is ``size`` bytes of zeros (no valid header)."""
    p = folder / "zip_zeros.zip"
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("config.json", _config(TINY))
        write_bomb_entry(z, "model.safetensors", b"", size)
    return p


def native_zip_padded(folder: Path, size: int = BOMB_BYTES) -> Path:
    """A native zip whose ``model.safetensors`` starts with the tiny model's real file, padded
    with zeros to ``size`` bytes: the header is valid, the entry is far larger than it says."""
    real = (_tiny_dir(folder) / "model.safetensors").read_bytes()
    p = folder / "zip_padded.zip"
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("config.json", _config(TINY))
        write_bomb_entry(z, "model.safetensors", real, size)
    return p


BIG_MAPPING = dict(TINY, w_dim=4096, mapping_layers=24)   # 403M parameters: 1.5 GiB in fp32


def native_zip_consistent(folder: Path, size: int = 0) -> Path:
    """A native zip whose config describes a 1.5 GiB generator and whose ``model.safetensors``
    holds exactly that generator's tensors, all zero, deflated to a few MB: everything agrees,
    only the compression ratio gives it away."""
    shapes = {f"G_ema.{k}": s for k, s in _big_state_shapes(BIG_MAPPING, BIG_MAPPING["w_dim"]).items()}
    head = safetensors_header(shapes)
    total = len(head) + sum(int(np.prod(s, dtype=np.int64)) * 4 for s in shapes.values())
    p = folder / "zip_consistent.zip"
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("config.json", _config(BIG_MAPPING))
        write_bomb_entry(z, "model.safetensors", head, total)
    return p


def native_header_claims(folder: Path, size: int = 0) -> Path:
    """A native folder whose 200-byte ``model.safetensors`` declares a 2^62-byte tensor."""
    d = folder / "header_claims"
    d.mkdir(exist_ok=True)
    (d / "config.json").write_bytes(_config(TINY))
    (d / "model.safetensors").write_bytes(safetensors_header({"G_ema.mapping.w_avg": [1 << 60]}) + bytes(64))
    return d


OLD_ESTIMATE_PASSES = dict(TINY, w_dim=4096, mapping_layers=40, mapping_blocks=1)  # 671M parameters, 2.5 GiB


def native_config_larger_than_file(folder: Path, size: int = 0) -> Path:
    """A native folder whose config (accepted by faceedit's former parameter estimate)
    describes a 2.5 GiB generator, with the tiny model's 100 KB of tensors."""
    d = folder / "config_larger"
    d.mkdir(exist_ok=True)
    (d / "config.json").write_bytes(_config(OLD_ESTIMATE_PASSES))
    (d / "model.safetensors").write_bytes((_tiny_dir(folder) / "model.safetensors").read_bytes())
    return d


# --------------------------------------------------------------------------- NVIDIA pickles
@contextlib.contextmanager
def stand_in_modules(**functions):
    """Install modules holding ``functions`` (``"pkg.mod.name": obj``) for the ``with`` block."""
    made = {}
    try:
        for full, obj in functions.items():
            mod, name = full.rsplit(".", 1)
            parts = mod.split(".")
            for i in range(1, len(parts) + 1):
                m = ".".join(parts[:i])
                if m not in sys.modules:
                    made[m] = sys.modules[m] = types.ModuleType(m)
            obj.__module__, obj.__qualname__ = mod, name
            setattr(sys.modules[mod], name, obj)
        yield
    finally:
        for m in made:
            sys.modules.pop(m, None)


def _reconstruct_persistent_obj(meta):  # pickled by reference; never called by the readers
    raise AssertionError("NVIDIA's reconstruction must not run")


class _Record:
    """Pickles as NVIDIA's persistence records do: ``_reconstruct_persistent_obj(meta)``."""

    def __init__(self, class_name: str, tensors: dict, init_kwargs: dict):
        self.meta = dict(type="class", version=6, module_src="# source", class_name=class_name,
                         state=dict(_parameters=collections.OrderedDict(), _modules=collections.OrderedDict(),
                                    _buffers=collections.OrderedDict(tensors), _init_args=(),
                                    _init_kwargs=dict(init_kwargs)))

    def __reduce__(self):
        return _reconstruct_persistent_obj, (self.meta,)


def _nvidia_tiny_tensors() -> dict:
    torch.manual_seed(0)
    return native_to_nvidia_state(Generator(**TINY).state_dict(), 2)


def _nvidia_kwargs(**over) -> dict:
    kw = dict(z_dim=16, c_dim=0, w_dim=16, img_resolution=16, img_channels=3, mapping_kwargs=dict(num_layers=2),
              synthesis_kwargs=dict(channel_base=64, channel_max=16))
    for k, v in over.items():
        if k in ("num_layers",):
            kw["mapping_kwargs"] = dict(kw["mapping_kwargs"], **{k: v})
        elif k in ("channel_base", "channel_max"):
            kw["synthesis_kwargs"] = dict(kw["synthesis_kwargs"], **{k: v})
        else:
            kw[k] = v
    return kw


def write_nvidia(path: Path, tensors: dict, init_kwargs: dict, *, torch_zip: bool = False) -> Path:
    """An NVIDIA-layout pickle (plain, as NVIDIA's training writes it, or ``torch.save`` zip)."""
    with stand_in_modules(**{"torch_utils.persistence._reconstruct_persistent_obj": _reconstruct_persistent_obj}):
        obj = {"G_ema": _Record("Generator", tensors, init_kwargs)}
        if torch_zip:
            torch.save(obj, path)
        else:
            path.write_bytes(pickle.dumps(obj, protocol=2))
    return path


def _stride0(n: int = 1 << 31, dtype=torch.float16) -> torch.Tensor:
    """``n`` elements over one stored value (stride 0): a few bytes in a file, ``2n`` bytes as fp16."""
    return torch.zeros(1, dtype=dtype).as_strided((n,), (0,))


def nvidia_stride0(folder: Path, size: int = 0) -> Path:
    """A plain NVIDIA pickle whose ``mapping.w_avg`` is a stride-0 fp16 tensor of 2^31 elements."""
    t = _nvidia_tiny_tensors()
    t["mapping.w_avg"] = _stride0()
    return write_nvidia(folder / "nv_stride0.pkl", t, _nvidia_kwargs())


def nvidia_zip_stride0(folder: Path, size: int = 0) -> Path:
    """The same inside a ``torch.save`` zip (the restricted unpickler's zip path)."""
    t = _nvidia_tiny_tensors()
    t["mapping.fc0.weight"] = _stride0(1 << 31).as_strided((1 << 16, 1 << 15), (0, 0))
    return write_nvidia(folder / "nv_zip_stride0.pt", t, _nvidia_kwargs(), torch_zip=True)


def _nvidia_config(name: str, **over):
    def build(folder: Path, size: int = 0) -> Path:
        return write_nvidia(folder / f"nv_{name}.pkl", _nvidia_tiny_tensors(), _nvidia_kwargs(**over))
    build.__doc__ = f"A tiny NVIDIA pickle whose generator record declares {over}."
    return build


def nvidia_sg3_repo_over_budget(folder: Path, size: int = 0) -> Path:
    """A stylegan3-repository StyleGAN2 record, every setting in range, 4.1 billion parameters."""
    kw = dict(z_dim=4096, c_dim=0, w_dim=4096, img_resolution=1024, img_channels=3,
              mapping_kwargs=dict(num_layers=64), channel_base=1 << 22, channel_max=4096,
              fused_modconv_default="inference_only")
    return write_nvidia(folder / "nv_sg3_big.pkl", _nvidia_tiny_tensors(), kw)


def nvidia_larger_than_file(folder: Path, size: int = 0) -> Path:
    """An NVIDIA record (in range, under the budget) describing a 2.5 GiB generator, tiny tensors."""
    return write_nvidia(folder / "nv_larger.pkl", _nvidia_tiny_tensors(),
                        _nvidia_kwargs(w_dim=4096, num_layers=40))


def torch_zip_declaring(obj, n: int, *, bomb_pickle: bool = False) -> bytes:
    """``torch.save(obj)`` re-zipped with deflate, where ``obj`` holds one 1-element float32
    storage: its ``data.pkl`` is edited to declare ``n`` elements (the storage's persistent id
    and, when it is a tensor's, the tensor's size), and ``data/0`` becomes ``n`` zero floats
    deflated (about 1000:1). With ``bomb_pickle``, ``data.pkl`` itself is padded with zeros to
    ``n`` bytes instead (the pickle ends at its STOP opcode; readers still inflate it all)."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    src = zipfile.ZipFile(io.BytesIO(buf.getvalue()))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        for name in src.namelist():
            data = src.read(name)
            if name.endswith("/data.pkl"):
                if bomb_pickle:
                    write_bomb_entry(z, name, data, n)
                    continue
                big = b"J" + struct.pack("<i", n)
                data = data.replace(b"K\x01t", big + b"t", 1).replace(b"QK\x00K\x01\x85", b"QK\x00" + big + b"\x85", 1)
            if name.endswith("/data/0") and not bomb_pickle:
                write_bomb_entry(z, name, b"", 4 * n)
            else:
                z.writestr(name, data)
    return out.getvalue()


def nvidia_zip_storage_bomb(folder: Path, size: int = BOMB_BYTES) -> Path:
    """A ``torch.save``-zipped NVIDIA record whose ``mapping.w_avg`` storage inflates to ``size`` bytes."""
    with stand_in_modules(**{"torch_utils.persistence._reconstruct_persistent_obj": _reconstruct_persistent_obj}):
        raw = torch_zip_declaring({"G_ema": _Record("Generator", {"mapping.w_avg": torch.zeros(1)}, _nvidia_kwargs())},
                                  size // 4)
    p = folder / "nv_zip_storage_bomb.pt"
    p.write_bytes(raw)
    return p


class _NestedStorage:
    """Pickles as ``torch.storage._load_from_bytes(payload)``, how plain NVIDIA pickles hold storages."""

    def __init__(self, payload: bytes):
        self.payload = payload

    def __reduce__(self):
        return torch.storage._load_from_bytes, (self.payload,)


class _Rebuild:
    """Pickles as ``torch._utils._rebuild_tensor_v2(storage, 0, (numel,), (1,))``."""

    def __init__(self, storage, numel: int):
        self.storage, self.numel = storage, numel

    def __reduce__(self):
        return torch._utils._rebuild_tensor_v2, (self.storage, 0, (self.numel,), (1,), False,
                                                 collections.OrderedDict())


def nvidia_nested_zip_bomb(folder: Path, size: int = BOMB_BYTES) -> Path:
    """A plain NVIDIA pickle whose nested storage bytes are a small ``torch.save`` zip of a
    storage that inflates to ``size`` bytes."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TypedStorage is what NVIDIA's pickles hold
        inner = torch_zip_declaring(torch.zeros(1).storage(), size // 4)
    t = _nvidia_tiny_tensors()
    t["mapping.w_avg"] = _Rebuild(_NestedStorage(inner), 16)
    return write_nvidia(folder / "nv_nested_bomb.pkl", t, _nvidia_kwargs())


def torch_zip_datapkl_bomb(folder: Path, size: int = BOMB_BYTES) -> Path:
    """A ``torch.save`` zip whose ``data.pkl`` inflates to ``size`` bytes (read when telling the file's kind)."""
    p = folder / "datapkl_bomb.pt"
    p.write_bytes(torch_zip_declaring({"g_ema": {"x": torch.zeros(1)}}, size, bomb_pickle=True))
    return p


# --------------------------------------------------------------------------- rosinality
def rosinality_stride0(folder: Path, size: int = 0) -> Path:
    """A rosinality ``.pt`` whose mapping weights are stride-0 views claiming 2^31 elements."""
    p = folder / "ros_stride0.pt"
    huge = _stride0(1 << 31, torch.float32).as_strided((1 << 16, 1 << 15), (0, 0))
    torch.save({"g_ema": {"style.1.weight": huge, "input.input": torch.zeros(1, 16, 4, 4),
                          "to_rgb1.conv.weight": torch.zeros(1, 3, 16, 1, 1)}}, p)
    return p


def rosinality_zip_bomb(folder: Path, size: int = BOMB_BYTES) -> Path:
    """A rosinality ``.pt`` (``torch.save`` zip, re-zipped with deflate) whose one storage inflates to ``size``."""
    p = folder / "ros_zip_bomb.pt"
    p.write_bytes(torch_zip_declaring({"g_ema": {"style.1.weight": torch.zeros(1)}}, size // 4))
    return p


# --------------------------------------------------------------------------- TensorFlow
class _TFNetwork:
    """Pickles to what tflib's ``Network.__getstate__`` writes (installed as ``dnnlib.tflib.network.Network``)."""

    def __init__(self, name, func, static_kwargs, variables, components=None):
        self._state = dict(version=4, name=name, static_kwargs=dict(static_kwargs), components=dict(components or {}),
                           build_module_src="# source", build_func_name=func, variables=list(variables.items()))

    def __getstate__(self):
        return self._state


def write_tf(path: Path, kwargs: dict, *, v1: bool = False) -> Path:
    """A TF ``Gs`` pickle (StyleGAN2's ``G_main`` or v1's ``G_style``) declaring ``kwargs``, one variable."""
    with stand_in_modules(**{"dnnlib.tflib.network.Network": _TFNetwork}):
        avg = {"dlatent_avg": np.zeros(16, np.float32)}
        if v1:
            comps = {"synthesis": _TFNetwork("G_synthesis", "G_synthesis", kwargs,
                                             {"ToRGB_lod0/weight": np.zeros((1, 1, 16, 3), np.float32)})}
            net = _TFNetwork("Gs", "G_style", kwargs, avg, comps)
        else:
            comps = {"synthesis": _TFNetwork("G_synthesis", "G_synthesis_stylegan2", kwargs, {})}
            net = _TFNetwork("Gs", "G_main", kwargs, avg, comps)
        path.write_bytes(pickle.dumps(net, protocol=3))
    return path


TF_TINY = dict(latent_size=16, dlatent_size=16, resolution=16, num_channels=3, label_size=0, mapping_layers=2,
               fmap_base=32, fmap_max=16)


def _tf_config(name: str, v1: bool = False, **over):
    def build(folder: Path, size: int = 0) -> Path:
        return write_tf(folder / f"tf_{name}.pkl", dict(TF_TINY, **over), v1=v1)
    build.__doc__ = f"A TF {'StyleGAN' if v1 else 'StyleGAN2'} pickle whose generator declares {over}."
    return build


# --------------------------------------------------------------------------- the list
#: name -> (builder, regular expression the refusal must match)
KINDS = {
    "native zip: model.safetensors of zeros, 1000:1": (native_zip_zeros, r"model\.safetensors declares .*compress"),
    "native zip: real model padded with zeros, 1000:1": (native_zip_padded, r"model\.safetensors declares .*compress"),
    "native zip: consistent 1.5 GiB all-zero model": (native_zip_consistent, r"model\.safetensors declares .*compress"),
    "native folder: header declares a 2^62-byte tensor": (native_header_claims, r"header declares 4 EiB"),
    "native config larger than its tensors (2.5 GiB)": (native_config_larger_than_file, r"hold [\d,]+ values"),
    "NVIDIA pkl: stride-0 tensor of 2^31 elements": (nvidia_stride0, r"mapping\.w_avg.*storage"),
    "NVIDIA torch zip: stride-0 tensor of 2^31 elements": (nvidia_zip_stride0, r"mapping\.fc0\.weight .*storage"),
    "NVIDIA pkl: w_dim=10^9": (_nvidia_config("w_dim", w_dim=10 ** 9), r"'w_dim' = 1000000000 .*1\.\.4096"),
    "NVIDIA pkl: w_dim=-1": (_nvidia_config("w_dim_neg", w_dim=-1), r"'w_dim' = -1 .*1\.\.4096"),
    "NVIDIA pkl: 10^6 mapping layers": (_nvidia_config("layers", num_layers=10 ** 6),
                                        r"'mapping_layers' = 1000000 .*1\.\.64"),
    "NVIDIA pkl: channel_base=2^40": (_nvidia_config("channels", channel_base=1 << 40, channel_max=1 << 20),
                                      r"'channel_(base|max)' = \d+ .*out of range"),
    "NVIDIA pkl: img_resolution=2^20": (_nvidia_config("res", img_resolution=1 << 20),
                                        r"resolution'?( =)? 1048576 .*16\.\.1024"),
    "NVIDIA pkl: w_dim='512' (a string)": (_nvidia_config("w_dim_str", w_dim="512"),
                                           r"w_dim='512' is not an integer"),
    "stylegan3-repo pkl: in range, 4.1 G parameters": (nvidia_sg3_repo_over_budget,
                                                       r"GiB in fp32.*above the 4 GiB limit"),
    "NVIDIA pkl: 2.5 GiB generator, tiny tensors": (nvidia_larger_than_file, r"hold [\d,]+ values"),
    "NVIDIA torch zip: storage entry of zeros, 1000:1": (nvidia_zip_storage_bomb, r"data/0 declares .*compress"),
    "NVIDIA pkl: nested torch zip of zeros, 1000:1": (nvidia_nested_zip_bomb, r"nested .*compress"),
    "torch zip: data.pkl padded with zeros, 1000:1": (torch_zip_datapkl_bomb, r"data\.pkl declares .*compress"),
    "rosinality .pt: stride-0 tensor of 2^31 elements": (rosinality_stride0, r"style\.1\.weight.*storage"),
    "rosinality .pt: storage entry of zeros, 1000:1": (rosinality_zip_bomb, r"data/0 declares .*compress"),
    "TF SG2 pkl: dlatent_size=10^9": (_tf_config("wdim", dlatent_size=10 ** 9),
                                      r"'w_dim' = 1000000000 .*1\.\.4096"),
    "TF SG2 pkl: fmap_base=2^40": (_tf_config("fmap", fmap_base=1 << 40, fmap_max=1 << 20),
                                   r"'channel_(base|max)' = \d+ \(the file's fmap_(base x 2|max)\) is out of range"),
    "TF SG2 pkl: 10^6 mapping layers": (_tf_config("layers", mapping_layers=10 ** 6),
                                         r"'mapping_layers' = 1000000 .*1\.\.64"),
    "TF SG2 pkl: resolution=2^20": (_tf_config("res", resolution=1 << 20), r"resolution'?( =)? 1048576 .*16\.\.1024"),
    "TF SG2 pkl: in range, 4.1 G parameters": (_tf_config("big", latent_size=4096, dlatent_size=4096, mapping_layers=64,
                                                          resolution=1024, fmap_base=1 << 21, fmap_max=4096),
                                               r"GiB in fp32.*above the 4 GiB limit"),
    "TF SG2 pkl: dlatent_size='x' (a string)": (_tf_config("str", dlatent_size="x"),
                                                r"dlatent_size='x' is not an integer"),
    "TF SG1 pkl: dlatent_size=10^9": (_tf_config("v1_wdim", v1=True, dlatent_size=10 ** 9, mapping_fmaps=10 ** 9),
                                      r"'w_dim' = 1000000000 .*1\.\.4096"),
}


#: Words of torch's own messages that must never reach a user: allocator internals, and its
#: advice to load a refused file unsafely.
TORCH_INTERNALS = ("DefaultCPUAllocator", "alloc_cpu", "negative dimension", "enforce fail", "weights_only=False",
                   "weights_only` set to `False", "Re-running", "add_safe_globals")


def clear_refusal(kind: str, message: str) -> bool:
    """Whether ``message`` refuses ``kind`` clearly: it matches the kind's needle and quotes no torch internals."""
    import re

    return bool(re.search(KINDS[kind][1], message)) and not any(w in message for w in TORCH_INTERNALS)


#: The kinds issue #23 reported, worst first: the 3.25 GiB zip entry (7 GB of RSS before refusal),
#: the 2^31-element stride-0 tensor (8.7 GB) and a generator record larger than its tensors.
WORST = ("native zip: real model padded with zeros, 1000:1", "NVIDIA pkl: stride-0 tensor of 2^31 elements",
         "NVIDIA pkl: 2.5 GiB generator, tiny tensors")


# --------------------------------------------------------------------------- loading in a fresh process
_CHILD = r"""
import json, resource, sys
limit_gib, paths = float(sys.argv[1]), sys.argv[2:]
from faceedit.core.errors import FaceeditError
from faceedit.checkpoints import load_model
if limit_gib > 0:  # a regression fails with MemoryError instead of taking the machine
    vm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmSize:")) * 1024
    resource.setrlimit(resource.RLIMIT_AS, (vm + int(limit_gib * 2 ** 30), resource.RLIM_INFINITY))
for path in paths:
    out = {"path": path, "outcome": "loaded", "message": ""}
    try:
        load_model(path)
    except FaceeditError as e:
        out.update(outcome="refused", message=str(e), type=type(e).__name__)
    except BaseException as e:
        out.update(outcome="crashed", message=f"{type(e).__name__}: {e}", type=type(e).__name__)
    print("RESULT " + json.dumps(out), flush=True)
print("PEAK " + next(l.split()[1] for l in open("/proc/self/status") if l.startswith("VmHWM:")), flush=True)
"""


def load_in_fresh_process(paths: list, limit_gib: float = 2.0, python: str | None = None) -> tuple:
    """Load each of ``paths`` with ``load_model`` in one new Python process, with the default size
    budget (``FACEEDIT_MAX_CHECKPOINT_GIB`` removed from its environment).

    Args:
        paths: files to load, in order (none: the process only imports faceedit and torch).
        limit_gib: address space the process may map beyond what it has after its imports
            (``0``: no limit).
        python: the interpreter (default: this one); another checkout's, to compare with it.
    Returns:
        ``(results, rss_mib)``: per path ``{"path", "outcome" ("refused", "loaded", "crashed"),
        "message", "type"}``, and the process's peak resident memory in MiB: its own ``VmHWM``
        (``/proc/self/status``), or, when it died before reporting it, the ``ru_maxrss`` that
        ``os.wait4`` gives for it. (Linux carries the resident high-water mark a child had before
        ``exec`` -- a copy of the parent -- into its ``ru_maxrss``, as into
        ``getrusage(RUSAGE_CHILDREN)``: under a large parent, a pytest run with torch loaded,
        ``ru_maxrss`` reports the parent's size. ``VmHWM`` is the new process's alone.)
    """
    import os
    import subprocess
    import tempfile

    env = {k: v for k, v in os.environ.items() if k != "FACEEDIT_MAX_CHECKPOINT_GIB"}
    env["OMP_NUM_THREADS"] = "1"
    # Run outside any checkout: from its root, `import faceedit` would find that checkout's folder.
    proc = subprocess.Popen([python or sys.executable, "-c", _CHILD, str(limit_gib), *map(str, paths)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=tempfile.gettempdir())
    text = proc.stdout.read().decode(errors="replace")
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    results = [json.loads(line[7:]) for line in text.splitlines() if line.startswith("RESULT ")]
    for p in list(map(str, paths))[len(results):]:
        results.append({"path": p, "outcome": f"died (exit {proc.returncode})", "message": text.strip()[-300:]})
    peak = [int(line[5:]) for line in text.splitlines() if line.startswith("PEAK ")]
    return results, (peak[0] if peak else usage.ru_maxrss) / 1024
