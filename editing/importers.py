"""Import direction files made by other tools, so they are used like faceedit's own.

Formats (told from the file's bytes, not its name):

* ``interfacegan-npy``: an InterFaceGAN boundary, a ``.npy`` array ``[1, w_dim]`` or
  ``[w_dim]`` (genforce names them ``stylegan_ffhq_smile_w_boundary.npy``); a per-layer
  boundary ``[num_ws, w_dim]`` (or ``[1, num_ws, w_dim]``, ``[num_ws * w_dim]``) becomes a
  ``w+`` direction. Read with ``allow_pickle=False``.
* ``e4e-pt``: a tensor saved with ``torch.save`` (the e4e / pSp
  ``editings/interfacegan_directions/*.pt`` files, ``[1, w_dim]`` or ``[w_dim]``). Read with
  ``torch.load(weights_only=True)``, which refuses any pickled object that is not a tensor.
* ``ganspace-npz``: a GANSpace PCA file, ``.npz`` with ``lat_comp`` ``[k, 1, w_dim]`` (the
  components), ``lat_mean`` and the components' standard deviations (``lat_stdev``; ``lat_std``
  is accepted too). Each component becomes a ``ganspace`` direction (``pc<i>``, or
  ``--attr`` for a single chosen component). Read with ``allow_pickle=False``.

Every vector is checked against the model's ``w_dim`` (and ``num_ws`` for per-layer ones),
refused when it holds NaN/Inf or is zero, and normalised. Strength 1 (``std`` units) is
measured on the model's own mapping samples. Where it came from (path, sha256, format,
whether the attribute was guessed from the name) is kept in the Direction's ``meta``,
and the file is saved where the model's directions live
(``cache_dir()/directions/<model>/``), named ``<model>_<attr>_<space>..._import-<sha8>``
so that it never replaces a fitted direction.
"""
from __future__ import annotations

import hashlib
import io
import logging
import pickle
import re
import zipfile
from pathlib import Path

import numpy as np
import torch

from faceedit.checkpoints.loaded import LoadedModel

from .direction import MAX_FILE_BYTES, Direction, DirectionFileError, canonical_attribute, model_name

log = logging.getLogger(__name__)

FORMATS = ("interfacegan-npy", "e4e-pt", "ganspace-npz")
# Tokens of InterFaceGAN / e4e file names that name the model, the space or the file kind.
_NAME_NOISE = {"stylegan", "stylegan2", "stylegan3", "pggan", "ffhq", "celebahq", "celeba", "boundary", "w", "z",
               "wp", "w+", "direction", "directions", "interfacegan", "e4e", "psp", "1024", "512", "256"}


class DirectionImportError(DirectionFileError):
    """A foreign direction file that cannot be imported (format, shape, values, unsafe content)."""


def sniff_format(path) -> str:
    """One of :data:`FORMATS` from the file's first bytes (and, for zips, their members)."""
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(8)
    if head[:6] == b"\x93NUMPY":
        return "interfacegan-npy"
    if head[:4] == b"PK\x03\x04":
        try:
            with zipfile.ZipFile(path) as z:
                names = z.namelist()
        except zipfile.BadZipFile as e:
            raise DirectionImportError(f"{path} is a damaged zip ({e})") from e
        if any(n == "data.pkl" or n.endswith("/data.pkl") for n in names):
            return "e4e-pt"
        if names and all(n.endswith(".npy") for n in names):
            return "ganspace-npz"
        raise DirectionImportError(f"{path} is a zip that is neither a numpy .npz nor a torch.save file")
    if head[:1] == b"\x80":
        return "e4e-pt"  # torch.save's legacy (non-zip) format
    raise DirectionImportError(f"{path} is not a direction file faceedit can import; expected an InterFaceGAN .npy, "
                               f"an e4e/pSp .pt tensor or a GANSpace .npz")


def guess_attribute(path) -> str | None:
    """The attribute a file's name gives (``stylegan_ffhq_smile_w_boundary.npy`` -> ``smile``,
    ``age.pt`` -> ``age``, ``..._age_c_gender_boundary`` -> ``age``), or ``None``."""
    stem = Path(path).name.split(".")[0].lower()
    tokens = [t for t in re.split(r"[_\-\s]+", stem) if t]
    if "c" in tokens:  # InterFaceGAN's conditional boundaries: primal before "c"
        tokens = tokens[:tokens.index("c")]
    keep = [t for t in tokens if t not in _NAME_NOISE and not t.isdigit()]
    return canonical_attribute("-".join(keep)) if keep else None


