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
import zipfile
import zlib
from pathlib import Path

import torch

from faceedit.core.errors import CheckpointError
from faceedit.core.files import atomic_write_bytes, atomic_write_text
from faceedit.networks import GENERATORS, Discriminator, Generator, Generator1

from .loaded import LoadedModel

FORMAT = "faceedit.checkpoint"
MAX_CONFIG_BYTES = 1 << 20
MAX_WEIGHTS_BYTES = 4 << 30       # a 1024 px StyleGAN2 in fp32 is ~130 MB
MAX_PARAMETERS = 1_000_000_000    # refuse architectures that would allocate more (a 1024 px G: ~30M)




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

    def read(self, name: str, limit: int | None = -1) -> bytes:
        """The bytes of ``name``; ``limit`` bounds the size (``-1``: ``MAX_WEIGHTS_BYTES``, ``None``: none)."""
        limit = MAX_WEIGHTS_BYTES if limit == -1 else limit
        if self.zip is not None:
            info = self.zip.getinfo(self.prefix + name)
            if limit is not None and info.file_size > limit:
                raise CheckpointError(f"{self.path}: {name} is {info.file_size} bytes, over {limit}")
            try:  # zipfile stops at the declared size, so a deflate bomb cannot exceed the limit
                return self.zip.read(info)
            except (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError, RuntimeError) as e:
                raise CheckpointError(f"{self.path}: {name} cannot be read from the zip ({e}); the archive is "
                                      f"damaged, encrypted or uses an unsupported compression") from e
        p = self.path / name
        if limit is not None and p.stat().st_size > limit:
            raise CheckpointError(f"{p} is {p.stat().st_size} bytes, over the {limit}-byte limit")
        return p.read_bytes()


def read_config(path) -> dict:
    """Read and validate ``config.json`` of a native checkpoint."""
    src = _Source(Path(path))
    if not src.exists("config.json"):
        raise CheckpointError(f"{path} has no config.json; it is not a faceedit checkpoint "
                              f"(convert .pkl/.pt files with `faceedit convert`)")
    return _parse_config(src.read("config.json", MAX_CONFIG_BYTES), path)


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


