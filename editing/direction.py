"""The ``Direction`` type, its file format, and where direction files are found.

A direction is a unit vector in one latent space of one generator. Its file is a
``.safetensors`` holding one tensor, ``vector``, and JSON metadata in the header that
records everything that defines it (model id, attribute, space, layers, conditions)
and how it was fitted (method, scorer, samples, fraction, validation accuracy, the
standard deviation of the latent distribution along it). Files are never pickles:
people exchange them.

File names carry what defines a direction, as genforce's InterFaceGAN boundaries do::

    faces64_smile_w.safetensors              smile, W space, all layers
    faces64_age_w_c-male.safetensors         age with CelebA ``Male`` held fixed
    faces64_eyeglasses_w_c-age-male.safetensors
    faces64-wpp_smile_wpp.safetensors        per-layer W++ direction
    faces64_smile_w_l0-3.safetensors         W direction applied to layers 0..3 only
    faces64_ganspace-pc0_w_l0-3.safetensors  unsupervised (GANSpace / SeFa)

Convention (shape): ``vector`` is ``[1, w_dim]`` (one code direction, added to every
layer listed in ``layers``) or ``[num_ws, w_dim]`` (one slice per layer, as fitted on
flattened W+ / W++ codes; zero on layers it does not touch). Either way the whole
tensor has unit Euclidean norm.

Convention (sign): positive strength moves towards the attribute's positive class as
its scorer defines it: more smile, older, more of CelebA's ``Male``, glasses on,
turned to the subject's left (see :data:`SIGNS`).
"""
from __future__ import annotations

import difflib
import json
import logging
import math
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from faceedit.core.errors import EditingError
from faceedit.core.tensorfile import NUMPY_MAGIC, PICKLE_MAGIC, json_default, read_tensor_file, write_tensor_file
from faceedit.networks import GENERATORS

log = logging.getLogger(__name__)

FORMAT = "faceedit.direction"
FORMAT_VERSION = 1
SPACES = ("w", "w+", "wpp")
METHODS = ("interfacegan", "ganspace", "sefa", "manual")
# Latent spaces (``faceedit.inversion.latent.SPACES``) each direction space may edit. A W++
# direction also edits W+ latents of its own (transformer) model: same per-layer codes.
EDITABLE = {"w": ("z", "w", "w+"), "w+": ("z", "w", "w+"), "wpp": ("wpp", "wpp-z", "w+")}
MAX_FILE_BYTES = 64 << 20

#: What a positive strength means, per attribute (the scorer's positive class).
SIGNS = {
    "smile": "more smile (CelebA Smiling / mouth-corner landmark score up)",
    "age": "older (UTKFace age regression up)",
    "young": "younger (CelebA Young)",
    "male": "more of CelebA's Male class (a binary label of the data set, not a judgement)",
    "eyeglasses": "glasses on",
    "yaw": "head turned towards the subject's left (image right)",
    "pitch": "head tilted up",
    "bald": "balder",
    "blond-hair": "blonder hair",
    "black-hair": "blacker hair",
    "mustache": "more moustache",
    "no-beard": "beard removed (CelebA No_Beard)",
    "wearing-hat": "hat on",
    "mouth-slightly-open": "mouth opening",
    "heavy-makeup": "more make-up",
}

#: Names users type -> the attribute name used in files.
ALIASES = {"smiling": "smile", "gender": "male", "glasses": "eyeglasses", "hat": "wearing-hat",
           "old": "age", "older": "age", "pose": "yaw", "moustache": "mustache"}


class DirectionError(EditingError):
    """A direction that cannot be used for what was asked (other model, other space, unknown name)."""


class DirectionFileError(DirectionError):
    """A direction file that cannot be read (not safetensors, a pickle, NaN, wrong shape, ...)."""


def canonical_attribute(name: str) -> str:
    """``Smiling`` / ``Wearing_Hat`` / ``gender`` -> ``smile`` / ``wearing-hat`` / ``male``."""
    a = re.sub(r"[\s_]+", "-", str(name).strip().lower())
    return ALIASES.get(a, a)