def _file_sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _load_npz(data: bytes, path: Path) -> dict:
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            return {k: np.asarray(z[k]) for k in z.files}
    except ValueError as e:
        raise DirectionImportError(f"{path}: refused: it holds pickled Python objects ({e}); a direction file "
                                   f"holds only numeric arrays") from e


def read_vectors(path, fmt: str | None = None) -> tuple:
    """Raw vectors of a foreign direction file.

    Returns:
        ``(fmt, sha256, [(array, info)])``: float64 arrays as stored, one per direction
        (``info`` has the GANSpace component index and stdev where there are some).
    Raises:
        DirectionImportError: unreadable, unsafe (pickled code), or not numeric.
    """
    path = Path(path)
    if not path.is_file():
        raise DirectionImportError(f"{path} does not exist")
    if path.stat().st_size > MAX_FILE_BYTES:
        raise DirectionImportError(f"{path} is {path.stat().st_size} bytes, far more than a direction file")
    data = path.read_bytes()
    sha = _file_sha256(data)
    fmt = fmt or sniff_format(path)
    if fmt not in FORMATS:
        raise DirectionImportError(f"unknown format {fmt!r}; known: {', '.join(FORMATS)}")
    if fmt == "interfacegan-npy":
        try:
            arr = np.load(io.BytesIO(data), allow_pickle=False)
        except ValueError as e:
            raise DirectionImportError(f"{path}: refused: the .npy holds pickled Python objects ({e})") from e
        return fmt, sha, [(np.asarray(arr, np.float64), {})]
    if fmt == "e4e-pt":
        try:
            obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError, AttributeError, TypeError, ValueError) as e:
            from faceedit.checkpoints.safe_pickle import torch_refusal_reason

            raise DirectionImportError(f"{path}: refused: torch.load(weights_only=True) would not read it "
                                       f"({torch_refusal_reason(e)}); "
                                       f"it holds Python objects other than tensors, which could run code") from e
        if not isinstance(obj, torch.Tensor) or not obj.is_floating_point():
            raise DirectionImportError(f"{path} holds a {type(obj).__name__}, not a float tensor; e4e/pSp direction "
                                       f"files are one tensor [1, w_dim]")
        return fmt, sha, [(obj.detach().double().numpy(), {})]
    z = _load_npz(data, path)
    if "lat_comp" not in z:
        raise DirectionImportError(f"{path} has no 'lat_comp' array (keys: {', '.join(sorted(z))}); it is not a "
                                   f"GANSpace PCA file")
    comp = np.asarray(z["lat_comp"], np.float64)
    if comp.ndim < 2:
        raise DirectionImportError(f"{path}: lat_comp has shape {comp.shape}, expected [k, 1, w_dim]")
    std = z.get("lat_stdev", z.get("lat_std"))
    std = None if std is None else np.asarray(std, np.float64).reshape(-1)
    out = []
    for i in range(comp.shape[0]):
        info = {"component": i}
        if std is not None and i < std.size and np.isfinite(std[i]):
            info["ganspace_stdev"] = float(std[i])
        out.append((comp[i], info))
    return fmt, sha, out


def _shape_for(v: np.ndarray, w_dim: int, num_ws: int, space: str, path: Path) -> tuple:
    """``(vector [rows, w_dim], space)`` for a raw array, or a clear error."""
    a = np.squeeze(np.asarray(v, np.float64))
    if a.ndim == 0:
        a = a.reshape(1)
    if not np.isfinite(a).all():
        raise DirectionImportError(f"{path}: the vector holds NaN or Inf; the file is damaged")
    if a.ndim == 1 and a.size == w_dim:
        if space not in ("w", "w+"):
            raise DirectionImportError(f"{path}: a [{w_dim}] vector is a 'w' direction, not {space!r}")
        return a.reshape(1, w_dim), "w"
    if (a.ndim == 2 and a.shape == (num_ws, w_dim)) or (a.ndim == 1 and a.size == num_ws * w_dim):
        return a.reshape(num_ws, w_dim), "w+"
    raise DirectionImportError(
        f"{path}: vector of shape {tuple(np.shape(v))} does not fit this model (w_dim {w_dim}, num_ws {num_ws}): "
        f"expected [1, {w_dim}] or [{w_dim}] (or [{num_ws}, {w_dim}] per layer); was it made for another model?")


