"""`faceedit ui`: a local web page for editing the faces of a photo, built on Gradio.

Every step of the page is a :class:`faceedit.Pipeline` call; the page adds no image logic
of its own:

* a photo arrives: ``faceedit.load_image`` (the CLI's size, pixel and format checks), then
  ``Pipeline.align(photo, face="all")``; every face is boxed and can be chosen (or all);
* a face is chosen: ``Pipeline.invert_faces([face], callback=..., identity=True)``, its steps
  shown as a progress bar; the latent, reconstruction and metrics are cached per face and
  per model, space, method and settings, so coming back to a choice costs nothing;
* a slider moves: ``Pipeline.edit_photo(photo, edits, faces=..., latents=...,
  reconstructions=...)`` with the cached latents: one synthesis per face and the paste-back,
  never a new inversion (``bench/scripts/ui_latency.py`` measures it);
* attributes held fixed: ``Pipeline.direction(attribute, hold)``;
* a sweep: ``Pipeline.sweep`` and ``faceedit.outputs.write_sweep`` (the GIF `faceedit edit
  --sweep` writes); downloads: ``faceedit.outputs.write_edit`` (the photo, latents and JSON
  record `faceedit edit` writes).

Why Gradio: it is what this field's demos ship (InterFaceGAN, SeFa, StyleCLIP, e4e,
HyperStyle), and it already has what a safe local page needs and would otherwise be
written by hand on a bare web framework: a request queue with per-event concurrency limits,
progress bars fed from a worker thread, an upload size limit enforced while receiving,
per-session state with a delete hook, and inputs that may only name files the server
received itself. Streamlit re-runs the whole script on every slider move (the latent cache
would live in a global) and NiceGUI has no queue; both are no lighter to install.

Safety: the page listens on 127.0.0.1 unless ``host`` says otherwise (the CLI then warns).
Uploads are refused by Gradio above four times ``max_file_bytes`` while they arrive; below
that ``faceedit.load_image`` applies ``max_file_bytes`` and ``max_pixels`` and gives the CLI's
message. The client never names a path: Gradio accepts only files under its own upload
folder, which lives in a private temporary folder with the session folders; a session's
folder goes when its state expires and the whole folder when the server stops. The slow
work (alignment, inversion) runs through Gradio's queue one request at a time; sweeps and
downloads have their own lane of two; slider moves skip the queue (see :func:`build_app`),
so one photo's inversion never holds back another's slider.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from faceedit.core.errors import PipelineError
from faceedit.core.images import DEFAULT_MAX_PIXELS
from faceedit.defaults import DEFAULT_STRENGTH, MAX_STRENGTH

log = logging.getLogger(__name__)

#: Attributes whose sliders are shown first, in this order; the rest are behind "more".
PRIMARY = ("smile", "age", "male", "eyeglasses", "yaw")
#: Direction methods whose components are not named attributes (shown apart).
UNSUPERVISED = ("ganspace", "sefa")
#: Range of every strength slider (in standard deviations of the latent distribution).
STRENGTH_RANGE = MAX_STRENGTH
#: Default upload limit of the page (the CLI's is ``faceedit.core.images.MAX_FILE_BYTES``).
DEFAULT_MAX_FILE_BYTES = 25 * 2**20
#: Uploads this many times over ``max_file_bytes`` are refused by Gradio while they arrive.
UPLOAD_WALL = 4
#: Longest side of the photos shown in the page (downloads keep the photo's size).
PREVIEW_SIDE = 1024
#: Side of the face crops shown in the page (upscaled with nearest neighbour).
CROP_VIEW = 256
#: Height of the photo views in the page, in CSS pixels.
PHOTO_VIEW = 400
#: Frames of a sweep (strengths from -amount to +amount).
SWEEP_FRAMES = 7
#: Layer groups offered for the edits, as fractions of the generator's layers.
LAYER_GROUPS = {"all": None, "coarse": (0.0, 0.4), "middle": (0.4, 0.8), "fine": (0.8, 1.0)}
#: Seconds a session's state (and its files) is kept after its last use.
SESSION_TTL = 3600


class UiError(PipelineError):
    """A request the page cannot serve (no photo yet, an unknown face)."""


@dataclass
class UiSettings:
    """How the page is served.

    Attributes:
        model: the model chosen when the page opens (default: the default model of W+).
        device: ``auto``, ``cpu`` or ``cuda``.
        max_file_bytes: largest photo file accepted.
        max_pixels: largest photo accepted, in pixels.
        examples: example photos offered under the upload box.
        detector: face detector (``dlib``, ``dlib-cnn``, ``mtcnn``).
        steps: inversion steps (None: each method's default).
        min_score: detections scoring below this are not faces (None: the detector's rule, as
            ``Pipeline(min_score=)``).
        seed: inversion seed.
    """

    model: str | None = None
    device: str = "auto"
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES
    max_pixels: int = DEFAULT_MAX_PIXELS
    examples: tuple = ()
    detector: str = "dlib"
    steps: int | None = None
    min_score: float | None = None
    seed: int = 0


@dataclass
class FaceResult:
    """One face's inversion under one choice of model, space, method and settings."""

    latent: object
    target: np.ndarray
    reconstruction: np.ndarray
    metrics: dict
    seconds: float


@dataclass
class Session:
    """What one browser tab has done: its photo, faces, cached inversions and its folder.

    Attributes:
        folder: the session's private folder (downloads, GIFs), removed by :meth:`close`.
        name: the photo's file stem as uploaded (used in messages and download names).
        photo: ``[H, W, 3]`` uint8, or ``None`` before a photo.
        faces: ``{(recipe name, size, scale, detector): [AlignedFace]}`` (faces left to right).
        results: ``{(face index, choice): FaceResult}``.
        selected: indices of the chosen faces.
        choice: ``(model, space, method, steps, seed, detector)`` of the shown inversion.
        saves: how many sweeps and downloads were written (each in its own subfolder).
    """

    folder: Path
    name: str = ""
    photo: np.ndarray | None = None
    faces: dict = field(default_factory=dict)
    results: dict = field(default_factory=dict)
    selected: list = field(default_factory=list)
    choice: tuple | None = None
    saves: int = 0

    def close(self) -> None:
        """Remove the session's folder."""
        shutil.rmtree(self.folder, ignore_errors=True)


Progress = Callable[[float, str], None]


def _no_progress(fraction: float, desc: str) -> None:
    pass


class Editor:
    """The server side of the page: models, pipelines, time estimates and the handlers.

    The handlers take and return plain values (arrays, strings, dicts), so they can be
    called without a browser; :func:`build_app` wires them to Gradio components.

    Args:
        settings: a :class:`UiSettings`.
        root: the folder sessions are made in (default: a new temporary folder, removed by
            :meth:`close`).
    """

    def __init__(self, settings: UiSettings | None = None, root: str | os.PathLike | None = None):
        from faceedit.checkpoints.registry import default_model, list_models

        self.settings = settings or UiSettings()
        self.root = Path(root) if root is not None else Path(tempfile.mkdtemp(prefix="faceedit-ui-"))
        self._own_root = root is None
        self.models = {e.name: e for e, where in list_models() if where is not None}
        self.default_model = self.settings.model or default_model("w+")
        if self.default_model not in self.models:
            from faceedit.checkpoints.registry import resolve

            resolve(self.default_model)  # a path: checked here, listed by its name once loaded
        self._loaded = {}
        self._pipes = {}
        self._locks = {}
        self._directions = {}
        self._estimates = {}
        self._measured = {}
        self._guard = threading.Lock()

    # -- models and pipelines ------------------------------------------------------------
    def spaces(self, model: str) -> list:
        """The spaces ``model`` can be inverted into."""
        e = self.models.get(model)
        if e is not None:
            return list(e.spaces)
        kind = getattr(self._pipeline(model, "w+", None)[0].G, "mapping_kind", "mlp")
        return ["w+", "wpp", "wpp-z"] if kind == "transformer" else ["w", "w+"]

    def methods(self, model: str, space: str) -> list:
        """The inversion methods that serve ``model`` in ``space`` (the encoder ones only with an encoder)."""
        from faceedit.inversion.encoder import has_encoder

        pipe, _ = self._pipeline(model, space, None)
        enc = space != "wpp-z" and has_encoder(pipe.model, space)
        return (["encoder", "hybrid"] if enc else []) + ["optim", "pti"]

    def default_method(self, model: str, space: str) -> str:
        return self._pipeline(model, space, None)[0].method

    def _pipeline(self, model: str, space: str, method: str | None, steps: int | None = None,
                  seed: int | None = None, detector: str | None = None, extra: tuple = ()):
        """``(Pipeline, lock)`` for one choice, built once; ``lock`` guards PTI's generator copy.

        A PTI latent is synthesised by adding its deltas to the generator's weights in place
        (``inversion.pti.apply_tuning``), so PTI pipelines run on their own copy of the generator,
        one request at a time; every other pipeline shares the model's generator, which they
        only read.
        """
        from faceedit.pipeline import Pipeline

        seed = self.settings.seed if seed is None else seed
        detector = detector or self.settings.detector
        key = (model, space, method, steps, seed, detector, extra)
        with self._guard:  # held for look-ups only: a model loads without stopping other requests
            if key in self._pipes:
                return self._pipes[key]
            tuned = method == "pti"
            first, base = self._loaded.get((model, False)), self._loaded.get((model, tuned))
        if first is None:
            first = Pipeline(model, space=space, device=self.settings.device).model
            with self._guard:
                first = self._loaded.setdefault((model, False), first)
        if base is None:
            base = dataclasses.replace(first, G=copy.deepcopy(first.G)) if tuned else first
            with self._guard:
                base = self._loaded.setdefault((model, tuned), base)
        opts = {"seed": int(seed), **({"steps": int(steps)} if steps else {}), **dict(extra)}
        pipe = Pipeline(base, space=space, method=method, device=self.settings.device, detector=detector,
                        invert_options=opts, max_pixels=self.settings.max_pixels, min_score=self.settings.min_score)
        pipe.model_name = model
        with self._guard:
            lock = self._locks.setdefault((model, tuned), threading.Lock() if tuned else contextlib.nullcontext())
            return self._pipes.setdefault(key, (pipe, lock))

    # -- time estimates --------------------------------------------------------------------
    def estimates(self, model: str, space: str, steps: int | None = None) -> dict:
        """Seconds each method would take for one face here: ``{method: (seconds, how)}``.

        ``how`` is ``measured`` once a face was inverted that way in this server, else
        ``estimated``: the fixed cost and the per-step cost of each kind of step are timed once
        per model and space on a grey crop (a step costs the same whatever the face), and
        scaled to the method's default step counts.
        """
        from faceedit.inversion.hybrid import hybrid_steps
        from faceedit.inversion.projector import default_steps
        from faceedit.inversion.pti import pti_steps

        with self._guard:
            cal = self._estimates.get((model, space))
        if cal is None:
            cal = self._calibrate(model, space)
            with self._guard:
                self._estimates[(model, space)] = cal
        dev = self._pipeline(model, space, None)[0].device
        n_optim = steps or default_steps(dev)
        n_hybrid = steps or hybrid_steps(dev)
        n_pti = steps or pti_steps(dev)
        step, setup, enc = cal["step"], cal["setup"], cal.get("encoder")
        out = {"optim": setup + n_optim * step}
        if enc is not None:
            out["encoder"] = enc
            out["hybrid"] = enc + setup + n_hybrid * step
        pivot = out["hybrid" if enc is not None else "optim"]
        out["pti"] = pivot + cal["pti_setup"] + n_pti * cal["tune_step"]
        res = {m: (s, "estimated") for m, s in out.items()}
        for m in res:
            got = self._measured.get((model, space, m, steps))
            if got is not None:
                res[m] = (got, "measured")
        return res

    def _calibrate(self, model: str, space: str) -> dict:
        has_encoder = "encoder" in self.methods(model, space)
        pivot = (("pivot_method", "encoder"),) if has_encoder else (("pivot_method", "optim"), ("pivot_steps", 1))
        timings = {}
        crop = None
        for method, steps, extra in (("optim", 1, ()), ("optim", 4, ()), ("encoder", None, ()), ("pti", 3, pivot)):
            if method == "encoder" and not has_encoder:
                continue
            pipe, lock = self._pipeline(model, space, method, steps=steps, extra=extra)
            if crop is None:
                r = pipe.G.resolution
                crop = np.full((r, r, 3), 127, np.uint8)
            stamps = []

            def stamp(step, total, losses, stamps=stamps):
                stamps.append(time.perf_counter())

            with lock:
                t0 = time.perf_counter()
                pipe.invert_faces([crop], callback=stamp, identity=True)  # as the page inverts
                timings[(method, steps)] = (t0, stamps, time.perf_counter())
        t0, st, t1 = timings[("optim", 4)]
        step = float(np.median(np.diff(st))) if len(st) > 1 else (t1 - t0) / 4
        cal = {"step": step, "setup": max(0.0, (t1 - t0) - len(st) * step)}
        if ("encoder", None) in timings:
            t0, _, t1 = timings[("encoder", None)]
            cal["encoder"] = t1 - t0
        t0, st, t1 = timings[("pti", 3)]
        tune = st[-3:]
        cal["tune_step"] = float(np.median(np.diff(tune))) if len(tune) > 1 else (t1 - t0) / 3
        pivot = cal.get("encoder", cal["setup"] + cal["step"])
        cal["pti_setup"] = max(0.0, (t1 - t0) - pivot - len(tune) * cal["tune_step"])
        log.info("time estimates for %s %s: %s", model, space, cal)
        return cal

    # -- the handlers ------------------------------------------------------------------------
    def new_session(self) -> Session:
        """A session with its own folder under the server's."""
        (self.root / "sessions").mkdir(parents=True, exist_ok=True)
        return Session(folder=Path(tempfile.mkdtemp(dir=self.root / "sessions")))

    def open_photo(self, session: Session, path, *, name: str | None = None, progress: Progress = _no_progress,
                   model: str | None = None, space: str = "w+") -> list:
        """Read an uploaded photo and find its faces.

        Args:
            session: the tab's :class:`Session` (its photo and faces are replaced).
            path: the file Gradio received (never a path the client chose).
            name: the file's name as the user knows it (messages name it, as the CLI names the file).
            progress: ``progress(fraction, description)``.
            model, space: the model whose alignment recipe cuts the faces.
        Returns:
            The faces, left to right.
        Raises:
            ImageLoadError: too large, too many pixels, not an image (the CLI's messages).
            FaceNotFoundError: no face (the CLI's message, naming the file).
        """
        from faceedit.core.errors import AlignmentError, ImageLoadError
        from faceedit.core.images import load_image

        path = Path(path)
        name = name or path.name
        session.photo, session.faces, session.results, session.selected, session.choice = None, {}, {}, [], None
        progress(0.0, f"reading {name}")
        try:
            photo = load_image(path, max_pixels=self.settings.max_pixels, max_bytes=self.settings.max_file_bytes)
        except ImageLoadError as e:
            raise ImageLoadError(str(e).replace(str(path), name)) from None
        session.name = Path(name).stem or "photo"
        session.photo = photo
        progress(0.3, f"finding the faces of {name}")
        try:
            return self.faces(session, model or self.default_model, space)
        except AlignmentError as e:  # the same class and message as `faceedit invert PHOTO`
            session.photo = None
            raise type(e)(f"{name}: {e}") from None

    def faces(self, session: Session, model: str, space: str) -> list:
        """The faces of the session's photo, cut with ``model``'s recipe (found once per recipe)."""
        pipe, _ = self._pipeline(model, space, None)
        r = pipe.recipe
        key = (r.name, r.size, r.scale, self.settings.detector)
        if key not in session.faces:
            session.faces[key] = pipe.align(self._photo(session), face="all")
        return session.faces[key]

    def invert(self, session: Session, selection, model: str, space: str, method: str | None = None, *,
               progress: Progress = _no_progress) -> list:
        """Invert the chosen faces (those not inverted with this choice yet).

        Args:
            session: the tab's session.
            selection: a face index, a list of them, or ``"all"``.
            model, space, method: the choice (``method`` None: the model's default).
            progress: ``progress(fraction, description)``, told every optimisation step.
        Returns:
            The :class:`FaceResult` of each chosen face.
        """
        faces = self.faces(session, model, space)
        idx = self._selection(selection, faces)
        method = method or self.default_method(model, space)
        steps, seed = self.settings.steps, self.settings.seed
        choice = (model, space, method, steps, seed, self.settings.detector)
        todo = [i for i in idx if (i, choice) not in session.results]
        if todo:
            pipe, lock = self._pipeline(model, space, method, steps=steps, seed=seed)
            what = f"inverting {len(todo)} face(s) into {space} with {method}"
            progress(0.0, what)

            def on_step(step, total, losses):
                progress((step + 1) / max(1, total), f"{what}: step {step + 1}/{total}")

            with lock:
                t0 = time.perf_counter()
                inv = pipe.invert_faces([faces[i] for i in todo], callback=on_step, identity=True)
                dt = time.perf_counter() - t0
            for k, i in enumerate(todo):
                session.results[(i, choice)] = FaceResult(latent=inv.latents[k], target=inv.targets[k],
                                                          reconstruction=inv.reconstructions[k],
                                                          metrics=inv.metrics[k], seconds=dt / len(todo))
            if len(todo) == 1:
                self._measured[(model, space, method, steps)] = dt
        session.selected, session.choice = idx, choice
        return [session.results[(i, choice)] for i in idx]

    def edit(self, session: Session, strengths: dict, *, hold=(), layers: str = "all"):
        """Edit the chosen faces with the cached latents and paste them back.

        Args:
            session: the tab's session (a photo inverted).
            strengths: ``{attribute: strength}``; zeros are skipped (all zero: the reconstruction,
                and the photo unchanged).
            hold: attributes kept fixed (conditional directions).
            layers: ``all``, ``coarse``, ``middle`` or ``fine`` (see :data:`LAYER_GROUPS`).
        Returns:
            The :class:`faceedit.pipeline.EditResult`.
        """
        pipe, lock, faces, results = self._current(session)
        edits = {}
        for attr, s in strengths.items():
            if s:
                d = self.direction(pipe, attr, tuple(h for h in hold if h != attr))
                edits[d] = edits.get(d, 0.0) + float(s)
        if not edits:  # strength 0: the photo as given, the reconstruction as the crop
            edits = {self.direction(pipe, PRIMARY[0], ()): 0.0}
        with lock:
            return pipe.edit_photo(session.photo, edits, faces=faces, latents=[r.latent for r in results],
                                   reconstructions=[r.reconstruction for r in results],
                                   layers=self._layers(pipe, layers))

    def direction(self, pipe, attribute: str, hold: tuple):
        """``pipe.direction(attribute, hold)``, found once per model, space and held set."""
        key = (pipe.model_id, pipe.space, attribute, tuple(sorted(hold)))
        if key not in self._directions:
            self._directions[key] = pipe.direction(attribute, hold)
        return self._directions[key]

    def sweep(self, session: Session, attribute: str, amount: float, *, hold=(), layers: str = "all") -> Path:
        """A GIF of the photo with ``attribute`` swept from ``-amount`` to ``+amount`` (and back).

        Returns:
            The GIF's path in the session's folder.
        """
        from faceedit import outputs

        pipe, lock, faces, results = self._current(session)
        d = self.direction(pipe, attribute, tuple(h for h in hold if h != attribute))
        a = abs(float(amount)) or 1.0
        strengths = [-a + 2 * a * k / (SWEEP_FRAMES - 1) for k in range(SWEEP_FRAMES)]
        from faceedit.pipeline import FaceEdit

        fes = [FaceEdit(face=f, latent=r.latent, edited=r.latent, reconstruction=r.reconstruction,
                        crop=r.reconstruction) for f, r in zip(faces, results)]
        with lock:
            sw = pipe.sweep(fes, [d], strengths, photo=session.photo, layers=self._layers(pipe, layers))
        sw.frames = {attribute: next(iter(sw.frames.values()))}  # named for the GIF's file name
        session.saves += 1
        out = session.folder / f"sweep{session.saves}"
        written = outputs.write_sweep(out, session.name, sw)
        return Path(written["gifs"][0])

    def save(self, session: Session, strengths: dict, *, hold=(), layers: str = "all") -> list:
        """Write what `faceedit edit` writes for the current edit; the files to offer for download.

        Returns:
            ``[edited photo (PNG, the input's size), latent file per face, JSON record]``.
        """
        from faceedit import outputs

        res = self.edit(session, strengths, hold=hold, layers=layers)
        pipe, _, _, results = self._current(session)
        session.saves += 1
        out = session.folder / f"save{session.saves}"
        model, space, method, steps, seed, detector = session.choice
        inversion = {"method": method, "space": space, "steps": steps, "seed": seed, "detector": detector,
                     "metrics": [r.metrics for r in results]}
        pairs = {self.direction(pipe, k, tuple(h for h in hold if h != k)).key: float(v)
                 for k, v in strengths.items() if v}
        rec = outputs.write_edit(out, session.name, None, res, pairs=pairs or {PRIMARY[0]: 0.0},
                                 layers=self._layers(pipe, layers), inversion=inversion, unit=pipe.strength_unit,
                                 model_id=pipe.model_id, timings=res.timings)
        return [Path(rec["photo_out"]), *[Path(f["latent"]) for f in rec["faces"]], out / f"{session.name}_edit.json"]

    # -- helpers -------------------------------------------------------------------------------
    @staticmethod
    def _photo(session: Session) -> np.ndarray:
        if session.photo is None:
            raise UiError("no photo yet: drop a photo (JPEG, PNG, WebP, ...) or pick an example")
        return session.photo

    @staticmethod
    def _selection(selection, faces: list) -> list:
        if selection in (None, "", "all"):
            return list(range(len(faces))) if selection == "all" else [largest_face(faces)]
        items = selection if isinstance(selection, (list, tuple)) else [selection]
        idx = []
        for s in items:
            try:
                i = int(s)
            except (TypeError, ValueError):
                raise UiError(f"face {s!r} is not a face number or 'all'") from None
            if not 0 <= i < len(faces):
                raise UiError(f"face {i} does not exist: the photo has {len(faces)} face(s), 0 to {len(faces) - 1}")
            idx.append(i)
        return idx

    def _current(self, session: Session):
        self._photo(session)
        if session.choice is None or not session.selected:
            raise UiError("no face inverted yet: choose a face first")
        model, space, method, steps, seed, detector = session.choice
        pipe, lock = self._pipeline(model, space, method, steps=steps, seed=seed, detector=detector)
        faces = self.faces(session, model, space)
        return pipe, lock, [faces[i] for i in session.selected], [session.results[(i, session.choice)]
                                                                   for i in session.selected]

    @staticmethod
    def _layers(pipe, group: str):
        if group not in LAYER_GROUPS:
            raise UiError(f"layers must be one of {', '.join(LAYER_GROUPS)}, got {group!r}")
        span = LAYER_GROUPS[group]
        if span is None:
            return None
        n = int(pipe.G.num_ws)
        a, b = round(span[0] * n), round(span[1] * n)
        return list(range(a, max(a + 1, b)))

    def close(self) -> None:
        """Remove the server's temporary folder (when it made one)."""
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)


