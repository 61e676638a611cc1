"""faceedit's native checkpoint format.

A checkpoint is a folder (or a ``.zip`` of one) holding:

* ``config.json``: ``{"format": "faceedit.checkpoint", "version": 1, "name": ...,
  "generator": {Generator kwargs}, "discriminator": {Discriminator kwargs} | null,
  "recipe": {AlignmentRecipe}, "license": ..., "provenance": {...}}``;
* ``model.safetensors``: ``G_ema.*`` parameters and buffers (``w_avg`` included) and,
  optionally, ``prior.*`` statistics of the Gaussianized prior;
* ``discriminator.safetensors`` (optional): ``D.*``.

Nothing in a native checkpoint is executable; reading it never runs code.
"""
from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path

import torch

from faceedit.networks import Discriminator, Generator

from .atomic import atomic_write_bytes, atomic_write_text

FORMAT = "faceedit.checkpoint"
MAX_CONFIG_BYTES = 1 << 20


class CheckpointError(ValueError):
    """A checkpoint that cannot be read safely or does not describe a usable model."""


def sha256_file(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class _Source:
    """Uniform read access to a checkpoint folder or zip, refusing path tricks."""

    def __init__(self, path: Path):
        self.path = path
        self.zip = None
        if path.is_file():
            if not zipfile.is_zipfile(path):
                raise CheckpointError(f"{path} is neither a checkpoint folder nor a zip of one; "
                                      f"convert other formats with `faceedit convert {path} OUT`")
            self.zip = zipfile.ZipFile(path)
            names = self.zip.namelist()
            for n in names:
                if n.startswith("/") or ".." in Path(n).parts:
                    raise CheckpointError(f"{path}: zip entry {n!r} points outside the archive; refused")
            roots = {n.split("/")[0] for n in names if "/" in n}
            self.prefix = "" if "config.json" in names else (f"{roots.pop()}/" if len(roots) == 1 else "")
        elif not path.is_dir():
            raise CheckpointError(f"checkpoint {path} does not exist; `faceedit models` lists known names")

    def exists(self, name: str) -> bool:
        if self.zip is not None:
            return self.prefix + name in self.zip.namelist()
        return (self.path / name).is_file()

    def read(self, name: str, limit: int | None = None) -> bytes:
        if self.zip is not None:
            info = self.zip.getinfo(self.prefix + name)
            if limit is not None and info.file_size > limit:
                raise CheckpointError(f"{self.path}: {name} is {info.file_size} bytes, over {limit}")
            return self.zip.read(info)
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
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}/config.json is not valid JSON: {e}") from e
    if not isinstance(cfg, dict) or cfg.get("format") != FORMAT:
        raise CheckpointError(f"{path}/config.json is not a faceedit checkpoint config "
                              f"(expected format {FORMAT!r})")
    gen = cfg.get("generator")
    if not isinstance(gen, dict):
        raise CheckpointError(f"{path}/config.json has no 'generator' architecture table")
    allowed = set(Generator.__init__.__code__.co_varnames[1:Generator.__init__.__code__.co_argcount])
    unknown = set(gen) - allowed
    if unknown:
        raise CheckpointError(f"{path}/config.json: unknown generator settings {sorted(unknown)}")
    for k, v in gen.items():
        if not isinstance(v, (int, float, str)) or isinstance(v, bool):
            raise CheckpointError(f"{path}/config.json: generator setting {k!r} has a bad value {v!r}")
    return cfg


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
        if v.shape != own[k].shape:
            raise CheckpointError(f"{where}: tensor {k} has shape {tuple(v.shape)}, the architecture "
                                  f"needs {tuple(own[k].shape)}")
        if not torch.isfinite(v.float()).all():
            raise CheckpointError(f"{where}: tensor {k} holds NaN or Inf; the checkpoint is damaged")
    module.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()}, strict=True)


def load_native(path, *, with_discriminator: bool = False, device=None) -> dict:
    """Load a native checkpoint.

    Returns:
        ``{"G": Generator (eval mode), "D": Discriminator | None, "config": dict,
        "prior": {name: tensor}, "sha256": hex of model.safetensors}``.
    """
    path = Path(path)
    src = _Source(path)
    cfg = read_config(path)
    if not src.exists("model.safetensors"):
        raise CheckpointError(f"{path} has no model.safetensors")
    raw = src.read("model.safetensors")
    sha = hashlib.sha256(raw).hexdigest()
    tensors = _load_tensors(raw, f"{path}/model.safetensors")
    G = Generator(**cfg["generator"])
    _strict_load(G, {k[6:]: v for k, v in tensors.items() if k.startswith("G_ema.")}, f"{path}/model.safetensors")
    prior = {k[6:]: v.float() for k, v in tensors.items() if k.startswith("prior.")}
    D = None
    if with_discriminator:
        if cfg.get("discriminator") is None or not src.exists("discriminator.safetensors"):
            raise CheckpointError(f"{path} ships no discriminator; `--perceptual disc` and realism "
                                  f"scores need one (use --perceptual none)")
        D = Discriminator(**cfg["discriminator"])
        dt = _load_tensors(src.read("discriminator.safetensors"), f"{path}/discriminator.safetensors")
        _strict_load(D, {k[2:]: v for k, v in dt.items() if k.startswith("D.")}, f"{path}/discriminator.safetensors")
        D.eval().requires_grad_(False)
    G.eval().requires_grad_(False)
    if device is not None:
        G.to(device)
        D = D.to(device) if D is not None else None
    return {"G": G, "D": D, "config": cfg, "prior": prior, "sha256": sha}


def save_native(path, G: Generator, *, name: str, D: Discriminator | None = None, recipe: dict | None = None,
                license: str = "", provenance: dict | None = None, prior: dict | None = None,
                dtype: torch.dtype = torch.float32) -> Path:
    """Write a native checkpoint folder (atomically, file by file).

    ``dtype`` applies to floating-point weights (``torch.float16`` for shipped models).
    """
    from safetensors.torch import save

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    cast = lambda t: (t.to(dtype) if t.is_floating_point() else t).detach().cpu().contiguous()  # noqa: E731
    tensors = {f"G_ema.{k}": cast(v) for k, v in G.state_dict().items()}
    for k, v in (prior or {}).items():
        tensors[f"prior.{k}"] = v.detach().float().cpu().contiguous()  # statistics stay fp32
    atomic_write_bytes(path / "model.safetensors", save(tensors))
    if D is not None:
        atomic_write_bytes(path / "discriminator.safetensors",
                           save({f"D.{k}": cast(v) for k, v in D.state_dict().items()}))
    cfg = {"format": FORMAT, "version": 1, "name": name, "generator": G.config,
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
