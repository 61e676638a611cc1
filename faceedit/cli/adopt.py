"""`faceedit adopt`: any readable checkpoint -> a registered model with recipe, prior, directions, card."""
from __future__ import annotations

import sys

import click

from .common import seed_option, job_errors


@click.command("adopt")
@click.argument("checkpoint", type=click.Path(exists=True, dir_okay=True))
@click.option("--name", required=True, help="Name to register the model under (used as --model NAME).")
@click.option("--recipe", type=click.Choice(["ffhq", "faces64"]), default=None,
              help="Alignment recipe of the model's training data [default: the one the checkpoint records, "
                   "else ffhq (scale 1.0 at the model's resolution)].")
@click.option("--minutes", type=click.FloatRange(min=0, min_open=True), default=10.0, show_default=True,
              help="Time budget: without --n the sample count is cut to fit; --encoder trains in what is left.")
@click.option("--n", "n", type=click.IntRange(min=100), default=None,
              help="Samples scored for the attribute directions [default: 100000 on CUDA, 4000 on the CPU].")
@click.option("--prior-n", type=click.IntRange(min=100), default=None,
              help="Mapping samples for the Gaussianized prior [default: 100000].")
@click.option("--encoder/--no-encoder", default=False, show_default=True,
              help="Also train an encoder on synthetic pairs from the model, in the time left.")
@click.option("--unsupervised", type=click.IntRange(min=0), default=8, show_default=True,
              help="GANSpace and SeFa directions each (0: none).")
@click.option("--batch", type=click.IntRange(min=1), default=None,
              help="Synthesis batch [default: from the model's size and the free memory].")
@click.option("--force", is_flag=True, help="Replace an earlier adoption of the same name.")
@seed_option("Seed of the sampling (prior, directions, encoder)")
@click.pass_context
def adopt(ctx, checkpoint, name, recipe, minutes, n, prior_n, encoder, unsupervised, batch, force, seed):
    """Make CHECKPOINT (native, NVIDIA .pkl, rosinality .pt) a model the whole toolkit can use.

    Converts it, records its alignment recipe, fits its prior, its attribute directions
    (shipped scorers; chance-level ones are refused), GANSpace and SeFa directions,
    optionally an encoder, and writes a model card; the model is registered in the
    cache ($FACEEDIT_HOME/models/NAME) and its directions where `faceedit edit` looks.

    \b
    Examples:
      faceedit --device cuda adopt stylegan2-ffhq-256x256.pkl --name ffhq256
      faceedit --device cuda adopt ffhq.pkl --name ffhq --encoder --minutes 20
      faceedit adopt mine/ --name mine --recipe faces64 --n 2000
      faceedit edit photo.jpg --model ffhq256 --attr smile
    """
    from tqdm import tqdm

    from faceedit.core.device import resolve_device
    from faceedit.training.adopt import adopt as adopt_job

    quiet = bool(ctx.obj.get("quiet")) if ctx.obj else False
    bars = {}

    def stage(msg):
        if not quiet:
            click.echo(msg, err=True)

    def progress(what, done, total):
        bar = bars.get(what)
        if bar is None:
            bar = bars[what] = tqdm(total=total, desc=what, file=sys.stderr, disable=quiet or not sys.stderr.isatty())
        bar.update(done - bar.n)
        if done >= total:
            bar.close()

    with job_errors():
        device = resolve_device(ctx.obj["device"] if ctx.obj else "auto")
        r = adopt_job(checkpoint, name, recipe=recipe, minutes=minutes, n=n, prior_n=prior_n, encoder=encoder,
                      device=device, unsupervised=unsupervised, batch=batch, force=force, seed=seed,
                      stage=stage, progress=progress)
    for b in bars.values():
        b.close()
    d = r["directions"]
    click.echo(f"adopted {r['model_id']} -> {r['path']} in {r['seconds_total']:.1f} s on {r['device']}")
    click.echo("| direction | held-out accuracy | needed | |")
    click.echo("| --- | --- | --- | --- |")
    for k, v in d["fitted"].items():
        click.echo(f"| {k} | {v['accuracy']:.3f} | {v['needed']:.3f} | kept |")
    for k, v in d["rejected"].items():
        acc = "" if v.get("accuracy") is None else f"{v['accuracy']:.3f}"
        need = "" if v.get("needed") is None else f"{v['needed']:.3f}"
        click.echo(f"| {k} | {acc} | {need} | refused: {v['reason']} |")
    click.echo(f"model card: {r['path']}/MODEL_CARD.md")