def largest_face(faces: list) -> int:
    """Index of the face with the largest quad (the CLI's ``--face largest``)."""
    def area(f):
        q = np.asarray(f.quad, np.float64)
        x, y = q[:, 0], q[:, 1]
        return 0.5 * abs(float(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))

    return max(range(len(faces)), key=lambda i: area(faces[i]))


def preview(image: np.ndarray, side: int = PREVIEW_SIDE) -> tuple:
    """``(image downscaled to at most side pixels, scale)`` for showing in the page."""
    import cv2

    h, w = image.shape[:2]
    s = min(1.0, side / max(h, w))
    if s == 1.0:
        return image, 1.0
    return cv2.resize(image, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA), s


def face_boxes(faces: list, scale: float = 1.0) -> list:
    """``[((x0, y0, x1, y1), label)]``: each face's crop quad as an axis-aligned box."""
    out = []
    for f in faces:
        q = np.asarray(f.quad, np.float64) * scale
        x0, y0 = np.floor(q.min(0)).astype(int)
        x1, y1 = np.ceil(q.max(0)).astype(int)
        out.append(((int(x0), int(y0), int(x1), int(y1)), f"face {f.index}"))
    return out


def quality_text(results: list, choice: tuple) -> str:
    """One Markdown line per face: PSNR, SSIM, identity, method, steps and time."""
    model, space, method, steps, _, _ = choice
    lines = []
    for r in results:
        m = r.metrics
        ident = (f" · identity **{m['identity_similarity']:.2f}** (dlib distance {m['identity_distance']:.2f})"
                 if "identity_similarity" in m else " · identity: dlib's face-recognition model is not installed")
        ran = r.latent.meta.get("steps")
        lines.append(f"PSNR **{m['psnr']:.1f} dB** · SSIM {m['ssim']:.3f}{ident} · {model}, {space}, {method}"
                     + (f", {ran} steps" if ran else "") + f", {r.seconds:.1f} s")
    return "  \n".join(lines)