def model_name(model_id: str) -> str:
    """``faces64@0123abcd`` -> ``faces64``."""
    return str(model_id).split("@")[0]


@dataclass(frozen=True, eq=False)  # hashed by identity: usable as a dict key
class Direction:
    """A unit direction in one latent space of one generator.

    Attributes:
        vector: ``[1, w_dim]`` or ``[num_ws, w_dim]`` float tensor of unit norm (see module
            docstring for the convention).
        space: ``w``, ``w+`` or ``wpp``: the space it was fitted in.
        attribute: canonical attribute name (``smile``, ``age``, ``male``, ``pc3``...).
        model_id: the generator's id (``name@sha256-prefix``); edits refuse other models.
        num_ws: the generator's number of per-layer codes.
        layers: layer indices the direction is applied to (sorted; all layers if empty).
        conditions: attributes it was made orthogonal to (conditional manipulation).
        method: ``interfacegan``, ``ganspace``, ``sefa`` or ``manual``.
        latent_std: standard deviation of the latent distribution (mapping samples, or the
            codes it was fitted on) projected on the direction: strength 1 in ``std`` units
            moves the code by this distance.
        scorer: the scorer whose labels it was fitted on (``""`` if unsupervised).
        samples: number of latents sampled and scored.
        fraction: fraction kept at each end (top and bottom) for the SVM.
        accuracy: validation accuracy of the SVM on the held-out part (``None`` if none).
        meta: free JSON metadata (train accuracy, SVM C, seeds, explained variance, ...).
        arch: the generator's architecture (``G.arch``: ``stylegan2`` or ``stylegan1``);
            edits refuse latents of the other one. Files without it read as ``stylegan2``.
    """

    vector: torch.Tensor
    space: str
    attribute: str
    model_id: str
    num_ws: int
    layers: tuple = ()
    conditions: tuple = ()
    method: str = "interfacegan"
    latent_std: float = 1.0
    scorer: str = ""
    samples: int = 0
    fraction: float = 0.0
    accuracy: float | None = None
    meta: dict = field(default_factory=dict)
    arch: str = "stylegan2"

    def __post_init__(self):
        v = self.vector
        if self.arch not in GENERATORS:
            raise DirectionFileError(f"unknown generator architecture {self.arch!r}; expected one of "
                                     f"{', '.join(GENERATORS)}")
        if not isinstance(v, torch.Tensor) or v.ndim != 2 or not v.is_floating_point():
            raise DirectionFileError(f"Direction.vector must be a float tensor [1 or num_ws, w_dim], got "
                                     f"{getattr(v, 'shape', type(v))}")
        if self.space not in SPACES:
            raise DirectionFileError(f"unknown direction space {self.space!r}; expected one of {', '.join(SPACES)}")
        if self.method not in METHODS:
            raise DirectionFileError(f"unknown method {self.method!r}; expected one of {', '.join(METHODS)}")
        if int(self.num_ws) < 1 or v.shape[0] not in (1, int(self.num_ws)):
            raise DirectionFileError(f"direction vector has {v.shape[0]} rows; it must have 1 (a code direction) "
                                     f"or num_ws={self.num_ws} (one per layer)")
        if not torch.isfinite(v).all():
            raise DirectionFileError("direction vector holds NaN or Inf; fit it again")
        norm = float(v.double().norm())
        if abs(norm - 1.0) > 1e-3:
            raise DirectionFileError(f"direction vector has norm {norm:.4g}, not 1; normalise it "
                                     f"(Direction.from_vector does) or fit it again")
        layers = tuple(sorted({int(i) for i in self.layers}))
        if any(not 0 <= i < int(self.num_ws) for i in layers):
            raise DirectionFileError(f"layers {layers} out of range for num_ws={self.num_ws}")
        if not (math.isfinite(float(self.latent_std)) and float(self.latent_std) > 0):
            raise DirectionFileError(f"latent_std must be a positive number, got {self.latent_std}; "
                                     f"recompute it with faceedit.editing.fit.latent_std")
        object.__setattr__(self, "layers", layers)
        object.__setattr__(self, "attribute", canonical_attribute(self.attribute))
        object.__setattr__(self, "conditions", tuple(canonical_attribute(c) for c in self.conditions))
        object.__setattr__(self, "num_ws", int(self.num_ws))

    # -- construction -----------------------------------------------------------------
    @classmethod
    def from_vector(cls, vector, **kw) -> "Direction":
        """Build from any non-zero vector (normalised here); ``[w_dim]`` becomes ``[1, w_dim]``."""
        v = torch.as_tensor(vector).detach().float().cpu()
        if v.ndim == 1:
            v = v[None]
        n = float(v.double().norm())
        if not math.isfinite(n) or n < 1e-12:
            raise DirectionError("cannot make a direction from a zero or non-finite vector")
        return cls(vector=(v.double() / n).float().contiguous(), **kw)

    @property
    def w_dim(self) -> int:
        return int(self.vector.shape[1])

    @property
    def per_layer(self) -> bool:
        """True for a ``[num_ws, w_dim]`` direction (fitted on flattened per-layer codes)."""
        return self.vector.shape[0] > 1

    @property
    def applied_layers(self) -> tuple:
        """The layers it moves (all when ``layers`` is empty)."""
        return self.layers or tuple(range(self.num_ws))

    def full(self) -> torch.Tensor:
        """The ``[num_ws, w_dim]`` displacement for one unit of distance (zero outside ``layers``)."""
        out = torch.zeros(self.num_ws, self.w_dim)
        idx = list(self.applied_layers)
        out[idx] = self.vector[idx] if self.per_layer else self.vector.expand(len(idx), -1)
        return out

    def with_layers(self, layers) -> "Direction":
        """Same direction restricted to other layers (a per-layer vector is re-normalised there)."""
        layers = tuple(sorted({int(i) for i in layers}))
        if not self.per_layer:
            return replace(self, layers=layers)
        v = torch.zeros_like(self.vector)
        v[list(layers)] = self.vector[list(layers)]
        if float(v.norm()) < 1e-8:
            raise DirectionError(f"direction {self.attribute!r} is zero on layers {layers}")
        return replace(self, vector=v / v.norm(), layers=layers,
                       meta={**self.meta, "restricted_from_layers": list(self.applied_layers)})

    def check_arch(self, arch: str) -> None:
        """Raise :class:`DirectionError` unless this direction was fitted on a generator of ``arch``."""
        if self.arch != arch:
            raise DirectionError(f"direction {self.key!r} was fitted on a {self.arch} generator and cannot edit a "
                                 f"{arch} latent (the architectures' latent spaces differ); fit one for this model "
                                 f"with `faceedit directions fit --model {model_name(self.model_id)} "
                                 f"--attr {self.attribute}`")

    def sign_meaning(self) -> str:
        return SIGNS.get(self.attribute, f"more {self.attribute} (the scorer's positive class)")

    # -- names and files --------------------------------------------------------------
    @property
    def key(self) -> str:
        """``age|male`` style key: attribute plus held attributes."""
        return self.attribute + ("|" + ",".join(self.conditions) if self.conditions else "")

    def filename(self) -> str:
        """File name that carries everything defining it (see module docstring)."""
        return direction_filename(model_name(self.model_id), self.attribute, self.space, self.layers,
                                  self.conditions, self.num_ws, self.method)

    def metadata(self) -> dict:
        return {"attribute": self.attribute, "space": self.space, "model_id": self.model_id,
                "num_ws": self.num_ws, "w_dim": self.w_dim, "layers": list(self.layers),
                "conditions": list(self.conditions), "method": self.method, "latent_std": float(self.latent_std),
                "scorer": self.scorer, "samples": int(self.samples), "fraction": float(self.fraction),
                "accuracy": None if self.accuracy is None else float(self.accuracy),
                "sign": self.sign_meaning(), "meta": self.meta,
                **({} if self.arch == "stylegan2" else {"arch": self.arch})}  # absent = stylegan2: old files unchanged

    def save(self, path_or_dir) -> Path:
        """Write atomically; a folder gets :meth:`filename` inside it."""
        p = Path(path_or_dir)
        if p.suffix != ".safetensors":
            p = p / self.filename()
        header = {"format": FORMAT, "version": str(FORMAT_VERSION),
                  "direction": json.dumps(self.metadata(), default=json_default)}
        return write_tensor_file(p, {"vector": self.vector.detach().float().cpu().contiguous()}, header)

    @classmethod
    def load(cls, path) -> "Direction":
        """Read a file written by :meth:`save`; refuses pickles, foreign files, NaN, wrong shapes.

        A file is read once per process while its size and modification time stay the same (an
        edit lists the model's direction folder several times: the names' check, the edit itself).
        """
        p = Path(path)
        try:
            st = p.stat()
        except OSError:
            return _load(p)  # the reader's own error
        key = (str(p.resolve()), st.st_mtime_ns, st.st_size)
        if key not in _LOADED:
            _LOADED[key] = _load(p)
        return _LOADED[key]


