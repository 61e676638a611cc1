"""Encoder inversion: load a model's shipped encoder and map aligned faces to a ``Latent`` in one pass.

Files (written by ``faceedit train-encoder``):
``encoder_<tag>.safetensors`` and ``encoder_<tag>.json`` in the model's folder, with
``<tag>`` = ``w``, ``wplus`` (for W+) or ``wpp``. The JSON names the architecture
(``networks.encoder.Encoder`` kwargs) and the sha256 of the generator it was trained
for; loading refuses an encoder trained for another generator, since its codes would be
meaningless there.

Which encoder serves which space (first found wins):

=========  ===============================================================
space      encoder used
=========  ===============================================================
``w``      ``w``; else ``w+`` with its codes averaged over layers
``w+``     ``w+``; else ``w`` (its broadcast code is a W+ point)
``wpp``    ``wpp``
``wpp-z``  none (the encoder predicts codes, not z): use ``wpp``
=========  ===============================================================
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import torch

from faceedit.core.device import resolve_device
from faceedit.checkpoints.loaded import LoadedModel
from faceedit.core.errors import InversionError
from faceedit.networks.encoder import ENCODER_SPACES, Encoder

from .latent import Latent
from .spaces import check_space

log = logging.getLogger(__name__)

ENCODER_FORMAT = "faceedit.encoder"
_TAG = {"w": "w", "w+": "wplus", "wpp": "wpp"}
_SERVES = {"w": ("w", "w+"), "w+": ("w+", "w"), "wpp": ("wpp",), "wpp-z": ()}
_MAX_JSON = 1 << 20


class EncoderError(InversionError):
    """No usable encoder for a model and space (names how to get one)."""


def encoder_files(folder, space: str) -> tuple:
    """``(weights, json)`` paths of the ``space`` encoder inside a model folder."""
    if space not in _TAG:
        raise InversionError(f"encoders exist for spaces {', '.join(_TAG)}, not {space!r}")
    folder = Path(folder)
    return folder / f"encoder_{_TAG[space]}.safetensors", folder / f"encoder_{_TAG[space]}.json"


def _model_folder(model) -> Path | None:
    """Folder of a model (registry name, path or ``LoadedModel``), or None (zip, pickle, G only)."""
    if model is None:
        return None
    if isinstance(model, LoadedModel):
        p = model.source
    else:
        from faceedit.checkpoints.registry import resolve

        try:
            p, _ = resolve(model)
        except ValueError:
            return None
    p = Path(p) if p is not None else None
    return p if p is not None and p.is_dir() else None


def find_encoder(model, space: str):
    """The encoder file serving ``space`` for ``model``: ``(weights_path, encoder_space)`` or None."""
    folder = _model_folder(model)
    if folder is None:
        return None
    for s in _SERVES.get(space, ()):
        wpath, jpath = encoder_files(folder, s)
        if wpath.is_file() and jpath.is_file():
            return wpath, s
    return None


def has_encoder(model, space: str) -> bool:
    """True when ``model`` ships an encoder that serves ``space`` (see the module table)."""
    return find_encoder(model, space) is not None


def read_encoder_config(json_path) -> dict:
    """Read and validate an encoder's JSON (architecture kwargs, generator sha256)."""
    json_path = Path(json_path)
    if json_path.stat().st_size > _MAX_JSON:
        raise EncoderError(f"{json_path} is too large for an encoder description")
    try:
        cfg = json.loads(json_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise EncoderError(f"{json_path} is not valid JSON ({e}); re-export the encoder with "
                           f"`faceedit train-encoder`") from e
    if not isinstance(cfg, dict) or cfg.get("format") != ENCODER_FORMAT or not isinstance(cfg.get("encoder"), dict):
        raise EncoderError(f"{json_path} is not a faceedit encoder description (format {ENCODER_FORMAT!r})")
    code = Encoder.__init__.__code__
    allowed = set(code.co_varnames[1:code.co_argcount])
    kw = cfg["encoder"]
    bad = [k for k, v in kw.items() if k not in allowed or isinstance(v, bool)
           or not isinstance(v, (int, float, str))]
    if bad:
        raise EncoderError(f"{json_path}: unknown or malformed encoder settings {sorted(bad)}")
    if kw.get("space") not in ENCODER_SPACES:
        raise EncoderError(f"{json_path}: encoder space {kw.get('space')!r} is not one of {ENCODER_SPACES}")
    return cfg


def load_encoder(path, *, G=None, model_sha256: str | None = None, device=None) -> Encoder:
    """Load an encoder from its ``.safetensors`` file (the ``.json`` beside it describes it).

    Args:
        path: ``encoder_<tag>.safetensors``.
        G: the generator it will be used with (shape check).
        model_sha256: sha256 of that generator's ``model.safetensors``; the encoder must have
            been trained for it.
    Raises:
        EncoderError: missing/foreign/damaged files, or an encoder trained for another generator.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    jpath = path.with_suffix(".json")
    if not path.is_file() or not jpath.is_file():
        raise EncoderError(f"encoder files {path} and {jpath.name} are not both there; train one with "
                           f"`faceedit train-encoder --model MODEL --space SPACE --out FOLDER`")
    cfg = read_encoder_config(jpath)
    if model_sha256 is not None and cfg.get("model_sha256") not in (None, model_sha256):
        raise EncoderError(f"{path} was trained for generator {cfg.get('model_id')!r} (sha256 "
                           f"{str(cfg.get('model_sha256'))[:12]}), not this one ({model_sha256[:12]}); "
                           f"retrain it with `faceedit train-encoder` or use --method optim")
    E = Encoder(**cfg["encoder"])
    if G is not None and (E.num_ws, E.w_dim) != (G.num_ws, G.w_dim):
        raise EncoderError(f"{path} predicts {E.num_ws} codes of {E.w_dim} dims; this generator needs "
                           f"{G.num_ws} of {G.w_dim}")
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise EncoderError(f"{path} is not a valid safetensors file ({e})") from e
    own = E.state_dict()
    if set(state) != set(own) or any(state[k].shape != own[k].shape for k in own):
        raise EncoderError(f"{path}: tensors do not match the architecture in {jpath.name}; the files are "
                           f"from different runs or damaged")
    for k, v in state.items():
        if not torch.isfinite(v.float()).all():
            raise EncoderError(f"{path}: tensor {k} holds NaN or Inf; the encoder is damaged")
    E.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    E.eval().requires_grad_(False)
    E.model_id = cfg.get("model_id")
    return E.to(device) if device is not None else E


def encoder_for(model, space: str, *, G=None, device=None, model_sha256: str | None = None):
    """The encoder serving ``space`` for ``model``: ``(Encoder, encoder_space)``.

    Raises:
        EncoderError: the model ships none (names ``faceedit train-encoder`` and ``--method optim``).
    """
    found = find_encoder(model, space)
    if found is None:
        hint = " (encoders predict codes, not z: use --space wpp)" if space == "wpp-z" else ""
        raise EncoderError(f"no encoder for space {space!r} ships with this model{hint}; train one with "
                           f"`faceedit train-encoder --space {space if space != 'wpp-z' else 'wpp'}` and copy "
                           f"its files into the model folder, or use --method optim")
    if model_sha256 is None and isinstance(model, LoadedModel):
        model_sha256 = model.sha256
    return load_encoder(found[0], G=G, model_sha256=model_sha256, device=device), found[1]


def _adapt_codes(codes: torch.Tensor, encoder_space: str, space: str) -> torch.Tensor:
    if space == "w" and encoder_space != "w":
        return codes.mean(dim=1, keepdim=True).expand_as(codes).contiguous()
    return codes


@torch.no_grad()
def encode_tensor(E: Encoder, target: torch.Tensor, *, batch_size: int = 32, amp: bool | None = None) -> torch.Tensor:
    """Codes ``[B, num_ws, w_dim]`` of images ``[B, 3, R, R]`` in [-1, 1] (resized to the encoder's input)."""
    dev = next(E.parameters()).device
    amp = (dev.type == "cuda") if amp is None else amp
    out = []
    for x in target.split(batch_size):
        x = x.to(dev, torch.float32)
        if x.shape[-1] != E.resolution:
            x = torch.nn.functional.interpolate(x, size=(E.resolution, E.resolution), mode="bilinear",
                                                antialias=True, align_corners=False)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
            out.append(E(x).float())
    return torch.cat(out)


def encode(images, model=None, space: str = "w+", *, G=None, encoder: Encoder | str | None = None,
           device=None, batch_size: int = 32) -> Latent:
    """Invert aligned face(s) with the model's encoder: one forward pass, no optimisation.

    Args:
        images: as :func:`faceedit.inversion.invert` (AlignedFace, aligned crop(s), or a
            tensor ``[B, 3, H, W]`` in [-1, 1]).
        model: registry name, checkpoint folder or ``LoadedModel`` (default: the registry's
            default model for ``space``).
        space: ``w``, ``w+`` or ``wpp``.
        G: an already loaded generator (needs ``model`` or ``encoder`` to find the encoder).
        encoder: an :class:`Encoder`, or the path of an ``encoder_*.safetensors`` file (default:
            the one the model ships).
    Returns:
        A :class:`Latent` with ``meta['method'] == 'encoder'`` and per-image reconstruction MSE.
    """
    from .projector import _to_batch

    G, mdict, model_id = _load(model, space, G, device)
    space = check_space(G, space)
    dev = G.synthesis.const.device
    E, espace = _resolve_encoder(encoder, mdict if mdict is not None else model, space, G, dev)
    target, faces = _to_batch(images, G.resolution, dev)
    t0 = time.perf_counter()
    codes = _adapt_codes(encode_tensor(E.to(dev), target, batch_size=batch_size), espace, space)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    seconds = time.perf_counter() - t0
    with torch.no_grad():
        mse = torch.cat([(G.synthesis(c, noise_mode="const") - t).square().flatten(1).mean(1)
                         for c, t in zip(codes.split(batch_size), target.split(batch_size))])
    meta = {"method": "encoder", "space": space, "encoder_space": espace, "seconds": seconds,
            "losses": {"mse": mse.float().cpu().tolist()}, "steps": 0}
    if mdict is not None:
        meta["model_sha256"] = mdict.sha256
    if any(f is not None for f in faces):
        meta["faces"] = [None if f is None else f.metadata() for f in faces]
    return Latent(space=space, codes=codes.cpu(), model_id=model_id, meta=meta,
                  arch=getattr(G, "arch", "stylegan2"))


def _load(model, space, G, device):
    """``(G, LoadedModel or None, model_id)``."""
    if G is not None:
        if isinstance(model, LoadedModel):
            return G, model, model.model_id
        return G, None, getattr(G, "model_id", "unknown")
    from faceedit.checkpoints.registry import default_model, load_model

    device = resolve_device(device)
    if isinstance(model, LoadedModel):
        mdict = model
    else:
        name = model if model is not None else default_model("wpp" if str(space).startswith("wpp") else space)
        mdict = load_model(name, device=device)
    return mdict.G.to(device), mdict, mdict.model_id


def _resolve_encoder(encoder, model, space, G, dev):
    if isinstance(encoder, Encoder):
        if encoder.space == "wpp" and space != "wpp" or space == "wpp" and encoder.space != "wpp":
            raise EncoderError(f"a {encoder.space!r} encoder cannot serve space {space!r}")
        return encoder.to(dev).eval(), encoder.space
    sha = model.sha256 if isinstance(model, LoadedModel) else None
    if encoder is not None:
        E = load_encoder(encoder, G=G, model_sha256=sha, device=dev)
        if E.space not in _SERVES.get(space, ()):
            raise EncoderError(f"{encoder} is a {E.space!r} encoder; it cannot serve space {space!r}")
        return E, E.space
    if model is None:
        raise EncoderError("encoding with a bare G needs model= (its folder holds the encoder) or encoder=")
    return encoder_for(model, space, G=G, device=dev, model_sha256=sha)


__all__ = ["Encoder", "EncoderError", "encode", "encode_tensor", "encoder_for", "encoder_files", "find_encoder",
           "has_encoder", "load_encoder", "read_encoder_config"]
