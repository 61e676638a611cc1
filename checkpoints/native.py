"""faceedit's native checkpoint format.

A checkpoint is a folder (or a ``.zip`` of one) holding:

* ``config.json``: ``{"format": "faceedit.checkpoint", "version": 1, "name": ...,
  "generator": {Generator kwargs}, "discriminator": {Discriminator kwargs} | null,
  "recipe": {AlignmentRecipe}, "license": ..., "provenance": {...}}``; the generator table's
  ``"arch"`` names its class (``networks.GENERATORS``: ``stylegan1``; absent = ``stylegan2``,
  so files written before there was a choice read unchanged);
* ``model.safetensors``: ``G_ema.*`` parameters and buffers (``w_avg`` included); its
  sha256 is the model id that latents, directions and encoders record;
* ``prior.safetensors`` (optional): the Gaussianized prior's statistics, fp32 (a separate
  file so that the W++ joint covariance does not enlarge the weight file, and so that
  adding a prior does not change the model id). Older files holding ``prior.*``
  tensors inside ``model.safetensors`` are still read;
* ``discriminator.safetensors`` (optional): ``D.*``.

Nothing in a native checkpoint is executable; reading it never runs code.
"""
from __future__ import annotations

import hashlib
import inspect
import io
import json
import math
import operator
import struct
import zipfile
import zlib
from pathlib import Path

import torch

from faceedit.core.errors import CheckpointError
from faceedit.core.files import atomic_write_bytes, atomic_write_text
from faceedit.networks import GENERATORS, Discriminator, Generator, Generator1

from .budget import Budget, CheckpointSizeError, check_tensor_geometry, check_zip_entry, human_bytes
from .loaded import LoadedModel

FORMAT = "faceedit.checkpoint"
MAX_CONFIG_BYTES = 1 << 20
MAX_HEADER_BYTES = 100 << 20      # safetensors' own bound on a header
# Bytes per element of the safetensors dtypes.
_ST_ITEMSIZE = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
                "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}


def is_zip(path) -> bool:
    """True when ``path`` is a zip archive *by its first bytes* (``PK\\x03\\x04``).

    ``zipfile.is_zipfile`` alone looks for an end-of-archive record near the end of the
    file, so a plain pickle whose last stored bytes are a nested ``torch.save`` archive
    (how NVIDIA pickles store tensors) passes it; checking the start too tells them apart.
    """
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError:
        return False
    if head not in (b"PK\x03\x04", b"PK\x05\x06"):
        return False
    try:
        return zipfile.is_zipfile(path)
    except (zipfile.BadZipFile, ValueError, NotImplementedError):  # a damaged zip: opening it says why
        return True


