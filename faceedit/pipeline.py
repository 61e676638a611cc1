"""Photo in, photo out: align -> invert -> edit -> synthesize -> paste back.

Each stage is a plain function of its room (``faceedit.alignment.align``,
``faceedit.inversion.invert``, ``faceedit.editing.edit``, ``G.synthesis``,
``faceedit.alignment.paste_back``); :class:`Pipeline` chains them, holds the loaded
generator, and returns every intermediate so that nothing has to be recomputed to
inspect or reuse a step.

Example::

    from faceedit import Pipeline, load_image, save_image
    pipe = Pipeline()                                   # faces64, W+, CPU or CUDA
    r = pipe.edit_photo(load_image("photo.jpg"), {"smile": 2})
    save_image("smiling.jpg", r.photo)
    r.faces[0].latent.save("photo.latent.safetensors")  # reuse: pipe.edit_photo(photo, {...}, latents=[...])

The edited face goes back through ``paste_back(mode='residual')``: only the difference
between the edited synthesis and the unedited reconstruction is added to the photo, so
the photo keeps its resolution and everything the generator cannot reproduce, and at
strength 0 the output equals the input.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from faceedit.checkpoints.loaded import LoadedModel
from faceedit.core.errors import PipelineError
from faceedit.defaults import DEFAULT_STRENGTH

log = logging.getLogger(__name__)


@dataclass
class FaceEdit:
    """Everything the pipeline made for one face.

    Attributes:
        face: the :class:`~faceedit.alignment.types.AlignedFace` (its crop is the target).
        latent: the inverted latent (batch of one).
        edited: the edited latent.
        reconstruction: ``[R, R, 3]`` uint8 synthesis of ``latent`` (the paste-back reference).
        crop: ``[R, R, 3]`` uint8 synthesis of ``edited`` (the edited crop).
        mask: ``[H, W]`` float32 blending weight of the paste-back (0 where the photo is untouched).
    """

    face: object
    latent: object
    edited: object
    reconstruction: np.ndarray
    crop: np.ndarray
    mask: np.ndarray | None = None


@dataclass
class EditResult:
    """What :meth:`Pipeline.edit_photo` returns.

    Attributes:
        photo: the edited photo ``[H, W, 3]`` uint8, the input's size.
        input: the input photo.
        faces: one :class:`FaceEdit` per edited face, left to right.
        edits: the edits applied (``{key: strength}``).
        timings: seconds per stage (``load``, ``align``, ``invert``, ``edit``, ``synthesize``, ``paste``).
    """

    photo: np.ndarray
    input: np.ndarray
    faces: list
    edits: dict
    timings: dict = field(default_factory=dict)

    @property
    def mask(self) -> np.ndarray:
        """Union of the faces' paste-back masks (max of the weights)."""
        m = np.zeros(self.photo.shape[:2], np.float32)
        for f in self.faces:
            if f.mask is not None:
                m = np.maximum(m, f.mask)
        return m


