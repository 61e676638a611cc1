"""`faceedit ui`: serve the editing page (``faceedit.ui``) on this machine."""
from __future__ import annotations

import click

from .common import detector_option, job_errors, max_pixels_option, min_score_option, seed_option


@click.command("ui")
@click.option("--model", default=None, help="Model chosen when the page opens: registry name or checkpoint path "
              "[default: the default model of W+].")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on. Anything but a loopback address lets every machine that reaches this one "
                   "use the page (a warning says so).")
@click.option("--port", type=click.IntRange(1, 65535), default=7860, show_default=True, help="TCP port.")
@click.option("--max-file-mb", type=click.FloatRange(0.01, 2048), default=25.0, show_default=True,
              help="Largest photo file accepted, in MiB.")
@max_pixels_option()
@click.option("--steps", type=click.IntRange(1, 100_000), default=None,
              help="Inversion steps [default: each method's, e.g. 30 hybrid steps on the CPU].")
@click.option("--examples", "examples", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="Example photos offered under the upload box, repeatable [default: the checkout's examples/].")
@detector_option()
@min_score_option()
@seed_option("Seed of the inversions")
@click.pass_context
def ui(ctx, model, host, port, max_file_mb, max_pixels, steps, examples, detector, min_score, seed):
    """Serve a web page for editing the faces of a photo (needs `pip install 'faceedit[ui]'`).

    Drop a photo, choose a face, model, space and method, see the reconstruction and its
    quality, move one slider per attribute, play a sweep as a GIF and download the edited
    photo, its latent and the JSON record. The page listens on this machine only unless
    --host says otherwise; Ctrl-C stops it and removes its temporary files.

    \b
    Examples:
      faceedit ui                                   # then open http://localhost:7860/
      faceedit ui --port 8000 --model faces64-wpp
      faceedit --device cuda ui --host 0.0.0.0      # every machine on the network can use it
    """
    with job_errors():
        from faceedit.ui import UiSettings, example_photos, serve

        settings = UiSettings(model=model, device=ctx.obj["device"] if ctx.obj else "auto",
                              max_file_bytes=int(max_file_mb * 2**20), max_pixels=max_pixels,
                              examples=tuple(examples) or example_photos(), detector=detector, steps=steps,
                              min_score=min_score, seed=seed)
        server = serve(settings, host=host, port=port)
    click.echo(f"faceedit ui: open {server.url} (Ctrl-C stops it)")
    server.block()