def direction_filename(model: str, attribute: str, space: str, layers=(), conditions=(), num_ws=None,
                       method: str = "interfacegan") -> str:
    parts = [model, canonical_attribute(attribute), space.replace("+", "p")]
    layers = tuple(sorted(layers))
    if layers and (num_ws is None or layers != tuple(range(num_ws))):
        contiguous = layers == tuple(range(layers[0], layers[-1] + 1))
        parts.append(f"l{layers[0]}-{layers[-1]}" if contiguous else "l" + ".".join(map(str, layers)))
    if conditions:
        parts.append("c-" + "-".join(sorted(canonical_attribute(c) for c in conditions)))
    return "_".join(parts) + ".safetensors"


_LOADED: dict = {}  # (resolved path, mtime_ns, size) -> Direction, see Direction.load


def _load(path: Path) -> Direction:
    fix = "fit one with `faceedit directions fit` or use a shipped one (`faceedit directions list`)"
    tensors, meta = read_tensor_file(
        path, fmt=FORMAT, what="direction", fix=fix, max_bytes=MAX_FILE_BYTES, error=DirectionFileError,
        refused="faceedit reads directions only as .safetensors (pickles can run code). Convert a numpy "
                "boundary with Direction.from_vector(np.load(f), ...).save(DIR)",
        refuse_magic=PICKLE_MAGIC + NUMPY_MAGIC, refuse_suffixes=(".pkl", ".pt", ".pth", ".npy"))
    try:
        info = json.loads(meta.get("direction", "null"))
    except (ValueError, RecursionError) as e:
        raise DirectionFileError(f"{path} is not a valid faceedit direction file ({e}); {fix}") from e
    if not isinstance(info, dict) or "vector" not in tensors:
        raise DirectionFileError(f"{path} is a safetensors file but not a faceedit direction "
                                 f"(format={meta.get('format')!r}); {fix}")
    v = tensors["vector"]
    if v.ndim != 2 or ("w_dim" in info and v.shape[1] != int(info["w_dim"])):
        raise DirectionFileError(f"{path}: vector has shape {tuple(v.shape)}, metadata says w_dim="
                                 f"{info.get('w_dim')}; the file is damaged; {fix}")
    try:
        return Direction(vector=v.float(), space=info["space"], attribute=info["attribute"],
                         model_id=info["model_id"], num_ws=int(info["num_ws"]), layers=tuple(info.get("layers", ())),
                         conditions=tuple(info.get("conditions", ())), method=info.get("method", "interfacegan"),
                         latent_std=float(info.get("latent_std", 1.0)), scorer=info.get("scorer", ""),
                         samples=int(info.get("samples", 0)), fraction=float(info.get("fraction", 0.0)),
                         accuracy=info.get("accuracy"), meta=info.get("meta") or {},
                         arch=info.get("arch", "stylegan2"))
    except DirectionFileError as e:
        raise DirectionFileError(f"{path}: {e}") from e
    except (KeyError, TypeError, ValueError) as e:
        raise DirectionFileError(f"{path}: metadata is incomplete or malformed ({e}); {fix}") from e


