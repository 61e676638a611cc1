"""Batch runs over many inputs, by one process or by every rank of a ``torchrun`` launch.

``faceedit invert DIR`` and ``faceedit edit DIR`` run this code as one process; launched as
``torchrun --nproc_per_node N [--nnodes M ...] -m faceedit invert DIR --out OUT``, as the N x M
processes of the launch, which share the inputs and the output folder. The code is the same:

* **Sharding.** The inputs keep their order (a folder's photos sorted) and are cut into groups
  of consecutive inputs: ``invert`` groups ``--batch`` photos, ``edit`` too (by default 16 on
  CUDA, 4 on the CPU: :data:`EDIT_BATCH`). Group ``g`` goes to
  rank ``g mod world size`` (``faceedit.core.distributed.group_shards``). A group is fixed by the
  inputs and the group size alone, and the faces of its photos still to do are inverted as one
  batch, so the batch a face is inverted in, hence every float of its result, is the same
  whatever the number of processes: 2 processes write the images and latents of 1, byte for
  byte. Dealing photos one by one would not do: the optimiser's reductions run over the batch,
  so a face inverted beside other faces comes out different in its last bits.
* **One plan.** Rank 0 alone plans the run, before any rank writes: the outputs' names
  (``OutputFolder.plan_stems``, so a photo's outputs have one path whatever the number of
  processes), the settings check, and which inputs are done, failed or still to do (the
  manifest, ``faceedit.outputs``); every rank gets that plan (``decided_by_main``).
* **Alignment beside the GPU.** Each rank reads and aligns its photos in the worker processes of
  a ``torch.utils.data.DataLoader`` (:func:`prepared_photos`; by default the node's cores per
  process, less the one the process itself needs, so none on a 1-core machine: then in the
  process), keeping two groups ahead, while the process inverts. A worker calls
  :func:`prepare_photo`, as the process does without workers, so the faces are the same.
* **The manifest.** Each rank records its inputs as pending when it starts, and each group's
  inputs as done (naming the record files that mark them done) or failed (with the message)
  once the group's files are written: a killed rank loses at most the group it was working
  on, and every file it wrote is whole (atomic writes). A re-run skips what is done, and what
  failed unless ``retry_failed``: those are listed again and still make the exit code 1.
* **Progress.** Rank 0 shows one bar over the whole run, counting every rank's done and failed
  lines as they reach the manifest; each rank records the end of its share there, waits for
  the others' (a wait on files, which no collective's timeout cuts short), and the ranks then
  gather their counts into one summary (photos, faces, failures, photos/s per process).

``align`` shares the sharding, the manifest and the summary (its own worker pool writes the crops).
"""
from __future__ import annotations

import contextlib
import logging
import secrets
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from faceedit.core.errors import PipelineError

if TYPE_CHECKING:
    from faceedit.core.distributed import DistContext

log = logging.getLogger(__name__)

#: Seconds between two readings of the manifest for the progress bar and the wait for the other ranks.
POLL_SECONDS = 0.5
#: Photos a loader worker must have to be started, at least (:func:`worker_photos` asks more of a
#: detector whose worker starts slowly).
PHOTOS_PER_WORKER = 4
#: Seconds until a loader worker has aligned its first photo, beyond the photo itself: it imports
#: torch (every DataLoader worker does) and loads the detector. MTCNN (facenet-pytorch, torchvision,
#: its three networks, a first pass): 3.6 s on the 16-core GPU machine; dlib (HOG file and 68-point
#: predictor, 0.3 s): the torch import, about 2 s on a CPU core.
WORKER_START_SECONDS = {"mtcnn": 3.6, "dlib": 2.0, "dlib-cnn": 2.0}
#: Seconds a worker aligns a 1-2 MP photo in, once started (one core): MTCNN on its 1024 px copy
#: with the mtcnn5 landmarks about 0.25 s (``bench/results/alignment/mtcnn_coarse.json``), dlib's
#: coarse HOG pass and dlib68 about 0.1 s, dlib's CNN several seconds.
WORKER_PHOTO_SECONDS = {"mtcnn": 0.25, "dlib": 0.1, "dlib-cnn": 3.0}
#: Seconds the process itself spends on a 1-2 MP photo when it aligns on its GPU (decode, MTCNN on the
#: 1024 px copy, the mtcnn5 landmarks): an estimate for :func:`in_process_photos` (``photo_path.py`` measures it).
GPU_PHOTO_SECONDS = 0.08


# ----------------------------------------------------------------------------- the launch
# ``dist=None`` stands for a world of one throughout: a process that is not part of a launch then
# never imports torch here (``faceedit align`` runs without it).
def _distributed(dist) -> bool:
    return dist is not None and dist.distributed


def is_main(dist) -> bool:
    """Whether this process tells the run (rank 0, or the only process)."""
    return dist is None or dist.is_main


