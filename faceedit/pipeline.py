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

import contextlib
import functools
import logging
import os
import re
import sys
import time
from dataclasses import dataclass, field
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from faceedit.core.errors import AlignmentError, PipelineError
from faceedit.defaults import DEFAULT_STRENGTH, FAR_FROM_PRIOR, MAX_STRENGTH

if TYPE_CHECKING:
    import torch

    from faceedit.inversion.options import StepCallback

log = logging.getLogger(__name__)

#: Mapping samples that measure the strength scale of a conditional direction made on the fly.
CONDITION_SAMPLES = 20_000


class OutOfDistributionError(PipelineError):
    """An edit past what was measured (``MAX_STRENGTH``) or a latent far outside the model's
    distribution (``FAR_FROM_PRIOR``): the result would be noise. ``force=True`` makes it anyway."""


@contextlib.contextmanager
def step_bar(desc: str, *, disable: bool | None = None) -> Iterator[StepCallback]:
    """A tqdm bar on stderr over one inversion's optimisation steps.

    The bar appears at the first step (an encoder-only inversion takes none) and follows the
    run's step count, a restart after an out-of-memory retry included.

    Args:
        desc: the bar's label.
        disable: True hides it; None (default) hides it when stderr is not a terminal.
    Yields:
        The ``callback(step, total, losses)`` (``faceedit.inversion.options.StepCallback``) to
        pass as the inversion's ``callback=``.
    """
    from tqdm import tqdm

    bars = []

    def on_step(step: int, total: int, losses: dict) -> None:
        if not bars:
            bars.append(tqdm(total=total, desc=desc, unit="step", file=sys.stderr, disable=disable))
        bar = bars[0]
        if bar.total != total:
            bar.total = total
        bar.update(step + 1 - bar.n)

    try:
        yield on_step
    finally:
        for bar in bars:
            bar.close()


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


@dataclass
class Inversion:
    """What :meth:`Pipeline.invert_faces` returns, one entry per face.

    Attributes:
        latents: one latent (batch of one) per face, its losses those of the face.
        targets: ``[B, R, R, 3]`` uint8 aligned targets as the optimiser saw them.
        reconstructions: ``[B, R, R, 3]`` uint8 syntheses of the latents.
        metrics: one ``{name: float}`` of reconstruction metrics per face.
    """

    latents: list
    targets: np.ndarray
    reconstructions: np.ndarray
    metrics: list


@dataclass
class Sweep:
    """What :meth:`Pipeline.sweep` returns.

    Attributes:
        strengths: the strengths swept.
        strips: ``[(face index, [tiles])]``: per face, the crops row by row (attributes) and
            column by column (strengths).
        frames: ``{attribute: [photo frames]}`` (empty without a photo), downscaled to 512 px at most.
    """

    strengths: list
    strips: list
    frames: dict


@dataclass
class InversionRun:
    """What :meth:`Pipeline.invert_files` returns.

    Attributes:
        records: the record of each face inverted in this run (see ``faceedit.outputs``).
        failures: ``[(photo, reason)]`` of photos skipped.
        photos: how many photos were given.
        skipped: faces already done in an earlier run.
        model_id: the model's id.
        space: the space.
        out: the output folder.
        rate: the run's throughput (``faceedit.batchrun.throughput``: photos, faces, seconds,
            processes, photos/s overall and per process, seconds per stage summed over the processes).
        failed_before: how many of ``failures`` failed in an earlier run and were not retried.
    """

    records: list
    failures: list
    photos: int
    skipped: int
    model_id: str
    space: str
    out: object
    rate: dict = field(default_factory=dict)
    failed_before: int = 0

    def faces_lines(self) -> list:
        """One line per face inverted in this run: photo, face index, detector score, outputs."""
        out = []
        for r in self.records:
            score = r.get("detector_score")
            out.append(f"  {r['photo']} face {r['face']}"
                       + ("" if score is None else f" (detector score {score:.2f})") + f" -> {r['json']}")
        return out

    def summary(self) -> str:
        """One line: faces, photos, space, model, steps (PTI: tuning steps) and mean MSE."""
        r = self.records[0]
        steps = f"{r['steps']} steps"
        tuning = r.get("tuning_steps")
        if r["method"] == "pti" and tuning is not None:
            steps = f"{tuning} tuning steps after a {r['steps']}-step pivot"
        mse = float(np.mean([x["metrics"]["mse"] for x in self.records]))
        return (f"inverted {len(self.records)} face(s) from {self.photos - len(self.failures)} photo(s) into "
                f"{self.space} of {self.model_id} ({steps}, mean MSE {mse:.4f} on [0,1]); wrote {self.out}")