class _Source:
    """Uniform read access to a checkpoint folder or zip, refusing path tricks."""

    def __init__(self, path: Path):
        self.path = path
        self.zip = None
        if path.is_file():
            if not is_zip(path):
                raise CheckpointError(f"{path} is neither a checkpoint folder nor a zip of one; "
                                      f"convert other formats with `faceedit convert {path} OUT`")
            try:
                self.zip = zipfile.ZipFile(path)
            except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError) as e:
                raise CheckpointError(f"{path} is a damaged zip or one faceedit cannot read ({e}); download or "
                                      f"convert it again") from e
            names = self.zip.namelist()
            for n in names:
                parts = Path(n.replace("\\", "/")).parts
                if n.startswith(("/", "\\")) or ".." in parts or (parts and ":" in parts[0]):
                    raise CheckpointError(f"{path}: zip entry {n!r} points outside the archive; refused")
            roots = {n.split("/")[0] for n in names if "/" in n}
            self.prefix = "" if "config.json" in names else (f"{roots.pop()}/" if len(roots) == 1 else "")
        elif not path.is_dir():
            raise CheckpointError(f"checkpoint {path} does not exist; `faceedit models` lists known names")

    def exists(self, name: str) -> bool:
        if self.zip is not None:
            return self.prefix + name in self.zip.namelist()
        return (self.path / name).is_file()

    def _size(self, name: str) -> int:
        """The declared size of ``name`` (a zip entry's ratio is checked here, before anything is inflated)."""
        if self.zip is not None:
            info = self.zip.getinfo(self.prefix + name)
            check_zip_entry(info, str(self.path))
            return info.file_size
        return (self.path / name).stat().st_size

    def _open(self, name: str):
        return self.zip.open(self.prefix + name) if self.zip is not None else open(self.path / name, "rb")

    def read(self, name: str, budget: Budget | None = None, *, limit: int | None = None) -> bytes:
        """The bytes of ``name``, refused before reading when over ``limit`` or the budget (charged).

        A zip entry is refused by its declared size and compression ratio; :mod:`zipfile`
        stops inflating at the declared size, so a bomb cannot exceed it either.
        """
        size = self._size(name)
        if limit is not None and size > limit:
            raise CheckpointError(f"{self.path}: {name} is {size} bytes, over the {limit}-byte limit")
        if budget is not None:
            budget.charge(size, f"{'zip entry ' if self.zip is not None else ''}{name} ({human_bytes(size)})")
        if self.zip is None:
            return (self.path / name).read_bytes()
        try:
            return self.zip.read(self.prefix + name)
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError, RuntimeError) as e:
            raise CheckpointError(f"{self.path}: {name} cannot be read from the zip ({e}); the archive is "
                                  f"damaged, encrypted or uses an unsupported compression") from e

    def safetensors_header(self, name: str) -> dict:
        """``{tensor: (shape, dtype)}`` from the header of the safetensors member ``name``, read alone.

        Only the length and the JSON header are read (inflated, for a zip entry), never the
        data: the tensors a file declares are checked against the config and against the
        file's size before the file is read. (``safetensors.safe_open`` reads headers only of
        files on disk, not of zip members; the full format check stays safetensors' own, when
        the file is loaded.)

        Raises:
            CheckpointError: a malformed header, or declared tensors that the file's size
                cannot hold (or that leave part of it unaccounted for).
        """
        where = f"{self.path}/{name}" if self.zip is None else f"{self.path}: {name}"
        size = self._size(name)
        bad = f"{where} is not a valid safetensors file"
        try:
            with self._open(name) as f:
                head = f.read(8)
                n = struct.unpack("<Q", head)[0] if len(head) == 8 else None
                if n is None or n > min(size - 8, MAX_HEADER_BYTES):
                    raise CheckpointError(f"{bad} (header length {n} does not fit the file's {size} bytes); the "
                                          f"download may be truncated or the file corrupt")
                header = json.loads(f.read(n))
        except CheckpointError:
            raise
        except (ValueError, RecursionError, zipfile.BadZipFile, zlib.error, EOFError, OSError) as e:
            raise CheckpointError(f"{bad} ({type(e).__name__}: {str(e)[:200]}); the download may be truncated or "
                                  f"the file corrupt") from e
        if not isinstance(header, dict):
            raise CheckpointError(f"{bad} (its header is a {type(header).__name__}, not a table)")
        out, data = {}, 0
        for key, entry in header.items():
            if key == "__metadata__":
                continue
            dtype = entry.get("dtype") if isinstance(entry, dict) else None
            shape = entry.get("shape") if isinstance(entry, dict) else None
            if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
                raise CheckpointError(f"{bad} (tensor {key!r:.60} has shape {shape!r:.60})")
            if dtype not in _ST_ITEMSIZE:
                raise CheckpointError(f"{where}: tensor {key!r:.60} has dtype {dtype!r:.20}, which no StyleGAN "
                                      f"checkpoint holds (the file is damaged or not a faceedit checkpoint)")
            data += math.prod(shape) * _ST_ITEMSIZE[dtype]
            out[key] = (tuple(shape), dtype)
        if 8 + n + data != size:
            raise CheckpointError(f"{where}: its header declares {human_bytes(data)} of tensors ({len(out)} of them) "
                                  f"but the file holds {human_bytes(size - 8 - n)} of data; the file is damaged, "
                                  f"truncated or padded (a zip entry that inflates to more than it holds)")
        return out


def read_config(path) -> dict:
    """Read and validate ``config.json`` of a native checkpoint."""
    src = _Source(Path(path))
    if not src.exists("config.json"):
        raise CheckpointError(f"{path} has no config.json; it is not a faceedit checkpoint "
                              f"(convert .pkl/.pt files with `faceedit convert`)")
    return _parse_config(src.read("config.json", limit=MAX_CONFIG_BYTES), path)


