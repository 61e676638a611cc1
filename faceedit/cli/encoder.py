"""`faceedit train-encoder`: train a model's image encoder (W, W+ or W++) on a packed data set."""
from __future__ import annotations

import click

from .common import DATA_HELP, OutDir, data_default, job_errors, perceptual_option, seed_option


@click.command("train-encoder")
@click.option("--model", default="faces64", show_default=True, help="Registry name or checkpoint folder.")
@click.option("--data", type=click.Path(dir_okay=False), default=data_default("faces64_train.npz"),
              show_default=f"{DATA_HELP}/faces64_train.npz",
              help="Training pack (train split), as written by `faceedit dataset`.")
@click.option("--space", type=click.Choice(["w", "w+", "wpp"]), default="w+", show_default=True,
              help="Space the encoder predicts (wpp needs a W++ model such as faces64-wpp).")
@click.option("--minutes", type=click.FloatRange(min=0, min_open=True), default=3.0, show_default=True,
              help="Wall time of the training loop (loading and evaluation come on top).")
@click.option("--steps", type=click.IntRange(min=1), default=None, help="Stop after this many steps instead.")
@click.option("--batch", type=click.IntRange(1, 4096), default=32, show_default=True,
              help="Real faces per step (plus as many synthetic pairs).")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=2e-3, show_default=True)
@perceptual_option("Perceptual loss of the training: the model's discriminator features (no download "
                   "needed) or none.", default="disc", only=("disc", "none"))
@click.option("--channels", type=int, default=256, show_default=True, help="Encoder width (power of two).")
@click.option("--val", type=click.IntRange(min=1), default=256, show_default=True,
              help="Faces at the end of the pack held out for the before/after figures.")
@click.option("--max-images", type=click.IntRange(min=2), default=None, help="Use only the first N faces.")
@seed_option("Seed of the initialisation and the batches")
@click.option("--resume/--no-resume", default=True, show_default=True,
              help="Continue from the training state left in --out by an earlier run.")
@click.option("--state-dir", type=click.Path(file_okay=False), default=None,
              help="Folder for the resumable training state [default: --out].")
@click.option("--init-from", type=click.Path(dir_okay=False, exists=True), default=None,
              help="Exported encoder weights to fine-tune when there is no training state.")
@click.option("--out", type=OutDir(), required=True,
              help="Folder for the training state and encoder_<space>.safetensors/.json (copy the last two "
                   "into the model folder to ship).")
@click.pass_context
def train_encoder(ctx, model, data, space, minutes, steps, batch, lr, perceptual, channels, val, max_images, seed,
                  resume, state_dir, init_from, out):
    """Train the pSp/e4e-style encoder of a model (pixel, perceptual, latent and e4e losses).

    \b
    Examples:
      faceedit train-encoder --model faces64 --space w+ --minutes 3 --out runs/enc64
      faceedit train-encoder --model faces64-wpp --space wpp --minutes 3 --out runs/enc64wpp
      faceedit --device cpu train-encoder --model ./tiny --data pack.npz --steps 20 --channels 32 --out runs/enc-tiny
      torchrun --nproc_per_node 2 -m faceedit --device cuda train-encoder --model faces64 --batch 64 --out runs/enc64

    Under torchrun each process is one rank of a data-parallel run (--batch is the global batch;
    rank 0 evaluates and writes --out; the state resumes on any number of ranks).
    """
    from faceedit.core.device import resolve_device
    from faceedit.training.encoder import encoder_width, format_summary, run

    with job_errors():
        device = resolve_device(ctx.obj["device"] if ctx.obj else "auto")
        s = run(model, data, space=space, minutes=minutes, steps=steps, out=out, batch=batch, lr=lr,
                max_images=max_images, val=val, perceptual=perceptual, device=device, seed=seed, resume=resume,
                encoder_kwargs=encoder_width(channels), state_dir=state_dir, init_from=init_from)
    if s["rank"] == 0:  # under torchrun, one summary
        click.echo(format_summary(s))