# ---------------------------------------------------------------------------------------------
# the page
# ---------------------------------------------------------------------------------------------
CSS = """
#fe-status { border-left: 4px solid var(--color-accent); padding: 6px 12px; background: var(--block-background-fill); }
#fe-status .fe-error { color: #b42318; }
#fe-quality { min-height: 1.5em; }
footer { display: none !important; }
"""


def _import_gradio():
    try:
        import gradio as gr
    except ImportError as e:
        raise PipelineError("the page needs Gradio: pip install 'faceedit[ui]' (or pip install gradio)") from e
    return gr


def attribute_groups(editor: Editor) -> tuple:
    """``(primary, more, unsupervised)`` attribute names over the models on this machine."""
    from faceedit.editing import list_directions

    named, unsup = set(), set()
    for model in sorted(editor.models) or [editor.default_model]:
        for _, d in list_directions(model):
            if d.conditions:
                continue
            (unsup if d.method in UNSUPERVISED else named).add(d.attribute)
    primary = [a for a in PRIMARY if a in named or not named]
    more = sorted(named - set(primary))

    def numbered(a):  # pc2 before pc10
        stem = a.rstrip("0123456789")
        return stem, int(a[len(stem):] or 0)

    return primary, more, sorted(unsup, key=numbered)


def build_app(editor: Editor):
    """The Gradio ``Blocks`` of the page, wired to ``editor``'s handlers.

    Args:
        editor: an :class:`Editor`.
    Returns:
        A ``gradio.Blocks`` (not launched).
    """
    gr = _import_gradio()
    from faceedit.errors import USER_ERRORS
    from faceedit.outputs import PHOTO_EXTS, upscale_for_view

    primary, more, unsup = attribute_groups(editor)
    attrs = primary + more + unsup
    model0 = editor.default_model
    spaces0 = editor.spaces(model0)
    space0 = "w+" if "w+" in spaces0 else spaces0[0]

    from html import escape  # file names come from the client: never HTML

    def failed(e) -> str:
        return f"<div class='fe-error'><b>{type(e).__name__}</b>: {escape(str(e))}</div>"

    def method_update(model, space, value=None):
        est = editor.estimates(model, space, editor.settings.steps)
        methods = editor.methods(model, space)
        choices = []
        for m in methods:
            sec, how = est.get(m, (None, ""))
            tag = "" if sec is None else (f" · {sec:.1f} s here" if how == "measured" else f" · ≈{sec:.1f} s")
            choices.append((m + tag, m))
        value = value if value in methods else editor.default_method(model, space)
        return gr.update(choices=choices, value=value)

    def crop_view(img):
        return None if img is None else upscale_for_view(np.asarray(img)[None], CROP_VIEW)[0]

    def ensure(session):
        return session if session is not None else editor.new_session()

    with gr.Blocks(title="faceedit", analytics_enabled=False, delete_cache=(600, SESSION_TTL)) as demo:
        session = gr.State(None, time_to_live=SESSION_TTL,
                           delete_callback=lambda s: s.close() if isinstance(s, Session) else None)
        gr.Markdown("## faceedit: edit the faces of a photo\n"
                    "Drop a photo, choose a face, move the sliders. Everything runs on this machine; "
                    "the photo never leaves it.")
        status = gr.HTML("Drop a photo (JPEG, PNG, WebP, ...) or pick an example.", elem_id="fe-status")
        slider = dict(minimum=-STRENGTH_RANGE, maximum=STRENGTH_RANGE, value=0.0, step=0.5)
        with gr.Row():
            with gr.Column(scale=1, min_width=280):
                photo_in = gr.File(label=f"Photo (up to {editor.settings.max_file_bytes / 2**20:.0f} MiB, "
                                         f"{editor.settings.max_pixels / 1e6:.0f} MP)",
                                   file_types=sorted(PHOTO_EXTS), type="filepath", elem_id="fe-photo")
                if editor.settings.examples:
                    gr.Examples(examples=[[str(p)] for p in editor.settings.examples], inputs=[photo_in],
                                label="Examples")
                model_in = gr.Dropdown(choices=sorted({*editor.models, model0}), value=model0, label="Model",
                                       elem_id="fe-model")
                space_in = gr.Radio(choices=spaces0, value=space0, label="Latent space", elem_id="fe-space")
                method_in = gr.Radio(choices=editor.methods(model0, space0),
                                     value=editor.default_method(model0, space0),
                                     label="Inversion method (time for one face on this machine)",
                                     elem_id="fe-method")
            with gr.Column(scale=2):
                boxes = gr.AnnotatedImage(label="Faces found (click one to choose it)", elem_id="fe-faces",
                                          height=PHOTO_VIEW, show_legend=False)
                face_in = gr.Radio(choices=[], label="Face", elem_id="fe-face")
            with gr.Column(scale=2):
                photo_out = gr.Image(label="Edited photo (the edit pasted back)", type="numpy", format="jpeg",
                                     interactive=False, elem_id="fe-edited", height=PHOTO_VIEW)
        with gr.Row():
            with gr.Column(scale=1, min_width=280):
                sliders = {a: gr.Slider(label=a, elem_id=f"fe-s-{a}", **slider) for a in primary}
                if more:
                    with gr.Accordion("More attributes", open=False):
                        sliders.update({a: gr.Slider(label=a, elem_id=f"fe-s-{a}", **slider) for a in more})
                if unsup:
                    with gr.Accordion("GANSpace and SeFa directions", open=False):
                        sliders.update({a: gr.Slider(label=a, elem_id=f"fe-s-{a}", **slider) for a in unsup})
                hold = gr.CheckboxGroup(choices=list(primary), value=[], label="Hold fixed while editing "
                                        "(conditional directions)", elem_id="fe-hold")
                layers = gr.Radio(choices=list(LAYER_GROUPS), value="all", label="Apply to layers",
                                  elem_id="fe-layers")
                gr.Markdown("Strength 1 = one standard deviation of the latent distribution along the "
                            f"direction; the CLI's default is {DEFAULT_STRENGTH:g}.")
                reset = gr.Button("Reset sliders", size="sm")
            with gr.Column(scale=4):
                with gr.Row(equal_height=True):
                    aligned = gr.Image(label="Aligned face", type="numpy", format="png", interactive=False,
                                       elem_id="fe-aligned", height=CROP_VIEW)
                    recon = gr.Image(label="Reconstruction", type="numpy", format="png", interactive=False,
                                     elem_id="fe-recon", height=CROP_VIEW)
                    crop_out = gr.Image(label="Edited face", type="numpy", format="png", interactive=False,
                                        elem_id="fe-crop", height=CROP_VIEW)
                quality = gr.Markdown("", elem_id="fe-quality")
                with gr.Row():
                    with gr.Column(scale=1, min_width=240):
                        sweep_attr = gr.Dropdown(choices=attrs, value=attrs[0] if attrs else None, label="Sweep",
                                                 elem_id="fe-sweep-attr")
                        sweep_amount = gr.Slider(0.5, STRENGTH_RANGE, value=3.0, step=0.5,
                                                 label="Sweep from -S to +S", elem_id="fe-sweep-amount")
                        sweep_btn = gr.Button("Play sweep as GIF", elem_id="fe-sweep")
                        save_btn = gr.Button("Prepare downloads", variant="primary", elem_id="fe-save")
                        downloads = gr.File(label="Downloads: edited photo, latent(s), JSON record",
                                            file_count="multiple", interactive=False, elem_id="fe-downloads")
                    with gr.Column(scale=2):
                        gif = gr.Image(label="Sweep", type="filepath", interactive=False, elem_id="fe-gif",
                                       height=PHOTO_VIEW)

        slider_list = [sliders[a] for a in attrs]

        # -- handlers ------------------------------------------------------------------------
        track = gr.Progress()  # a marker: Gradio gives each event its own tracker in its place
        def on_photo(path, model, space, sess, progress=track):
            sess = ensure(sess)
            empty = (None, gr.update(choices=[], value=None), None, None, None, "", None, None, None)
            if path is None:
                sess.photo = None
                return (*empty, "Drop a photo (JPEG, PNG, WebP, ...) or pick an example.", sess)
            try:
                faces = editor.open_photo(sess, path, name=Path(path).name, model=model, space=space,
                                          progress=lambda f, d: progress(f, desc=d))
            except USER_ERRORS as e:
                return (*empty, failed(e), sess)
            view, s = preview(sess.photo)
            first = largest_face(faces)
            choices = [(f"face {f.index}", str(f.index)) for f in faces] + ([("all", "all")] if len(faces) > 1 else [])
            msg = (f"{len(faces)} face(s) in {escape(sess.name)}; inverting face {first}"
                   + (" (the largest)" if len(faces) > 1 else "") + "...")
            return ((view, face_boxes(faces, s)), gr.update(choices=choices, value=str(first)), None, None, None,
                    "", None, None, None, msg, sess)

        def on_invert(sess, face, model, space, method, progress=track):
            if sess is None or sess.photo is None:
                return (gr.skip(),) * 6
            try:
                res = editor.invert(sess, face, model, space, method, progress=lambda f, d: progress(f, desc=d))
            except USER_ERRORS as e:
                return None, None, "", failed(e), gr.skip(), sess
            first = res[0]
            msg = (f"{len(res)} face(s) of {escape(sess.name)} inverted: move a slider." if len(res) > 1
                   else f"Face {sess.selected[0]} of {escape(sess.name)} inverted: move a slider.")
            return (crop_view(first.target), crop_view(first.reconstruction), quality_text(res, sess.choice), msg,
                    method_update(model, space, method), sess)

        def strengths_of(values):
            return {a: float(v) for a, v in zip(attrs, values) if v}

        def on_edit(sess, hold_v, layers_v, *values):  # returns the session too: a move keeps it alive
            if sess is None or sess.choice is None:
                return gr.skip(), gr.skip(), gr.skip(), gr.skip()
            try:
                res = editor.edit(sess, strengths_of(values), hold=hold_v or (), layers=layers_v)
            except USER_ERRORS as e:
                return gr.skip(), gr.skip(), failed(e), sess
            return crop_view(res.faces[0].crop), preview(res.photo)[0], gr.skip(), sess

        def on_sweep(sess, attr, amount, hold_v, layers_v, progress=track):
            try:
                progress(0.1, desc=f"sweeping {attr}")
                path = editor.sweep(ensure(sess), attr, amount, hold=hold_v or (), layers=layers_v)
            except USER_ERRORS as e:
                return None, failed(e)
            return str(path), f"Sweep of {escape(str(attr))} from -{amount:g} to +{amount:g}, there and back."

        def on_save(sess, hold_v, layers_v, *values, progress=track):
            try:
                progress(0.1, desc="writing the edited photo, latents and record")
                files = editor.save(ensure(sess), strengths_of(values), hold=hold_v or (), layers=layers_v)
            except USER_ERRORS as e:
                return None, failed(e)
            return [str(p) for p in files], f"Ready: {escape(', '.join(p.name for p in files))}."

        def on_model(model):
            sp = editor.spaces(model)
            space = "w+" if "w+" in sp else sp[0]
            return gr.update(choices=sp, value=space), method_update(model, space)

        def on_select(evt):
            return str(evt.index) if evt is not None and evt.index is not None else gr.skip()

        on_select.__annotations__["evt"] = gr.SelectData  # resolved here: this module postpones annotations

        invert_io = dict(inputs=[session, face_in, model_in, space_in, method_in],
                         outputs=[aligned, recon, quality, status, method_in, session],
                         concurrency_id="heavy", concurrency_limit=1)
        # Slider moves skip the queue: they take tens of milliseconds, the queue's round trips would add
        # more, and they must never wait behind an inversion; they run in the server's thread pool.
        edit_io = dict(fn=on_edit, inputs=[session, hold, layers, *slider_list],
                       outputs=[crop_out, photo_out, status, session], show_progress="hidden", queue=False)

        photo_in.change(on_photo, inputs=[photo_in, model_in, space_in, session],
                        outputs=[boxes, face_in, aligned, recon, crop_out, quality, photo_out, gif, downloads, status,
                                 session],
                        concurrency_id="heavy", concurrency_limit=1, api_name="open_photo"
                        ).then(on_invert, **invert_io).then(**edit_io)
        face_in.input(on_invert, **invert_io).then(**edit_io)
        boxes.select(on_select, None, face_in).then(on_invert, **invert_io).then(**edit_io)
        method_in.input(on_invert, **invert_io).then(**edit_io)
        space_in.input(lambda m, s: method_update(m, s), [model_in, space_in], [method_in],
                       concurrency_id="heavy").then(on_invert, **invert_io).then(**edit_io)
        model_in.input(on_model, [model_in], [space_in, method_in], concurrency_id="heavy"
                       ).then(on_invert, **invert_io).then(**edit_io)
        for s in slider_list:
            s.change(trigger_mode="always_last", **edit_io)
        hold.change(trigger_mode="always_last", **edit_io)
        layers.change(trigger_mode="always_last", **edit_io)
        reset.click(lambda: [0.0] * len(slider_list), None, slider_list)
        sweep_btn.click(on_sweep, [session, sweep_attr, sweep_amount, hold, layers], [gif, status],
                        concurrency_id="light", concurrency_limit=2)
        save_btn.click(on_save, [session, hold, layers, *slider_list], [downloads, status],
                       concurrency_id="light", concurrency_limit=2)
        demo.load(lambda m, s: method_update(m, s), [model_in, space_in], [method_in], concurrency_id="heavy")
    return demo