def _parse_config(raw: bytes, path) -> dict:
    try:
        cfg = json.loads(raw)
    except (ValueError, RecursionError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise CheckpointError(f"{path}/config.json is not valid JSON ({type(e).__name__}: {str(e)[:200]}); "
                              f"the checkpoint is damaged") from e
    if not isinstance(cfg, dict) or cfg.get("format") != FORMAT:
        raise CheckpointError(f"{path}/config.json is not a faceedit checkpoint config "
                              f"(expected format {FORMAT!r})")
    gen = cfg.get("generator")
    if not isinstance(gen, dict):
        raise CheckpointError(f"{path}/config.json has no 'generator' architecture table")
    check_architecture("generator", gen, f"{path}/config.json")
    disc = cfg.get("discriminator")
    if disc is not None:
        if not isinstance(disc, dict):
            raise CheckpointError(f"{path}/config.json: 'discriminator' must be a table or null")
        check_architecture("discriminator", disc, f"{path}/config.json")
    return cfg


# Per setting: allowed types and (low, high) bounds; what a sane StyleGAN2 can have.
_ARCH_LIMITS = {
    "z_dim": (int, 1, 4096), "w_dim": (int, 1, 4096), "resolution": (int, 16, 1024),
    "mapping_layers": (int, 1, 64), "mapping_blocks": (int, 1, 64), "mapping_heads": (int, 1, 64),
    "mapping_lr_mul": ((int, float), 1e-6, 1e3), "channel_base": (int, 1, 1 << 22),
    "channel_max": (int, 1, 4096), "img_channels": (int, 1, 4), "conv_clamp": ((int, float), 1e-6, 1e9),
    "mbstd_group": (int, 1, 64),
}


def _signature_names(cls) -> set:
    code = cls.__init__.__code__
    return set(code.co_varnames[1:code.co_argcount])


def _network_class(kind: str, kw: dict, where: str):
    """The class a generator/discriminator table describes (a generator's ``arch``, default ``stylegan2``)."""
    if kind != "generator":
        return Discriminator
    arch = kw.get("arch", "stylegan2")
    if not isinstance(arch, str) or arch not in GENERATORS:
        raise CheckpointError(f"{where}: generator arch {arch!r} is not one faceedit builds "
                              f"({', '.join(sorted(GENERATORS))}); the file is damaged or from a newer faceedit")
    return GENERATORS[arch]


def as_int(value, name: str, where: str) -> int:
    """``value`` as an ``int`` when it is one (python or numpy integer, not a bool), else raise.

    Foreign readers turn the constructor arguments a file declares into faceedit's settings
    with this, so a string, float or list is refused by name instead of being truncated
    (``int(16.7)``) or raising a bare ``ValueError``.

    Raises:
        CheckpointError: naming the setting and what was found.
    """
    if not isinstance(value, bool):
        try:
            return operator.index(value)
        except TypeError:
            pass
    raise CheckpointError(f"{where}: {name}={value!r:.60} is not an integer; the file is damaged or not a "
                          f"StyleGAN checkpoint")


def as_float(value, name: str, where: str) -> float:
    """``value`` as a finite ``float`` when it is a real number (not a bool), else raise :class:`CheckpointError`."""
    if not isinstance(value, (bool, str, bytes)):
        try:
            f = float(value)
            if math.isfinite(f):
                return f
        except (TypeError, ValueError, OverflowError):
            pass
    raise CheckpointError(f"{where}: {name}={value!r:.60} is not a finite number; the file is damaged or not a "
                          f"StyleGAN checkpoint")


def check_architecture(kind: str, kw: dict, where: str, names: dict | None = None) -> None:
    """Validate ``Generator``/``Discriminator`` keyword arguments read from a file *before* building.

    Every setting is type- and range-checked against what a sane StyleGAN can have
    (``_ARCH_LIMITS``: widths up to 4096, 64 mapping layers, 16..1024 px); the network's
    size in bytes is then bounded by the load's :class:`~faceedit.checkpoints.budget.Budget`
    (:func:`plan_network`).

    Args:
        kind: ``"generator"`` or ``"discriminator"``.
        kw: the keyword arguments (a native config table, or a foreign reader's translation).
        where: the source, for messages.
        names: ``{setting: what the file calls it}`` for messages of foreign readers
            (``{"w_dim": "dlatent_size"}``).
    Raises:
        CheckpointError: unknown setting, wrong type, out of range, or no channels left.
    """
    names = names or {}
    cls = _network_class(kind, kw, where)
    unknown = set(kw) - _signature_names(cls) - ({"arch"} if kind == "generator" else set())
    if unknown:
        raise CheckpointError(f"{where}: unknown {kind} settings {sorted(unknown)}")
    for k, v in kw.items():
        if k == "arch":
            continue
        if k == "fused_scale":
            if not (v == "auto" or isinstance(v, bool)):
                raise CheckpointError(f"{where}: fused_scale must be true, false or 'auto', got {v!r}")
            continue
        if k == "mapping_kind":
            if v not in ("mlp", "transformer"):
                raise CheckpointError(f"{where}: mapping_kind must be 'mlp' or 'transformer', got {v!r}")
            continue
        if k == "conv_clamp" and v is None:
            continue
        if k == "down_conv":
            if v not in ("decimate", "strided"):
                raise CheckpointError(f"{where}: down_conv must be 'decimate' or 'strided', got {v!r}")
            continue
        types, lo, hi = _ARCH_LIMITS.get(k, ((int, float), -math.inf, math.inf))
        if isinstance(v, bool) or not isinstance(v, types) or not (isinstance(v, int) or math.isfinite(v)) \
                or not lo <= v <= hi:
            said = f" (the file's {names[k]})" if k in names else ""
            raise CheckpointError(f"{where}: {kind} setting {k!r} = {v!r:.60}{said} is out of range: faceedit builds "
                                  f"{'integers' if types is int else 'numbers'} in {lo}..{hi}; the file is damaged "
                                  f"or not a StyleGAN checkpoint")
    res = kw.get("resolution", 1024 if kind == "generator" else None)
    if res is None or res & (res - 1):
        raise CheckpointError(f"{where}: {kind} resolution {res!r} is not a power of two in 16..1024")
    default = {k: p.default for k, p in inspect.signature(cls).parameters.items()}
    base, cmax = kw.get("channel_base", default["channel_base"]), kw.get("channel_max", default["channel_max"])
    if min(base // res, cmax) < 1:
        raise CheckpointError(f"{where}: channel_base={base} leaves layers with no channels at {res} px")


_SIZE_SETTINGS = ("resolution", "z_dim", "w_dim", "mapping_kind", "mapping_layers", "mapping_blocks", "channel_base",
                  "channel_max")


def plan_network(kind: str, kw: dict, where: str, budget: Budget | None = None,
                 names: dict | None = None) -> int:
    """Check the network ``kw`` describes and charge its size, before anything is allocated.

    :func:`check_architecture` first; then the network's parameters and buffers are counted
    from the keyword arguments alone (``Generator.size`` and its kin in ``faceedit.networks``:
    integer arithmetic, nothing built) and ``budget`` is charged their bytes in fp32, as
    faceedit runs them. (Building on PyTorch's ``meta`` device would give the same counts,
    but its first use imports ``torch._dynamo`` and sympy: 1.4 s and 150 MB per load.)

    Args:
        kind, kw, where, names: as for :func:`check_architecture`.
        budget: charged with the network's bytes (``None``: nothing is charged).
    Returns:
        The number of values the network's ``state_dict()`` holds: what a file must provide.
    Raises:
        CheckpointError: as :func:`check_architecture`.
        CheckpointSizeError: the network would not fit the budget.
    """
    check_architecture(kind, kw, where, names)
    cls = _network_class(kind, kw, where)
    try:
        state, other = cls.size(**{k: v for k, v in kw.items() if k != "arch"})
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{where}: cannot build the {kind} it describes ({e})") from e
    if budget is not None:
        n = 4 * (state + other)
        said = ", ".join(f"{k}={kw[k]}" for k in _SIZE_SETTINGS if k in kw)
        budget.charge(n, f"the {kind} it describes ({said}: {(state + other) / 1e6:,.1f}M parameters and buffers, "
                         f"{human_bytes(n)} in fp32)")
    return state


def check_holds(needed: int, held: int, where: str, kind: str = "generator") -> None:
    """Refuse to build a network of ``needed`` values from a file whose tensors hold fewer than half of them.

    Run before the network is built, so a small file cannot make faceedit allocate the large
    network its config describes. (A file holding about as much is built and then checked
    name by name, which gives the precise message.)

    Raises:
        CheckpointSizeError: naming both counts.
    """
    if 2 * held < needed:
        raise CheckpointSizeError(f"{where}: its tensors hold {held:,} values but the {kind} its architecture "
                                  f"describes has {needed:,} ({human_bytes(4 * needed)} in fp32): the file does not "
                                  f"hold the network it describes (damaged, or the architecture of another model); "
                                  f"refused before building it")


def count_values(state: dict, where: str) -> int:
    """The values the tensors of ``state`` hold, each one's geometry checked first
    (:func:`~faceedit.checkpoints.budget.check_tensor_geometry`), before anything copies it.

    Raises:
        CheckpointError: an entry that is not a tensor.
        CheckpointSizeError: a tensor spread over repeated storage.
    """
    for k, v in state.items():
        if not isinstance(v, torch.Tensor):
            raise CheckpointError(f"{where}: {k} is a {type(v).__name__}, not a tensor")
        check_tensor_geometry(v, k, where)
    return sum(v.numel() for v in state.values())


def new_network(kind: str, kw: dict, where: str) -> torch.nn.Module:
    """Construct the network ``kw`` describes (after :func:`plan_network`), wrapping constructor errors."""
    cls = _network_class(kind, kw, where)
    try:
        return cls(**{k: v for k, v in kw.items() if k != "arch"})
    except (TypeError, ValueError, RuntimeError, ZeroDivisionError) as e:
        raise CheckpointError(f"{where}: cannot build the {kind} it describes ({e})") from e


def build_network(kind: str, kw: dict, where: str, state: dict, *, budget: Budget | None = None,
                  needed: int | None = None, state_where: str | None = None,
                  names: dict | None = None) -> torch.nn.Module:
    """The generator (class by ``arch``) or ``Discriminator`` ``kw`` describes, holding ``state``.

    Nothing is allocated until the file's tensors are known to back it: the network is
    checked and charged to ``budget`` (:func:`plan_network`), the tensors' geometry checked
    and counted against it (:func:`check_holds`); only then is it built and loaded strictly
    (names, dtypes, shapes, NaN/Inf). Returned in eval mode without gradients.

    Args:
        kind: ``"generator"`` or ``"discriminator"``.
        kw: its keyword arguments (``arch`` names a generator's class).
        where: where ``kw`` came from, for messages.
        state: ``{name: tensor}`` in faceedit's names, any floating dtype.
        budget: charged with the network's bytes.
        needed: :func:`plan_network`'s result when the caller planned already (not charged again).
        state_where: where ``state`` came from (default ``where``).
        names: the file's names of the settings, for messages (see :func:`check_architecture`).
    Raises:
        CheckpointError: a bad setting, tensors that do not match, NaN or Inf weights.
        CheckpointSizeError: over the budget, too few values, or a tensor spread over repeated storage.
    """
    state_where = state_where or where
    if needed is None:
        needed = plan_network(kind, kw, where, budget, names)
    check_holds(needed, count_values(state, state_where), state_where, kind)
    net = new_network(kind, kw, where)
    _strict_load(net, state, state_where)
    return net.eval().requires_grad_(False)


def _load_tensors(raw: bytes, where: str) -> dict:
    from safetensors import SafetensorError
    from safetensors.torch import load

    try:
        return load(raw)
    except (SafetensorError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{where} is not a valid safetensors file ({e}); the download may be "
                              f"truncated or the file corrupt") from e


def _strict_load(module: torch.nn.Module, state: dict, where: str) -> None:
    """Load ``state`` into ``module`` strictly: the same names, floating-point weights, the same
    shapes, finite values (each refused by name), every tensor's geometry checked first."""
    count_values(state, where)
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    extra = sorted(set(state) - set(own))
    if missing or extra:
        raise CheckpointError(f"{where}: tensors do not match the architecture in config.json "
                              f"(missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
                              f"unexpected {extra[:5]}{'...' if len(extra) > 5 else ''})")
    for k, v in state.items():
        if own[k].is_floating_point() and not v.is_floating_point():
            raise CheckpointError(f"{where}: tensor {k} has dtype {v.dtype}; the architecture needs floating-point "
                                  f"weights (the file is damaged or not a StyleGAN2 checkpoint)")
        if v.shape != own[k].shape:
            raise CheckpointError(f"{where}: tensor {k} has shape {tuple(v.shape)}, the architecture "
                                  f"needs {tuple(own[k].shape)}")
        if v.is_floating_point() and not torch.isfinite(v).all():
            raise CheckpointError(f"{where}: tensor {k} holds NaN or Inf; the checkpoint is damaged")
    module.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()}, strict=True)


