"""`faceedit edit` (photo or latent in, edited photo out) and `faceedit directions fit|list|show|import`."""
from __future__ import annotations

import json
import re
import time
from pathlib import Path

import click

from faceedit.defaults import DEFAULT_STRENGTH

from .common import (OutDir, alignment_told_here, detector_option, finish_batch, job_errors, loader_workers_option,
                     max_pixels_option, min_score_option, parse_range, retry_failed_option, seed_option,
                     torchrun_launch)


def parse_attr(text: str, default: float) -> tuple:
    """``smile`` / ``smile=2`` / ``age|male=-1.5`` -> ``(key, strength)``."""
    key, sep, val = str(text).partition("=")
    key = key.strip()
    if not re.fullmatch(r"[A-Za-z0-9_\-]+(\|[A-Za-z0-9_\-]+(,[A-Za-z0-9_\-]+)*)?", key):
        raise click.BadParameter(f"{text!r} is not NAME or NAME=STRENGTH (e.g. smile=2, age|male=-1)",
                                 param_hint="--attr")
    if not sep:
        return key, float(default)
    try:
        return key, float(val)
    except ValueError:
        raise click.BadParameter(f"strength {val!r} in {text!r} is not a number", param_hint="--attr") from None


def parse_sweep(text: str) -> list:
    """``-3:3:7`` -> 7 strengths from -3 to 3."""
    m = re.fullmatch(r"\s*(-?[\d.]+)\s*:\s*(-?[\d.]+)\s*:\s*(\d+)\s*", str(text))
    if not m:
        raise click.BadParameter(f"{text!r} is not START:STOP:COUNT (e.g. -3:3:7)", param_hint="--sweep")
    a, b, n = float(m.group(1)), float(m.group(2)), int(m.group(3))
    if not 2 <= n <= 64:
        raise click.BadParameter("COUNT must be 2..64", param_hint="--sweep")
    return [a + (b - a) * i / (n - 1) for i in range(n)]


@click.command("edit")
@click.argument("inputs", nargs=-1, type=click.Path(exists=True), metavar="[PHOTO|DIR|LATENT]...")
@click.option("--attr", "attrs", multiple=True, metavar="NAME[=STRENGTH]",
              help="Attribute to edit, repeatable: smile, age, male, eyeglasses, yaw, ...; age|male = age with "
                   "male held (a conditional direction); =STRENGTH overrides --strength.")
@click.option("--strength", type=float, default=DEFAULT_STRENGTH, show_default=True,
              help="Strength of the attributes given without one; 1 = one standard deviation of the latent "
                   "distribution along the direction (positive = more smile, older, more CelebA Male, glasses on, "
                   "turned to the subject's left).")
@click.option("--unit", type=click.Choice(["std", "distance"]), default="std", show_default=True,
              help="std: strength in standard deviations; distance: InterFaceGAN's distance to the hyperplane.")
@click.option("--layers", default=None, help="Apply the edits to these layers only, e.g. 0-3 (coarse) or 4-9.")
@click.option("--sweep", default=None, metavar="START:STOP:COUNT",
              help="Also write a strip (crops) and a GIF (photo) sweeping each attribute, e.g. -3:3:7.")
@click.option("--latent", "latent_files", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="Edit this latent file (from `faceedit invert`); its source photo is found in its metadata.")
@click.option("--photo", "photo_override", type=click.Path(exists=True, dir_okay=False), default=None,
              help="With --latent: the photo to paste into, if it moved since the inversion.")
@click.option("--directions", "directions_dir", type=click.Path(exists=True, file_okay=False), default=None,
              help="Folder of direction files [default: shipped, then `faceedit directions fit` output].")
@click.option("--model", default=None, help="For photos: registry name or checkpoint path [default: the "
              "default model of --space].")
@click.option("--space", type=click.Choice(["w", "w+", "wpp", "wpp-z"]), default="w+", show_default=True,
              help="For photos: the space to invert into.")
@click.option("--method", type=click.Choice(["encoder", "optim", "hybrid", "pti"]), default=None,
              help="For photos: inversion method [default: hybrid when the model ships an encoder for the space, "
                   "else optim].")
@click.option("--steps", type=click.IntRange(1, 100_000), default=None,
              help="For photos: inversion steps [default: the method's, e.g. 50 optim steps on CPU].")
