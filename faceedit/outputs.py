"""What `faceedit invert` and `faceedit edit` write: the record schema and the writers.

Every file is written atomically (``faceedit.core.files``) and never over an input: the
photo a result comes from is passed as ``protect``. Images meant for viewing (side-by-side
and sweep strips) are upscaled with nearest-neighbour interpolation so that each face is at
least :data:`VIEW_SIZE` pixels wide; the reconstruction and edited crops keep the model's
resolution.

Inversion outputs per face (``<stem>_<face>``, the face's index left to right):
``.latent.safetensors``, ``.png`` (reconstruction), ``_side.png`` (target | reconstruction)
and ``.json`` (the record, written last: its presence marks the face as done). Edit outputs
per photo: ``<stem>_edit.png``, ``<stem>_edit.json`` and per face ``<stem>_<face>_edit.png``,
``_side.png``, ``_edit.latent.safetensors``; with a sweep also ``<stem>_<face>_sweep.png``
and ``<stem>_sweep_<attr>.gif``.
"""
from __future__ import annotations

import io
import json
import re
import time
from pathlib import Path

import numpy as np

from faceedit.core.errors import PipelineError
from faceedit.core.files import atomic_write_bytes, atomic_write_text
from faceedit.core.images import make_grid, save_image

#: Photo file suffixes a folder is searched for.
PHOTO_EXTS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"})
#: Where the last finished inversion run is remembered, under the cache.
LAST_INVERSION = "last_inversion.json"
#: Smallest side, in pixels, of one face in a side-by-side or sweep strip.
VIEW_SIZE = 256


def collect_photos(inputs) -> list:
    """Files as given, folders expanded to their photos (sorted, not recursive).

    Args:
        inputs: paths of photos or folders.
    Returns:
        A list of ``Path``.
    Raises:
        PipelineError: a folder holds no photo.
    """
    photos = []
    for p in map(Path, inputs):
        if p.is_dir():
            found = sorted(q for q in p.iterdir() if q.is_file() and q.suffix.lower() in PHOTO_EXTS)
            if not found:
                raise PipelineError(f"folder {p} holds no photos ({', '.join(sorted(PHOTO_EXTS))})")
            photos.extend(found)
        else:
            photos.append(p)
    return photos


def last_inversion_path() -> Path:
    """Where the last finished `faceedit invert` run is recorded (``cache_dir()/last_inversion.json``)."""
    from faceedit.checkpoints.registry import cache_dir

    return cache_dir() / LAST_INVERSION


def read_last_inversion() -> dict:
    """The record of the last finished inversion run.

    Raises:
        PipelineError: there is none, or it is damaged or empty.
    """
    p = last_inversion_path()
    if not p.is_file():
        raise PipelineError("nothing to edit: pass a photo (`faceedit edit photo.jpg --attr smile`), --latent FILE, "
                            f"or run `faceedit invert PHOTO` first (its result is remembered in {p})")
    try:
        rec = json.loads(p.read_text())
        faces = rec["faces"]
    except (ValueError, KeyError, TypeError) as e:
        raise PipelineError(f"{p} is damaged ({e}); run `faceedit invert PHOTO` again") from e
    if not faces:
        raise PipelineError(f"{p} lists no faces; run `faceedit invert PHOTO` again")
    return rec


def write_last_inversion(records: list, *, model: str, model_id: str, space: str, out) -> Path:
    """Remember an inversion run for `faceedit edit` with no input (the last to finish wins)."""
    from faceedit import __version__

    last = {"version": __version__, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "model": model, "model_id": model_id, "space": space, "out": str(Path(out).resolve()),
            "faces": [{"photo": r["photo"], "face": r["face"], "latent": r["latent"], "json": r["json"]}
                      for r in records]}
    path = last_inversion_path()
    atomic_write_text(path, json.dumps(last, indent=2))
    return path