def _held(header: dict, prefix: str) -> int:
    """Values the tensors named ``prefix...`` of a safetensors header hold."""
    return sum(math.prod(shape) for k, (shape, _) in header.items() if k.startswith(prefix))


def load_native(path, *, with_discriminator: bool = False, device=None,
                max_bytes: int | Budget | None = None) -> LoadedModel:
    """Load a native checkpoint.

    Sizes are checked before anything is read or built: the networks ``config.json``
    describes are sized from it and charged to the size budget, each safetensors header is
    read alone and checked against the file's declared size and against those networks, and
    only then is the file read and the network built.

    Args:
        path: a checkpoint folder or a ``.zip`` of one.
        with_discriminator: also load ``discriminator.safetensors`` (an error when there is none).
        device: where to put G (and D); ``None`` leaves them on the CPU.
        max_bytes: the size budget of this load (``None``: ``$FACEEDIT_MAX_CHECKPOINT_GIB``
            GiB, else 4 GiB; see :mod:`faceedit.checkpoints.budget`).
    Returns:
        A :class:`~faceedit.checkpoints.loaded.LoadedModel` (``G`` in eval mode, a
        ``Generator1`` when the config's ``arch`` is ``stylegan1``; ``D`` or ``None``; the
        config; the prior statistics; the sha256 of ``model.safetensors``), named by the
        config's ``name``, else the path's stem.
    Raises:
        CheckpointError: unreadable, damaged, or tensors that do not match the config.
        CheckpointSizeError: over the size budget (the message says how to raise it).
    """
    path = Path(path)
    budget = Budget.of(max_bytes, str(path))
    src = _Source(path)
    cfg = read_config(path)
    if not src.exists("model.safetensors"):
        raise CheckpointError(f"{path} has no model.safetensors")
    where_cfg, where_model, where_d = f"{path}/config.json", f"{path}/model.safetensors", \
        f"{path}/discriminator.safetensors"
    g_needed = plan_network("generator", cfg["generator"], where_cfg, budget)
    d_needed = None
    if with_discriminator:
        if cfg.get("discriminator") is None or not src.exists("discriminator.safetensors"):
            raise CheckpointError(f"{path} ships no discriminator; `--perceptual disc` and realism "
                                  f"scores need one (use --perceptual none)")
        d_needed = plan_network("discriminator", cfg["discriminator"], where_cfg, budget)
    check_holds(g_needed, _held(src.safetensors_header("model.safetensors"), "G_ema."), where_model)
    if d_needed is not None:
        check_holds(d_needed, _held(src.safetensors_header("discriminator.safetensors"), "D."), where_d,
                    "discriminator")
    raw = src.read("model.safetensors", budget)
    sha = hashlib.sha256(raw).hexdigest()
    tensors = _load_tensors(raw, where_model)
    del raw
    G = build_network("generator", cfg["generator"], where_cfg,
                      {k[6:]: v for k, v in tensors.items() if k.startswith("G_ema.")}, needed=g_needed,
                      state_where=where_model)
    prior = {k[6:]: v.float() for k, v in tensors.items() if k.startswith("prior.")}
    del tensors
    if src.exists("prior.safetensors"):
        src.safetensors_header("prior.safetensors")
        prior.update(_unpack_prior(_load_tensors(src.read("prior.safetensors", budget), f"{path}/prior.safetensors"),
                                   f"{path}/prior.safetensors"))
    D = None
    if d_needed is not None:
        dt = _load_tensors(src.read("discriminator.safetensors", budget), where_d)
        D = build_network("discriminator", cfg["discriminator"], where_cfg,
                          {k[2:]: v for k, v in dt.items() if k.startswith("D.")}, needed=d_needed, state_where=where_d)
    if device is not None:
        G.to(device)
        D = D.to(device) if D is not None else None
    return LoadedModel(G=G, D=D, config=cfg, prior=prior, sha256=sha, name=cfg.get("name") or path.stem,
                       source=path)