@click.option("--face", default="largest", show_default=True, help="For photos: largest, all, or a face index.")
@click.option("--batch", "--batch-size", "batch_size", type=click.IntRange(1, 1024), default=None,
              help="For a folder: photos whose faces are inverted as one batch while the ones before are written "
                   "[default: 16 on CUDA, 4 on the CPU].")
@detector_option()
@min_score_option()
@max_pixels_option()
@seed_option("For photos: seed of the inversion")
@click.option("--force", is_flag=True, help="Edit even past the strengths the directions were measured at (12) or "
              "with a latent far outside the model's distribution, where the result is mostly noise.")
@click.option("--out", type=OutDir(), default="out/edit", show_default=True,
              help="Output folder (created; an input edited there with the same settings is skipped, an earlier "
              "edit of it with other settings replaced, and said so). "
              "Relative to the current folder, as in the README's examples, so results land where the user works.")
@retry_failed_option()
@loader_workers_option()
@click.pass_context
def edit(ctx, inputs, attrs, strength, unit, layers, sweep, latent_files, photo_override, directions_dir, model,
         space, method, steps, face, batch_size, detector, min_score, max_pixels, seed, force, out, retry_failed,
         workers):
    """Edit faces: a photo (aligned and inverted first), a latent file, or the last inversion.

    Writes to --out, per photo: STEM_edit.png (the whole photo with the edit pasted
    back, same size as the input, changed only inside the face mask), per face
    STEM_FACE_edit.png (the edited crop), STEM_FACE_side.png (aligned | reconstruction |
    edit), STEM_FACE_edit.latent.safetensors, and STEM_edit.json (the record); with
    --sweep also STEM_FACE_sweep.png and STEM_sweep_ATTR.gif. STEM is the photo's, or
    STEM_EXT when two inputs share one (same.jpg, same.png) or the name would hit a file
    that is not an earlier result of this photo. A photo that fails is listed and the others
    go on; the exit code is 1 if any failed. An input edited into --out with the same settings
    is skipped; one that failed with them is skipped unless --retry-failed. Under torchrun the
    inputs are dealt to the processes in groups of --batch.

    \b
    Examples:
      faceedit edit --attr smile --strength 2                 # the last `faceedit invert`
      faceedit edit photo.jpg --attr smile --out out/
      faceedit edit photo.jpg --attr age=2 --attr eyeglasses=1 --face all
      faceedit edit photo.jpg --attr "age|male=3"             # older, gender held
      faceedit edit --latent out/invert/photo_0.latent.safetensors --attr yaw --sweep -3:3:7
      faceedit edit photo.jpg --space wpp --attr smile --layers 0-5
      torchrun --nproc_per_node 8 -m faceedit --device cuda edit photos/ --attr smile --out ed/
    """
    if not attrs:
        raise click.UsageError("say what to edit with --attr NAME[=STRENGTH], e.g. --attr smile "
                               "(`faceedit directions list` shows the attributes)")
    pairs = dict(parse_attr(a, strength) for a in attrs)
    layer_list = parse_range(layers, name="layers") if layers else None
    strengths = parse_sweep(sweep) if sweep else None
    from faceedit.inputs import LATENT_SUFFIX
    from faceedit.outputs import last_inversion_path

    # one rule for photos (faceedit.inputs): any file but a latent is read as a photo, its content decides
    photos = [Path(p) for p in inputs if Path(p).is_dir() or Path(p).suffix.lower() != LATENT_SUFFIX]
    lat_inputs = [Path(p) for p in latent_files] + [Path(p) for p in inputs if Path(p).suffix.lower() == LATENT_SUFFIX
                                                    and not Path(p).is_dir()]
    if photos and lat_inputs:
        raise click.UsageError("give photos or latents, not both (pair a latent with its photo via --photo)")
    if photo_override and len(lat_inputs) > 1:
        raise click.UsageError("--photo goes with a single --latent")
    if not photos and not lat_inputs and not last_inversion_path().is_file():
        raise click.UsageError("nothing to edit: pass a photo (`faceedit edit photo.jpg --attr smile`), --latent "
                               f"FILE, or run `faceedit invert PHOTO` first (its result is remembered in "
                               f"{last_inversion_path()})")
    quiet = ctx.obj.get("quiet", False) if ctx.obj else False
    t_start = time.perf_counter()
    device = ctx.obj["device"] if ctx.obj else "auto"
    with job_errors():
        from faceedit.pipeline import edit_files

        alignment_told_here()
        with torchrun_launch(device) as (dist, device):
            run = edit_files(out, pairs, photos=photos, latent_files=lat_inputs, photo=photo_override, model=model,
                             space=space, face=_face_arg(face), layers=layer_list, strengths=strengths,
                             method=method, device=device, detector=detector, directions=directions_dir,
                             strength_unit=unit, min_score=min_score, max_pixels=max_pixels, force=force,
                             notice=lambda msg: click.echo(msg, err=True),
                             invert_options={k: v for k, v in (("steps", steps), ("seed", seed)) if v is not None},
                             echo=None if quiet else lambda msg: click.echo(msg, err=True),
                             retry_failed=retry_failed, workers=workers, dist=dist, batch_size=batch_size)
    if dist is not None and not dist.is_main:  # rank 0 of a torchrun launch tells the whole run
        return
    dt = time.perf_counter() - t_start
    for r in run.records:
        t = r["timings"]
        scores = [f["detector_score"] for f in r["faces"] if f.get("detector_score") is not None]
        click.echo(f"wrote {r['photo_out'] or r['faces'][0]['crop']} ({len(r['faces'])} face(s)"
                   + (", detector score " + " ".join(f"{v:.2f}" for v in scores) if scores else "") + "; "
                   + ", ".join(f"{k} {v:.2f}s" for k, v in t.items()) + ")")
    n = len(run.records) + len(run.failures) + run.skipped
    if run.skipped and not run.records:
        click.echo(f"nothing to do: {run.skipped} of {n} input(s) already have results in {out} with these "
                   f"settings (another --out, or deleting them, edits them again)")
    else:
        click.echo(f"edited {len(run.records)} of {n} input(s) in {dt:.1f} s; records in {out}"
                   + (f"; {run.skipped} already done" if run.skipped else ""))
    if len(run.records) > 1:
        from faceedit.batchrun import rate_line

        click.echo(rate_line(run.rate))
    if run.failed_before:
        click.echo(f"{run.failed_before} input(s) failed in an earlier run and were not tried again (listed below; "
                   f"--retry-failed tries them)", err=True)
    finish_batch(run.failures, n)