def upscale_for_view(images: np.ndarray, size: int | None = None) -> np.ndarray:
    """``[N, H, W, 3]`` tiles enlarged by an integer factor (nearest neighbour) to at least ``size``
    (default :data:`VIEW_SIZE`) pixels."""
    size = VIEW_SIZE if size is None else size
    f = max(1, -(-size // max(1, min(images.shape[1:3]))))
    return images if f == 1 else images.repeat(f, axis=1).repeat(f, axis=2)


def view_grid(tiles, cols: int) -> np.ndarray:
    """Tiles of one size in a grid of ``cols`` columns, each upscaled for viewing."""
    return make_grid(upscale_for_view(np.stack(tiles)), cols=cols)


def inversion_stem(photo, face) -> str:
    """``<stem>_<face index>`` of a face's inversion outputs (index 0 for an aligned crop)."""
    return f"{Path(photo).stem}_{face.index if face is not None else 0}"


def inversion_done(out, photo, face) -> bool:
    """Whether a face's record exists in ``out`` (it is written last)."""
    return (Path(out) / f"{inversion_stem(photo, face)}.json").exists()


def write_inversion(out, photo, face, latent, model, target: np.ndarray, reconstruction: np.ndarray,
                    metrics: dict, method: str) -> dict:
    """Write one face's inversion outputs and its record.

    Args:
        out: output folder.
        photo: the source photo's path (protected from being overwritten).
        face: its ``AlignedFace`` (``None`` for an aligned crop).
        latent: the face's latent (batch of one) with the batch's metadata.
        model: the :class:`~faceedit.checkpoints.loaded.LoadedModel`.
            The record's ``tuning_steps`` is written for a PTI latent only.
        target: ``[R, R, 3]`` uint8 aligned target.
        reconstruction: ``[R, R, 3]`` uint8 synthesis of the latent.
        metrics: ``{name: float}`` reconstruction metrics of this face.
        method: the inversion method.
    Returns:
        The record (also written as ``<stem>.json``), with its own path under ``json``.
    """
    from faceedit import __version__

    out = Path(out)
    idx = face.index if face is not None else 0
    stem = inversion_stem(photo, face)
    meta = dict(latent.meta)
    meta["source"] = str(Path(photo).resolve())
    meta["face_index"] = idx
    if face is not None:
        meta["alignment"] = face.metadata()
    one = type(latent)(space=latent.space, codes=latent.codes, model_id=latent.model_id, z=latent.z,
                       noise=latent.noise, tuning=latent.tuning, meta=meta)
    protect = (photo,)
    lat_path = out / f"{stem}.latent.safetensors"
    one.save(lat_path)
    save_image(out / f"{stem}.png", reconstruction, protect=protect)
    save_image(out / f"{stem}_side.png", view_grid([target, reconstruction], cols=2), protect=protect)
    rec = {"version": __version__, "photo": meta["source"], "face": idx, "model": model.name,
           "model_id": model.model_id, "model_sha256": model.sha256, "space": one.space, "method": method,
           "steps": meta["steps"], "steps_requested": meta["steps_requested"], "seed": meta["seed"],
           "prior": meta["prior"], "prior_weight": meta["prior_weight"], "perceptual": meta["perceptual"],
           "perceptual_requested": meta.get("perceptual_requested"),
           "optimize_noise": meta["optimize_noise"], "losses": meta["losses"], "metrics": metrics,
           "seconds_batch": meta["seconds"], "alignment": meta.get("alignment"), "latent": str(lat_path.resolve()),
           "reconstruction": str((out / f"{stem}.png").resolve()),
           "side_by_side": str((out / f"{stem}_side.png").resolve())}
    if isinstance(meta.get("tuning"), dict) and "steps" in meta["tuning"]:
        rec["tuning_steps"] = meta["tuning"]["steps"]
    jpath = out / f"{stem}.json"
    atomic_write_text(jpath, json.dumps(rec, indent=2), protect=protect)
    rec["json"] = str(jpath.resolve())
    return rec


def write_edit(out, stem: str, src, result, *, pairs: dict, layers, inversion: dict | None, unit: str,
               model_id: str, timings: dict, sweep=None) -> dict:
    """Write an edit's outputs and its record ``<stem>_edit.json``.

    Args:
        out: output folder.
        stem: file stem (the photo's).
        src: the source photo's path, or ``None`` (protected from being overwritten).
        result: an :class:`~faceedit.pipeline.EditResult`, or a list of
            :class:`~faceedit.pipeline.FaceEdit` when there was no photo to paste into.
        pairs: the edits ``{key: strength}``.
        layers: the layers the edits were restricted to, or ``None``.
        inversion: how the photo was inverted (``None`` for latent inputs).
        unit: the strength unit.
        model_id: the model's id.
        timings: seconds per stage so far (``write`` is added).
        sweep: a :class:`~faceedit.pipeline.Sweep`, or ``None``.
    Returns:
        The record.
    """
    from faceedit import __version__

    out = Path(out)
    protect = (src,) if src is not None else ()
    faces = result if isinstance(result, list) else result.faces
    photo_out = None
    if not isinstance(result, list):
        t1 = time.perf_counter()
        photo_out = out / f"{stem}_edit.png"
        save_image(photo_out, result.photo, protect=protect)
        timings = {**timings, "write": round(time.perf_counter() - t1, 3)}
    rec = {"version": __version__, "photo": str(Path(src).resolve()) if src else None,
           "photo_out": str(photo_out) if photo_out else None, "model_id": model_id, "inversion": inversion,
           "edits": {k: float(v) for k, v in pairs.items()}, "unit": unit, "layers": layers, "timings": timings,
           "faces": []}
    for fe in faces:
        idx = fe.face.index if fe.face is not None else 0
        fstem = f"{stem}_{idx}"
        save_image(out / f"{fstem}_edit.png", fe.crop, protect=protect)
        tiles = [fe.reconstruction, fe.crop]
        if fe.face is not None and fe.face.crop.shape[0] > 1:
            tgt = fe.face.crop
            if tgt.shape[0] != fe.crop.shape[0]:
                import cv2

                tgt = cv2.resize(tgt, fe.crop.shape[:2][::-1], interpolation=cv2.INTER_AREA)
            tiles.insert(0, tgt)
        save_image(out / f"{fstem}_side.png", view_grid(tiles, cols=len(tiles)), protect=protect)
        fe.edited.save(out / f"{fstem}_edit.latent.safetensors")
        rec["faces"].append({"face": idx, "crop": str(out / f"{fstem}_edit.png"), "space": fe.edited.space,
                             "latent_in_space": fe.latent.space,
                             "latent": str(out / f"{fstem}_edit.latent.safetensors"),
                             "applied": fe.edited.meta.get("edits", [])[-len(pairs):],
                             "alignment": fe.face.metadata() if fe.face is not None else None})
    if sweep is not None:
        rec["sweep"] = write_sweep(out, stem, sweep, protect=protect)
    atomic_write_text(out / f"{stem}_edit.json", json.dumps(rec, indent=2, default=str), protect=protect)
    return rec


def write_sweep(out, stem: str, sweep, *, protect=()) -> dict:
    """Write a sweep: one strip per face (rows: attributes, columns: strengths), one GIF per
    attribute (there and back, 0.25 s a frame).

    Returns:
        ``{"strengths", "strips", "gifs"}`` with the written paths.
    """
    import imageio.v2 as imageio

    out = Path(out)
    written = {"strengths": sweep.strengths, "strips": [], "gifs": []}
    for idx, tiles in sweep.strips:
        p = out / f"{stem}_{idx}_sweep.png"
        save_image(p, view_grid(tiles, cols=len(sweep.strengths)), protect=protect)
        written["strips"].append(str(p))
    for key, frames in sweep.frames.items():
        buf = io.BytesIO()
        imageio.mimsave(buf, frames + frames[-2:0:-1], format="GIF", duration=0.25, loop=0)
        p = out / f"{stem}_sweep_{re.sub(r'[^A-Za-z0-9-]+', '-', key)}.gif"
        atomic_write_bytes(p, buf.getvalue(), protect=protect)
        written["gifs"].append(str(p))
    return written


__all__ = ["PHOTO_EXTS", "VIEW_SIZE", "collect_photos", "last_inversion_path", "read_last_inversion",
           "write_last_inversion", "write_inversion", "write_edit", "write_sweep", "upscale_for_view",
           "inversion_done", "inversion_stem"]
