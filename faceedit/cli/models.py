"""`faceedit models`, `faceedit download`, `faceedit convert`, `faceedit fit-prior`."""
from __future__ import annotations

import click

from .common import OutDir, job_errors


@click.command("models")
def models():
    """List the model registry: name, resolution, spaces, license, where the files are.

    \b
    Example:
      faceedit models
    """
    from faceedit.checkpoints.registry import list_models

    rows = [("name", "res", "spaces", "mapping", "license", "files")]
    for e, path in list_models():
        rows.append((e.name, str(e.resolution), ",".join(e.spaces), e.mapping_kind, e.license,
                     str(path) if path else f"not here (faceedit download {e.name})"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        click.echo("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())


@click.command("download")
@click.argument("name")
def download(name):
    """Download a registered public checkpoint into the cache (checks its sha256).

    Without a sha256 in the registry the first download's hash is printed and recorded in
    the cache's known_hashes.json, and later downloads are checked against it.

    \b
    Example:
      faceedit download stylegan2-ffhq-1024
    """
    from faceedit.checkpoints.download import download_model, expected_sha256

    with job_errors():
        path = download_model(name)
        sha, where = expected_sha256(name)
    click.echo(str(path))
    if sha:
        click.echo(f"sha256 {sha} (checked against the {where})")


@click.command("convert")
@click.argument("src", type=click.Path(exists=True, dir_okay=True))
@click.argument("dst", type=click.Path())
@click.option("--recipe", type=click.Choice(["auto", "ffhq", "faces64"]), default="auto", show_default=True,
              help="Alignment recipe recorded in the model's config.json, at the model's resolution: ffhq = "
                   "NVIDIA's FFHQ framing (scale 1.0, what public FFHQ models were trained on); faces64 = "
                   "faceedit's 64 px framing (0.6x the FFHQ quad); auto = ffhq for a converted file, the "
                   "source's own for a native checkpoint.")
def convert(src, dst, recipe):
    """Convert an NVIDIA PyTorch or TensorFlow .pkl, a rosinality .pt or a native checkpoint to the
    native format, with the discriminator where faceedit can run it.

    Reading never executes code from the file.

    \b
    Examples:
      faceedit convert stylegan2-ffhq-1024x1024.pkl ffhq1024/
      faceedit convert stylegan2-ffhq-config-f.pkl ffhq1024-tf/          # TensorFlow pickle
      faceedit convert my-64px-model.pt mine/ --recipe faces64
    """
    from faceedit.alignment.types import FACES64, FFHQ
    from faceedit.checkpoints.convert import convert_file, sniff

    with job_errors():
        if recipe == "auto":
            recipe = None if sniff(src) == "native" else "ffhq"
        out = convert_file(src, dst, recipe=recipe and {"ffhq": FFHQ, "faces64": FACES64}[recipe].to_dict())
        from faceedit.checkpoints.native import read_config

        cfg = read_config(out)
    d = (cfg.get("provenance") or {}).get("discriminator")
    rec = cfg.get("recipe") or {}
    click.echo(f"wrote {out} (recipe {rec.get('name', 'none')} at {rec.get('size', '?')} px, scale "
               f"{rec.get('scale', '?')}; discriminator: {d or ('kept' if cfg.get('discriminator') else 'none')})")


@click.command("fit-prior")
@click.argument("model")
@click.option("--out", type=OutDir(), required=True, help="Folder for the copy with its prior.")
@click.option("--n", type=click.IntRange(min=100), default=None, help="Mapping samples [default: 100000].")
@click.option("--dtype", type=click.Choice(["float32", "float16"]), default="float32", show_default=True,
              help="Weight dtype of the written checkpoint (the statistics stay float32).")
@click.pass_context
def fit_prior_cmd(ctx, model, out, n, dtype):
    """Fit a model's Gaussianized prior and write a copy of the model that ships it.

    \b
    Example:
      faceedit --device cuda fit-prior ffhq1024/ --out ffhq1024-prior/
    """
    import torch

    from faceedit.core.device import resolve_device
    from faceedit.inversion.prior import DEFAULT_N, embed_prior

    with job_errors():
        dev = resolve_device(ctx.obj["device"] if ctx.obj else "auto")
        r = embed_prior(model, out, n=n or DEFAULT_N, device=dev, dtype=getattr(torch, dtype))
    st = r["stats"]
    click.echo(f"prior of {r['model_id']} ({'joint' if float(st['joint']) else 'per-layer'}, dim "
               f"{st['mean'].numel()}, n {int(float(st['n']))}) fitted in {r['seconds']:.1f} s on {r['device']}; "
               f"written to {r['path']}")
    click.echo("| shrinkage | w_std | chi2 mean ratio | chi2 var ratio | KS |")
    click.echo("| --- | --- | --- | --- | --- |")
    nan = float("nan")
    click.echo(f"| {float(st['shrinkage']):.4g} | {float(st['w_std']):.4g} | "
               f"{float(st.get('check_mean_ratio', nan)):.4f} | {float(st.get('check_var_ratio', nan)):.4f} | "
               f"{float(st.get('check_ks', nan)):.4f} |")