def _face_arg(face: str):
    if face in ("largest", "all"):
        return face
    try:
        return int(face)
    except ValueError:
        raise click.BadParameter(f"{face!r} is not largest, all or a face index", param_hint="--face") from None


# ---------------------------------------------------------------------------------------------
# faceedit directions
# ---------------------------------------------------------------------------------------------
@click.group("directions")
def directions():
    """Attribute directions: list the shipped and fitted ones, show one, fit new ones, import others'.

    \b
    Examples:
      faceedit directions list --model faces64
      faceedit directions show faces64_smile_w.safetensors
      faceedit directions fit --model faces64 --attr smile --attr age --n 20000
      faceedit directions fit --model faces64 --attr age --condition male
      faceedit directions fit --model faces64 --method ganspace --k 10 --layers 0-3
      faceedit directions import stylegan_ffhq_smile_w_boundary.npy --model ffhq1024
    """


@directions.command("list")
@click.option("--model", default=None, help="Only this model's directions (registry name).")
@click.option("--folder", type=click.Path(exists=True, file_okay=False), default=None,
              help="List the files of this folder instead.")
def directions_list(model, folder):
    """List direction files (shipped, then the cache): key, space, layers, accuracy, strength scale."""
    with job_errors():
        from faceedit.editing.direction import list_directions

        found = list_directions(model, folder=folder)
    if not found:
        where = folder or f"checkpoints/weights/directions/{model or '*'} and the cache"
        click.echo(f"no directions in {where}; fit some with `faceedit directions fit --model NAME --attr smile`")
        return
    rows = [("model", "direction", "space", "layers", "method", "val acc", "std", "samples", "file")]
    for p, d in found:
        lay = "all" if not d.layers else f"{d.layers[0]}-{d.layers[-1]}"
        rows.append((d.model_id, d.key, d.space, lay, d.method,
                     "" if d.accuracy is None else f"{d.accuracy:.3f}", f"{d.latent_std:.3g}", str(d.samples), p.name))
    w = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        click.echo("  ".join(c.ljust(w[i]) for i, c in enumerate(r)).rstrip())