# -- where direction files live ---------------------------------------------------------
def direction_dirs(model: str) -> list:
    """Folders searched for a model's directions: shipped, then the user cache."""
    from faceedit.checkpoints.registry import WEIGHTS_DIR, cache_dir

    name = model_name(model)
    return [WEIGHTS_DIR / "directions" / name, cache_dir() / "directions" / name]


def list_directions(model: str | None = None, folder=None) -> list:
    """Every readable direction for ``model`` (all models if ``None``), or in ``folder``.

    Unreadable files are skipped with a warning (``faceedit directions show FILE`` says why).
    """
    from faceedit.checkpoints.registry import WEIGHTS_DIR, cache_dir

    if folder is not None:
        roots = [Path(folder)]
    elif model is not None:
        roots = direction_dirs(model)
    else:
        roots = [WEIGHTS_DIR / "directions", cache_dir() / "directions"]
    out = []
    for root in roots:
        if not root.is_dir():
            continue
        for p in sorted(root.rglob("*.safetensors")):
            try:
                out.append((p, Direction.load(p)))
            except DirectionFileError as e:
                log.warning("skipping %s: %s", p, e)
    return out


def parse_key(key: str) -> tuple:
    """``"age|male,eyeglasses"`` -> ``("age", ("eyeglasses", "male"))``."""
    attr, _, cond = str(key).partition("|")
    conds = tuple(sorted(canonical_attribute(c) for c in cond.split(",") if c.strip()))
    return canonical_attribute(attr), conds