def model_safetensors_bytes(G: Generator | Generator1, dtype: torch.dtype = torch.float32) -> bytes:
    """The exact bytes :func:`save_native` writes as ``model.safetensors`` (its sha256 is the model id)."""
    from safetensors.torch import save

    cast = lambda t: (t.to(dtype) if t.is_floating_point() else t).detach().cpu().contiguous()  # noqa: E731
    return save({f"G_ema.{k}": cast(v) for k, v in G.state_dict().items()})


def prior_safetensors_bytes(prior: dict) -> bytes:
    """The bytes of ``prior.safetensors``: statistics stay fp32; a symmetric ``cov`` is
    stored as its packed upper triangle (``cov.triu``), which halves the W++ joint
    covariance (2560 x 2560) to 13 MB."""
    from safetensors.torch import save

    out = {}
    for k, v in prior.items():
        v = v.detach().float().cpu()
        if k == "cov" and v.ndim == 2 and v.shape[0] == v.shape[1]:
            i, j = torch.triu_indices(v.shape[0], v.shape[0])
            out["cov.triu"] = v[i, j].contiguous()
        else:
            out[k] = v.contiguous()
    return save(out)


def _unpack_prior(tensors: dict, where: str) -> dict:
    """Inverse of :func:`prior_safetensors_bytes`'s packing."""
    out = {k: v.float() for k, v in tensors.items() if k != "cov.triu"}
    if "cov.triu" in tensors:
        tri = tensors["cov.triu"].float()
        n = int(round(((8 * tri.numel() + 1) ** 0.5 - 1) / 2))
        if tri.ndim != 1 or n * (n + 1) // 2 != tri.numel():
            raise CheckpointError(f"{where}: cov.triu has {tri.numel()} values, not a triangle")
        cov = torch.zeros(n, n)
        i, j = torch.triu_indices(n, n)
        cov[i, j] = tri
        cov[j, i] = tri
        out["cov"] = cov
    return out


