"""`faceedit invert`: photos (or aligned crops) -> latent files, reconstructions and records.

Outputs per face, in ``--out`` (default ``out/invert``), with ``<face>`` the face's index
among the photo's faces (left to right, as ``faceedit align`` numbers them):

* ``<stem>_<face>.latent.safetensors``: codes (and z for ``wpp-z``, noise maps when
  optimised) with metadata: model id and sha256, space, alignment matrix, source photo;
* ``<stem>_<face>.png``: the reconstruction;
* ``<stem>_<face>_side.png``: aligned target | reconstruction;
* ``<stem>_<face>.json``: the record (version, model, space, method, steps, seed, losses,
  metrics, alignment).

The last finished run is remembered in ``cache_dir()/last_inversion.json`` (the cache is
``$FACEEDIT_HOME``, else ``$XDG_CACHE_HOME/faceedit``, else ``~/.cache/faceedit``), written
atomically; with concurrent runs the last one to finish wins. ``faceedit edit`` with no
input picks it up (all its faces).
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import click

from faceedit.core.errors import PipelineError

from .common import job_errors

PHOTO_EXTS = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"}
LAST_INVERSION = "last_inversion.json"


def last_inversion_path() -> Path:
    """Where the last finished `faceedit invert` run is recorded."""
    from faceedit.checkpoints.registry import cache_dir

    return cache_dir() / LAST_INVERSION


def _face_option(value: str):
    if value in ("largest", "all"):
        return value
    try:
        i = int(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not largest, all or a face index (0 = leftmost)") from None
    if i < 0:
        raise click.BadParameter("a face index is 0 or more (0 = leftmost face)")
    return i


def _collect(inputs) -> list:
    photos = []
    for p in inputs:
        p = Path(p)
        if p.is_dir():
            found = sorted(q for q in p.iterdir() if q.is_file() and q.suffix.lower() in PHOTO_EXTS)
            if not found:
                raise click.BadParameter(f"folder {p} holds no photos ({', '.join(sorted(PHOTO_EXTS))})",
                                         param_hint="PHOTO|DIR")
            photos.extend(found)
        else:
            photos.append(p)
    return photos


@click.command("invert")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(exists=True), metavar="PHOTO|DIR...")
@click.option("--space", type=click.Choice(["w", "w+", "wpp", "wpp-z"]), default="w+", show_default=True,
              help="Latent space (wpp/wpp-z need a W++ model).")
@click.option("--model", default=None, help="Registry name or checkpoint path [default: the default model "
              "for the space: faces64 for w/w+, faces64-wpp for wpp/wpp-z].")
@click.option("--method", type=click.Choice(["encoder", "optim", "hybrid", "pti"]), default=None,
              help="Inversion method [default: hybrid when the model ships an encoder for the space, else "
              "optim]; pti tunes low-rank generator deltas per face (stored in the latent file).")
@click.option("--steps", type=click.IntRange(1, 100_000), default=None,
              help="Optimisation steps [default: optim 50 on CPU, 300 on CUDA; hybrid 30 / 110]; for pti the "
              "tuning steps [40 / 200] (its pivot takes the hybrid or optim default).")
@click.option("--face", default="largest", show_default=True, help="largest, all, or a face index (0 = leftmost).")
@click.option("--prior", type=click.Choice(["gaussian", "none"]), default="gaussian", show_default=True,
              help="Gaussianized latent prior (fitted once per model and cached if the model lacks it).")
@click.option("--prior-weight", type=click.FloatRange(min=0), default=0.01, show_default=True,
              help="Weight of the normalised prior penalty.")
@click.option("--perceptual", type=click.Choice(["auto", "lpips", "disc", "none"]), default="auto",
              show_default=True, help="Perceptual loss; auto = LPIPS when its VGG file is cached, else the "
              "model's discriminator features, else none.")
@click.option("--optimize-noise/--no-optimize-noise", default=False, show_default=True,
              help="Also optimise the noise maps (with NVIDIA's noise regulariser).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--batch-size", type=click.IntRange(1, 1024), default=16, show_default=True,
              help="Faces optimised together.")
@click.option("--detector", type=click.Choice(["dlib", "dlib-cnn", "mtcnn"]), default="dlib", show_default=True)
@click.option("--aligned", is_flag=True, help="Inputs are already aligned crops (skip detection; resized to "
              "the model's resolution).")
@click.option("--out", type=click.Path(file_okay=False), default="out/invert", show_default=True)
@click.pass_context
def invert(ctx, inputs, space, model, method, steps, face, prior, prior_weight, perceptual, optimize_noise,
           seed, batch_size, detector, aligned, out):
    """Invert faces in photos into a generator's latent space.

    Each photo is aligned with the model's own recipe, every requested face is
    optimised into the space, and per face a latent file, the reconstruction, a
    side-by-side image and a JSON record are written to --out.

    \b
    Examples:
      faceedit invert photo.jpg --space wpp
      faceedit invert photos/ --space w+ --face all --out inv/
      faceedit invert crop.png --aligned --model faces64 --space w --steps 200
      faceedit invert photo.jpg --prior none --perceptual none --seed 1
    """
    import numpy as np
    from tqdm import tqdm

    from faceedit import __version__
    from faceedit.checkpoints.registry import default_model
    from faceedit.core.device import resolve_device
    from faceedit.core.files import atomic_write_text
    from faceedit.core.images import load_image, make_grid, save_image, tensor_to_uint8
    from faceedit.inversion.methods import default_method, invert_with
    from faceedit.inversion.projector import load_model_for_loss
    from faceedit.inversion.pti import synthesize

    face_sel = _face_option(face)
    photos = _collect(inputs)
    quiet = ctx.obj.get("quiet", False) if ctx.obj else False
    out = Path(out)
    failures = []
    with job_errors():
        device = resolve_device(ctx.obj["device"] if ctx.obj else "auto")
        name = model or default_model("wpp" if space in ("wpp", "wpp-z") else space)
        m = load_model_for_loss(name, device, perceptual)
        G = m.G
        from faceedit.inversion.spaces import check_space

        check_space(G, space)
        method = method or default_method(m, space)
        recipe = _recipe(m, G.resolution)
        # 1. align
        faces = []  # (photo path, AlignedFace or None, crop uint8)
        bar = tqdm(photos, desc="align", unit="photo", disable=quiet or len(photos) < 2)
        for p in bar:
            try:
                img = load_image(p)
                if aligned:
                    faces.append((p, None, img))
                else:
                    from faceedit.alignment import align

                    for f in align(img, recipe=recipe, detector=detector, face=face_sel):
                        faces.append((p, f, f.crop))
            except Exception as e:  # noqa: BLE001 -- reported per photo, re-raised for a single photo
                from faceedit.errors import USER_ERRORS

                if len(photos) == 1 or not isinstance(e, USER_ERRORS):
                    raise
                failures.append((str(p), f"{type(e).__name__}: {e}"))
        if not faces:
            raise PipelineError("no face to invert in " + "; ".join(f"{p} ({e})" for p, e in failures))
        # resume: a face whose JSON record exists was finished by an earlier run (it is written last)
        from faceedit.core.files import remove_stale_parts

        remove_stale_parts(out)
        n_all = len(faces)
        faces = [t for t in faces if not (out / f"{Path(t[0]).stem}_{t[1].index if t[1] is not None else 0}.json")
                 .exists()]
        if not faces:
            click.echo(f"nothing to do: all {n_all} face(s) already have results in {out}")
            return
        if len(faces) < n_all:
            click.echo(f"resuming: {n_all - len(faces)} face(s) already done in {out}", err=True)
        # 2. invert, in batches
        prior_obj = None
        if prior == "gaussian":
            from faceedit.inversion.prior import load_prior

            prior_obj = load_prior(m, G)
        records = []
        bar = tqdm(total=len(faces), desc=f"invert {space}", unit="face", disable=quiet or len(faces) < 2)

        def invert_chunk(chunk):  # outputs are written only once the whole chunk succeeded
            items = [f if f is not None else crop for _, f, crop in chunk]
            lat = invert_with(method, items, m, space=space, steps=steps, G=G, D=m.D,
                              prior=prior_obj or "none", prior_weight=prior_weight, perceptual=perceptual,
                              seed=seed, optimize_noise=optimize_noise, batch_size=len(chunk))
            recon = tensor_to_uint8(synthesize(G, lat))  # with optimised noise / PTI tuning, if any
            targets = _targets(items, G.resolution)
            metrics = _metrics(targets, recon)
            for k, (p, f, _) in enumerate(chunk):
                records.append(_write_face(out, p, f, k, lat, m, targets[k], recon[k], metrics, __version__,
                                           method, save_image, make_grid, np))
            bar.update(len(chunk))

        from faceedit.batching import run_batched

        run_batched(invert_chunk, faces, batch_size,
                    on_shrink=lambda a, b: click.echo(f"out of GPU memory at batch {a}; continuing with {b}",
                                                      err=True))
        bar.close()
        last = {"version": __version__, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "model": name, "model_id": m.model_id, "space": space, "out": str(out.resolve()),
                "faces": [{"photo": r["photo"], "face": r["face"], "latent": r["latent"], "json": r["json"]}
                          for r in records]}
        atomic_write_text(last_inversion_path(), json.dumps(last, indent=2))
    for p, e in failures:
        click.echo(f"skipped {p}: {e}", err=True)
    mse = np.mean([r["metrics"]["mse"] for r in records])
    click.echo(f"inverted {len(records)} face(s) from {len(photos) - len(failures)} photo(s) into {space} of "
               f"{m.model_id} ({records[0]['steps']} steps, mean MSE {mse:.4f} on [0,1]); wrote {out}")


def _recipe(m, resolution):
    from faceedit.pipeline import model_recipe

    return model_recipe(m.config, resolution)


def _targets(items, R):
    from faceedit.core.images import tensor_to_uint8
    from faceedit.inversion.projector import _to_batch

    t, _ = _to_batch(items, R, "cpu")
    return tensor_to_uint8(t)


def _metrics(targets, recon) -> dict:
    from faceedit.metrics.reconstruction import reconstruction_metrics

    return {k: [float(x) for x in v] for k, v in reconstruction_metrics(targets, recon).items()}


def _write_face(out, photo, face, k, lat, m, target, recon, metrics, version, method, save_image, make_grid, np):
    idx = face.index if face is not None else 0
    stem = f"{Path(photo).stem}_{idx}"
    one = lat[k]
    meta = dict(one.meta)
    meta["losses"] = {n: v[k] for n, v in lat.meta["losses"].items()}
    meta.pop("faces", None)
    meta["source"] = str(Path(photo).resolve())
    meta["face_index"] = idx
    if face is not None:
        meta["alignment"] = face.metadata()
    one = type(one)(space=one.space, codes=one.codes, model_id=one.model_id, z=one.z, noise=one.noise,
                    tuning=one.tuning, meta=meta)
    protect = (photo,)
    lat_path = out / f"{stem}.latent.safetensors"
    one.save(lat_path)
    save_image(out / f"{stem}.png", recon, protect=protect)
    save_image(out / f"{stem}_side.png", make_grid(np.stack([target, recon]), cols=2), protect=protect)
    rec = {"version": version, "photo": meta["source"], "face": idx, "model": m.name, "model_id": m.model_id,
           "model_sha256": m.sha256, "space": one.space, "method": method, "steps": meta["steps"],
           "steps_requested": meta["steps_requested"], "seed": meta["seed"], "prior": meta["prior"],
           "prior_weight": meta["prior_weight"], "perceptual": meta["perceptual"],
           "perceptual_requested": meta.get("perceptual_requested"),
           "optimize_noise": meta["optimize_noise"], "losses": meta["losses"],
           "metrics": {n: v[k] for n, v in metrics.items()}, "seconds_batch": meta["seconds"],
           "alignment": meta.get("alignment"), "latent": str(lat_path.resolve()),
           "reconstruction": str((out / f"{stem}.png").resolve()),
           "side_by_side": str((out / f"{stem}_side.png").resolve())}
    from faceedit.core.files import atomic_write_text

    jpath = out / f"{stem}.json"
    atomic_write_text(jpath, json.dumps(rec, indent=2), protect=protect)
    rec["json"] = str(jpath.resolve())
    return rec