def find_direction(model_id: str, key: str, latent_space: str | None = None, *, candidates=None) -> Direction:
    """The direction named ``key`` (``smile``, ``age|male``) for this model and latent space.

    Among matching files, one fitted for this exact model id and an editable space wins;
    all-layer InterFaceGAN fits are preferred, then (for W/W+ latents) a W fit over a W+
    one (mapping samples are many, inverted faces few), then the higher validation accuracy.

    Raises:
        DirectionError: none found; the message lists what exists and how to fit one.
    """
    attr, conds = parse_key(key)
    pool = list_directions(model_id) if candidates is None else [(None, d) for d in candidates]
    named = [d for _, d in pool if d.attribute == attr and tuple(sorted(d.conditions)) == conds]
    same_model = [d for d in named if d.model_id == model_id]
    ok = [d for d in same_model if latent_space is None or latent_space in EDITABLE[d.space]]
    if not ok:
        have = sorted({d.key for _, d in pool if d.model_id == model_id})
        if named and not same_model:
            raise DirectionError(
                f"direction {key!r} exists only for model(s) {sorted({d.model_id for d in named})}, not "
                f"{model_id!r}; fit one for this model with `faceedit directions fit --model "
                f"{model_name(model_id)} --attr {attr}`")
        if same_model:
            raise DirectionError(
                f"direction {key!r} of {model_id} is fitted in space(s) {sorted({d.space for d in same_model})}, "
                f"which cannot edit a {latent_space!r} latent; invert in a matching space or fit one in this space")
        close = difflib.get_close_matches(attr, sorted({d.attribute for _, d in pool}), n=1)
        hint = f" (did you mean {close[0]}?)" if close and close[0] != attr else ""
        raise DirectionError(
            f"no direction {key!r} for model {model_id!r}{hint}; available: {', '.join(have) or 'none'}. "
            f"Fit one with `faceedit directions fit --model {model_name(model_id)} --attr {attr}`")
    preferred = "wpp" if latent_space in ("wpp", "wpp-z") else "w"
    ok.sort(key=lambda d: (bool(d.layers), d.method != "interfacegan", d.space != preferred,
                           -(d.accuracy or 0.0)))
    return ok[0]
