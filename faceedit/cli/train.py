"""`faceedit dataset build`, `faceedit train`, `faceedit unpack-export`, `faceedit train-scorers`,
`faceedit train-quadnet`: thin wrappers over ``faceedit.training``."""
from __future__ import annotations

from pathlib import Path

import click

from .common import seed_option, DATA_HELP, OutDir, data_default, job_errors


def _default_datasets() -> str:
    import os

    env = os.environ.get("FACEEDIT_DATASETS")
    if env:
        return env
    here = Path(__file__).resolve().parents[2]  # the checkout
    return str(here.parent / "shared" / "datasets")


@click.group("dataset")
def dataset():
    """Build the aligned face packs the generators train on."""


@dataset.command("build")
@click.option("--out", type=OutDir(), default=data_default(), show_default=DATA_HELP,
              help="Folder for faces64_train.npz, faces64_test.npz, the report and contact sheet.")
@click.option("--datasets", type=click.Path(exists=True, file_okay=False), default=None,
              help="The shared data sets folder [default: $FACEEDIT_DATASETS or ../shared/datasets].")
@click.option("--workers", type=click.IntRange(1, 64), default=2, show_default=True, help="Alignment processes.")
@click.option("--max-mib", type=click.FloatRange(1, 1000), default=44.0, show_default=True,
              help="Size cap of the train pack; the JPEG quality is chosen to meet it.")
@click.option("--limit", type=click.IntRange(1), default=None,
              help="Process only about N photos per split (evenly spaced): a quick trial build.")
@click.option("--prefix", default="faces64", show_default=True, help="File-name prefix.")
@click.option("--cache", type=click.Path(file_okay=False), default=None,
              help="Keep the raw aligned crops here (~400 MB; not inside --out, which holds only the packs) "
                   "so that a re-pack at another --max-mib skips alignment.")
@click.pass_context
def build(ctx, out, datasets, workers, max_mib, limit, prefix, cache):
    """Align UTKFace and CelebA (FACES64 recipe, largest face), pack train and test splits.

    The test split (CelebA 009001-010000; UTKFace every 20th sorted name) goes only to
    the test pack. Takes several minutes of CPU for the full sets.

    \b
    Examples:
      faceedit dataset build --out packs
      faceedit dataset build --out /tmp/trial --limit 200
      faceedit dataset build --out packs --cache /tmp/faces64_cache --max-mib 40
    """
    from faceedit.training.dataset import build_dataset

    with job_errors():
        stats = build_dataset(out, datasets or _default_datasets(), workers=workers, max_mib=max_mib, limit=limit,
                              progress=not ctx.obj.get("quiet"), prefix=prefix, cache=cache)
    for split, s in stats["splits"].items():
        per = ", ".join(f"{k} {v['aligned']}/{v['photos']}" for k, v in s["per_source"].items())
        click.echo(f"{split}: {s['aligned']} faces aligned of {s['photos']} photos ({per}); {s['failed']} failed")
    click.echo(f"malformed UTKFace names left out: {len(stats['malformed_utkface_names'])}")
    click.echo(f"JPEG quality {stats['jpeg_quality']}, packs (MiB): {stats['pack_mib']}; report in "
               f"{Path(out) / (prefix + '_stats.md')}")


@click.command("train")
@click.option("--data", type=click.Path(dir_okay=False), default=data_default("faces64_train.npz"),
              show_default=f"{DATA_HELP}/faces64_train.npz", help="Train pack from `faceedit dataset build`.")
@click.option("--mapping", type=click.Choice(["mlp", "transformer"]), default="mlp", show_default=True,
              help="mlp: W/W+ model (faces64); transformer: W++ model (faces64-wpp).")
@click.option("--arch", type=click.Choice(["stylegan2", "stylegan1"]), default=None,
              help="Generator: stylegan2, or stylegan1 (AdaIN, MLP mapping; no path-length penalty) "
                   "[stylegan2, or what a resumed run saved].")