def check_architecture(kind: str, kw: dict, where: str) -> None:
    """Validate ``Generator``/``Discriminator`` keyword arguments read from a file *before* building.

    A hostile or damaged config must not make faceedit allocate terabytes or hang, so every
    setting is type- and range-checked and the parameter count is estimated from the
    channel table (cheap) and bounded by ``MAX_PARAMETERS``.

    Raises:
        CheckpointError: unknown setting, wrong type, out of range, or too large a network.
    """
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
            raise CheckpointError(f"{where}: {kind} setting {k!r} = {v!r} is not valid (expected "
                                  f"{'an integer' if types is int else 'a number'} in {lo}..{hi}); the file is "
                                  f"damaged or not a faceedit checkpoint")
    res = kw.get("resolution", 1024 if kind == "generator" else None)
    if res is None or res & (res - 1):
        raise CheckpointError(f"{where}: {kind} resolution {res!r} is not a power of two in 16..1024")
    default = {k: p.default for k, p in inspect.signature(cls).parameters.items()}
    base, cmax = kw.get("channel_base", default["channel_base"]), kw.get("channel_max", default["channel_max"])
    ch = [min(base // 2 ** i, cmax) for i in range(2, int(math.log2(res)) + 1)]
    if min(ch) < 1:
        raise CheckpointError(f"{where}: channel_base={base} leaves layers with no channels at {res} px")
    w = kw.get("w_dim", 512) if kind == "generator" else 0
    convs = sum(9 * a * b for a, b in zip([ch[0]] + ch, ch + ch[1:])) + sum(w * c for c in ch) * 3
    mapping = kw.get("mapping_layers", 8) * w * w + kw.get("mapping_blocks", 4) * 12 * w * w
    if convs + mapping > MAX_PARAMETERS:
        raise CheckpointError(f"{where}: the {kind} described would have about {(convs + mapping) / 1e9:.1f} "
                              f"billion parameters (limit {MAX_PARAMETERS / 1e9:.0f}); refused")


def build_network(kind: str, kw: dict, where: str):
    """The generator (class by ``arch``) or ``Discriminator`` from file data, checked first
    (see :func:`check_architecture`)."""
    check_architecture(kind, kw, where)
    cls = _network_class(kind, kw, where)
    try:
        return cls(**{k: v for k, v in kw.items() if k != "arch"})
    except (TypeError, ValueError, RuntimeError, ZeroDivisionError) as e:
        raise CheckpointError(f"{where}: cannot build the {kind} it describes ({e})") from e


def _load_tensors(raw: bytes, where: str) -> dict:
    from safetensors import SafetensorError
    from safetensors.torch import load

    try:
        return load(raw)
    except (SafetensorError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{where} is not a valid safetensors file ({e}); the download may be "
                              f"truncated or the file corrupt") from e


def _strict_load(module: torch.nn.Module, state: dict, where: str) -> None:
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    extra = sorted(set(state) - set(own))
    if missing or extra:
        raise CheckpointError(f"{where}: tensors do not match the architecture in config.json "
                              f"(missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
                              f"unexpected {extra[:5]}{'...' if len(extra) > 5 else ''})")
    for k, v in state.items():
        if not isinstance(v, torch.Tensor):
            raise CheckpointError(f"{where}: {k} is a {type(v).__name__}, not a tensor")
        if own[k].is_floating_point() and not v.is_floating_point():
            raise CheckpointError(f"{where}: tensor {k} has dtype {v.dtype}; the architecture needs floating-point "
                                  f"weights (the file is damaged or not a StyleGAN2 checkpoint)")
        if v.shape != own[k].shape:
            raise CheckpointError(f"{where}: tensor {k} has shape {tuple(v.shape)}, the architecture "
                                  f"needs {tuple(own[k].shape)}")
        if not torch.isfinite(v.float()).all():
            raise CheckpointError(f"{where}: tensor {k} holds NaN or Inf; the checkpoint is damaged")
    module.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()}, strict=True)


def load_native(path, *, with_discriminator: bool = False, device=None) -> LoadedModel:
    """Load a native checkpoint.

    Returns:
        A :class:`~faceedit.checkpoints.loaded.LoadedModel` (``G`` in eval mode, a
        ``Generator1`` when the config's ``arch`` is ``stylegan1``; ``D`` or ``None``; the
        config; the prior statistics; the sha256 of ``model.safetensors``), named by the
        config's ``name``, else the path's stem.
    """
    path = Path(path)
    src = _Source(path)
    cfg = read_config(path)
    if not src.exists("model.safetensors"):
        raise CheckpointError(f"{path} has no model.safetensors")
    raw = src.read("model.safetensors")
    sha = hashlib.sha256(raw).hexdigest()
    tensors = _load_tensors(raw, f"{path}/model.safetensors")
    G = build_network("generator", cfg["generator"], f"{path}/config.json")
    _strict_load(G, {k[6:]: v for k, v in tensors.items() if k.startswith("G_ema.")}, f"{path}/model.safetensors")
    prior = {k[6:]: v.float() for k, v in tensors.items() if k.startswith("prior.")}
    if src.exists("prior.safetensors"):
        prior.update(_unpack_prior(_load_tensors(src.read("prior.safetensors"), f"{path}/prior.safetensors"),
                                   f"{path}/prior.safetensors"))
    D = None
    if with_discriminator:
        if cfg.get("discriminator") is None or not src.exists("discriminator.safetensors"):
            raise CheckpointError(f"{path} ships no discriminator; `--perceptual disc` and realism "
                                  f"scores need one (use --perceptual none)")
        D = build_network("discriminator", cfg["discriminator"], f"{path}/config.json")
        dt = _load_tensors(src.read("discriminator.safetensors"), f"{path}/discriminator.safetensors")
        _strict_load(D, {k[2:]: v for k, v in dt.items() if k.startswith("D.")}, f"{path}/discriminator.safetensors")
        D.eval().requires_grad_(False)
    G.eval().requires_grad_(False)
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