def shards(n: int, size: int, dist) -> list:
    """This rank's groups of ``size`` consecutive inputs (``faceedit.core.distributed.group_shards``)."""
    if not _distributed(dist):
        return [range(g * size, min(n, (g + 1) * size)) for g in range(-(-n // max(1, size)))]
    from faceedit.core.distributed import group_shards

    return group_shards(n, size, dist)


def decided(dist, decide):
    """``decide()`` on rank 0, its result on every rank (``faceedit.core.distributed.decided_by_main``)."""
    if not _distributed(dist):
        return decide()
    from faceedit.core.distributed import decided_by_main

    return decided_by_main(dist, decide)


@contextlib.contextmanager
def launched(device="auto"):
    """This process's place in its launch and the device it runs on, for the length of a command.

    Args:
        device: ``auto``, ``cpu``, ``cuda`` or a ``torch.device``.
    Yields:
        ``(DistContext, torch.device)``: a world of one without ``torchrun``; under ``torchrun``
        with CUDA, this rank's own GPU (``cuda:LOCAL_RANK``).
    Raises:
        DeviceError: no such device, or an inconsistent launch.
    """
    from faceedit.core.device import resolve_device
    from faceedit.core.distributed import launch, rank_device

    dev = resolve_device(device)
    with launch(dev) as ctx:
        yield ctx, rank_device(ctx, dev)


def loader_workers(requested: int | None = None, *, cores: int | None = None, per_node: int | None = None) -> int:
    """Worker processes that read and align photos for one process of the launch.

    Args:
        requested: the number asked for (``--workers``); ``None``: choose.
        cores: the cores this process may use (default: its CPU affinity).
        per_node: processes of the launch on this node (default: ``LOCAL_WORLD_SIZE``, 1).
    Returns:
        ``requested`` if given, else the node's cores per process less one (the process's own):
        1 for one process on 2 cores, 0 for two processes on 2 cores or one on 1 core, 15 for
        one process on 16 cores.
    """
    if requested is not None:
        return max(0, int(requested))
    from faceedit.core.distributed import local_world_size
    from faceedit.core.threads import available_cores

    cores = available_cores() if cores is None else max(1, int(cores))
    per_node = local_world_size() if per_node is None else max(1, int(per_node))
    return max(0, cores // per_node - 1)


def worker_photos(detector: str | None) -> int:
    """Photos a loader worker must have to be worth its start with ``detector``.

    A worker's start (:data:`WORKER_START_SECONDS`) is spent before its first photo; it pays
    when the photos it aligns take at least that long (:data:`WORKER_PHOTO_SECONDS` each), and
    never for fewer than :data:`PHOTOS_PER_WORKER`: 14 photos a worker with MTCNN, 20 with
    dlib's HOG, 4 with dlib's CNN. Fewer, slower-starting workers also leave the cores to the
    process itself while it loads its model and starts its GPU.
    """
    start = WORKER_START_SECONDS.get(detector or "dlib", 2.0)
    each = WORKER_PHOTO_SECONDS.get(detector or "dlib", 0.1)
    return max(PHOTOS_PER_WORKER, int(round(start / each)))


def in_process_photos(n: int, detector: str | None, seconds_per_photo: float) -> int:
    """How many of ``n`` photos the process aligns itself, on its GPU, before the loader's workers take over.

    The workers start at once and align the rest; the process aligns the first photos while
    they start (their :data:`WORKER_START_SECONDS`, at ``seconds_per_photo`` each), and all of
    them where the rest would not pay for one worker (:func:`worker_photos`).

    Args:
        n: photos to align.
        detector: the detector.
        seconds_per_photo: what one photo costs the process (read, detect and landmarks on its GPU).
    Returns:
        A count in ``0..n``.
    """
    head = int(WORKER_START_SECONDS.get(detector or "dlib", 2.0) / max(1e-3, float(seconds_per_photo)))
    return n if n - head < worker_photos(detector) else max(0, head)


# ----------------------------------------------------------------------------- reading and aligning
@dataclass
class Prepared:
    """One photo read (and aligned) for a batch run.

    Attributes:
        path: the photo file, as given.
        photo: the photo ``[H, W, 3]`` uint8 when kept (``keep_photo``, or an aligned crop), else ``None``.
        report: its :class:`~faceedit.alignment.align.AlignmentReport` (``None`` for an aligned crop
            or a failure).
        exception: the user's error (``ImageLoadError``, ``FaceNotFoundError``, ...) when the photo
            could not be read or had no face, else ``None``.
        seconds: ``{"read": s, "align": s}`` as the reading process measured them.
    """

    path: str
    photo: np.ndarray | None
    report: object | None
    exception: BaseException | None
    seconds: dict

    @property
    def error(self) -> str | None:
        """``"ErrorClass: message"`` of :attr:`exception`, as the batch's failures list it."""
        return None if self.exception is None else f"{type(self.exception).__name__}: {self.exception}"

    def faces(self) -> list:
        """``[(path, AlignedFace or None, crop)]``, as ``Pipeline.align_file`` gives them."""
        if self.report is None:
            return [] if self.photo is None else [(Path(self.path), None, self.photo)]
        return [(Path(self.path), f, f.crop) for f in self.report.faces]


def prepare_photo(path, *, align_options: dict, max_pixels: int | None = None, aligned: bool = False,
                  keep_photo: bool = False) -> Prepared:
    """Read a photo and align its faces, turning a user's error into :attr:`Prepared.error`.

    Args:
        path: the photo file.
        align_options: ``align_photo``'s keywords (``Pipeline.align_options``).
        max_pixels: the pixel limit (``load_image``).
        aligned: the file is an aligned crop: read it, align nothing.
        keep_photo: keep the photo in the result (``edit`` pastes into it).
    Returns:
        A :class:`Prepared`; never raises a user's error (a bug still raises).
    """
    from faceedit.alignment.background import read_and_align
    from faceedit.alignment.errors import AlignmentError
    from faceedit.core.images import load_image
    from faceedit.errors import USER_ERRORS

    seconds = {"read": 0.0, "align": 0.0}
    try:
        if aligned:
            t0 = time.perf_counter()
            crop = load_image(path) if max_pixels is None else load_image(path, max_pixels=max_pixels)
            return Prepared(str(path), crop, None, None, {"read": time.perf_counter() - t0, "align": 0.0})
        try:
            photo, report, _ = read_and_align(path, {**align_options, "name": str(path)}, max_pixels=max_pixels,
                                              seconds=seconds)
        except AlignmentError as e:  # the same class, the message naming the file
            if str(path) in str(e):
                raise
            raise type(e)(f"{path}: {e}") from e
    except USER_ERRORS as e:
        e.__traceback__ = None  # it travels back from a worker process
        return Prepared(str(path), None, None, e, seconds)
    return Prepared(str(path), photo if keep_photo else None, report, None, seconds)


class _Photos:
    """The map-style dataset of :func:`prepared_photos`: item ``i`` is ``prepare_photo(paths[i])``."""

    def __init__(self, paths, options: dict):
        self.paths, self.options = [str(p) for p in paths], options

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> Prepared:
        return prepare_photo(self.paths[i], **self.options)


def _as_is(item):
    return item


def _start_loader_worker(_worker_id: int, *, detector: str | None = None, landmarks=None) -> None:
    """A loader worker: the caller's signals are not its own, OpenCV runs on this one core, and the
    detector's models are loaded before the first photo."""
    from faceedit.alignment.background import load_models, worker_signals

    worker_signals()
    import cv2

    cv2.setNumThreads(1)
    if detector is not None:
        load_models(detector, landmarks)


def prepared_photos(paths, *, workers: int, ahead: int = 2, in_process: int = 0, **options):
    """:func:`prepare_photo` for each path, in order, read and aligned by ``workers`` processes.

    A ``torch.utils.data.DataLoader`` over the paths (one photo an item), keeping about ``ahead``
    photos in flight, so that the caller works on a photo while the next ones are aligned. Its
    workers start as ``BackgroundAligner``'s do (``worker_context``: spawned, not forked, once
    torch is loaded: a forked copy of a process whose thread pools have run, OpenCV's among them,
    can hang in them) and load the detector's models first: a start costs as much as aligning
    several photos, so there is a worker for every :func:`worker_photos` photos at most. The
    workers align on the CPU (``align_options["device"]`` is left out there: a CUDA context per
    worker would cost more than its photos). With no workers, or aligned crops (nothing to
    align), the photos are read here, one when asked for, with the options as given (a GPU
    detector included).

    Args:
        paths: photo files.
        workers: worker processes at most (0: none).
        ahead: photos to keep in flight.
        in_process: the first photos read and aligned here, as given (on the GPU where
            ``align_options`` says so), while the workers start for the others
            (:func:`in_process_photos`).
        **options: :func:`prepare_photo`'s keywords.
    Yields:
        One :class:`Prepared` per path, in order.
    """
    paths = list(paths)
    head, rest = paths[:max(0, int(in_process))], paths[max(0, int(in_process)):]
    a = options.get("align_options", {})
    detector = a.get("detector", "dlib")
    workers = min(int(workers), len(rest) // worker_photos(detector))
    if workers <= 0 or options.get("aligned"):
        for p in paths:
            yield prepare_photo(p, **options)
        return
    import functools

    from torch.utils.data import DataLoader

    from faceedit.alignment.background import worker_context

    on_cpu = {**options, "align_options": {k: v for k, v in a.items() if k != "device"}}
    start = functools.partial(_start_loader_worker, detector=detector, landmarks=a.get("landmarks"))
    loader = DataLoader(_Photos(rest, on_cpu), batch_size=None, shuffle=False, num_workers=workers,
                        collate_fn=_as_is, prefetch_factor=max(2, -(-int(ahead) // workers)),
                        worker_init_fn=start, multiprocessing_context=worker_context())
    it = iter(loader)  # the workers start now, while the process aligns the first photos
    try:
        for p in head:
            yield prepare_photo(p, **options)
        yield from it
    finally:
        del it  # stops the workers now, not when the garbage is collected


# ----------------------------------------------------------------------------- the plan and the states
@dataclass
class Plan:
    """What rank 0 decided for the whole run (every rank gets a copy).

    Attributes:
        run: the run's id (its lines in the manifest carry it).
        stems: each input's output stem, in the inputs' order.
        todo: indices of the inputs to work on in this run.
        done: how many inputs were done earlier (skipped).
        done_faces: faces of those (``invert``).
        failed_before: ``[(input, message)]`` of inputs that failed earlier and are not retried.
        replacing: results made with other settings that this run replaces.
        note: what to tell the user before the work (``replacing ...``), or ``""``.
        key: the settings key the run's states are recorded under (``faceedit.outputs.settings_key``).
    """

    run: str
    stems: list
    todo: list
    done: int = 0
    done_faces: int = 0
    failed_before: list = field(default_factory=list)
    replacing: int = 0
    note: str = ""
    key: str = ""


def new_run_id() -> str:
    """A run's id: the time it started and a random token (``20250101T120000Z-1a2b3c4d``)."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + secrets.token_hex(4)


def sort_states(folder, inputs: list, key: str, *, retry_failed: bool, of=None) -> tuple:
    """Split inputs by their states in the manifest: ``(todo indices, {index: done line},
    [(input, message)] failed earlier and not retried)``; ``of``: each input's other files
    (``OutputFolder.input_state``)."""
    lists = folder._lists()
    todo, done, failed = [], {}, []
    for i, src in enumerate(inputs):
        st = folder.input_state(src, key, lists=lists, of=of[i] if of is not None else ())
        if st is not None and st[0] == "done":
            done[i] = st[1]
        elif st is not None and st[0] == "failed" and not retry_failed:
            failed.append((str(src), st[1].get("error", "failed in an earlier run")))
        else:
            todo.append(i)
    return todo, done, failed


class Progress:
    """Rank 0's bar over a run's inputs, fed by the manifest, and the end of every rank's share.

    Args:
        folder: the run's :class:`~faceedit.outputs.OutputFolder`.
        dist: this process's launch (``None``: a world of one).
        plan: the run's :class:`Plan`.
        total: inputs to work on in the whole run (the bar's length).
        desc: the bar's label.
        quiet: no bar.
    """

    def __init__(self, folder, dist: DistContext, plan: Plan, total: int, *, desc: str, quiet: bool):
        from tqdm import tqdm

        self.folder, self.dist, self.plan = folder, dist, plan
        self.t0 = time.perf_counter()
        self._last = 0.0
        self.bar = None
        if is_main(dist) and not quiet and total > 1:
            self.bar = tqdm(total=total, desc=desc, unit="photo", file=sys.stderr, disable=None)

    def tick(self, *, force: bool = False) -> None:
        """Move the bar to the count of done and failed lines the run has in the manifest."""
        now = time.perf_counter()
        if self.bar is None or (not force and now - self._last < POLL_SECONDS):
            return
        self._last = now
        self.bar.update(self.folder.finished_in(self.plan.run) - self.bar.n)

    def finish(self, stats: dict) -> list:
        """Record this rank's end, wait for every rank's, and gather every rank's ``stats``.

        Returns:
            ``[stats of rank 0, stats of rank 1, ...]`` (on every rank).
        """
        stats = {**stats, "rank": 0 if self.dist is None else self.dist.rank,
                 "seconds": time.perf_counter() - self.t0}
        if _distributed(self.dist):
            self.folder.record_end(self.plan.run, self.dist.rank)
            while len(self.folder.ended_in(self.plan.run)) < self.dist.world_size:
                self.tick()
                time.sleep(POLL_SECONDS / 2)
        self.tick(force=True)
        if self.bar is not None:
            self.bar.close()
        if not _distributed(self.dist):
            return [stats]
        from faceedit.core.distributed import gathered

        return gathered(self.dist, stats)


def throughput(stats: list, wall: float) -> dict:
    """The run's rates from every rank's stats: photos handled (done or failed now), faces, per process."""
    photos = sum(s["photos"] for s in stats)
    wall = max(wall, 1e-9)
    return {"photos": photos, "faces": sum(s.get("faces", 0) for s in stats), "seconds": wall,
            "processes": len(stats), "photos_per_s": photos / wall, "per_process": photos / wall / len(stats),
            "stages": {k: sum(s.get("stages", {}).get(k, 0.0) for s in stats)
                       for k in sorted({k for s in stats for k in s.get("stages", {})})}}


def rate_line(rate: dict, noun: str = "photo(s)") -> str:
    """``200 photo(s) in 61.2 s on 2 process(es): 3.27 photos/s, 1.63 per process`` (empty for none)."""
    if not rate or not rate.get("photos"):
        return ""
    return (f"{rate['photos']} {noun} in {rate['seconds']:.1f} s on {rate['processes']} process(es): "
            f"{rate['photos_per_s']:.2f} photos/s, {rate['per_process']:.2f} per process")


# ----------------------------------------------------------------------------- invert
def _plan_invert(folder, photos: list, settings: dict, key: str, *, overwrite: bool, retry_failed: bool) -> Plan:
    """Rank 0's plan of an inversion run (see :func:`invert_photos`)."""
    import re

    from faceedit import outputs
    from faceedit.core.files import remove_stale_parts

    stems = folder.plan_stems(photos, outputs.names(outputs.INVERT_NAMES))
    todo, done, failed = sort_states(folder, photos, key, retry_failed=retry_failed)
    by_stem = {}  # stem -> the face records there
    rx = re.compile(r"(.+)_\d+\.json")
    for n in folder._existing():
        m = rx.fullmatch(n)
        if m:
            by_stem.setdefault(m.group(1), []).append(n)
    owners, other = folder._read(), []
    for i, p in enumerate(photos):
        covered = set(done[i].get("files", ())) if i in done else set()
        for n in by_stem.get(stems[p], ()):
            if n in covered or not folder._owns_name(n, p, owners):
                continue
            rec = outputs.read_record(folder.root / n)
            if rec is not None and rec.get("settings") != settings:
                other.append((n, rec))
    note = ""
    if other:
        diff = "; ".join(outputs.settings_differences(settings, other[0][1].get("settings")))
        if not overwrite:
            raise PipelineError(f"{folder.root} holds results of {len(other)} face(s) of these photos made with other "
                                f"settings ({diff}); nothing was inverted. Pass --out ANOTHER_FOLDER to keep "
                                f"them and invert there, or --overwrite (overwrite=True) to replace them")
        note = f"replacing {len(other)} face(s) in {folder.root} made with other settings ({diff})"
    remove_stale_parts(folder.root)  # temporary files of a run killed outright; no rank writes yet
    return Plan(run=new_run_id(), stems=[stems[p] for p in photos], todo=todo, done=len(done),
                done_faces=sum(len(d.get("faces", ())) for d in done.values()), failed_before=failed,
                replacing=len(other), note=note)


def _slim(rec: dict) -> dict:
    """What the summary of an inversion run needs of a face's record (gathered from every rank)."""
    keep = ("photo", "face", "detector_score", "json", "latent", "steps", "method", "tuning_steps")
    return {**{k: rec[k] for k in keep if k in rec}, "metrics": {"mse": rec["metrics"]["mse"]}}


def invert_photos(pipe, photos: list, out, *, face="largest", aligned: bool = False, batch_size: int = 16,
                  quiet: bool = False, echo=None, overwrite: bool = False, retry_failed: bool = False,
                  workers: int | None = None, dist: DistContext | None = None):
    """``Pipeline.invert_files``: align photos, invert their faces in batches, write every face's outputs.

    Before any work (rank 0, for every rank): the output folder and the cache must be writable,
    names are planned for the whole run, results of these photos made with other settings stop
    the run unless ``overwrite``, and the manifest says which photos are done (skipped), failed
    earlier (skipped unless ``retry_failed``) or to do. Each rank then works on its groups of
    ``batch_size`` photos (module docstring): its loader reads and aligns them, the faces of a
    group not done yet are inverted as one batch (halved on out-of-memory), their files written,
    and the group's photos recorded as done or failed. A photo that fails with a user error is
    skipped and listed. Rank 0 remembers the finished run for ``faceedit edit`` (every face the
    folder holds for these settings).

    Args:
        pipe: the :class:`~faceedit.pipeline.Pipeline` (on this rank's device).
        photos: photo paths (every rank passes the same list).
        out: output folder (shared by every rank).
        face: ``largest``, ``all`` or a face index.
        aligned: the photos are aligned crops (no detection).
        batch_size: photos per group and faces per inversion batch.
        quiet: no progress bar.
        echo: callable for messages (resuming, replacing, a single photo's stages), or ``None``.
        overwrite: replace results of these photos made with other settings.
        retry_failed: work again on photos that failed in an earlier run.
        workers: loader processes per rank (``None``: :func:`loader_workers`).
        dist: this process's launch (default: ``context(pipe.device)``).
    Returns:
        An :class:`~faceedit.pipeline.InversionRun` of the whole run (every rank's records and
        failures, failures of earlier runs not retried included).
    Raises:
        PipelineError: no photo gave a face, or results with other settings and not ``overwrite``.
        OutputError: ``out`` or the cache cannot be written.
    """
    from faceedit import outputs
    from faceedit.batching import run_batched
    from faceedit.checkpoints.registry import cache_dir
    from faceedit.core.files import check_writable_dir
    from faceedit.pipeline import InversionRun, step_bar

    if dist is None:
        from faceedit.core.distributed import context

        dist = context(pipe.device)
    echo = echo or log.info
    folder = outputs.as_folder(out, photos, command="invert")
    folder.journal = folder.journal or dist.distributed
    folder.check()
    out = folder.root
    check_writable_dir(cache_dir(), what="FACEEDIT_HOME")
    photos = [Path(p) for p in photos]
    n_given = len(photos)
    settings = outputs.inversion_settings(pipe, aligned=aligned)
    key = outputs.settings_key({"settings": settings, "face": face})
    record_key = outputs.settings_key(settings)  # what folder_inversions matches the done lines on
    plan = decided(dist, lambda: _plan_invert(folder, photos, settings, key, overwrite=overwrite,
                                                      retry_failed=retry_failed))
    if plan.note and dist.is_main:
        echo(plan.note)
    if plan.done_faces and dist.is_main:
        echo(f"resuming: {plan.done_faces} face(s) already done in {out} with these settings")
    todo = set(plan.todo)
    groups = [[i for i in g if i in todo] for g in shards(n_given, batch_size, dist)]
    mine = [i for g in groups for i in g]
    folder.record_states([{"input": photos[i], "state": "pending"} for i in mine], settings=key, run=plan.run)
    progress = Progress(folder, dist, plan, len(plan.todo), desc=f"invert {pipe.space}", quiet=quiet)
    single = n_given == 1 and not quiet
    stage = echo if single else (lambda msg: None)
    records, failures, skipped = [], [], 0
    stages = {"read": 0.0, "align": 0.0, "wait": 0.0, "invert": 0.0, "write": 0.0}
    photos_done = faces_done = 0
    align_options = pipe.align_options(face)
    head = (in_process_photos(len(mine), pipe.detector, GPU_PHOTO_SECONDS) if align_options.get("device") is not None
            else 0)
    items = prepared_photos([photos[i] for i in mine], workers=0 if single else loader_workers(workers),
                            ahead=2 * batch_size, in_process=head, align_options=align_options,
                            max_pixels=pipe.max_pixels, aligned=aligned)

    def invert_chunk(chunk):  # outputs are written only once the whole chunk succeeded
        stage(f"inverting {len(chunk)} face(s) into {pipe.space} with {pipe.method}")
        t0 = time.perf_counter()
        with step_bar(f"{pipe.method} steps", disable=True if not single else None) as on_step:
            inv = pipe.invert_faces([f if f is not None else crop for _, f, crop in chunk], callback=on_step)
        t1 = time.perf_counter()
        for k, (p, f, _) in enumerate(chunk):
            records.append(outputs.write_inversion(folder, p, f, inv.latents[k], pipe.model, inv.targets[k],
                                                   inv.reconstructions[k], inv.metrics[k], pipe.method,
                                                   stem=plan.stems[index[str(p)]], settings=settings))
        stages["invert"] += t1 - t0
        stages["write"] += time.perf_counter() - t1
        stage(f"wrote {len(chunk)} face(s) to {out}")

    index = {str(p): i for i, p in enumerate(photos)}
    try:
        for group in groups:
            faces, states = [], []
            for i in group:
                stage(f"aligning {photos[i]}")
                t0 = time.perf_counter()
                item = next(items)
                stages["wait"] += time.perf_counter() - t0
                stages["read"] += item.seconds["read"]
                stages["align"] += item.seconds["align"]
                if item.error is not None:
                    failures.append((str(photos[i]), item.error))
                    states.append({"input": photos[i], "state": "failed", "error": item.error})
                    continue
                if item.report is not None:
                    pipe._notify(item.report, str(photos[i]))
                found = item.faces()
                todo_faces = [t for t in found if not outputs.inversion_done(out, t[0], t[1], settings,
                                                                               stem=plan.stems[i])]
                skipped += len(found) - len(todo_faces)
                faces += todo_faces
                idx = [0 if f is None else f.index for _, f, _ in found]
                states.append({"input": photos[i], "state": "done", "faces": idx, "record_settings": record_key,
                               "files": [f"{outputs.inversion_stem(photos[i], f, plan.stems[i])}.json"
                                         for _, f, _ in found]})
            if faces:
                run_batched(invert_chunk, faces, batch_size,
                            on_shrink=lambda a, b: echo(f"out of GPU memory at batch {a}; continuing with {b}"))
            folder.record_states(states, settings=key, run=plan.run)
            photos_done += len(states)
            faces_done += len(faces)
            progress.tick()
    finally:
        items.close()  # the loader's workers stop now, also on an error
    stats = progress.finish({"records": [_slim(r) for r in records], "failures": failures, "skipped": skipped,
                             "photos": photos_done, "faces": faces_done, "stages": stages})
    every = [r for s in stats for r in s["records"]]
    every.sort(key=lambda r: (r["photo"], r["face"]))
    fails = [f for s in stats for f in s["failures"]] + list(plan.failed_before)
    found_done = sum(s["skipped"] for s in stats)  # faces done earlier, of photos the manifest did not list as done
    skipped_faces = plan.done_faces + found_done
    if not every and not skipped_faces and fails:
        raise PipelineError("no face to invert in " + "; ".join(f"{p} ({e})" for p, e in fails))
    if dist.is_main and found_done:
        echo(f"resuming: {found_done} face(s) already done in {out} with these settings")
    if dist.is_main:
        found = outputs.folder_inversions(folder, settings)
        if found:
            outputs.write_last_inversion(found, model=pipe.model_name, model_id=pipe.model_id, space=pipe.space,
                                         out=out)
    return InversionRun(records=every, failures=fails, photos=n_given, skipped=skipped_faces, model_id=pipe.model_id,
                        space=pipe.space, out=out, rate=throughput(stats, progress_wall(stats)),
                        failed_before=len(plan.failed_before))


# ----------------------------------------------------------------------------- edit
def _edit_job_list(photos, latent_files, photo, model, failures: list) -> tuple:
    """``([(source, latents or None, model)], [latent files of each job], model)``: a job per photo,
    or per source photo of the latents (a latent not read yet is its path)."""
    from faceedit import outputs
    from faceedit.errors import USER_ERRORS
    from faceedit.inversion.latent import Latent

    if photos:
        return [(Path(p), None, model) for p in photos], [[] for _ in photos], model
    if latent_files:
        lats = []
        for p in latent_files:
            try:
                lats.append((p, Latent.load(p), None))
            except USER_ERRORS as e:
                failures.append((str(p), f"{type(e).__name__}: {e}"))
    else:  # the last inversion: its record names each face's photo; the latents are read by the rank editing it
        rec = outputs.read_last_inversion()
        lats = [(f["latent"], None, f["photo"]) for f in rec["faces"]]
        model = model or rec.get("model")
    by_photo = {}
    for path, lat, src in lats:
        src = photo or src or lat.meta.get("source")
        by_photo.setdefault(src if src else str(path), []).append((lat if lat is not None else path, str(path)))
    return ([(Path(src), [x for x, _ in group], model) for src, group in by_photo.items()],
            [[f for _, f in group] for group in by_photo.values()], model)


def _plan_edit(folder, jobs: list, files: list, settings: dict, *, retry_failed: bool) -> Plan:
    """Rank 0's plan of an edit run (see :func:`edit_jobs`)."""
    from faceedit import outputs
    from faceedit.core.files import remove_stale_parts

    def stem_of(src):
        lats = by_src[str(src)]
        if lats is None or Path(src).suffix.lower() != ".safetensors" or not hasattr(lats[0], "meta"):
            return Path(src).stem
        return Path(lats[0].meta.get("source") or src).stem.split(".")[0]

    by_src = {str(j[0]): j[1] for j in jobs}
    key = outputs.settings_key(settings)
    stems = folder.plan_stems([j[0] for j in jobs], outputs.names(outputs.EDIT_NAMES), stem=stem_of)
    todo, done, failed = sort_states(folder, [j[0] for j in jobs], key, retry_failed=retry_failed, of=files)
    earlier = folder.earlier_of(outputs.EDIT_NAMES, {jobs[i][0]: stems[jobs[i][0]] for i in todo})
    replacing = sum(1 for names in earlier.values() if names)
    note = (f"{folder.root} holds results of an earlier `faceedit edit` of {replacing} of these input(s): "
            "replacing them (pass another --out to keep both)") if replacing else ""
    remove_stale_parts(folder.root)
    return Plan(run=new_run_id(), stems=[stems[j[0]] for j in jobs], todo=todo, done=len(done),
                failed_before=failed, replacing=replacing, note=note, key=key)


def _edit_slim(rec: dict) -> dict:
    """What the summary of an edit run needs of a photo's record (gathered from every rank)."""
    return {"photo": rec.get("photo"), "photo_out": rec.get("photo_out"), "timings": rec.get("timings", {}),
            "faces": [{"crop": f.get("crop"), "detector_score": f.get("detector_score")} for f in rec.get("faces", ())]}


def edit_jobs(folder, attributes: dict, photos: list, latent_files, photo, model, space: str, face, layers,
              strengths, echo, aligner, pipeline_options: dict, *, settings: dict, dist: DistContext,
              retry_failed: bool = False, workers: int | None = None, batch_size: int | None = None):
    """``faceedit.pipeline.edit_files`` after its checks: plan, shard, edit, record, summarise.

    Rank 0 plans (names, states, what is replaced); the inputs are dealt to the ranks in groups
    of ``batch_size`` consecutive inputs (``None``: :func:`edit_batch_size` of the device); photos
    are read and aligned by ``aligner`` (a single photo, started before torch) or by
    :func:`prepared_photos`'s loader workers (several), while the process edits the ones before.
    With groups of more than one, the faces of a group's photos are inverted as one batch
    (:func:`_invert_group`) and the outputs are written by :data:`WRITER_THREADS` threads while
    the process inverts the next group; a photo's result then depends on its group (fixed by
    the inputs and ``batch_size``, not by the number of processes), as in ``faceedit invert DIR``.

    Returns:
        An :class:`~faceedit.pipeline.EditRun` of the whole run.
    """
    from faceedit.checkpoints.registry import default_model
    from faceedit.errors import USER_ERRORS
    from faceedit.inputs import check_photos
    from faceedit.inversion.latent import Latent
    from faceedit.pipeline import EditRun, Pipeline, check_attributes, model_for_latent

    early = []  # failures found before the work (the same on every rank: counted by rank 0)
    if photos and not dist.distributed:  # one process: every header read before any model loads
        photos, early = check_photos(photos, max_pixels=pipeline_options.get("max_pixels"))
    jobs, files, model = (_edit_job_list(photos, latent_files, photo, model, early) if photos or not early
                          else ([], [], model))
    if not jobs:
        raise PipelineError("nothing to edit: " + "; ".join(f"{p} ({e})" for p, e in early))
    failures = []
    models = {mdl or (model_for_latent(lats[0]) if lats is not None and hasattr(lats[0], "meta")
                      else default_model("wpp" if space in ("wpp", "wpp-z") else space)) for _, lats, mdl in jobs}
    for mdl in sorted(models, key=str):  # names checked before any model is loaded
        check_attributes(mdl, attributes, pipeline_options.get("directions"))
    plan = decided(dist, lambda: _plan_edit(folder, jobs, files, settings, retry_failed=retry_failed))
    if plan.note and echo is not None and dist.is_main:
        echo(plan.note)
    todo = set(plan.todo)
    batch = edit_batch_size(pipeline_options.get("device", "auto")) if batch_size is None else max(1, int(batch_size))
    groups = [[i for i in g if i in todo] for g in shards(len(jobs), batch, dist)]
    mine = [i for g in groups for i in g]
    folder.record_states([{"input": jobs[i][0], "of": files[i], "state": "pending"} for i in mine], settings=plan.key,
                         run=plan.run)
    progress = Progress(folder, dist, plan, len(plan.todo), desc="edit", quiet=echo is None)
    single = len(jobs) == 1
    pipes, records = {}, []
    photos_done = 0

    def pipeline(mdl, lats):
        key = (mdl, space if lats is None else lats[0].space)
        if key not in pipes:
            if echo is not None and single:
                echo(f"loading {mdl or default_model('wpp' if key[1] in ('wpp', 'wpp-z') else key[1])}")
            try:
                if key[1] not in ("w", "w+", "wpp", "wpp-z"):
                    raise PipelineError(f"latents in space {key[1]!r} cannot be edited; invert into w, w+, "
                                        f"wpp or wpp-z")
                pipes[key] = Pipeline(mdl, space=key[1], **pipeline_options)
            except USER_ERRORS as e:
                pipes[key] = e  # the same model fails the same way for every input: tried once
        if isinstance(pipes[key], BaseException):
            raise pipes[key]
        return pipes[key]

    def settle(i, state, rec=None, error=None):  # a photo is done (or failed): record it
        nonlocal photos_done
        if error is not None:
            failures.append((str(jobs[i][0]), f"{type(error).__name__}: {error}"))
            state = {"input": jobs[i][0], "of": files[i], "state": "failed", "error": failures[-1][1]}
        else:
            records.append(rec)
        folder.record_states([state], settings=plan.key, run=plan.run)
        photos_done += 1
        progress.tick()

    def settle_writes(inflight):
        for i, state, fut in inflight:
            try:
                settle(i, state, fut.result())
            except USER_ERRORS as e:
                settle(i, state, error=e)
        inflight.clear()

    mine_photos = [i for i in mine if jobs[i][1] is None]
    items = None  # without them, Pipeline.edit_file reads and aligns each photo itself
    if len(mine_photos) > 1 and aligner is None and (batch > 1 or loader_workers(workers) > 0):
        try:
            first = pipeline(jobs[mine_photos[0]][2], None)
        except USER_ERRORS:
            first = None  # each photo fails with the model's error below
        if first is not None:
            options = first.align_options(face)
            head = (in_process_photos(len(mine_photos), first.detector, GPU_PHOTO_SECONDS)
                    if batch > 1 and options.get("device") is not None else 0)
            items = prepared_photos([jobs[i][0] for i in mine_photos], workers=loader_workers(workers),
                                    ahead=2 if batch == 1 else 2 * batch, in_process=head, align_options=options,
                                    max_pixels=first.max_pixels, keep_photo=True)
    writer = None
    if batch > 1 and len(mine) > 1:
        from concurrent.futures import ThreadPoolExecutor

        writer = ThreadPoolExecutor(WRITER_THREADS, thread_name_prefix="faceedit-write")
    inflight = []  # (index, state, future) of the photos being written
    try:
        for group in groups:
            read = {}  # the group's photos as the loader read them, each with the time waited for it
            for i in group:
                if items is not None and jobs[i][1] is None:
                    t0 = time.perf_counter()
                    read[i] = next(items)
                    read[i].seconds["wait"] = time.perf_counter() - t0
            inverted = _invert_group(read, jobs, pipeline) if batch > 1 else {}
            settle_writes(inflight)  # the group before: written while this group was inverted
            for i in group:
                src, lats, mdl = jobs[i]
                state = {"input": src, "of": files[i], "state": "done", "files": [f"{plan.stems[i]}_edit.json"]}
                try:
                    aligned = None
                    if lats is None:
                        pipe = pipeline(mdl, None)
                        if aligner is not None:  # the photo read and aligned in the worker started before torch
                            t0 = time.perf_counter()
                            on_cpu = {k: v for k, v in pipe.align_options(face).items() if k != "device"}
                            pending = aligner.submit(src, **on_cpu)
                            pipe.preload(attributes)  # meanwhile: the files the inversion and the edit read first
                            t_pre = time.perf_counter()
                            aligned = pending.result()
                            aligned[2].update(preload=t_pre - t0, wait=time.perf_counter() - t_pre)
                        elif i in read:  # its wait was timed where the group read it
                            item = read[i]
                            if item.exception is not None:
                                raise item.exception
                            aligned = (item.photo, item.report, item.seconds)
                    else:
                        lats = [lat if hasattr(lat, "meta") else Latent.load(lat) for lat in lats]
                        mdl = mdl or model_for_latent(lats[0])
                        pipe = pipeline(mdl, lats)
                    done = pipe.edit_file(src if lats is None or src.suffix.lower() != ".safetensors" else None,
                                          folder, attributes, latents=lats, face=face, layers=layers,
                                          strengths=strengths, echo=echo if single else None, stem=plan.stems[i],
                                          source=src, aligned=aligned, inverted=inverted.get(i), writer=writer)
                except USER_ERRORS as e:
                    settle(i, state, error=e)
                    continue
                if writer is None:
                    settle(i, state, done)
                else:
                    inflight.append((i, state, done))
        settle_writes(inflight)
    finally:
        if writer is not None:
            writer.shutdown(wait=True)  # a write under way finishes (each file is atomic either way)
        if items is not None:
            items.close()
    stats = progress.finish({"records": records if not dist.distributed else [_edit_slim(r) for r in records],
                             "failures": (early if dist.is_main else []) + failures,
                             "photos": photos_done})
    every = [r for s in stats for r in s["records"]]
    fails = [f for s in stats for f in s["failures"]] + list(plan.failed_before)
    return EditRun(records=every, failures=fails, replaced=plan.replacing, skipped=plan.done,
                   rate=throughput(stats, progress_wall(stats)), failed_before=len(plan.failed_before))


#: Photos per group of ``faceedit edit DIR`` (faces inverted as one batch) by device type. On CUDA a
#: batch-1 step is bound by kernel launches, so 16 faces cost little more than one. On a 2-core CPU
#: (``bench/scripts/folder_edit.py --count 16 --batches 1,2,4,8 --repeats 2``, 16 photos of 1-2 MP,
#: dlib; ``bench/results/photo_path/folder_edit_cpu_groups.md``) groups of 1 / 2 / 4 / 8 edited 0.62 /
#: 0.83 / 0.88 / 0.89 photos/s: 4 takes most of the gain and keeps a group's wait for its slowest
#: photo short. Against the old path in one run, two threads (``folder_edit_cpu.md``): 1.29 photos/s against 0.89.
EDIT_BATCH = {"cpu": 4, "cuda": 16}
#: Threads that encode and write a batched edit run's outputs (PNG encoding releases the GIL).
WRITER_THREADS = 4


def edit_batch_size(device="auto") -> int:
    """:data:`EDIT_BATCH` of ``device`` (``auto``: CUDA where there is one)."""
    from faceedit.core.device import resolve_device

    return EDIT_BATCH.get(resolve_device(device).type, 1)


def _invert_group(read: dict, jobs: list, pipeline) -> dict:
    """Invert the faces of a group's photos as one batch.

    Args:
        read: ``{job index: Prepared}`` of the group's photos the loader read.
        jobs: the run's jobs (``(source, latents, model)``).
        pipeline: ``pipeline(model, None)`` -> the run's :class:`~faceedit.pipeline.Pipeline`.
    Returns:
        ``{job index: (latents of its faces, its share of the inversion's seconds)}`` for the
        photos that were read with faces and share the first one's model; ``{}`` when the batch
        fails with a user's error (each photo is then inverted by itself, so that only the photo
        at fault fails).
    """
    from faceedit.errors import USER_ERRORS

    ok = [i for i, item in read.items() if item.exception is None and item.report is not None and item.report.faces]
    ok = [i for i in ok if jobs[i][2] == jobs[ok[0]][2]]
    if not ok:
        return {}
    try:
        pipe = pipeline(jobs[ok[0]][2], None)
        faces = [f for i in ok for f in read[i].report.faces]
        t0 = time.perf_counter()
        batch = pipe.invert(faces)
        seconds = time.perf_counter() - t0
    except USER_ERRORS as e:
        log.warning("inverting %d photos as one batch failed (%s: %s); inverting them one by one",
                    len(ok), type(e).__name__, e)
        return {}
    out, k = {}, 0
    for i in ok:
        n = len(read[i].report.faces)
        out[i] = ([batch[j] for j in range(k, k + n)], seconds * n / len(faces))
        k += n
    return out


def progress_wall(stats: list) -> float:
    """The run's wall time: the longest rank's."""
    return max((s["seconds"] for s in stats), default=0.0)


__all__ = ["launched", "loader_workers", "Prepared", "prepare_photo", "prepared_photos", "Plan", "new_run_id",
           "sort_states", "Progress", "throughput", "rate_line", "invert_photos", "edit_jobs", "edit_batch_size",
           "EDIT_BATCH"]
