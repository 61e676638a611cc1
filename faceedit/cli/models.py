"""`faceedit models`, `faceedit download`, `faceedit convert`."""
from __future__ import annotations

import click

from .common import job_errors


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

    \b
    Example:
      faceedit download stylegan2-ffhq-1024
    """
    from faceedit.checkpoints.download import download_model

    with job_errors():
        path = download_model(name)
    click.echo(str(path))


@click.command("convert")
@click.argument("src", type=click.Path(exists=True, dir_okay=True))
@click.argument("dst", type=click.Path())
def convert(src, dst):
    """Convert an NVIDIA .pkl, a rosinality .pt or a native checkpoint to the native format.

    Reading never executes code from the file.

    \b
    Example:
      faceedit convert stylegan2-ffhq-1024x1024.pkl ffhq1024/
    """
    from faceedit.checkpoints.convert import convert_file

    with job_errors():
        out = convert_file(src, dst)
    click.echo(f"wrote {out}")