def _codes_for(codes: np.ndarray, vec: np.ndarray) -> np.ndarray:
    """W samples broadcast to every layer for a per-layer vector (a W code is the same on all)."""
    if vec.shape[0] > 1 and codes.ndim == 2:
        return np.broadcast_to(codes[:, None], (len(codes), vec.shape[0], codes.shape[1]))
    return codes


def import_directions(path, model, *, attr: str | None = None, space: str = "w", layers=(), components=None,
                      out=None, std_samples: int = 5000, seed: int = 0) -> list:
    """Import a foreign direction file for ``model`` and save it where the model's directions live.

    Args:
        path: the file (see the module docstring for the formats).
        model: registry name, adopted name or checkpoint path; or a ``LoadedModel``.
        attr: attribute name (default: guessed from the file name; GANSpace components are
            ``pc<i>`` unless one component is chosen).
        space: ``w`` (a code direction) or ``w+`` (a per-layer one).
        layers: layers the direction applies to (default all).
        components: GANSpace component indices to import (default all).
        out: folder to save to (default ``cache_dir()/directions/<model>/``).
        std_samples: mapping samples that measure strength 1 (``latent_std``).
    Returns:
        ``[(Direction, saved path)]``; each Direction's ``meta['imported']`` records the
        source path, sha256, format and whether the attribute was guessed.
    Raises:
        DirectionImportError: wrong format, dimension, values or unsafe content; no attribute.
    """
    from faceedit.checkpoints.registry import cache_dir, load_model

    from .fit import latent_std, sample_codes

    path = Path(path)
    if space not in ("w", "w+"):
        raise DirectionImportError(f"imported directions are 'w' or 'w+', not {space!r}")
    fmt, sha, raw = read_vectors(path)
    m = model if isinstance(model, LoadedModel) else load_model(model)
    G = m.G
    model_id, w_dim, num_ws = m.model_id, int(G.w_dim), int(G.num_ws)
    if components is not None:
        comps = [int(c) for c in components]
        bad = [c for c in comps if not 0 <= c < len(raw)]
        if bad:
            raise DirectionImportError(f"{path} has {len(raw)} component(s); {bad} out of range")
        raw = [raw[c] for c in comps]
    guessed = False
    if fmt != "ganspace-npz":
        if attr is None:
            attr = guess_attribute(path)
            guessed = True
            if attr is None:
                raise DirectionImportError(f"cannot tell the attribute from the name {path.name!r}; pass --attr")
            log.warning("%s: attribute %r guessed from the file name (pass --attr to set it)", path.name, attr)
    elif attr is not None and len(raw) != 1:
        raise DirectionImportError(f"{path} holds {len(raw)} GANSpace components; choose one with --component to "
                                   f"name it {attr!r}, or leave --attr out to import them as pc<i>")
    codes = sample_codes(G, int(std_samples), seed=seed)
    folder = Path(out) if out is not None else cache_dir() / "directions" / model_name(model_id)
    done = []
    for v, info in raw:
        vec, sp = _shape_for(v, w_dim, num_ws, space, path)
        norm = float(np.linalg.norm(vec))
        if not norm > 1e-12:
            raise DirectionImportError(f"{path}: the vector is zero; nothing to edit along")
        name = attr if fmt != "ganspace-npz" or attr is not None else f"pc{info['component']}"
        meta = {"imported": {"path": str(path.resolve()), "sha256": sha, "format": fmt,
                             "attribute_guessed": guessed, "source_norm": norm, **info},
                "sign": "as the source file (its positive side)"}
        d = Direction.from_vector(torch.from_numpy(vec), space=sp, attribute=name, model_id=model_id,
                                  num_ws=num_ws, layers=tuple(layers), arch=G.arch,
                                  method="ganspace" if fmt == "ganspace-npz" else "interfacegan",
                                  latent_std=latent_std(_codes_for(codes, vec), vec), samples=0, meta=meta)
        p = d.save(folder / (d.filename()[: -len(".safetensors")] + f"_import-{sha[:8]}"
                             + (f"-{info['component']}" if "component" in info else "") + ".safetensors"))
        log.info("imported %s (%s) from %s as %s", d.key, fmt, path, p)
        done.append((d, p))
    return done


__all__ = ["DirectionImportError", "FORMATS", "guess_attribute", "import_directions", "read_vectors",
           "sniff_format"]