@directions.command("show")
@click.argument("name")
@click.option("--model", default=None, help="With a key (smile, age|male): the model to look it up for.")
def directions_show(name, model):
    """Show one direction's metadata: a file path, or a key (smile, age|male) with --model."""
    with job_errors():
        from faceedit.editing.direction import Direction, list_directions, parse_key

        p = Path(name)
        if p.suffix == ".safetensors" and not p.exists():
            hits = [q for q, _ in list_directions(model) if q.name == p.name]
            p = hits[0] if hits else p
        if p.suffix == ".safetensors" or p.exists():
            d = Direction.load(p)
        else:
            if not model:
                raise click.UsageError("a direction key needs --model (or pass the file)")
            want = parse_key(name)
            hits = [(q, d) for q, d in list_directions(model) if (d.attribute, tuple(sorted(d.conditions))) == want]
            if not hits:
                raise click.ClickException(f"no direction {name!r} for {model}; `faceedit directions list --model "
                                           f"{model}` shows what there is")
            p, d = hits[0]
    info = d.metadata()
    info["file"] = str(p)
    info["vector_shape"] = list(d.vector.shape)
    click.echo(json.dumps(info, indent=2))


@directions.command("fit-all")
@click.option("--model", "models", multiple=True, required=True, help="Registry name or checkpoint path (repeatable).")
@click.option("--scorer", "--scorers", "scorers", default=None,
              help="Attribute-network weights [default: shipped], or 'landmarks' (dlib geometry; CPU).")
@click.option("--n", "n", type=click.IntRange(100), default=100000, show_default=True, help="Latents per model.")
@click.option("--out", type=OutDir(), required=True, help="Folder; files go to OUT/<model>/.")
@click.option("--fraction", type=click.FloatRange(0.001, 0.5), default=0.02, show_default=True,
              help="Fraction kept at each end.")
@click.option("--batch", type=click.IntRange(1), default=1000, show_default=True,
              help="Latents synthesized and scored together.")
@click.option("--attr", "attrs", multiple=True, help="Attributes to fit [default: core ones + AUC >= --min-auc].")
@click.option("--min-auc", type=click.FloatRange(0, 1), default=0.9, show_default=True)
@click.option("--unsupervised", type=click.IntRange(0), default=8, show_default=True,
              help="GANSpace and SeFa directions per model (0: none).")
@click.option("--separability", type=click.IntRange(0), default=10000, show_default=True,
              help="Samples for the linear-separability figure (0: skip).")
@click.option("--wplus-pack", type=click.Path(dir_okay=False, exists=True), default=None,
              help="Aligned TRAIN pack: also fit W+ directions on the codes of inverted faces from it.")
@click.option("--wplus-n", type=click.IntRange(1), default=5000, show_default=True, help="Faces inverted for W+.")
@click.option("--wplus-steps", type=click.IntRange(1), default=None,
              help="Inversion steps for W+ [default: the method's].")
@click.option("--wplus-fraction", type=click.FloatRange(0.001, 0.5), default=0.1, show_default=True)
@click.option("--save-samples", type=click.IntRange(0), default=0, show_default=True,
              help="Also write the first N sampled images to samples_<model>.npz (for a CPU landmark fit).")
@click.option("--samples-dir", type=click.Path(file_okay=False), default=None, help="Where --save-samples writes.")
@click.option("--from-samples", type=click.Path(file_okay=False), default=None,
              help="Score the images of samples_<model>.npz in this folder instead of sampling.")
@click.option("--zip", "zip_path", type=click.Path(dir_okay=False), default=None,
              help="Also pack the directions and reports under --out into this one .zip.")
@click.option("--jobs", type=click.IntRange(0), default=0, show_default=True,
              help="Processes for the separability SVMs (0: all cores).")