@click.option("--resolution", type=click.Choice(["16", "32", "64"]), default="64", show_default=True,
              help="Training resolution (the pack is area-downsampled if smaller).")
@click.option("--run-dir", type=click.Path(file_okay=False), default=None,
              help="Checkpoint folder, resumed when it holds one [default: runs/NAME].")
@click.option("--minutes", type=click.FloatRange(min=0, min_open=True), default=8.5, show_default=True,
              help="Wall-clock budget of the whole job; it stops cleanly and saves.")
@click.option("--max-steps", type=click.IntRange(1), default=None, help="Stop after N steps.")
@click.option("--export", type=click.Path(file_okay=False), default=None,
              help="Write NAME.zip, NAME.disc.safetensors, NAME.resume.safetensors here.")
@click.option("--resume-from", type=click.Path(file_okay=False), default=None,
              help="Folder with an earlier export, used when --run-dir has no checkpoint.")
@click.option("--batch", type=click.IntRange(4), default=None, help="Images per step [128].")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=None, help="Adam learning rate [0.002].")
@click.option("--r1-gamma", type=click.FloatRange(min=0), default=None, help="R1 weight [0.2].")
@click.option("--augment", default=None, help="DiffAugment policy [color,translation,cutout]; '' for none.")
@click.option("--seed", type=int, default=None, help="Seed [default: 0].")
@click.option("--set", "settings", multiple=True, metavar="KEY=VALUE",
              help="Any other TrainConfig field, e.g. --set ema_kimg=5 --set channel_base=1024.")
@click.option("--name", default=None,
              help="Model name [faces64 for mlp, faces64-wpp for transformer, faces64-sg1 for stylegan1].")
@click.option("--init-from", type=click.Path(file_okay=False, exists=True), default=None,
              help="Native checkpoint folder (G_ema + discriminator, e.g. a shipped model) to continue when "
                   "the run folder holds no state and --resume-from is not given; Adam restarts.")
@click.option("--fast/--reference", default=None,
              help="The fast step (compiled on CUDA) or the reference step [reference, or what a resumed run saved].")
@click.option("--plot", "plot_only", is_flag=True,
              help="Only draw loss.png and gsnr.png from the CSV logs of --run-dir, then exit.")
@click.pass_context
def train(ctx, data, mapping, arch, resolution, run_dir, minutes, max_steps, export, resume_from, batch, lr, r1_gamma,
          augment, seed, settings, name, init_from, fast, plot_only):
    """Train a StyleGAN2 generator (W or W++) or a StyleGAN v1 one on a face pack, resumably.

    Under torchrun each process is one rank of a data-parallel run (--batch is the global batch;
    rank 0 writes the run folder and the export; it resumes on any number of ranks).

    A fresh run uses the shipped models' architecture (z and w 256, channel_base 2048,
    channel_max 256; transformer 4 blocks, 4 heads); a resumed run keeps its saved
    settings. On a GPU: `faceedit --device cuda train ...`.

    \b
    Examples:
      faceedit train --mapping mlp --minutes 8.5 --export out/
      faceedit train --mapping transformer --run-dir runs/faces64-wpp --minutes 8.5
      faceedit --device cuda train --arch stylegan1 --minutes 8.5 --export out/
      faceedit --device cuda train --init-from checkpoints/weights/faces64 --fast --batch 512 --export out/
      faceedit train --resolution 16 --set channel_base=256 --set channel_max=32 --max-steps 20 --run-dir /tmp/t
      faceedit train --plot --run-dir runs/faces64
      torchrun --nproc_per_node 2 -m faceedit --device cuda train --fast --batch 512 --export out/
    """
    from faceedit.training.job import default_name, format_table, parse_overrides, run_job

    name = name or default_name(mapping, arch)
    run_dir = run_dir or f"runs/{name}"
    if plot_only:
        _plots(run_dir, name)
        return
    with job_errors():
        overrides = parse_overrides(settings)
        for k, v in (("batch", batch), ("lr", lr), ("r1_gamma", r1_gamma), ("augment", augment), ("seed", seed),
                     ("fast", fast), ("arch", arch)):
            if v is not None:
                overrides[k] = v
        overrides["resolution"] = int(resolution)
        s = run_job(data=data, mapping=mapping, run_dir=run_dir, minutes=minutes, export=export,
                    resume_from=resume_from, name=name, device=ctx.obj["device"], max_steps=max_steps,
                    overrides=overrides, init_from=init_from,
                    t_start=__import__("time").time())
    if s["rank"] == 0:  # under torchrun, one table
        click.echo(format_table(s))