@dataclass
class EditRun:
    """What :func:`edit_files` returns.

    Attributes:
        records: one record per photo (or latent group) edited (see ``faceedit.outputs.write_edit``).
        failures: ``[(input, reason)]`` of the inputs that failed; the others were edited.
        replaced: how many inputs had results of an earlier run in the folder (replaced now).
        skipped: how many inputs were edited with these settings by an earlier run (not again).
        rate: the run's throughput (``faceedit.batchrun.throughput``).
        failed_before: how many of ``failures`` failed in an earlier run and were not retried.
    """

    records: list
    failures: list
    replaced: int = 0
    skipped: int = 0
    rate: dict = field(default_factory=dict)
    failed_before: int = 0


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
        max_pixels: photos with more pixels are refused (``faceedit.core.images.load_image``).
        min_score: detections scoring below this are not faces (``faceedit.alignment.align``;
            default ``None``: its rule, a weak dlib detection beside a confident face is skipped).
        force: edit even past ``faceedit.defaults.MAX_STRENGTH`` or with a latent farther than
            ``FAR_FROM_PRIOR`` from the model's distribution (otherwise
            :class:`OutOfDistributionError`).
        notice: callable told, per photo, each detection alignment skipped (with its score and
            why) and each doubt (a photo whose detections all score low); ``None``: the
            alignment room's log warnings only.
        align_device: where MTCNN and its landmark networks run: ``auto`` (the pipeline's CUDA
            device with the mtcnn detector, else the CPU), ``cpu`` or ``cuda``; the dlib
            detectors always run on the CPU. Loader worker processes align on the CPU whatever
            it says (``faceedit.batchrun.prepared_photos``).
        cuda_graphs: replay each optimisation step of ``hybrid``/``optim`` from one CUDA graph
            (``inversion.options.InversionOptions.cuda_graphs``; a capture that fails is logged
            and the steps run eagerly, ``meta['cuda_graphs']`` says which). ``None`` (default):
            on for a CUDA pipeline, off elsewhere (a CPU cannot capture). On an H100 the graphed
            steps inverted a folder at 3.18 photos/s against 2.41 for the eager ones in the same run
            (``bench/results/photo_path/gpu_2026-12-07.md``); ``False`` keeps the eager steps.
    """

    def __init__(self, model=None, *, space: str = "w+", method: str | None = None, device="auto",
                 detector: str = "dlib", directions=None, strength_unit: str = "std",
                 invert_options: dict | None = None, paste_options: dict | None = None,
                 max_pixels: int | None = None, min_score: float | None = None, force: bool = False,
                 notice=None, align_device="auto", cuda_graphs: bool | None = None):
        from faceedit.checkpoints.loaded import LoadedModel
        from faceedit.checkpoints.registry import default_model, load_model
        from faceedit.core.device import resolve_device

        t0 = time.perf_counter()
        self.space = str(space).lower()
        self.device = resolve_device(device)
        if isinstance(model, LoadedModel):
            self.model = model
            self.model_name = model.name
        else:
            default_space = "wpp" if self.space in ("wpp", "wpp-z") else self.space
            name = model if model is not None else default_model(default_space)
            self.model_name = str(name)
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
        self.align_device = _align_device(align_device, self.device, detector)
        self.cuda_graphs = _want_graphs(cuda_graphs, self.device)
        from faceedit.core.images import DEFAULT_MAX_PIXELS

        self.min_score = None if min_score is None else float(min_score)
        self.max_pixels = DEFAULT_MAX_PIXELS if max_pixels is None else int(max_pixels)
        self.force = bool(force)
        self.notice = notice
        self._distance = None
        self.directions = directions
        self.strength_unit = strength_unit
        self.invert_options = dict(invert_options or {})
        self.paste_options = dict(paste_options or {})
        self._prior = None
        self._encoder = None  # the hybrid's (and encoder method's) encoder, read once
        self._identity = None
        self._codes = None  # mapping samples for conditional directions made on the fly
        self.load_seconds = time.perf_counter() - t0

    # -- the stages, each usable alone -------------------------------------------------
    @property
    def recipe(self):
        return model_recipe(self.model.config, self.G.resolution)

    def align(self, photo: np.ndarray, face="largest", *, name: str = "the photo") -> list:
        """Faces of ``photo`` aligned with the model's recipe (``face``: largest, all, or an index).

        When no face is found upright, the photo is also tried rotated by 90, 180 and 270
        degrees (``try_rotations``); matrices still refer to the photo as given, so the
        edit is pasted back into the photo as it is. Detections below ``self.min_score``
        are not faces (logged as skipped, with their scores)."""
        from faceedit.alignment import align_photo

        rep = align_photo(photo, name=name, **self.align_options(face))
        self._notify(rep, name)
        return rep.faces

    def align_options(self, face="largest") -> dict:
        """The keywords of ``faceedit.alignment.align_photo`` that :meth:`align` passes (recipe, detector, ...)."""
        opts = {"recipe": self.recipe, "detector": self.detector, "face": face, "try_rotations": True,
                "min_score": self.min_score}
        if self.align_device is not None:
            opts["device"] = str(self.align_device)
        return opts

    def _notify(self, report, name: str) -> None:
        """Tell ``self.notice`` the faces an alignment skipped and its notes."""
        if self.notice is None:
            return
        for s in report.skipped:
            self.notice(f"{name}: {'a detection' if s.index is None else f'face {s.index}'} skipped: {s.reason}")
        for note in report.notes:
            self.notice(f"{name}: {note}")

    def invert(self, faces: list, *, callback: StepCallback | None = None):
        """Invert aligned faces (a list of ``AlignedFace`` or crops) into ``self.space`` with
        ``self.method``; one batched Latent. ``callback``: an optional
        ``faceedit.inversion.options.StepCallback`` told every optimisation step (see :func:`step_bar`)."""
        from faceedit.inversion.methods import invert_with

        opts = dict(self.invert_options)
        if self.cuda_graphs and "cuda_graphs" not in opts:
            opts["cuda_graphs"] = True
        prior = opts.pop("prior", "gaussian")
        if prior == "gaussian":
            prior = self._model_prior()
        if self.method != "optim" and "encoder" not in opts:
            opts["encoder"] = self._model_encoder()
        from faceedit.batching import retry_smaller

        bs = opts.pop("batch_size", max(1, len(faces)))
        return retry_smaller(lambda b: invert_with(self.method, list(faces), self.model, space=self.space, G=self.G,
                                                   D=self.model.D, prior=prior, batch_size=b, callback=callback,
                                                   **opts), bs)

    def _model_prior(self):
        """The model's Gaussianized prior, loaded on first use."""
        if self._prior is None:
            from faceedit.inversion.prior import load_prior

            self._prior = load_prior(self.model, self.G)
        return self._prior

    def _model_encoder(self):
        """The model's encoder for ``self.space`` (``inversion.encoder.encoder_for``), loaded on
        first use; ``None`` where the model ships none (the method then says so itself)."""
        if self._encoder is None:
            from faceedit.inversion.encoder import encoder_for, has_encoder

            if not has_encoder(self.model, self.space):
                return None
            self._encoder = encoder_for(self.model, self.space, G=self.G, device=self.device)[0]
        return self._encoder

    def preload(self, attributes=()) -> None:
        """Read now what inverting and editing a photo would read on first use: the prior (with
        the default ``prior``), the encoder (methods other than ``optim``), the directions of
        ``attributes`` and the paste-back's image library. Nothing changes but when the files
        are read: ``faceedit edit PHOTO`` calls it while the photo is aligned in the background.

        Args:
            attributes: the edit's ``{key: strength}`` (or keys).
        Raises:
            CheckpointError, EncoderError, DirectionError: as inverting and editing would raise them.
        """
        if self.invert_options.get("prior", "gaussian") == "gaussian":
            self._model_prior()
        if self.method != "optim" and "encoder" not in self.invert_options:
            self._model_encoder()
        if attributes:
            from faceedit.editing import resolve_directions

            resolve_directions(self.model_id, with_default_strength(attributes), self.directions, self.space)
        import cv2  # noqa: F401 -- paste_back's warps; its import is the first paste's largest cost

    def invert_faces(self, faces: list, *, callback: StepCallback | None = None,
                     identity: bool = False) -> Inversion:
        """Invert aligned faces and synthesize their reconstructions (noise maps and tuning used).

        Args:
            faces: ``AlignedFace`` objects or aligned ``[H, W, 3]`` uint8 crops.
            callback: optional step callback, as :meth:`invert`.
            identity: also measure identity (``identity_distance``, ``identity_similarity``) with
                dlib's face-recognition network (``faceedit.metrics.identity.IdentityEncoder``, built
                once per pipeline for the model's recipe).
        Returns:
            An :class:`Inversion` with one latent, target, reconstruction and metrics per face.
        Raises:
            IdentityUnavailableError: ``identity`` and dlib's face-recognition model is missing.
        """
        from faceedit.inversion.projector import target_images
        from faceedit.metrics.reconstruction import reconstruction_metrics

        batch = self.invert(faces, callback=callback)
        recon = self.synthesize(batch)
        targets = target_images(list(faces), self.G.resolution)
        if identity and self._identity is None:
            from faceedit.metrics.identity import IdentityEncoder

            self._identity = IdentityEncoder(recipe_scale=self.recipe.scale)
        metrics = reconstruction_metrics(targets, recon, identity=self._identity if identity else None)
        latents = []
        for k in range(batch.batch_size):
            one = batch[k]
            meta = dict(one.meta)
            meta["losses"] = {n: v[k] for n, v in batch.meta["losses"].items()}
            meta.pop("faces", None)
            latents.append(type(one)(space=one.space, codes=one.codes, model_id=one.model_id, z=one.z,
                                     noise=one.noise, tuning=one.tuning, meta=meta))
        per_face = [{n: float(v[k]) for n, v in metrics.items()} for k in range(batch.batch_size)]
        return Inversion(latents=latents, targets=targets, reconstructions=recon, metrics=per_face)

    def align_file(self, path, face="largest", *, aligned: bool = False) -> list:
        """``[(path, AlignedFace or None, crop)]`` for one photo file (``aligned``: the file is a crop).

        Raises:
            AlignmentError: no face was found, naming the file.
            ImageLoadError: the file cannot be read as a photo.
        """
        from faceedit.batchrun import prepare_photo

        item = prepare_photo(path, align_options=self.align_options(face), max_pixels=self.max_pixels, aligned=aligned)
        if item.exception is not None:
            raise item.exception
        return item.faces()

    def invert_files(self, photos: list, out, *, face="largest", aligned: bool = False, batch_size: int = 16,
                     quiet: bool = False, echo=None, overwrite: bool = False, retry_failed: bool = False,
                     workers: int | None = None, dist=None) -> InversionRun:
        """Align photos, invert their faces in batches and write each face's outputs and record,
        as one process or as every rank of a ``torchrun`` launch (``faceedit.batchrun.invert_photos``).

        Before any work: the folder and the cache (``last_inversion.json``) must be writable.
        Output names are planned for the whole run (``faceedit.outputs.OutputFolder``): no output
        lands on an input or on a file faceedit did not write, and two photos never share a name.
        The photos are cut into groups of ``batch_size``, dealt to the ranks, read and aligned in
        loader workers while the faces before are inverted; a group's faces are one batch, so
        the results do not depend on how many processes run.

        A face is done when its record in ``out`` names the photo and the same settings
        (``faceedit.outputs.inversion_settings``: model, space, method, steps, seed, prior,
        losses, detector) and its latent exists; a photo is done when the folder's manifest
        says so and its records exist: a re-run skips it. A photo that failed (no face,
        unreadable) is recorded as failed and skipped by a re-run unless ``retry_failed``.
        Results of these photos made with other settings stop the run before any inversion,
        saying what differs (``overwrite=True`` replaces them): a folder holds one consistent
        set, and nothing made earlier is lost to a changed option. A photo that fails with a
        user error is skipped and listed. The finished run is remembered for `faceedit edit`
        with every face the folder holds for these settings (``faceedit.outputs.write_last_inversion``).

        Args:
            photos: photo paths.
            out: output folder.
            face: ``largest``, ``all`` or a face index.
            aligned: the photos are aligned crops (no detection).
            batch_size: photos per group and faces inverted together (halved on out-of-memory).
            quiet: no progress bars.
            echo: callable for progress messages (resuming, batch shrinking), or ``None``.
                A single photo also gets its stages told and a bar over the optimisation steps.
            overwrite: replace results of these photos made with other settings.
            retry_failed: work again on photos that failed in an earlier run into ``out``.
            workers: processes per rank that read and align photos (``None``: the cores per
                process less one; 0: in this process).
            dist: the launch (``faceedit.core.distributed.DistContext``; default: read from the
                environment, a world of one without ``torchrun``).
        Returns:
            An :class:`InversionRun` (its ``failures`` list the photos skipped, of every rank).
        Raises:
            PipelineError: no photo gave a face, or results with other settings and not ``overwrite``.
            OutputError: ``out`` or the cache cannot be written.
        """
        from faceedit.batchrun import invert_photos

        return invert_photos(self, photos, out, face=face, aligned=aligned, batch_size=batch_size, quiet=quiet,
                             echo=echo, overwrite=overwrite, retry_failed=retry_failed, workers=workers, dist=dist)

    def faces_for_latents(self, photo: np.ndarray, latents: list, *, name: str = "the photo") -> tuple:
        """The faces of ``photo`` the latents were inverted from, and the paste-back options.

        Each face is re-detected (its landmarks give the hull mask) and matched to the
        alignment a latent records; where that fails, the recorded matrix and quad are used
        (and the mask is the quad). A latent made from an aligned crop (``invert --aligned``)
        records no alignment: it is pasted into ``photo`` as if ``photo`` were that crop,
        which needs ``photo`` to be square.

        Args:
            photo: ``[H, W, 3]`` uint8.
            latents: latents with ``alignment`` metadata (from ``faceedit invert``).
            name: how the photo is named in messages (its path).
        Returns:
            ``(faces, paste_options)``.
        Raises:
            PipelineError: a latent records no alignment and ``photo`` is not square.
        """
        from faceedit.alignment.types import AlignedFace, AlignmentRecipe

        faces, opts = [], {}
        for lat in latents:
            a = lat.meta.get("alignment")
            if not a:
                h, w = photo.shape[:2]
                if h != w:
                    raise PipelineError("the latent records no alignment (it was inverted from an aligned crop), so "
                                        f"it pastes only into that square crop; got a {w}x{h} photo. Invert the "
                                        "photo itself with `faceedit invert PHOTO`")
                s = self.G.resolution / h
                faces.append(AlignedFace(crop=photo, matrix=np.diag([s, s, 1.0]),
                                         quad=np.array([[0, 0], [0, h], [w, h], [w, 0]], np.float64),
                                         landmarks=np.zeros((0, 2)), score=0.0, source_size=(w, h), index=0,
                                         detector="", recipe=self.recipe))
                opts = {"mask": "quad"}
                continue
            stored = AlignedFace(crop=np.zeros((1, 1, 3), np.uint8), matrix=np.asarray(a["matrix"], np.float64),
                                 quad=np.asarray(a["quad"], np.float64), landmarks=np.zeros((0, 2)),
                                 score=float(a.get("score", 0.0)), source_size=tuple(a["source_size"]),
                                 index=int(a.get("index", 0)), detector=a.get("detector", ""),
                                 recipe=AlignmentRecipe.from_dict(a.get("recipe") or {}))
            try:
                match = [f for f in self.align(photo, face="all", name=name) if f.index == stored.index
                         and np.allclose(f.matrix, stored.matrix, atol=1e-3, rtol=1e-4)]
            except AlignmentError as e:  # no face found again: use the stored geometry
                log.info("re-alignment failed (%s); using the stored quad", e)
                match = []
            if match:
                faces.append(match[0])
            else:
                faces.append(stored)
                opts = opts or {"mask": "quad"}
        return faces, opts

    def edit_latents(self, latents: list, attributes: dict, *, photo: np.ndarray | None = None, layers=None,
                     name: str = "the photo"):
        """Edit latents from ``faceedit invert``; paste the edits into ``photo`` when given.

        Args:
            latents: latents (batches of one) of the faces of one photo.
            attributes: ``{key: strength}``.
            photo: the photo they were inverted from, or ``None`` (crops only).
            layers: restrict the edits to these layers.
            name: how the photo is named in messages (its path).
        Returns:
            An :class:`EditResult` with a photo, else a list of :class:`FaceEdit` (``face`` None).
        """
        if photo is not None:
            faces, opts = self.faces_for_latents(photo, latents, name=name)
            return self.edit_photo(photo, attributes, faces=faces, latents=latents, layers=layers,
                                   paste_options=opts)
        out = []
        for lat in latents:
            e = self.edit(lat, attributes, layers=layers)
            out.append(FaceEdit(face=None, latent=lat, edited=e, reconstruction=self.synthesize(lat)[0],
                                crop=self.synthesize(e)[0]))
        return out

    def sweep(self, faces: list, attributes, strengths, *, photo: np.ndarray | None = None, layers=None,
              max_side: int = 512) -> Sweep:
        """Each attribute at each strength, per face (crops) and, with ``photo``, pasted back.

        Args:
            faces: :class:`FaceEdit` objects (``EditResult.faces``).
            attributes: the attribute keys.
            strengths: the strengths.
            photo: the photo to paste into (frames are only made with one and aligned faces).
            layers: restrict the edits to these layers.
            max_side: frames are downscaled to this side at most.
        Returns:
            A :class:`Sweep`.
        """
        strengths = list(strengths)
        strips = []
        for fe in faces:
            tiles = [self.synthesize(self.edit(fe.latent, {key: s}, layers=layers))[0]
                     for key in attributes for s in strengths]
            strips.append((fe.face.index if fe.face is not None else 0, tiles))
        frames = {}
        if photo is not None and faces and faces[0].face is not None:
            scale = min(1.0, max_side / max(photo.shape[:2]))
            for key in attributes:
                frames[key] = []
                for s in strengths:
                    img = photo
                    for fe in faces:
                        e = self.edit(fe.latent, {key: s}, layers=layers)
                        img, _ = self.paste_back(img, fe.face, self.synthesize(e)[0], fe.reconstruction)
                    if scale < 1:
                        import cv2

                        img = cv2.resize(img, (round(img.shape[1] * scale), round(img.shape[0] * scale)),
                                         interpolation=cv2.INTER_AREA)
                    frames[key].append(img)
        return Sweep(strengths=strengths, strips=strips, frames=frames)

    def edit_file(self, src, out, attributes: dict, *, latents: list | None = None, face="largest", layers=None,
                  strengths=None, echo=None, stem: str | None = None, source=None, aligned=None,
                  inverted=None, writer=None):
        """Edit one photo file (aligned and inverted first) or the latents of one photo, and write
        the outputs and record (``faceedit.outputs.write_edit``).

        Args:
            src: the photo's path; with ``latents`` it may be ``None`` or missing (crops only).
            out: output folder.
            attributes: ``{key: strength}``.
            latents: latents from ``faceedit invert`` of the faces of ``src``, or ``None``.
            face: without latents: ``largest``, ``all`` or a face index.
            layers: restrict the edits to these layers.
            strengths: also sweep each attribute over these strengths (strip and GIF).
            echo: callable told each stage (``aligning and inverting ...``), or ``None``; with
                one, the inversion also shows a bar over its steps (:func:`step_bar`).
            stem: the outputs' stem (default: the photo's file stem; :func:`edit_files` plans one).
            source: the input the outputs belong to in the folder's list (default ``src``).
            aligned: the photo read and aligned elsewhere: ``(photo, AlignmentReport, {"read": s,
                "align": s})`` as ``faceedit.alignment.background.read_and_align`` returns them
                with :meth:`align_options` (``face`` as here; the dict may also give the ``wait``
                for them, recorded as ``align_wait``, and the ``preload`` time spent meanwhile,
                :meth:`preload`); ``None``: read and align here.
            inverted: with ``aligned``: ``(latents, seconds)``, the latents of its faces (one per
                face, in order) inverted by :meth:`invert` with this pipeline's settings, beside
                other photos' faces in one batch (``faceedit.batchrun.edit_jobs``), and the share
                of that inversion's time to record; ``None``: invert here.
            writer: a ``concurrent.futures.Executor`` to write the outputs in (PNG encoding and
                file writes, no torch: the edited latents are moved to the CPU here first), so that
                the caller goes on with the next photo; ``None``: written before returning.
        Returns:
            The record, or with ``writer`` the ``Future`` of the record.
        Raises:
            OutputError: an output would replace an input or a file faceedit did not write
                (with ``writer``: from the future's ``result()``).
        """
        from pathlib import Path

        from faceedit import outputs
        from faceedit.core.images import load_image

        attributes = with_default_strength(attributes)
        stage = echo or (lambda msg: None)

        t0 = time.perf_counter()
        faces = done = None
        if aligned is not None:
            photo, report, done = aligned
            self._notify(report, str(src))
            faces = report.faces
        else:
            photo = load_image(src, max_pixels=self.max_pixels) if src is not None and Path(src).is_file() else None
        t_read = time.perf_counter() - t0
        if stem is None:
            stem = Path(src).stem if src is not None else Path(latents[0].meta.get("source", "latent")).stem
        if inverted is not None and faces is None:
            raise PipelineError("edit_file(inverted=...) goes with aligned=...: the latents are of its faces")
        if latents is None and inverted is not None:
            stage(f"editing {src}, inverted beside other photos")
            res = self.edit_photo(photo, attributes, faces=faces, latents=inverted[0], layers=layers, name=str(src))
            res.timings["invert"] = round(float(inverted[1]), 3)
        elif latents is None:
            stage(f"aligning and inverting {src} into {self.space} with {self.method}, then editing")
            with step_bar(f"{self.method} steps", disable=True if echo is None else None) as on_step:
                res = self.edit_photo(photo, attributes, face=face, faces=faces, layers=layers, callback=on_step,
                                      name=str(src))
        else:
            if photo is None and src is not None:
                log.warning("source photo %s not found: writing crops only (pass --photo)", src)
            stage(f"editing {len(latents)} latent(s)" + (f" and pasting into {src}" if photo is not None else ""))
            res = self.edit_latents(latents, attributes, photo=photo, layers=layers, name=str(src))
        faces = res if isinstance(res, list) else res.faces
        timings = {} if isinstance(res, list) else {"read": round(t_read, 3), **res.timings}
        if done is not None:  # read and aligned in the background: their own times, and the wait for them
            timings.update(read=round(done["read"], 3), align=round(done["align"], 3),
                           align_wait=round(done.get("wait", t_read), 3))
            if "preload" in done:
                timings["preload"] = round(done["preload"], 3)
        if strengths:
            stage(f"sweeping {', '.join(map(str, attributes))} over {len(strengths)} strengths")
        sweep = (self.sweep(faces, list(attributes), strengths, photo=photo, layers=layers)
                 if strengths else None)
        inversion = None if latents is not None else {"method": self.method, "space": self.space,
                                                      **self.invert_options}
        write = functools.partial(outputs.write_edit, out, stem, src, res, pairs=attributes, layers=layers,
                                  inversion=inversion, unit=self.strength_unit, model_id=self.model_id,
                                  timings=timings, sweep=sweep, source=source)
        if writer is None:
            return write()
        for fe in faces:  # the writer thread makes no CUDA call (none may run beside a graph capture)
            fe.edited = fe.edited.to("cpu")
        return writer.submit(write)

    def edit(self, latent, attributes, **kw):
        """``faceedit.editing.edit`` with this pipeline's directions and strength unit; an
        attribute named without a strength (``"smile"``, ``["smile", "age"]``) gets
        ``faceedit.defaults.DEFAULT_STRENGTH``.

        Unless ``self.force``, a strength past ``MAX_STRENGTH`` or a latent (given or edited)
        farther than ``FAR_FROM_PRIOR`` from the model's distribution raises
        :class:`OutOfDistributionError` (see ``faceedit.defaults``)."""
        from faceedit.editing import edit, resolve_directions

        attributes = with_default_strength(attributes)

        latent.check_model(self.model_id)
        latent.check_generator(self.G)
        kw.setdefault("directions", self.directions)
        kw.setdefault("strength_unit", self.strength_unit)
        if not self.force:
            for d, s in resolve_directions(latent.model_id, attributes, kw["directions"], latent.space):
                std = s if kw["strength_unit"] == "std" else s / d.latent_std
                if abs(std) > MAX_STRENGTH:
                    raise OutOfDistributionError(
                        f"strength {s:g} of {d.key}" + ("" if kw["strength_unit"] == "std" else f" ({std:.3g} std)")
                        + f" is beyond the range its directions were measured on (|strength| <= {MAX_STRENGTH:g} "
                        f"std); the result would be noise pasted into the face. Lower it, or pass --force "
                        f"(force=True) to make it anyway")
            self._check_distribution(latent, "the latent")
        edited = edit(latent, attributes, **kw)
        if not self.force:
            self._check_distribution(edited, "the edited latent")
        return edited

    def distance_from_prior(self, latent) -> torch.Tensor:
        """Squared Mahalanobis distance per dimension ``[B]`` of a latent's codes from the model's
        distribution: under its Gaussianized prior when it has one, else under a diagonal Gaussian
        of 4096 mapping samples. A mapping sample reads about 1 (see ``faceedit.defaults``)."""
        import torch

        if self._distance is None:
            from faceedit.core.errors import InversionError
            from faceedit.inversion.prior import gaussianize, load_prior

            try:
                prior = self._prior if self._prior is not None else load_prior(self.model, self.G, fit=False)
                self._distance = lambda codes: prior.mahalanobis(codes) / prior.total_dim
            except InversionError:
                with torch.no_grad():
                    gen = torch.Generator().manual_seed(0)
                    z = torch.randn((4096, *self.G.z_shape), generator=gen).to(self.device)
                    v = gaussianize(self.G.mapping(z).float()).cpu()
                mean, std = v.mean(0), v.std(0).clamp_min(1e-8)
                self._distance = lambda codes: ((gaussianize(codes.float()) - mean) / std).square().mean(dim=(1, 2))
        with torch.no_grad():
            return self._distance(latent.codes.detach().float().cpu())

    def _check_distribution(self, latent, what: str) -> None:
        d = float(self.distance_from_prior(latent).max())
        if not d <= FAR_FROM_PRIOR:
            raise OutOfDistributionError(
                f"{what} lies far outside {self.model_name}'s distribution (squared distance {d:.3g} per dimension "
                f"under its prior; mapping samples read about 1, inverted faces and measured edits stay below "
                f"{FAR_FROM_PRIOR:g}); its image would be noise pasted into the face. Invert the photo again or "
                f"lower the strength, or pass --force (force=True) to make it anyway")

    def direction(self, attribute: str, hold=()):
        """The direction of ``attribute`` for this pipeline's model and space, with ``hold`` kept fixed.

        The shipped (or fitted) conditional direction ``attribute|hold`` is used where one exists;
        otherwise the primal direction is projected off the held attributes' directions
        (InterFaceGAN's conditional manipulation, ``faceedit.editing.fit.condition``), so any
        set of held attributes works; its strength scale (``latent_std``) is measured on
        :data:`CONDITION_SAMPLES` mapping samples, drawn once per pipeline.

        Args:
            attribute: an attribute name (``smile``).
            hold: attribute names to keep fixed (``["male", "age"]``); the attribute itself is ignored.
        Returns:
            A :class:`~faceedit.editing.Direction`, usable as an edit key (``pipe.edit(latent, {d: 2})``).
        Raises:
            DirectionError: a direction is missing, or lies in the span of the held ones.
        """
        from faceedit.editing import DirectionError, canonical_attribute, find_direction, list_directions

        attribute = canonical_attribute(attribute)
        held = sorted({canonical_attribute(h) for h in hold} - {attribute})
        pool = self.directions
        if isinstance(pool, (str, os.PathLike)):
            pool = [d for _, d in list_directions(folder=pool)]
        elif isinstance(pool, dict):
            pool = list(pool.values())

        def find(key):
            return find_direction(self.model_id, key, self.space, candidates=pool)

        if held:
            try:
                return find(f"{attribute}|{','.join(held)}")
            except DirectionError:
                from faceedit.editing.fit import condition, sample_codes

                if self._codes is None:
                    self._codes = sample_codes(self.G, CONDITION_SAMPLES)
                return condition(find(attribute), [find(h) for h in held], codes=self._codes)
        return find(attribute)

    def synthesize(self, latent) -> np.ndarray:
        """``[B, R, R, 3]`` uint8 images of a latent (its optimised noise maps and pivotal tuning used)."""
        import torch

        from faceedit.core.images import tensor_to_uint8
        from faceedit.inversion.pti import synthesize

        latent.check_model(self.model_id)
        latent.check_generator(self.G)
        with torch.no_grad():
            return tensor_to_uint8(synthesize(self.G, latent))

    def paste_back(self, photo: np.ndarray, face, crop: np.ndarray, reference: np.ndarray, return_mask: bool = True,
                   **options):
        """``faceedit.alignment.paste_back(photo, face, crop, mode='residual', reference=reference)``
        with ``self.paste_options`` updated by ``options``."""
        from faceedit.alignment import paste_back

        return paste_back(photo, face, crop, mode="residual", reference=reference, return_mask=return_mask,
                          **{**self.paste_options, **options})

    # -- the chain --------------------------------------------------------------------------
    def edit_photo(self, photo: np.ndarray, attributes: dict, *, face="largest", faces: list | None = None,
                   latents=None, reconstructions=None, layers=None, paste_options: dict | None = None,
                   callback: StepCallback | None = None, name: str = "the photo") -> EditResult:
        """Edit the face(s) of a photo.

        Args:
            photo: ``[H, W, 3]`` RGB uint8 (``faceedit.load_image`` gives one).
            attributes: ``{"smile": 2, "age|male": -1}`` (see ``faceedit.editing.edit``), or
                names alone (``"smile"``, ``["smile", "age"]``) for ``DEFAULT_STRENGTH`` each.
            face: ``largest``, ``all`` or a face index (0 = leftmost).
            faces: already aligned faces of this photo (skips alignment).
            latents: their inverted latent(s) (a batched ``Latent`` or a list; skips inversion).
            reconstructions: with ``latents``: their ``[R, R, 3]`` uint8 syntheses, one per face
                (``Inversion.reconstructions``, ``FaceEdit.reconstruction``), so that an edit of
                cached latents synthesizes only the edited codes (one synthesis per face, not two).
            layers: restrict the edits to these layers.
            paste_options: paste-back options for this photo (override ``self.paste_options``).
            callback: optional step callback of the inversion, as :meth:`invert`.
            name: how the photo is named in messages (its path).
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
            faces = self.align(photo, face=face, name=name)
        t["align"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        if latents is None:
            batch = self.invert(faces, callback=callback)
            lats = [batch[i] for i in range(batch.batch_size)]
        else:
            lats = _as_list(latents)
        if len(lats) != len(faces):
            raise PipelineError(f"{len(lats)} latents for {len(faces)} faces; pass one latent per face")
        recons = [None] * len(lats) if reconstructions is None else list(reconstructions)
        if len(recons) != len(lats):
            raise PipelineError(f"{len(recons)} reconstructions for {len(lats)} latents; pass one per latent")
        t["invert"] = time.perf_counter() - t0
        t["edit"] = t["synthesize"] = t["paste"] = 0.0
        out, results = photo, []
        for f, lat, recon in zip(faces, lats, recons):
            t0 = time.perf_counter()
            edited = self.edit(lat, attributes, layers=layers)
            t1 = time.perf_counter()
            recon = self.synthesize(lat)[0] if recon is None else np.asarray(recon)
            crop = self.synthesize(edited)[0]
            t2 = time.perf_counter()
            out, mask = self.paste_back(out, f, crop, recon, **(paste_options or {}))
            t3 = time.perf_counter()
            t["edit"] += t1 - t0
            t["synthesize"] += t2 - t1
            t["paste"] += t3 - t2
            results.append(FaceEdit(face=f, latent=lat, edited=edited, reconstruction=recon, crop=crop, mask=mask))
        edits = {str(getattr(k, "key", k)): float(v) for k, v in dict(attributes).items()}
        return EditResult(photo=out, input=photo, faces=results, edits=edits,
                          timings={k: round(v, 3) for k, v in t.items()})


def _want_graphs(choice, device) -> bool:
    """The pipeline's ``cuda_graphs``: as given, or (``None``) on exactly when ``device`` is CUDA."""
    return device.type == "cuda" if choice is None else bool(choice)


