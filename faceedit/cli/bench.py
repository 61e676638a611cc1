"""`faceedit bench`: benchmarks that print a table and write CSV/JSON/PNG beside it."""
from __future__ import annotations

import logging
from pathlib import Path

import click

from .common import DATA_HELP, RESULTS_HELP, OutDir, data_default, job_errors, results_default

DEFAULT_TEST = "faces64_test.npz"
DEFAULT_TRAIN = "faces64_train.npz"


def _pack_option(name, default, help_):
    return click.option(name, type=click.Path(dir_okay=False), default=data_default(default),
                        show_default=f"{DATA_HELP}/{default}", help=help_)


def _need(path, what):
    if not Path(path).is_file():
        raise click.BadParameter(f"{path} does not exist; build the packs with `faceedit dataset` "
                                 f"(training.dataset) or pass {what}", param_hint=what)


class _BenchGroup(click.Group):
    """``faceedit bench inversion --methods ...`` is the methods table, ``faceedit bench methods``."""

    def resolve_command(self, ctx, args):
        name, cmd, rest = super().resolve_command(ctx, args)
        if name == "inversion" and any(a == "--methods" or a.startswith("--methods=") for a in rest):
            return "methods", self.get_command(ctx, "methods"), rest
        return name, cmd, rest


@click.group("bench", cls=_BenchGroup)
def bench():
    """Measure models and instruments; every figure is written with the hashes and versions behind it.

    The code is the faceedit.bench room; the figures shipped with the project are in the
    checkout's bench/results/<area>/, the GPU and development scripts in bench/scripts/.
    A command given no --out writes to <faceedit cache>/bench/<area>, or asks for --out.

    \b
    Examples:
      faceedit bench generator --model faces64 --out bench/results/generator
      faceedit bench scorers --out bench/results/scorers
      faceedit bench inversion --model faces64 --out bench/results/inversion/faces64
    """


@bench.command("generator")
@click.option("--model", "models", multiple=True, default=None,
              help="Registry name or checkpoint path (repeat for several) [default: faces64 unless --images].")
@click.option("--images", "images_dirs", multiple=True, type=click.Path(file_okay=False, exists=True),
              help="A folder of aligned face images to measure like a model's samples (repeatable).")
@_pack_option("--test-pack", DEFAULT_TEST, "Aligned real TEST faces (the reference).")
@_pack_option("--train-pack", DEFAULT_TRAIN, "Aligned real TRAIN faces (floor and nearest-neighbour sheet).")
@click.option("--n", type=click.IntRange(min=10), default=None,
              help="Generated faces [default: as many as test faces].")
@click.option("--ppl", "ppl_samples", type=click.IntRange(min=0), default=1000, show_default=True,
              help="PPL pairs per space and sampling (0 = skip).")
@click.option("--ls", "ls_samples", type=click.IntRange(min=0), default=4000, show_default=True,
              help="Generated faces for linear separability (0 = skip).")
@click.option("--max-train", type=click.IntRange(min=100), default=10000, show_default=True,
              help="Train faces used for the floor and the nearest-neighbour search (random subset).")
@click.option("--weights", type=click.Path(dir_okay=False), default=None,
              help="Attribute-network weights [default: the shipped ones].")