def save_native(path, G: Generator | Generator1, *, name: str, D: Discriminator | None = None,
                recipe: dict | None = None, license: str = "", provenance: dict | None = None,
                prior: dict | None = None, dtype: torch.dtype = torch.float32) -> Path:
    """Write a native checkpoint folder (atomically, file by file).

    ``dtype`` applies to floating-point weights (``torch.float16`` for shipped models). The
    generator table records ``G.arch`` unless it is ``stylegan2`` (the default when absent).
    """
    from safetensors.torch import save

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    cast = lambda t: (t.to(dtype) if t.is_floating_point() else t).detach().cpu().contiguous()  # noqa: E731
    atomic_write_bytes(path / "model.safetensors", model_safetensors_bytes(G, dtype))
    if prior:
        atomic_write_bytes(path / "prior.safetensors", prior_safetensors_bytes(prior))
    if D is not None:
        atomic_write_bytes(path / "discriminator.safetensors",
                           save({f"D.{k}": cast(v) for k, v in D.state_dict().items()}))
    arch = getattr(G, "arch", "stylegan2")
    gen = dict(G.config)
    if arch != "stylegan2":
        gen = {"arch": arch, **{k: v for k, v in gen.items() if k != "arch"}}
    cfg = {"format": FORMAT, "version": 1, "name": name, "generator": gen,
           "discriminator": None if D is None else D.config, "recipe": recipe,
           "license": license, "provenance": provenance or {}}
    atomic_write_text(path / "config.json", json.dumps(cfg, indent=2))
    return path


def folder_to_zip_bytes(folder) -> bytes:
    """Zip a checkpoint folder into memory (for ``faceedit convert OUT.zip``)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        for p in sorted(Path(folder).iterdir()):
            if p.is_file():
                z.write(p, p.name)
    return buf.getvalue()