def _plots(run_dir, name):
    from faceedit.core.files import atomic_write_bytes

    try:
        from faceedit.training.plots import gsnr_plot_png, loss_plot_png
    except ImportError as e:  # pragma: no cover
        raise click.ClickException(f"plots need matplotlib ({e}); pip install matplotlib") from e
    wrote = []
    for fname, fn, csv in (("loss.png", loss_plot_png, "loss.csv"), ("gsnr.png", gsnr_plot_png, "gsnr.csv")):
        png = fn(Path(run_dir) / csv, name)
        if png is not None:
            atomic_write_bytes(Path(run_dir) / fname, png)
            wrote.append(fname)
    if not wrote:
        raise click.ClickException(f"{run_dir} holds no loss.csv or gsnr.csv; pass the --run-dir of a run")
    click.echo(f"wrote {', '.join(wrote)} in {run_dir}")


@click.command("unpack-export")
@click.argument("src", type=click.Path(file_okay=False, exists=True))
@click.argument("dest", type=click.Path(file_okay=False))
@click.argument("names", nargs=-1)
def unpack_export(src, dest, names):
    """Assemble native model folders DEST/NAME from a training job's exports in SRC.

    SRC holds NAME.zip, NAME.disc.safetensors and NAME.resume.safetensors per model
    (what `faceedit train --export` writes); NAMES default to faceedit's two models.

    \b
    Example:
      faceedit unpack-export runs/export checkpoints/weights faces64
    """
    from faceedit.training.export import find_export, unpack

    with job_errors():
        for n in names or ("faces64", "faces64-wpp"):
            if find_export(src, n) is None:
                click.echo(f"skip {n}: not all three export files are in {src}")
                continue
            click.echo(f"{n} -> {unpack(src, n, dest)}")


@click.command("train-scorers")
@click.option("--train", "train_pack", type=click.Path(dir_okay=False, exists=True), required=True,
              help="Aligned TRAIN pack (.npz) with CelebA attributes and UTKFace age/gender labels.")
@click.option("--out", type=OutDir(), required=True,
              help="Folder for attrnet.safetensors and attrnet.json (copy them into checkpoints/weights/scorers).")
@click.option("--minutes", type=click.FloatRange(min=0, min_open=True), default=2.5, show_default=True)
@click.option("--max-steps", type=click.IntRange(1), default=None)
@click.option("--epochs", type=click.FloatRange(min=0, min_open=True), default=40.0, show_default=True)
@click.option("--val-every", type=click.FloatRange(min=0, min_open=True), default=4.0, show_default=True,
              help="Epochs between validations.")
@click.option("--batch", "--batch-size", "batch_size", type=click.IntRange(1), default=512, show_default=True,
              help="Faces per training step.")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=2e-3, show_default=True)
@click.option("--width", type=click.IntRange(4), default=32, show_default=True)
@click.option("--val-fraction", type=click.FloatRange(0, 0.5, min_open=True), default=0.05, show_default=True,
              help="Fraction of the train pack held out for validation (never the test split).")