@click.option("--trunc", type=click.FloatRange(0, 2), default=1.0, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the generated samples.")
@click.option("--out", type=OutDir(), default=results_default("generator"),
              show_default=f"{RESULTS_HELP}/generator",
              help="Folder for generator.json/.csv/.md and the sheets.")
@click.pass_context
def generator(ctx, models, images_dirs, test_pack, train_pack, n, ppl_samples, ls_samples, max_train, weights, trunc,
              seed, out):
    """Generated vs real faces in the attribute network's features.

    KID-attr (bootstrap 95% interval), FD-attr and precision/recall-attr against the real
    test faces, with real-train vs real-test as the floor; attribute rates; PPL (LPIPS if
    its backbone is present, else attribute features, named); linear separability; a
    contact sheet of the generated faces closest to a train face beside that face.
    These are not FID/KID (no Inception network is involved).

    \b
    Example:
      faceedit bench generator --model faces64 --model faces64-wpp --out bench/results/generator
    """
    from faceedit.bench.quality import bench_generator
    from faceedit.bench.report import format_table

    _need(test_pack, "--test-pack")
    _need(train_pack, "--train-pack")
    with job_errors():
        from faceedit.core.device import resolve_device
        from faceedit.metrics.attributes import AttributeScorer

        dev = resolve_device(ctx.obj.get("device", "auto"))
        models = list(models) if models else ([] if images_dirs else ["faces64"])
        res = bench_generator(models, images_dirs=list(images_dirs), test_pack=test_pack, train_pack=train_pack, n=n,
                              seed=seed, trunc=trunc,
                              ppl_samples=ppl_samples, ls_samples=ls_samples, max_train=max_train, device=dev,
                              scorer=AttributeScorer.load(weights, device=dev), out=out,
                              progress=lambda m: click.echo(m, err=True))
    click.echo(format_table(res["rate_rows"]))
    click.echo()
    click.echo(format_table(res["rows"], ["model", "compared", "metric", "value", "ci_low", "ci_high", "n", "note"]))
    click.echo(f"wrote {out}/generator.md, .csv, .json and PNGs")


@bench.command("scorers")
@_pack_option("--test-pack", DEFAULT_TEST, "Aligned real TEST faces with labels.")
@click.option("--weights", type=click.Path(dir_okay=False), default=None,
              help="Attribute-network weights [default: the shipped ones].")
@click.option("--geometry", type=click.IntRange(min=0), default=400, show_default=True,
              help="Test faces that get landmark scores (0 = skip).")
@click.option("--update-card", type=click.Path(dir_okay=False), default=None,
              help="Write the test figures into this card JSON (e.g. the shipped attrnet.json).")
@click.option("--attributes/--no-attributes", default=True, show_default=True,
              help="Score with the attribute network (--no-attributes: landmark geometry only).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the sampled faces.")
@click.option("--out", type=OutDir(), default=results_default("scorers"),
              show_default=f"{RESULTS_HELP}/scorers",
              help="Folder for scorers.json/.csv/.md.")
def scorers(test_pack, weights, geometry, update_card, attributes, seed, out):
    """The attribute scorers' card on the test split (CPU).

    Per-attribute AUC, gender AUC, age MAE, per race / gender / age bucket; the landmark
    smile's AUC against CelebA's Smiling label; 68-point vs MTCNN yaw correlation.

    \b
    Example:
      faceedit bench scorers --update-card checkpoints/weights/scorers/attrnet.json
    """
    from faceedit.bench.quality import bench_scorers
    from faceedit.bench.report import format_table

    _need(test_pack, "--test-pack")
    with job_errors():
        res = bench_scorers(test_pack, weights=weights, geometry=geometry, seed=seed, device="cpu", out=out,
                            card=update_card, attributes=attributes, progress=lambda m: click.echo(m, err=True))
    click.echo(format_table(res["rows"], ["output", "metric", "value", "positives", "negatives"]))
    click.echo(f"wrote {out}/scorers.md, .csv, .json" + (f" and updated {update_card}" if update_card else ""))


@bench.command("identity-calibration")
@_pack_option("--test-pack", DEFAULT_TEST, "Aligned real TEST faces.")
@click.option("--pairs", type=click.IntRange(min=100), default=5000, show_default=True)
@click.option("--max-faces", type=click.IntRange(min=10), default=1500, show_default=True)
@click.option("--out", type=OutDir(), default=results_default("scorers"),
              show_default=f"{RESULTS_HELP}/scorers",
              help="Folder for identity_calibration.json (ship it from checkpoints/weights/scorers/).")
def identity_calibration_cmd(test_pack, pairs, max_faces, out):
    """Distances between different people and between perturbed copies of one face (dlib ResNet).

    \b
    Example:
      faceedit bench identity-calibration --out checkpoints/weights/scorers
    """
    from faceedit.bench.quality import identity_calibration

    _need(test_pack, "--test-pack")
    with job_errors():
        cal = identity_calibration(test_pack, Path(out) / "identity_calibration.json", n_pairs=pairs,
                                   max_faces=max_faces)
    q = cal["different"]["quantiles"]
    s = cal["same"]["quantiles"]
    click.echo(f"different people: mean {cal['different']['mean']:.3f}, 5% {q[5]:.3f}, median {q[50]:.3f}")
    click.echo(f"same face (changed): mean {cal['same']['mean']:.3f}, median {s[50]:.3f}, 95% {s[95]:.3f}")
    for k, v in cal["same"]["per_change"].items():
        click.echo(f"  {k:<7} mean {v['mean']:.3f}  95% {v['p95']:.3f}")
    click.echo(f"equal-error threshold {cal['eer']['threshold']:.3f} (rate {cal['eer']['rate']:.4f}); "
               f"different pairs under dlib's 0.6: {cal['different_below_0.6']:.4f}")
    click.echo(f"wrote {out}")


def _floats(text: str, what: str) -> list:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a comma-separated list of numbers", param_hint=what) from None


def _names(values) -> list | None:
    """Repeated and/or comma-separated names (``--attrs smile,age`` = ``--attrs smile --attrs age``)."""
    out = [x.strip() for v in values for x in v.split(",") if x.strip()]
    return out or None


def _device(ctx, device):
    from faceedit.core.device import resolve_device

    return resolve_device(device or ctx.obj.get("device", "auto"))


def _pack_or_none(pack):
    """The pack when the file is there, else None (faces then come from ``--photos``)."""
    return pack if pack and Path(pack).is_file() else None


@bench.command("editing")
@click.option("--model", "models", multiple=True,
              help="Registry name or checkpoint path (repeatable) [default: faces64 and faces64-wpp].")
@click.option("--pack", default=data_default("faces64_test.npz"), show_default=f"{DATA_HELP}/faces64_test.npz",
              help="Aligned TEST faces (used when the file exists, else --photos).")
@click.option("--photos", type=click.Path(file_okay=False, exists=True), default=None,
              help="Also run the photo check on this folder (and take faces from it without a pack).")
@click.option("--n", type=click.IntRange(min=1), default=100, show_default=True, help="Faces per model.")
@click.option("--strengths", default="-2,-1,0,1,2", show_default=True, help="Comma-separated edit strengths.")
@click.option("--steps", type=click.IntRange(min=1), default=None, help="Inversion steps [default: the method's].")
@click.option("--directions", type=click.Path(file_okay=False), default=None,
              help="Folder of direction files [default: shipped + cache].")
@click.option("--perceptual", default="disc", show_default=True, help="Inversion perceptual loss.")
@click.option("--method", default=None, help="Inversion method [default: the model's default].")
@click.option("--attrs", multiple=True,
              help="Only directions of these attributes, with their conditional variants (repeat or comma-separate) "
                   "[default: all].")
@click.option("--photo-steps", type=click.IntRange(min=1), default=5, show_default=True,
              help="Inversion steps of the photo check (geometry, not quality, is checked).")
@click.option("--no-identity", is_flag=True, help="Skip dlib identity similarity.")
@click.option("--identity-n", type=click.IntRange(min=1), default=None,
              help="Identity on the first N faces only [default: all].")
@click.option("--device", default=None, help="cpu, cuda, cuda:N or auto [default: faceedit --device].")
@click.option("--latents", type=click.Path(file_okay=False), default=None,
              help="Reuse inversions saved there by --save-latents (same pack and --n).")
@click.option("--save-latents", type=click.Path(file_okay=False), default=None, help="Save the inversions there.")
@click.option("--invert-only", is_flag=True, help="With --save-latents: stop after inverting.")
@click.option("--out", type=OutDir(), required=True,
              help="Folder for editing.json and editing.md (e.g. bench/results/editing/faces64).")
@click.pass_context
def editing_cmd(ctx, models, pack, photos, n, strengths, steps, directions, perceptual, method, attrs, photo_steps,
                no_identity, identity_n, device, latents, save_latents, invert_only, out):
    """How well the shipped directions edit real faces: one table (faceedit.bench.editing).

    \b
    Examples:
      faceedit bench editing --model faces64 --n 100 --save-latents runs/lat --invert-only --out runs/ed  # GPU
      faceedit bench editing --model faces64 --n 100 --latents runs/lat --out bench/results/editing/faces64
    """
    from faceedit.bench.editing import run, table

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    models = list(models) or ["faces64", "faces64-wpp"]
    with job_errors():
        dev = _device(ctx, device)
        check = _photo_pipeline(models[0], photo_steps, dev, directions) if photos else None
        res = run(models, pack=_pack_or_none(pack), photos=photos, n=n, strengths=_floats(strengths, "--strengths"),
                  steps=steps, device=dev, directions=directions, out=out, identity=not no_identity,
                  perceptual=perceptual, photo_pipeline=check, method=method, attrs=_names(attrs),
                  latents_dir=latents, save_latents=save_latents, invert_only=invert_only, identity_n=identity_n)
    click.echo(table(res["rows"], res["photo_check"]))


def _photo_pipeline(model, steps, device, directions):
    """The pipeline the photo check edits with: ``steps`` plain optimisation steps in the model's widest space."""
    from faceedit.checkpoints.registry import load_model
    from faceedit.pipeline import Pipeline

    m = load_model(model, device=device)
    space = "wpp" if m.G.mapping_kind == "transformer" else "w+"
    return Pipeline(m, space=space, method="optim", device=device, directions=directions,
                    invert_options=dict(steps=steps, prior="none", perceptual="none"))


@bench.command("inversion")
@click.option("--model", "models", multiple=True,
              help="Registry name or checkpoint path (repeatable) [default: faces64 and faces64-wpp].")
@click.option("--pack", default=data_default("faces64_test.npz"), show_default=f"{DATA_HELP}/faces64_test.npz",
              help="Aligned TEST faces (used when the file exists).")
@click.option("--photos", type=click.Path(file_okay=False), default=None,
              help="A folder of photos, aligned with each model's recipe (largest face).")
@click.option("--n", type=click.IntRange(min=1), default=100, show_default=True, help="Faces per model.")
@click.option("--steps", type=click.IntRange(min=1), default=100, show_default=True, help="Optimisation steps.")
@click.option("--perceptual", default="disc,none", show_default=True, help="Comma-separated: disc, lpips, none.")
@click.option("--prior-weight", default="0.01", show_default=True,
              help="Comma-separated weights (each a row beside no prior).")
@click.option("--no-identity", is_flag=True, help="Skip dlib identity similarity.")
@click.option("--no-compression", is_flag=True, help="Skip the compression-vs-truncation table.")
@click.option("--batch", "--batch-size", "batch_size", type=click.IntRange(min=1), default=32, show_default=True,
              help="Faces per optimisation batch.")
@click.option("--add-identity", is_flag=True,
              help="CPU pass: fill identity from the reconstructions a GPU run saved in --out.")
@click.option("--align-photos", type=click.Path(dir_okay=False), default=None, metavar="PACK",
              help="CPU pass: align --photos with the first --model's recipe into PACK and exit.")
@click.option("--out", type=OutDir(), default=None,
              help="Folder for inversion.json/.csv/.md (required unless --align-photos).")
@click.pass_context
def inversion_cmd(ctx, models, pack, photos, n, steps, perceptual, prior_weight, no_identity, no_compression,
                  batch_size, add_identity, align_photos, out):
    """Reconstruction quality of optimisation inversion per space, prior and loss (faceedit.bench.inversion).

    With --methods this is `faceedit bench methods` (encoder / optim / hybrid / PTI).

    \b
    Example:
      faceedit bench inversion --model faces64 --n 100 --steps 200 --out bench/results/inversion/faces64
    """
    from faceedit.bench import inversion as inv

    models = list(models) or ["faces64", "faces64-wpp"]
    with job_errors():
        if align_photos:
            if not photos:
                raise click.UsageError("--align-photos needs --photos (the folder to align)")
            click.echo(f"wrote {inv.align_photos_pack(photos, models[0], align_photos)}")
            return
        if out is None:
            raise click.UsageError("--out is required")
        if add_identity:
            click.echo(inv.table(inv.add_identity(out)["rows"]))
            return
        res = inv.run(models, pack=_pack_or_none(pack), photos=photos, n=n, steps=steps,
                      perceptual=[x for x in perceptual.split(",") if x], device=ctx.obj.get("device", "auto"),
                      prior_weight=_floats(prior_weight, "--prior-weight"), out=out, identity=not no_identity,
                      compression=not no_compression, batch_size=batch_size)
    click.echo(inv.compression_md(res["compression"]))
    click.echo(inv.table(res["rows"]))


@bench.command("methods")
@click.option("--methods", default="encoder,optim,hybrid,pti", show_default=True,
              help="Comma-separated: encoder, optim, hybrid, pti.")
@click.option("--compare-prior", is_flag=True,
              help="Also run optim and hybrid with the other prior setting (like-for-like rows).")
@click.option("--runs", default="faces64:w+,faces64-wpp:wpp", show_default=True,
              help="MODEL:SPACE pairs, comma-separated.")
@click.option("--pack", default=data_default("faces64_test.npz"), show_default=f"{DATA_HELP}/faces64_test.npz",
              help="Aligned TEST faces.")
@click.option("--n", type=click.IntRange(min=1), default=100, show_default=True, help="Faces per run.")
@click.option("--pti-n", type=click.IntRange(min=1), default=100, show_default=True,
              help="Faces for PTI (it tunes one face at a time).")
@click.option("--optim-steps", type=click.IntRange(min=1), default=500, show_default=True)
@click.option("--hybrid-steps", type=click.IntRange(min=1), default=None, help="[default: the library's]")
@click.option("--pti-steps", type=click.IntRange(min=1), default=None, help="[default: the library's]")
@click.option("--perceptual", type=click.Choice(["disc", "none"]), default="disc", show_default=True)
@click.option("--edit-attr", default="smile", show_default=True,
              help="Direction for the PTI editability check ('' = skip).")
@click.option("--identity", is_flag=True, help="Add dlib identity similarity (needs dlib).")
@click.option("--batch", "--batch-size", "batch_size", type=click.IntRange(min=1), default=32, show_default=True,
              help="Faces per optimisation batch.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of every optimisation.")
@click.option("--device", default=None, help="cpu, cuda, cuda:N or auto [default: faceedit --device].")
@click.option("--save-recon", is_flag=True,
              help="Keep targets and reconstructions in --out for --add-identity on a machine with dlib.")
@click.option("--add-identity", is_flag=True,
              help="Only fill id_sim of an earlier run's --out from its reconstructions.")
@click.option("--cpu-n", type=click.IntRange(min=0), default=0, show_default=True,
              help="With --add-identity: also time each row on this CPU on this many faces.")
@click.option("--pti-cpu-n", type=click.IntRange(min=0), default=2, show_default=True,
              help="Faces for PTI's CPU timing.")
@click.option("--append", is_flag=True,
              help="Add the rows to the methods.json already in --out (one table from several runs).")
@click.option("--out", type=OutDir(), required=True, help="Folder for methods.json and methods.md.")
@click.option("-v", "--verbose", is_flag=True, help="Log each stage.")
@click.pass_context
def methods_cmd(ctx, methods, compare_prior, runs, pack, n, pti_n, optim_steps, hybrid_steps, pti_steps, perceptual,
                edit_attr, identity, batch_size, seed, device, save_recon, add_identity, cpu_n, pti_cpu_n, append,
                out, verbose):
    """Encoder vs optim vs hybrid vs PTI on the same test faces: one table (faceedit.bench.methods).

    Also reached as `faceedit bench inversion --methods ...`.

    \b
    Examples:
      faceedit bench methods --methods encoder,optim,hybrid,pti --n 100 --save-recon --out runs/methods  # GPU
      faceedit bench methods --add-identity --cpu-n 8 --out runs/methods                                 # CPU, dlib
    """
    from faceedit.bench import methods as mt

    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING)
    names = tuple(x.strip() for x in methods.split(",") if x.strip())
    bad = [x for x in names if x not in mt.METHODS]
    if bad or not names:
        raise click.BadParameter(f"a comma-separated list of {', '.join(mt.METHODS)}; got {methods!r}",
                                 param_hint="--methods")
    pairs = []
    for r in runs.split(","):
        if ":" not in r:
            raise click.BadParameter(f"{r!r} is not MODEL:SPACE (e.g. faces64:w+)", param_hint="--runs")
        pairs.append(tuple(r.rsplit(":", 1)))
    with job_errors():
        if add_identity:
            click.echo(mt.table(mt.add_identity(out, cpu_n=cpu_n, pti_cpu_n=pti_cpu_n)))
            return
        rows = mt.run_table(pairs, pack=pack, n=n, methods=names, out=out, optim_steps=optim_steps,
                            hybrid_steps=hybrid_steps, pti_steps=pti_steps, pti_n=pti_n, perceptual=perceptual,
                            seed=seed, batch_size=batch_size, identity=identity, edit_attr=edit_attr or None,
                            device=_device(ctx, device), save_recon=save_recon, compare_prior=compare_prior,
                            append=append, settings=dict(ctx.params))
    click.echo(mt.table(rows))
