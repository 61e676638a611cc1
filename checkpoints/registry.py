"""The model registry: named models, where their files are, and how to load them.

Weight files are looked up in the package (shipped defaults, ``checkpoints/weights/``),
then in the cache: ``$FACEEDIT_HOME``, else ``$XDG_CACHE_HOME/faceedit``, else
``~/.cache/faceedit``.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from faceedit.core.errors import CheckpointError
from faceedit.core.files import sha256_file

from .loaded import LoadedModel
from .native import load_native

log = logging.getLogger(__name__)

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


@dataclass(frozen=True)
class ModelEntry:
    """One registry row."""

    name: str
    resolution: int
    spaces: tuple
    license: str
    source: str                      # where it came from (a URL, or "shipped")
    filename: str                    # folder (native) or file (.pkl/.pt) name
    mapping_kind: str = "mlp"
    sha256: str = ""                 # a native folder: its model.safetensors; a download: the file; "" if unknown
    description: str = ""
    default_for: tuple = field(default_factory=tuple)  # spaces this model is the default for


REGISTRY = {e.name: e for e in [
    ModelEntry("faces64", 64, ("w", "w+"), "non-commercial research (UTKFace, CelebA)", "shipped",
               "faces64", "mlp", sha256="cd361065a9fc8904cea08d191e18658d1a0d7056a8cc4aabd480fd8a4bb7e891",
               description="faceedit's own 64 px StyleGAN2 (MLP mapping), trained on the train split of UTKFace + "
               "CelebA", default_for=("w", "w+")),
    ModelEntry("faces64-wpp", 64, ("w+", "wpp", "wpp-z"), "non-commercial research (UTKFace, CelebA)",
               "shipped", "faces64-wpp", "transformer",
               sha256="d2a054e55c4c71f29f93dc780b62e7a6a76c391e4102e99a18dc1ab899f38120",
               description="faceedit's own 64 px StyleGAN2 with TransStyleGAN's transformer mapping (W++)",
               default_for=("wpp", "wpp-z")),
    ModelEntry("faces64-sg1", 64, ("w", "w+"), "non-commercial research (UTKFace, CelebA)", "shipped",
               "faces64-sg1", "mlp", sha256="baa51f534719d67ac201d69b8796f9fa31ca2515c3dee079f25b6854f4389972",
               description="a 64 px StyleGAN v1 trained here for 6.3 GPU-minutes: a test model of the v1 "
               "architecture, not a default"),
    ModelEntry("stylegan2-ffhq-1024", 1024, ("w", "w+"), "NVIDIA Source Code License-NC",
               "https://api.ngc.nvidia.com/v2/models/nvidia/research/stylegan2/versions/1/files/"
               "stylegan2-ffhq-1024x1024.pkl", "stylegan2-ffhq-1024x1024.pkl", "mlp",
               description="NVIDIA's official StyleGAN2 FFHQ (config-f), stylegan2-ada-pytorch pickle"),
    ModelEntry("stylegan2-ffhq-256", 256, ("w", "w+"), "NVIDIA Source Code License-NC",
               "https://api.ngc.nvidia.com/v2/models/nvidia/research/stylegan2/versions/1/files/"
               "stylegan2-ffhq-256x256.pkl", "stylegan2-ffhq-256x256.pkl", "mlp",
               description="NVIDIA's StyleGAN2 FFHQ at 256 px"),
    ModelEntry("rosinality-ffhq-1024", 1024, ("w", "w+"), "NVIDIA Source Code License-NC (converted weights)",
               "https://github.com/rosinality/stylegan2-pytorch (converted official weights)",
               "stylegan2-ffhq-config-f.pt", "mlp", description="rosinality's conversion of the FFHQ model"),
]}


def cache_dir() -> Path:
    if os.environ.get("FACEEDIT_HOME"):
        return Path(os.environ["FACEEDIT_HOME"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "faceedit"


def adopted_dir(name: str) -> Path:
    """Where ``faceedit adopt --name NAME`` registers a model: ``cache_dir()/models/NAME``."""
    return cache_dir() / "models" / str(name)


def adopted_models() -> list:
    """Entries of the models adopted into the cache (``faceedit adopt``), with their folders."""
    from .native import read_config

    root = cache_dir() / "models"
    out = []
    for p in sorted(root.iterdir()) if root.is_dir() else ():
        if p.name.startswith(".") or not (p / "config.json").is_file():
            continue
        try:
            cfg = read_config(p)
        except CheckpointError as e:
            log.warning("adopted model %s is not listed: %s", p, e)
            continue
        g = cfg.get("generator") or {}
        kind = g.get("mapping_kind", "mlp")
        out.append((ModelEntry(p.name, int(g.get("resolution", 0)), ("w+", "wpp", "wpp-z") if kind == "transformer"
                               else ("w", "w+"), cfg.get("license", ""), "adopted", p.name, kind,
                               description="adopted with `faceedit adopt`"), p))
    return out


def list_models() -> list:
    """Registry entries with where their files are (``None`` if not on this machine), then adopted models."""
    return [(e, locate(e.name)) for e in REGISTRY.values()] + adopted_models()


def locate(name: str) -> Path | None:
    """Path of a registered model's files, or ``None`` if not present."""
    e = REGISTRY[name]
    for base in (WEIGHTS_DIR, cache_dir()):
        p = base / e.filename
        if p.exists():
            return p
    return None


