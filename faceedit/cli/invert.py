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
atomically; with concurrent runs the last one to finish wins. It lists every face the output
folder holds for the run's settings, those of earlier runs included; ``faceedit edit`` with
no input picks it up (all its faces).

A re-run into the same folder skips the faces done with the same settings (model, space,
method, steps, seed, prior, losses, detector). If the folder holds results of these photos
made with other settings, the run stops before inverting anything and says what differs:
pass another ``--out`` to keep both, or ``--overwrite`` to replace them (refused by default
so that a changed option never silently costs an earlier result, and a folder never mixes
two settings). A photo that fails is skipped, listed and recorded as failed in the folder's
manifest; a re-run does not try it again unless ``--retry-failed`` (it is listed again, and
the exit code is 1 if any photo failed, now or before).

Launched by ``torchrun --nproc_per_node N [--nnodes M ...] -m faceedit invert DIR --out OUT``,
the photos are dealt to the N x M processes in groups of ``--batch`` (``faceedit.batchrun``);
rank 0 prints the progress bar and the summary of the whole run.
"""
from __future__ import annotations

import os

import click

from .common import (OutDir, alignment_told_here, detector_option, finish_batch, job_errors, loader_workers_option,
                     max_pixels_option, min_score_option, perceptual_option, retry_failed_option, seed_option)


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
              help="Optimisation steps [default: optim 50 on CPU, 300 on CUDA; hybrid 20 / 110]; for pti the "
              "tuning steps [40 / 200] (its pivot takes the hybrid or optim default).")
@click.option("--face", default="largest", show_default=True, help="largest, all, or a face index (0 = leftmost).")
@click.option("--prior", type=click.Choice(["gaussian", "none"]), default="gaussian", show_default=True,
              help="Gaussianized latent prior (fitted once per model and cached if the model lacks it).")
@click.option("--prior-weight", type=click.FloatRange(min=0), default=0.01, show_default=True,
              help="Weight of the normalised prior penalty.")
@perceptual_option("Perceptual loss; auto = LPIPS when its VGG file is cached, else the model's "
                   "discriminator features, else none.")
@click.option("--optimize-noise/--no-optimize-noise", default=False, show_default=True,
              help="Also optimise the noise maps (with NVIDIA's noise regulariser).")
@seed_option("Seed of the optimiser's noise and of any sampling")
@click.option("--batch", "--batch-size", "batch_size", type=click.IntRange(1, 1024), default=16, show_default=True,
              help="Faces optimised together (halved on out-of-memory).")
@detector_option()
@min_score_option()
@max_pixels_option()
@click.option("--aligned", is_flag=True, help="Inputs are already aligned crops (skip detection; resized to "
              "the model's resolution).")
@click.option("--out", type=OutDir(), default="out/invert", show_default=True,
              help="Output folder (created; faces finished with the same settings are skipped on a re-run). "
              "Relative to the current folder, as in the README's examples, so results land where the user works.")
@click.option("--overwrite", is_flag=True,
              help="Replace results of these photos in --out made with other settings (refused without it).")
@retry_failed_option()
@loader_workers_option()
@click.pass_context
def invert(ctx, inputs, space, model, method, steps, face, prior, prior_weight, perceptual, optimize_noise,
           seed, batch_size, detector, min_score, max_pixels, aligned, out, overwrite, retry_failed, workers):
    """Invert faces in photos into a generator's latent space.

    Each photo is aligned with the model's own recipe, every requested face is
    optimised into the space, and per face a latent file, the reconstruction, a
    side-by-side image and a JSON record are written to --out. A re-run skips the faces
    done with the same settings and stops if --out holds these photos' results made with
    other settings (--overwrite replaces them). A photo that fails is listed and the others
    go on; the exit code is 1 if any failed. It is recorded as failed and not tried again
    by a re-run unless --retry-failed. Under torchrun the photos are dealt to the processes
    (groups of --batch photos, the same results whatever their number).

    \b
    Examples:
      faceedit invert photo.jpg --space wpp
      faceedit invert photos/ --space w+ --face all --out inv/
      faceedit invert crop.png --aligned --model faces64 --space w --steps 200
      faceedit invert photo.jpg --prior none --perceptual none --seed 1
      torchrun --nproc_per_node 8 -m faceedit --device cuda invert photos/ --out inv/
    """
    face_sel = _face_option(face)
    quiet = ctx.obj.get("quiet", False) if ctx.obj else False
    with job_errors():
        from faceedit.batchrun import launched, rate_line
        from faceedit.checkpoints.registry import cache_dir
        from faceedit.core.files import check_writable_dir
        from faceedit.inputs import check_photos, collect_photos
        from faceedit.pipeline import Pipeline

        photos = collect_photos(inputs)
        check_writable_dir(cache_dir(), what="FACEEDIT_HOME")  # last_inversion.json; before any model loads
        if "WORLD_SIZE" not in os.environ:  # one process: every header read before the model loads
            good, bad = check_photos(photos, max_pixels=max_pixels)
            if not good:  # every photo unreadable: said before any model loads
                finish_batch(bad, len(photos), "photo(s)")
        alignment_told_here()
        with launched(ctx.obj["device"] if ctx.obj else "auto") as (dist, device):
            pipe = Pipeline(model, space=space, method=method, device=device, detector=detector, min_score=min_score,
                            max_pixels=max_pixels, notice=lambda msg: click.echo(msg, err=True),
                            invert_options={"steps": steps, "prior": prior, "prior_weight": prior_weight,
                                            "perceptual": perceptual, "seed": seed, "optimize_noise": optimize_noise})
            run = pipe.invert_files(photos, out, face=face_sel, aligned=aligned, batch_size=batch_size, quiet=quiet,
                                    echo=lambda msg: click.echo(msg, err=True), overwrite=overwrite,
                                    retry_failed=retry_failed, workers=workers, dist=dist)
    if not dist.is_main:  # rank 0 of a torchrun launch tells the whole run
        return
    if run.records:
        click.echo("\n".join(run.faces_lines()))
        click.echo(run.summary())
        if len(photos) > 1:
            click.echo(rate_line(run.rate))
    else:
        click.echo(f"nothing to do: all {run.skipped} face(s) already have results in {out} with these settings")
    if run.failed_before:
        click.echo(f"{run.failed_before} photo(s) failed in an earlier run and were not tried again (listed below; "
                   f"--retry-failed tries them)", err=True)
    finish_batch(run.failures, run.photos, "photo(s)")