def _align_device(choice, device, detector: str):
    """The ``device`` of ``align_photo`` for a pipeline on ``device`` (``None``: the CPU); see ``Pipeline``."""
    if detector != "mtcnn":
        return None
    if choice is None or str(choice) == "auto":
        return device if device.type == "cuda" else None
    from faceedit.core.device import resolve_device

    dev = resolve_device(choice)
    return None if dev.type == "cpu" else dev


def model_for_latent(latent) -> str:
    """The model a latent belongs to: its registry name, or the path recorded at inversion.

    Raises:
        PipelineError: the latent's model is neither registered nor recorded.
    """
    from faceedit.checkpoints.registry import REGISTRY

    name = latent.model_id.split("@")[0]
    if name in REGISTRY:
        return name
    for k in ("model_path", "model"):
        if latent.meta.get(k):
            return latent.meta[k]
    raise PipelineError(f"the latent belongs to {latent.model_id!r}, which is not a registered model; "
                        f"pass --model PATH")


def check_attributes(model: str, attributes, directions=None) -> None:
    """Check attribute names against the direction files, before any model is loaded.

    A name that is an alias (``gender`` for ``male``) is logged as such; a name no direction
    file of ``model`` (or of the folder ``directions``) carries raises with the closest match.
    Where no direction file is found at all the check is left to the edit (whose error says
    how to fit one).

    Args:
        model: registry name of the model (or the latent's model id).
        attributes: the keys (``smile``, ``age|male``).
        directions: a folder of direction files, or ``None`` (shipped and cached).
    Raises:
        DirectionError: a name matches no direction (``did you mean smile?``).
    """
    import difflib

    from faceedit.editing.direction import DirectionError, canonical_attribute, list_directions

    if directions is not None and not isinstance(directions, (str, os.PathLike)):
        return
    pool = list_directions(folder=directions) if directions is not None else list_directions(str(model))
    known = sorted({d.attribute for _, d in pool})
    for key in attributes:
        if not isinstance(key, str):
            continue
        for name in re.split(r"[|,]", key):
            if not name.strip():
                continue
            canon = canonical_attribute(name)
            if canon != name.strip().lower():
                log.warning("attribute %r maps to the %r direction", name, canon)
            if known and canon not in known:
                close = difflib.get_close_matches(canon, known, n=1)
                hint = f" (did you mean {close[0]}?)" if close else ""
                raise DirectionError(f"no direction {name!r} for {model}{hint}; available: {', '.join(known)}")