def default_model(space: str) -> str:
    for e in REGISTRY.values():
        if space in e.default_for:
            return e.name
    raise CheckpointError(f"no default model for space {space!r}")


def models_with_mapping(kind: str) -> list:
    return [e.name for e in REGISTRY.values() if e.mapping_kind == kind]


def resolve(name_or_path) -> tuple:
    """Turn a registry name or a path into ``(path, registry_name_or_None)``."""
    s = str(name_or_path)
    if s in REGISTRY:
        p = locate(s)
        if p is None:
            e = REGISTRY[s]
            raise CheckpointError(
                f"model {s!r} is not on this machine. Download it with `faceedit download {s}` "
                f"(from {e.source}) or place {e.filename} in {cache_dir()}")
        return p, s
    if s and "/" not in s and "\\" not in s and (adopted_dir(s) / "config.json").is_file():
        return adopted_dir(s), None
    p = Path(s).expanduser()
    if not p.exists():
        raise CheckpointError(f"{s!r} is neither a known model name ({', '.join(REGISTRY)}) nor an existing "
                              f"path; `faceedit models` lists what is available")
    return p, None


def load_model(name_or_path, *, device=None, with_discriminator: bool = False,
               max_bytes: int | None = None) -> LoadedModel:
    """Resolve a registry name or a path and load the checkpoint (native folder/zip, NVIDIA
    ``.pkl``, rosinality ``.pt``, NVIDIA TensorFlow ``.pkl``): the one place a model name is resolved.

    Args:
        name_or_path: a registry name, an adopted model's name, or a checkpoint path.
        device: where to put G (and D); ``None`` leaves them on the CPU.
        with_discriminator: also load the discriminator (an error when the file has none).
        max_bytes: the size budget of the load: what the file's declared tensors and the
            networks it describes may take (``None``: ``$FACEEDIT_MAX_CHECKPOINT_GIB`` GiB,
            else 4 GiB; see :mod:`faceedit.checkpoints.budget`). Checked before anything is
            read or built.
    Returns:
        A :class:`LoadedModel` named by the registry name when there is one.
    Raises:
        CheckpointError: unknown name, missing file, unreadable or unsafe checkpoint, or no
            discriminator when one was asked for.
        CheckpointSizeError: (a ``CheckpointError``) the file declares more than ``max_bytes``.
    """
    path, reg = resolve(name_or_path)
    suffix = path.suffix.lower()
    if suffix in (".pkl", ".pt", ".pth"):
        from .convert import convert_to_native_in_memory

        out = convert_to_native_in_memory(path, max_bytes=max_bytes)
        if device is not None:
            out.to(device)
        if with_discriminator and out.D is None:
            why = (out.config.get("provenance") or {}).get("discriminator") or "none in the file"
            raise CheckpointError(f"{path} holds no discriminator faceedit can use ({why})")
    else:
        out = load_native(path, with_discriminator=with_discriminator, device=device, max_bytes=max_bytes)
    return replace(out, name=reg or out.name, source=path)


def load_generator(name_or_path, device=None):
    """The generator module of :func:`load_model` (``mapping``, ``synthesis``, ``num_ws``,
    ``w_dim``, ``resolution``, ``mapping_kind``); its model id and recipe are on the
    :class:`LoadedModel`, so use :func:`load_model` when a latent or an alignment needs them."""
    return load_model(name_or_path, device=device).G


__all__ = ["REGISTRY", "ModelEntry", "LoadedModel", "list_models", "locate", "resolve", "load_model", "load_generator",
           "default_model", "cache_dir", "sha256_file", "models_with_mapping", "adopted_dir", "adopted_models"]
