"""The ``Latent`` type and its file format (safetensors + JSON metadata, never a pickle)."""
from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from faceedit.core.errors import InversionError
from faceedit.core.tensorfile import json_default, read_tensor_file, write_tensor_file
from faceedit.networks import GENERATORS

SPACES = ("z", "w", "w+", "wpp", "wpp-z")
FORMAT_VERSION = 1


class LatentFileError(InversionError):
    """A latent file that cannot be used (wrong format, other model, NaNs, ...)."""


@dataclass(frozen=True)
class Latent:
    """A point in one of a generator's latent spaces.

    Attributes:
        space: ``z``, ``w``, ``w+``, ``wpp`` or ``wpp-z`` (see ``inversion.spaces``).
        codes: ``[B, num_ws, w_dim]`` per-layer codes in W/W+/W++ (for ``w`` the code is
            stored broadcast to every layer). For ``wpp-z`` the optimised per-token z live
            in ``z`` and ``codes`` holds their mapping, so any consumer can synthesise.
        model_id: the generator's id (``name@sha256-prefix``); edits and synthesis
            refuse a latent from another model.
        z: ``[B, ...]`` input latents when the space is ``z`` or ``wpp-z``.
        noise: optimised noise maps, one ``[B, 1, r, r]`` per styled conv, if any.
        tuning: pivotal-tuning weight deltas ``{param_name: tensor}``, if any; every tensor
            has a leading image dimension ``B`` (see ``inversion.pti``).
        meta: free JSON metadata (source photo, alignment matrix, losses, ...).
        arch: the generator's architecture (``G.arch``: ``stylegan2`` or ``stylegan1``);
            a latent is refused by a generator of the other one. Files written before it
            was recorded read as ``stylegan2``.
    """

    space: str
    codes: torch.Tensor
    model_id: str
    z: torch.Tensor | None = None
    noise: tuple | None = None
    tuning: dict | None = None
    meta: dict = field(default_factory=dict)
    arch: str = "stylegan2"

    def __post_init__(self):
        if self.space not in SPACES:
            raise InversionError(f"unknown latent space {self.space!r}; expected one of {', '.join(SPACES)}")
        if self.arch not in GENERATORS:
            raise InversionError(f"unknown generator architecture {self.arch!r}; expected one of "
                                 f"{', '.join(GENERATORS)}")
        if not isinstance(self.codes, torch.Tensor) or self.codes.ndim != 3:
            raise InversionError(f"Latent.codes must be a [B, num_ws, w_dim] tensor, got "
                                 f"{getattr(self.codes, 'shape', type(self.codes))}")
        if not torch.isfinite(self.codes).all():
            raise LatentFileError("latent codes contain NaN or Inf; re-run the inversion "
                                  "(a diverged optimisation) or pass a valid latent file")

    @property
    def batch_size(self) -> int:
        return int(self.codes.shape[0])

    def __getitem__(self, i: int) -> "Latent":
        """The ``i``-th latent of the batch, as a batch of one."""
        sl = slice(i, i + 1)
        return replace(self, codes=self.codes[sl], z=None if self.z is None else self.z[sl],
                       noise=None if self.noise is None else tuple(n[sl] for n in self.noise),
                       tuning=None if self.tuning is None else {k: v[sl] for k, v in self.tuning.items()})

    def to(self, device) -> "Latent":
        mv = lambda t: None if t is None else t.to(device)  # noqa: E731
        return replace(self, codes=self.codes.to(device), z=mv(self.z),
                       noise=None if self.noise is None else tuple(n.to(device) for n in self.noise),
                       tuning=None if self.tuning is None else {k: v.to(device) for k, v in self.tuning.items()})

    def check_generator(self, G) -> None:
        """Raise ``LatentFileError`` unless the latent is of ``G``'s architecture and the codes
        (and noise maps) fit its shapes.

        A latent with the right model id but damaged or hand-made tensors would otherwise
        fail deep inside synthesis with a shape error; StyleGAN v1 and v2 codes have the same
        shapes at one resolution but mean different images, so the architecture is checked first.
        """
        arch = getattr(G, "arch", "stylegan2")
        if self.arch != arch:
            raise LatentFileError(f"this latent is a {self.arch} code; the generator is a {arch} one, and codes do "
                                  f"not transfer between architectures; invert the photo again with this model")
        want = (int(G.num_ws), int(G.w_dim))
        if tuple(self.codes.shape[1:]) != want:
            raise LatentFileError(f"latent codes have shape {list(self.codes.shape)}, the generator needs "
                                  f"[B, {want[0]}, {want[1]}] (num_ws, w_dim); the file is damaged or belongs to "
                                  f"another model; invert the photo again")
        if self.noise is not None and hasattr(G, "synthesis") and hasattr(G.synthesis, "noise_buffers"):
            bufs = G.synthesis.noise_buffers()
            if len(self.noise) != len(bufs) or any(tuple(n.shape[1:]) != tuple(b.shape[1:])
                                                  for n, b in zip(self.noise, bufs)):
                raise LatentFileError(f"the latent's {len(self.noise)} noise maps do not fit the generator's "
                                      f"{len(bufs)}; the file is damaged; invert the photo again")

    def check_model(self, model_id: str) -> None:
        """Raise ``LatentFileError`` unless this latent belongs to ``model_id``."""
        if self.model_id != model_id:
            raise LatentFileError(f"this latent belongs to model {self.model_id!r}, not {model_id!r}; "
                                  f"pass --model {self.model_id.split('@')[0]} or invert the photo again "
                                  f"with this model")

    # -- file format -----------------------------------------------------------------
    def save(self, path) -> Path:
        """Write atomically as ``.safetensors`` with the metadata in its JSON header."""
        tensors = {"codes": self.codes.detach().float().cpu().contiguous()}
        if self.z is not None:
            tensors["z"] = self.z.detach().float().cpu().contiguous()
        for i, n in enumerate(self.noise or ()):
            tensors[f"noise.{i}"] = n.detach().float().cpu().contiguous()
        for k, v in (self.tuning or {}).items():
            tensors[f"tuning.{k}"] = v.detach().float().cpu().contiguous()
        header = {"format": "faceedit.latent", "version": str(FORMAT_VERSION), "space": self.space,
                  "model_id": self.model_id, "meta": json.dumps(self.meta, default=json_default)}
        if self.arch != "stylegan2":  # absent = stylegan2, so StyleGAN2 latents are written as before
            header["arch"] = self.arch
        return write_tensor_file(path, tensors, header)

    @classmethod
    def load(cls, path, *, max_bytes: int = 1 << 30) -> "Latent":
        """Read a latent file written by :meth:`save`; refuses pickles and foreign files."""
        return _load_latent(Path(path), max_bytes)


