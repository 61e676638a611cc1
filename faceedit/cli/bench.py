"""`faceedit bench`: benchmarks that print a table and write CSV/JSON/PNG beside it."""
from __future__ import annotations

import importlib
from pathlib import Path

import click

from .common import DATA_HELP, data_default, job_errors

DEFAULT_TEST = "faces64_test.npz"
DEFAULT_TRAIN = "faces64_train.npz"


def _pack_option(name, default, help_):
    return click.option(name, type=click.Path(dir_okay=False), default=data_default(default),
                        show_default=f"{DATA_HELP}/{default}", help=help_)


def _need(path, what):
    if not Path(path).is_file():
        raise click.BadParameter(f"{path} does not exist; build the packs with `faceedit dataset` "
                                 f"(training.dataset) or pass {what}", param_hint=what)


@click.group("bench")
def bench():
    """Measure models and instruments; every figure is written with the hashes and versions behind it.

    \b
    Examples:
      faceedit bench generator --model faces64 --out bench/generator
      faceedit bench scorers --out bench/scorers
      faceedit bench inversion --model faces64 --out bench/inversion
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
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", type=click.Path(file_okay=False), default="bench/generator", show_default=True)
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
      faceedit bench generator --model faces64 --model faces64-wpp --out bench/generator
    """
    from faceedit.bench import bench_generator, format_table

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
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", type=click.Path(file_okay=False), default="bench/scorers", show_default=True)
def scorers(test_pack, weights, geometry, update_card, attributes, seed, out):
    """The attribute scorers' card on the test split (CPU).

    Per-attribute AUC, gender AUC, age MAE, per race / gender / age bucket; the landmark
    smile's AUC against CelebA's Smiling label; 68-point vs MTCNN yaw correlation.

    \b
    Example:
      faceedit bench scorers --update-card checkpoints/weights/scorers/attrnet.json
    """
    from faceedit.bench import bench_scorers, format_table

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
@click.option("--out", type=click.Path(dir_okay=False), default="bench/identity_calibration.json", show_default=True,
              help="Ship it as checkpoints/weights/scorers/identity_calibration.json.")
def identity_calibration_cmd(test_pack, pairs, max_faces, out):
    """Distances between different people and between perturbed copies of one face (dlib ResNet).

    \b
    Example:
      faceedit bench identity-calibration --out checkpoints/weights/scorers/identity_calibration.json
    """
    from faceedit.bench import identity_calibration

    _need(test_pack, "--test-pack")
    with job_errors():
        cal = identity_calibration(test_pack, out, n_pairs=pairs, max_faces=max_faces)
    q = cal["different"]["quantiles"]
    s = cal["same"]["quantiles"]
    click.echo(f"different people: mean {cal['different']['mean']:.3f}, 5% {q[5]:.3f}, median {q[50]:.3f}")
    click.echo(f"same face (changed): mean {cal['same']['mean']:.3f}, median {s[50]:.3f}, 95% {s[95]:.3f}")
    for k, v in cal["same"]["per_change"].items():
        click.echo(f"  {k:<7} mean {v['mean']:.3f}  95% {v['p95']:.3f}")
    click.echo(f"equal-error threshold {cal['eer']['threshold']:.3f} (rate {cal['eer']['rate']:.4f}); "
               f"different pairs under dlib's 0.6: {cal['different_below_0.6']:.4f}")
    click.echo(f"wrote {out}")


def _plugin(kind: str, module: str):
    @click.command(kind, context_settings={"ignore_unknown_options": True, "allow_extra_args": True,
                                           "help_option_names": []})
    @click.argument("args", nargs=-1, type=click.UNPROCESSED)
    def cmd(args):
        from faceedit.bench import plugin_module

        try:
            mod = importlib.import_module(plugin_module(kind, args))
        except ImportError as e:
            raise click.ClickException(f"`faceedit bench {kind}` is not available in this install ({e})") from e
        with job_errors():
            mod.main(list(args))

    cmd.help = f"Run {module} (its own options; `faceedit bench {kind} --help` lists them)."
    cmd.short_help = f"{kind.capitalize()} benchmark ({module})."
    return cmd


def _register_plugins():
    from faceedit.bench import PLUGINS

    for kind, module in PLUGINS.items():
        bench.add_command(_plugin(kind, module))


_register_plugins()