def edit_files(out, attributes: dict, *, photos=(), latent_files=(), photo=None, model=None, space: str = "w+",
               face="largest", layers=None, strengths=None, echo=None, background: bool | None = None,
               retry_failed: bool = False, workers: int | None = None, dist=None, batch_size: int | None = None,
               **pipeline_options) -> EditRun:
    """Edit photos, or latent files, or (with neither) the faces of the last `faceedit invert` run,
    as one process or as every rank of a ``torchrun`` launch (``faceedit.batchrun.edit_jobs``).

    Latents are grouped by their source photo (``photo`` overrides it), and one
    :class:`Pipeline` is built per model and space; each photo's outputs go to ``out``
    (:meth:`Pipeline.edit_file`). The inputs are dealt to the ranks in groups of ``batch_size``.

    The batch behaviour is the one every command has: before any model is loaded the output
    folder is checked and (one process) every photo's header read; an input that fails
    (unreadable, no face, a damaged latent, an edit out of range) is listed in ``failures``
    and the others go on. Output names are planned for the whole run
    (``faceedit.outputs.OutputFolder``), so no output lands on an input or on a file faceedit
    did not write, and two photos never share a name. An input the folder's manifest lists
    as edited with the same settings (edits, model, options) is skipped; one that failed with
    them is skipped unless ``retry_failed``; results of an earlier edit of the same input with
    other settings are replaced, and told to ``echo`` before the work.

    Args:
        out: output folder.
        attributes: ``{key: strength}``.
        photos: photo paths (folders expanded).
        latent_files: latent paths.
        photo: with latents: the photo to paste into instead of the recorded source.
        model: the model for photos (latents name their own unless given).
        space: the space photos are inverted into.
        face: for photos: ``largest``, ``all`` or a face index.
        layers: restrict the edits to these layers.
        strengths: also sweep over these strengths.
        echo: callable told each stage when there is a single photo (and what is replaced), or ``None``.
        background: read and align the photos in worker processes: a single photo in a
            ``faceedit.alignment.background.BackgroundAligner`` started before torch and the
            model load, several in the loader workers of ``faceedit.batchrun.prepared_photos``;
            ``None`` (default): when this process may run on two cores or more. The outputs are
            the same either way.
        retry_failed: work again on inputs that failed in an earlier run into ``out``.
        workers: loader processes for several photos (``None``: the cores per process less one).
        dist: the launch (``faceedit.core.distributed.DistContext``; default: read from the environment).
        batch_size: photos per group, whose faces are inverted as one batch (``None``: 16 on
            CUDA, 4 elsewhere: ``faceedit.batchrun.EDIT_BATCH``).
        **pipeline_options: :class:`Pipeline` keywords (``method``, ``device``, ``detector``,
            ``max_pixels``, ``force``, ...).
    Returns:
        An :class:`EditRun`: one record per photo edited, and the failures (of every rank).
    Raises:
        PipelineError: photos and latents together, ``photo`` with several latents, or every input failed.
        OutputError: ``out`` cannot be written.
    """
    from faceedit import outputs

    photos = outputs.collect_photos(photos)
    if photos and latent_files:
        raise PipelineError("give photos or latents, not both (pair a latent with its photo via --photo)")
    if photo is not None and len(latent_files) > 1:
        raise PipelineError("--photo goes with a single --latent")
    inputs = [*photos, *latent_files, *([photo] if photo is not None else [])]
    if model is not None and Path(str(model)).is_file():
        inputs.append(model)
    folder = outputs.OutputFolder(out, inputs, command="edit").check()
    if background is None:
        from faceedit.core.threads import available_cores

        background = available_cores() >= 2
    aligner = None
    if len(photos) == 1 and background and dist is None and "WORLD_SIZE" not in os.environ:
        from faceedit.alignment.background import BackgroundAligner  # before anything imports torch: the

        aligner = BackgroundAligner(pipeline_options.get("detector", "dlib"))  # worker loads dlib's models meanwhile
    try:
        from faceedit.batchrun import edit_jobs
        from faceedit.core.distributed import context

        dist = dist if dist is not None else context(pipeline_options.get("device", "auto") or "auto")
        folder.journal = dist.distributed
        settings = {"attributes": {_attribute_setting(k): float(v)
                                   for k, v in with_default_strength(attributes).items()},
                    "layers": layers, "strengths": strengths, "model": _as_setting(model), "space": space,
                    "face": face, "photo": _as_setting(photo),
                    "options": {k: _as_setting(v) for k, v in pipeline_options.items()
                                if k not in ("device", "notice")},
                    "direction_files": _direction_files(pipeline_options.get("directions"))}
        return edit_jobs(folder, with_default_strength(attributes), photos, latent_files, photo, model, space, face,
                         layers, strengths, echo, aligner, pipeline_options, settings=settings, dist=dist,
                         retry_failed=retry_failed, workers=(workers if background else 0), batch_size=batch_size)
    finally:
        if aligner is not None:
            aligner.close()