@seed_option("Seed of the split and the initialisation")
@click.pass_context
def train_scorers(ctx, train_pack, out, minutes, max_steps, epochs, val_every, batch_size, lr, width, val_fraction,
                  seed):
    """Train the attribute network (CelebA's 40 attributes, gender, age) that scores and fits edits.

    \b
    Example:
      faceedit --device cuda train-scorers --train packs/faces64_train.npz --out runs/scorers
    """
    from faceedit.training.attributes import summary_table, train_attrnet

    with job_errors():
        card = train_attrnet(train_pack, out, minutes=minutes, max_steps=max_steps, epochs=epochs,
                             val_every=val_every, batch_size=batch_size, lr=lr, width=width,
                             val_fraction=val_fraction, seed=seed, device=ctx.obj["device"] if ctx.obj else "auto")
    click.echo(f"wrote {Path(out) / 'attrnet.safetensors'} and attrnet.json")
    click.echo(summary_table(card))


@click.command("train-quadnet")
@click.option("--out", type=OutDir(), required=True,
              help="Folder for quadnet.safetensors and quadnet.json (copy the weights into alignment/).")
@click.option("--datasets", type=click.Path(exists=True, file_okay=False), default=None,
              help="The shared datasets folder [../shared/datasets or $FACEEDIT_DATASETS].")
@click.option("--per-source", type=click.IntRange(0), default=0, show_default=True,
              help="Random TRAIN photos per source (CelebA, UTKFace); 0 = all.")
@click.option("--samples", type=click.Path(dir_okay=False), default=None,
              help="Cache of the extracted crops (.npz): read if it exists, written otherwise.")
@click.option("--workers", type=click.IntRange(1, 64), default=2, show_default=True,
              help="Processes extracting the training samples.")
@click.option("--steps", type=click.IntRange(1), default=18000, show_default=True, help="Training steps.")
@click.option("--batch", type=click.IntRange(8), default=256, show_default=True, help="Faces per training step.")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=2e-3, show_default=True)
@click.option("--jitter", type=click.FloatRange(0, 3), default=1.0, show_default=True,
              help="Random re-framing of the training crops (1 = rotation 4 deg, scale 5%, shift 4%, sd).")
@click.option("--width", type=click.IntRange(4, 256), default=40, show_default=True,
              help="Channels of the first layer.")
@seed_option("Seed of the sampling and the initialisation")
@click.pass_context
def train_quadnet_cmd(ctx, out, datasets, per_source, samples, workers, steps, batch, lr, jitter, width, seed):
    """Train QuadNet, which puts MTCNN quads on the 68-point model's eyes and mouth (TRAIN faces only).

    The defaults are the shipped model's (alignment/quadnet.json): 6.3 min on an H100; the
    crops of all train faces take ~18 min to extract on 2 CPU cores (keep them with --samples).

    \b
    Example:
      faceedit train-quadnet --out runs/quadnet --samples runs/quadnet/samples.npz
    """
    from faceedit.core.device import resolve_device
    from faceedit.training.quadnet import run_quadnet_job

    with job_errors():
        if not (samples and Path(samples).is_file()):
            click.echo(f"extracting the crops of the train photos with {workers} workers ...")
        rec = run_quadnet_job(out, datasets=datasets or _default_datasets(), per_source=per_source, samples=samples,
                              workers=workers, steps=steps, batch=batch, lr=lr, jitter=jitter, width=width, seed=seed,
                              device=str(resolve_device(ctx.obj["device"] if ctx.obj else "auto")),
                              progress=lambda k, n, secs: click.echo(f"  {k}/{n} photos, {secs:.0f} s"))
    click.echo(f"wrote {Path(out) / 'quadnet.safetensors'} ({rec['faces']} faces); held-out L1 (fraction of the "
               f"crop): calibrated MTCNN {rec['val_l1_mtcnn_calibrated']:.4f} -> QuadNet {rec['val_l1_quadnet']:.4f}; "
               f"quads agreeing {rec.get('val_agree_mtcnn_calibrated', float('nan')):.1%} -> "
               f"{rec.get('val_agree_quadnet', float('nan')):.1%}")