def _load_latent(path: Path, max_bytes: int) -> Latent:
    tensors, meta = read_tensor_file(
        path, fmt="faceedit.latent", what="latent", fix="write one with `faceedit invert PHOTO`", max_bytes=max_bytes,
        refused="faceedit reads latents only as .safetensors written by `faceedit invert` (pickles can run code)",
        error=LatentFileError)
    if "codes" not in tensors:
        raise LatentFileError(f"{path} is a faceedit latent without its 'codes' tensor; the file is damaged; "
                              f"invert the photo again")
    n_noise = len([k for k in tensors if k.startswith("noise.")])
    if any(f"noise.{i}" not in tensors for i in range(n_noise)):
        raise LatentFileError(f"{path}: noise maps are not numbered 0..{n_noise - 1}; the file is damaged; "
                              f"invert the photo again")
    noise = tuple(tensors[f"noise.{i}"] for i in range(n_noise))
    tuning = {k[len("tuning."):]: v for k, v in tensors.items() if k.startswith("tuning.")}
    try:
        extra = json.loads(meta.get("meta", "{}"))
    except (ValueError, RecursionError) as e:
        raise LatentFileError(f"{path}: metadata is not valid JSON ({str(e)[:200]}); the file is damaged") from e
    if not isinstance(extra, dict):
        raise LatentFileError(f"{path}: metadata 'meta' must be a JSON object, got {type(extra).__name__}")
    for name, t in tensors.items():
        if not t.is_floating_point():
            raise LatentFileError(f"{path}: tensor {name!r} has dtype {t.dtype}; latent files hold floating-point "
                                  f"tensors; write one with `faceedit invert`")
        if not torch.isfinite(t).all():
            raise LatentFileError(f"{path}: tensor {name!r} holds NaN or Inf; the file is damaged or came "
                                  f"from a diverged optimisation; invert the photo again")
    f32 = lambda t: None if t is None else t.float()  # noqa: E731
    try:
        return Latent(space=meta.get("space", ""), codes=tensors["codes"].float(), model_id=meta.get("model_id", ""),
                      z=f32(tensors.get("z")), noise=tuple(n.float() for n in noise) or None,
                      tuning={k: v.float() for k, v in tuning.items()} or None, meta=extra,
                      arch=meta.get("arch", "stylegan2"))
    except LatentFileError as e:
        raise LatentFileError(f"{path}: {e}") from e
    except ValueError as e:
        raise LatentFileError(f"{path}: {e}; write latent files with `faceedit invert`") from e