def _as_setting(value):
    """A setting as the manifest keys a run by it: a file or folder by its path and its last change
    (a checkpoint or direction folder replaced in place is another setting), anything else as it is."""
    if isinstance(value, (str, os.PathLike)) and os.path.exists(value):
        st = os.stat(value)
        return [str(Path(value).resolve()), st.st_size, st.st_mtime_ns]
    return value


def _attribute_setting(key) -> str:
    """An edit key as a setting: a name as it is, a ``Direction`` by its key and a hash of its vector."""
    if not hasattr(key, "vector"):
        return str(key)
    import hashlib

    return f"{key.key}@{hashlib.sha256(key.vector.detach().cpu().numpy().tobytes()).hexdigest()[:12]}"


def _direction_files(directions) -> list:
    """``[[path, size, mtime], ...]`` of the direction files an edit may read (the folder given, or the
    shipped and cached ones): a direction fitted or replaced since makes another edit setting."""
    from faceedit.checkpoints.registry import WEIGHTS_DIR, cache_dir

    if directions is not None and not isinstance(directions, (str, os.PathLike)):
        return []  # Direction objects: their values are in the settings already
    roots = [Path(directions)] if directions is not None else [WEIGHTS_DIR / "directions", cache_dir() / "directions"]
    return [_as_setting(p) for r in roots if r.is_dir() for p in sorted(r.rglob("*.safetensors"))]


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


__all__ = ["Pipeline", "EditResult", "EditRun", "FaceEdit", "Inversion", "InversionRun", "OutOfDistributionError",
           "Sweep", "edit_files",
           "model_for_latent", "with_default_strength"]