class Pipeline:
    """Chains the stages for one generator.

    Args:
        model: registry name or checkpoint path (default: the default model of ``space``),
            or a ``LoadedModel``.
        space: inversion space (``w``, ``w+``, ``wpp``, ``wpp-z``).
        method: inversion method (``encoder``, ``optim``, ``hybrid``, ``pti``; default: the
            inversion room's default for the model and space: ``hybrid`` when the model
            ships an encoder for the space, else ``optim``).
        device: ``auto``, ``cpu``, ``cuda`` or a ``torch.device``.
        detector: face detector for alignment (``dlib``, ``dlib-cnn``, ``mtcnn``).
        directions: where attribute names are looked up (see ``faceedit.editing.edit``).
        strength_unit: ``std`` (default) or ``distance``.
        invert_options: extra keyword arguments for ``faceedit.inversion.invert``
            (``steps``, ``prior``, ``perceptual``, ``seed``, ...).
        paste_options: extra keyword arguments for ``faceedit.alignment.paste_back``
            (``mask``, ``feather``); the mode is always ``residual`` with the reconstruction
            as reference.
    """

    def __init__(self, model=None, *, space: str = "w+", method: str | None = None, device="auto",
                 detector: str = "dlib", directions=None, strength_unit: str = "std",
                 invert_options: dict | None = None, paste_options: dict | None = None):
        from faceedit.checkpoints.registry import default_model, load_model
        from faceedit.core.device import resolve_device

        t0 = time.perf_counter()
        self.space = str(space).lower()
        self.device = resolve_device(device)
        if isinstance(model, LoadedModel):
            self.model = model
        else:
            default_space = "wpp" if self.space in ("wpp", "wpp-z") else self.space
            name = model if model is not None else default_model(default_space)
            opts = invert_options or {}
            want_d = opts.get("perceptual", "auto") in ("auto", "disc")
            try:
                self.model = load_model(name, device=self.device, with_discriminator=want_d)
            except ValueError:
                if opts.get("perceptual") == "disc":
                    raise
                self.model = load_model(name, device=self.device)
        self.G = self.model.G.to(self.device)
        self.model_id = self.model.model_id
        from faceedit.inversion.spaces import check_space

        check_space(self.G, self.space)
        from faceedit.inversion.methods import default_method

        self.method = method or default_method(self.model, self.space)
        self.detector = detector
        self.directions = directions
        self.strength_unit = strength_unit
        self.invert_options = dict(invert_options or {})
        self.paste_options = dict(paste_options or {})
        self._prior = None
        self.load_seconds = time.perf_counter() - t0

    # -- the stages, each usable alone -------------------------------------------------
    @property
    def recipe(self):
        return model_recipe(self.model.config, self.G.resolution)

    def align(self, photo: np.ndarray, face="largest") -> list:
        """Faces of ``photo`` aligned with the model's recipe (``face``: largest, all, or an index).

        When no face is found upright, the photo is also tried rotated by 90, 180 and 270
        degrees (``try_rotations``); matrices still refer to the photo as given, so the
        edit is pasted back into the photo as it is."""
        from faceedit.alignment import align

        return align(photo, recipe=self.recipe, detector=self.detector, face=face, try_rotations=True)

    def invert(self, faces: list):
        """Invert aligned faces (a list of ``AlignedFace`` or crops) into ``self.space`` with
        ``self.method``; one batched Latent."""
        from faceedit.inversion.methods import invert_with

        opts = dict(self.invert_options)
        prior = opts.pop("prior", "gaussian")
        if prior == "gaussian":
            if self._prior is None:
                from faceedit.inversion.prior import load_prior

                self._prior = load_prior(self.model, self.G)
            prior = self._prior
        from faceedit.batching import retry_smaller

        bs = opts.pop("batch_size", max(1, len(faces)))
        return retry_smaller(lambda b: invert_with(self.method, list(faces), self.model, space=self.space, G=self.G,
                                                   D=self.model.D, prior=prior, batch_size=b, **opts), bs)

    def edit(self, latent, attributes, **kw):
        """``faceedit.editing.edit`` with this pipeline's directions and strength unit; an
        attribute named without a strength (``"smile"``, ``["smile", "age"]``) gets
        ``faceedit.defaults.DEFAULT_STRENGTH``."""
        from faceedit.editing import edit

        attributes = with_default_strength(attributes)

        latent.check_model(self.model_id)
        latent.check_generator(self.G)
        kw.setdefault("directions", self.directions)
        kw.setdefault("strength_unit", self.strength_unit)
        return edit(latent, attributes, **kw)

    @torch.no_grad()
    def synthesize(self, latent) -> np.ndarray:
        """``[B, R, R, 3]`` uint8 images of a latent (its optimised noise maps and pivotal tuning used)."""
        from faceedit.core.images import tensor_to_uint8
        from faceedit.inversion.pti import synthesize

        latent.check_model(self.model_id)
        latent.check_generator(self.G)
        return tensor_to_uint8(synthesize(self.G, latent))

    def paste_back(self, photo: np.ndarray, face, crop: np.ndarray, reference: np.ndarray, return_mask: bool = True):
        """``faceedit.alignment.paste_back(photo, face, crop, mode='residual', reference=reference)``."""
        from faceedit.alignment import paste_back

        return paste_back(photo, face, crop, mode="residual", reference=reference, return_mask=return_mask,
                          **self.paste_options)

    # -- the chain --------------------------------------------------------------------------
    def edit_photo(self, photo: np.ndarray, attributes: dict, *, face="largest", faces: list | None = None,
                   latents=None, layers=None) -> EditResult:
        """Edit the face(s) of a photo.

        Args:
            photo: ``[H, W, 3]`` RGB uint8 (``faceedit.load_image`` gives one).
            attributes: ``{"smile": 2, "age|male": -1}`` (see ``faceedit.editing.edit``), or
                names alone (``"smile"``, ``["smile", "age"]``) for ``DEFAULT_STRENGTH`` each.
            face: ``largest``, ``all`` or a face index (0 = leftmost).
            faces: already aligned faces of this photo (skips alignment).
            latents: their inverted latent(s) (a batched ``Latent`` or a list; skips inversion).
            layers: restrict the edits to these layers.
        Returns:
            :class:`EditResult` with the edited photo (same size as the input) and every
            intermediate; faces are edited and pasted one after the other.
        """
        photo = np.asarray(photo)
        if photo.ndim != 3 or photo.shape[2] != 3 or photo.dtype != np.uint8:
            raise PipelineError(f"photo must be [H, W, 3] RGB uint8, got {photo.shape} {photo.dtype}; "
                                f"read it with faceedit.load_image")
        t = {"load": round(self.load_seconds, 3)}
        attributes = with_default_strength(attributes)
        from faceedit.editing import resolve_directions

        # fail before the slow stages when a direction is missing or does not fit the model
        resolve_directions(self.model_id, attributes, self.directions, self.space if latents is None else None)
        t0 = time.perf_counter()
        if faces is None:
            faces = self.align(photo, face=face)
        t["align"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        if latents is None:
            batch = self.invert(faces)
            lats = [batch[i] for i in range(batch.batch_size)]
        else:
            lats = _as_list(latents)
        if len(lats) != len(faces):
            raise PipelineError(f"{len(lats)} latents for {len(faces)} faces; pass one latent per face")
        t["invert"] = time.perf_counter() - t0
        t["edit"] = t["synthesize"] = t["paste"] = 0.0
        out, results = photo, []
        for f, lat in zip(faces, lats):
            t0 = time.perf_counter()
            edited = self.edit(lat, attributes, layers=layers)
            t1 = time.perf_counter()
            recon, crop = self.synthesize(lat)[0], self.synthesize(edited)[0]
            t2 = time.perf_counter()
            out, mask = self.paste_back(out, f, crop, recon)
            t3 = time.perf_counter()
            t["edit"] += t1 - t0
            t["synthesize"] += t2 - t1
            t["paste"] += t3 - t2
            results.append(FaceEdit(face=f, latent=lat, edited=edited, reconstruction=recon, crop=crop, mask=mask))
        edits = {str(getattr(k, "key", k)): float(v) for k, v in dict(attributes).items()}
        return EditResult(photo=out, input=photo, faces=results, edits=edits,
                          timings={k: round(v, 3) for k, v in t.items()})


def model_recipe(config: dict, resolution: int):
    """The alignment recipe a model's faces are cut with, at its resolution.

    A model without one (a checkpoint converted without ``--recipe``) gets FFHQ's recipe
    (scale 1.0), with a warning: every public StyleGAN face model was trained on FFHQ's framing.
    faceedit's own 64 px recipe (0.6x the FFHQ quad) is never assumed for another model.

    Args:
        config: the model's ``config.json`` dict.
        resolution: the generator's output side.
    Returns:
        An :class:`~faceedit.alignment.AlignmentRecipe` of size ``resolution``.
    """
    from faceedit.alignment.types import FFHQ, AlignmentRecipe

    rd = config.get("recipe")
    if not rd:
        log.warning("model %s records no alignment recipe; aligning faces with FFHQ's (scale 1.0) at %d px. "
                    "Record one with `faceedit convert --recipe ...` to choose", config.get("name", "?"), resolution)
    r = AlignmentRecipe.from_dict(rd) if rd else FFHQ
    return r if r.size == resolution else r.with_size(resolution)


def with_default_strength(attributes) -> dict:
    """``"smile"`` / ``["smile", "age"]`` -> ``{name: DEFAULT_STRENGTH}``; a mapping (or a
    sequence of ``(key, strength)`` pairs) is returned as a dict unchanged.

    Args:
        attributes: a key (``str`` or ``Direction``), a sequence of keys, a mapping or pairs.
    Returns:
        ``{key: strength}``.
    """
    from faceedit.editing import Direction

    if hasattr(attributes, "items"):
        return dict(attributes)
    if isinstance(attributes, (str, Direction)):
        return {attributes: DEFAULT_STRENGTH}
    items = list(attributes)
    if all(isinstance(a, (tuple, list)) and len(a) == 2 for a in items):
        return dict(items)
    return {a: DEFAULT_STRENGTH for a in items}


def _as_list(latents) -> list:
    if isinstance(latents, (list, tuple)):
        out = []
        for lat in latents:
            out += [lat[i] for i in range(lat.batch_size)]
        return out
    return [latents[i] for i in range(latents.batch_size)]


__all__ = ["Pipeline", "EditResult", "FaceEdit", "with_default_strength"]