@dataclass
class Server:
    """A running page: its address, the Gradio app and the editor (see :func:`serve`)."""

    url: str
    demo: object
    editor: Editor

    def block(self) -> None:
        """Serve until Ctrl-C or SIGTERM, then :meth:`close`."""
        try:
            self.demo.block_thread()
        finally:
            self.close()

    def close(self) -> None:
        """Stop the server and remove every temporary file it made."""
        try:
            self.demo.close()
        except Exception as err:  # noqa: BLE001 - the temporary files below are removed whatever Gradio raises
            log.warning("closing the Gradio app failed (%s: %s); its temporary files are removed anyway",
                        type(err).__name__, err)
        self.editor.close()


def is_loopback(host: str) -> bool:
    """Whether ``host`` names only this machine (``127.0.0.1``, ``::1``, ``localhost``)."""
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(settings: UiSettings | None = None, *, host: str = "127.0.0.1", port: int = 7860) -> Server:
    """Start the page in the background and return once it answers.

    Gradio's uploads and cache go to a private temporary folder (``GRADIO_TEMP_DIR`` is set for
    this process before Gradio is imported) and its telemetry is off; :meth:`Server.close`
    removes the folder.

    Args:
        settings: a :class:`UiSettings`.
        host: the address to listen on; anything but a loopback address is logged as a warning
            (everyone who reaches it can use the page).
        port: the TCP port.
    Returns:
        A :class:`Server`.
    Raises:
        PipelineError: Gradio is missing, or the port is taken.
    """
    settings = settings or UiSettings()
    editor = Editor(settings)
    os.environ["GRADIO_TEMP_DIR"] = str(editor.root / "uploads")
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    try:
        gr = _import_gradio()
        demo = build_app(editor)
        demo.queue(max_size=64, default_concurrency_limit=1)
        if not is_loopback(host):
            log.warning("faceedit ui listens on %s: anyone who can reach this machine on port %d can use the page "
                        "and upload photos to it", host, port)
        theme = gr.themes.Default(primary_hue="blue")
        try:
            demo.launch(server_name=host, server_port=int(port), prevent_thread_lock=True, quiet=True,
                        max_file_size=UPLOAD_WALL * settings.max_file_bytes, share=False, ssr_mode=False,
                        allowed_paths=sorted({str(Path(p).resolve().parent) for p in settings.examples}),
                        theme=theme, css=CSS, mcp_server=False)
        except OSError as e:
            raise PipelineError(f"cannot listen on {host}:{port} ({e}); pass another --port") from e
    except BaseException:
        editor.close()
        raise
    shown = "localhost" if host in ("127.0.0.1", "localhost") else host
    return Server(url=f"http://{shown}:{port}/", demo=demo, editor=editor)


def example_photos() -> tuple:
    """The example photos beside the package (``examples/*.jpg`` of a source checkout), if any."""
    from faceedit.inputs import folder_photos

    folder = Path(__file__).resolve().parents[1] / "examples"
    return tuple(folder_photos(folder)) if folder.is_dir() else ()


__all__ = ["Editor", "UiSettings", "Session", "FaceResult", "Server", "UiError", "build_app", "serve",
           "example_photos", "largest_face", "face_boxes", "preview", "quality_text", "is_loopback"]