@seed_option("Seed of the latent sampling and the fits")
@click.pass_context
def directions_fit_all(ctx, models, scorers, n, out, fraction, batch, attrs, min_auc, unsupervised, separability,
                       wplus_pack, wplus_n, wplus_steps, wplus_fraction, save_samples, samples_dir, from_samples,
                       zip_path, jobs, seed):
    """Fit the whole shipped direction set of one or more models (the GPU job).

    \b
    Example:
      faceedit --device cuda directions fit-all --model faces64 --model faces64-wpp --n 100000 --out DIR
    """
    from faceedit.editing.fit_job import run_fit_job, table

    with job_errors():
        res = run_fit_job(list(models), out, scorers=scorers, n=n, fraction=fraction, batch=batch,
                          attrs=list(attrs) or None, min_auc=min_auc, unsupervised=unsupervised,
                          separability=separability, wplus_pack=wplus_pack, wplus_n=wplus_n, wplus_steps=wplus_steps,
                          wplus_fraction=wplus_fraction, save_samples=save_samples, samples_dir=samples_dir,
                          from_samples=from_samples, zip_path=zip_path, jobs=jobs, seed=seed,
                          device=ctx.obj["device"] if ctx.obj else "auto")
    click.echo("\n".join(res["timing"]) + f"\nall done in {res['seconds']:.1f} s on {res['device']}")
    click.echo(table(res["rows"]))


@directions.command("fit")
@click.option("--model", required=True, help="Registry name or checkpoint path.")
@click.option("--attr", "attrs", multiple=True, help="Attribute(s) to fit (names the scorer gives: smile, age, "
              "male, eyeglasses, ...) [default: smile, age, male, eyeglasses].")
@click.option("--condition", "conditions", multiple=True,
              help="Also write each direction with these attributes held (conditional manipulation).")
@click.option("--method", type=click.Choice(["interfacegan", "ganspace", "sefa"]), default="interfacegan",
              show_default=True)
@click.option("--scorer", default=None, help="Attribute-network weights [default: shipped], or 'landmarks' "
              "(dlib landmark geometry: yaw; CPU).")
@click.option("--n", "n", type=click.IntRange(100, 10_000_000), default=None,
              help="Latents sampled [default: 100000 on CUDA, 4000 on the CPU (about 0.1 s per image there)].")
@click.option("--fraction", type=click.FloatRange(0.001, 0.5), default=None,
              help="Fraction kept at each end of the scores [default: 0.02 from 20000 samples on, else 0.05].")
@click.option("--k", type=click.IntRange(1, 512), default=10, show_default=True, help="GANSpace/SeFa: components.")
@click.option("--layers", default=None, help="Layers the direction applies to, e.g. 0-3 [default: all].")
@seed_option("Seed of the latent sampling and the fit")
@click.option("--batch", type=click.IntRange(1, 65536), default=256, show_default=True,
              help="Latents synthesized and scored together.")
@click.option("--out", type=OutDir(), default=None,
              help="Folder [default: the cache, CACHE/directions/MODEL, where `faceedit edit` looks].")
@click.pass_context
def directions_fit(ctx, model, attrs, conditions, method, scorer, n, fraction, k, layers, seed, batch, out):
    """Fit directions for a model (InterFaceGAN with the attribute scorer, or GANSpace / SeFa).

    \b
    Examples:
      faceedit directions fit --model faces64 --attr mouth-slightly-open
      faceedit directions fit --model faces64 --attr age --condition male --n 20000
      faceedit --device cuda directions fit --model faces64-wpp --n 100000
      faceedit directions fit --model faces64 --method sefa --layers 0-3
    """
    import sys

    from tqdm import tqdm

    layer_list = tuple(parse_range(layers, name="layers")) if layers else ()
    with job_errors():
        from faceedit.checkpoints.registry import cache_dir, load_model
        from faceedit.core.device import resolve_device
        from faceedit.editing.direction import canonical_attribute, model_name
        from faceedit.editing.fit import condition, fit_direction, ganspace, sample_and_score, sample_codes, sefa
        from faceedit.editing.fit_job import classifier_scorer, landmark_scorer

        device = resolve_device(ctx.obj["device"] if ctx.obj else "auto")
        n = n or (100_000 if device.type == "cuda" else 4000)
        fraction = fraction or (0.02 if n >= 20000 else 0.05)
        m = load_model(model, device=device)
        G, mid = m.G, m.model_id
        folder = Path(out) if out else cache_dir() / "directions" / model_name(mid)
        written = []
        if method in ("ganspace", "sefa"):
            codes = sample_codes(G, n, seed=seed, device=device)
            dirs = (ganspace(codes, model_id=mid, num_ws=G.num_ws, k=k, layers=layer_list, seed=seed, arch=G.arch)
                    if method == "ganspace" else sefa(G, model_id=mid, k=k, layers=layer_list, codes=codes[:20000]))
            written = [(d, d.save(folder)) for d in dirs]
        else:
            score_fn, _, ident = landmark_scorer(device) if scorer == "landmarks" else classifier_scorer(scorer, device)
            want = [canonical_attribute(a) for a in attrs] or ["smile", "age", "male", "eyeglasses"]
            conds = [canonical_attribute(c) for c in conditions]
            bar = tqdm(total=n, desc="sample+score", file=sys.stderr, disable=ctx.obj.get("quiet", False))
            codes, scores = sample_and_score(G, score_fn, n, seed=seed, batch=batch, device=device,
                                             progress=lambda d, t: bar.update(d - bar.n))
            bar.close()
            missing = [a for a in want + conds if a not in scores]
            if missing:
                raise click.ClickException(f"the scorer gives no {', '.join(missing)}; it scores "
                                           f"{', '.join(sorted(scores))}")
            fitted = {}
            for a in dict.fromkeys(want + conds):
                fitted[a] = fit_direction(codes, scores[a], attribute=a, model_id=mid, num_ws=G.num_ws,
                                          layers=layer_list, fraction=fraction, seed=seed, scorer=ident,
                                          arch=G.arch)
            for a in want:
                written.append((fitted[a], fitted[a].save(folder)))
                held = [fitted[c] for c in conds if c != a]
                if held:
                    d = condition(fitted[a], held, codes=codes)
                    written.append((d, d.save(folder)))
    for d, p in written:
        acc = "" if d.accuracy is None else f" val acc {d.accuracy:.3f},"
        click.echo(f"{d.key:<24}{acc} std {d.latent_std:.3g} -> {p}")


@directions.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--model", required=True, help="Registry name, adopted name or checkpoint path it belongs to.")
@click.option("--attr", default=None, help="Attribute name [default: guessed from the file name, and said so].")
@click.option("--space", type=click.Choice(["w", "w+"]), default="w", show_default=True,
              help="w: one code direction; w+: one slice per layer ([num_ws, w_dim] files).")
@click.option("--layers", default=None, help="Layers it applies to, e.g. 0-3 (GANSpace's ranges) [default: all].")
@click.option("--component", "components", multiple=True, type=click.IntRange(min=0),
              help="GANSpace .npz: import only these components (with --attr: exactly one).")
@click.option("--out", type=OutDir(), default=None,
              help="Folder [default: the cache, CACHE/directions/MODEL, where `faceedit edit` looks].")
def directions_import(file, model, attr, space, layers, components, out):
    """Import an InterFaceGAN .npy boundary, an e4e/pSp .pt direction or a GANSpace .npz.

    The vector is checked against the model's w_dim, normalised, and saved with where it
    came from (path, sha256, format); `faceedit edit --attr NAME` then uses it. Nothing
    in the file is executed (.npy/.npz without pickles, .pt with weights_only).

    \b
    Examples:
      faceedit directions import stylegan_ffhq_smile_w_boundary.npy --model ffhq1024
      faceedit directions import editings/interfacegan_directions/age.pt --model ffhq1024 --attr age
      faceedit directions import ganspace_ffhq.npz --model ffhq1024 --component 0 --attr pose --layers 0-6
    """
    layer_list = tuple(parse_range(layers, name="layers")) if layers else ()
    with job_errors():
        from faceedit.editing.importers import import_directions

        done = import_directions(file, model, attr=attr, space=space, layers=layer_list,
                                 components=list(components) or None, out=out)
    for d, p in done:
        imp = d.meta["imported"]
        guessed = " (attribute guessed from the file name; pass --attr to set it)" if imp["attribute_guessed"] else ""
        click.echo(f"{d.key:<16} {imp['format']}, sha256 {imp['sha256'][:12]}, std {d.latent_std:.3g} -> {p}{guessed}")
