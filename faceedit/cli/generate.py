"""`faceedit generate` and `faceedit mix`."""
from __future__ import annotations

from pathlib import Path

import click

from .common import job_errors, parse_range


def _load(ctx, model):
    from faceedit.checkpoints.registry import load_generator
    from faceedit.core.device import resolve_device

    return load_generator(model, device=resolve_device(ctx.obj["device"]))


@click.command("generate")
@click.option("--model", default="faces64", show_default=True, help="Registry name or checkpoint path.")
@click.option("--seeds", default="0-7", show_default=True, help="Seeds, e.g. 0-7 or 1,5,9.")
@click.option("--trunc", type=click.FloatRange(0, 2), default=1.0, show_default=True,
              help="Truncation psi (1 = none).")
@click.option("--compress", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Log-compression threshold tau (in sigmas) in the Gaussianized space, instead of --trunc.")
@click.option("--noise", type=click.Choice(["const", "random", "none"]), default="const", show_default=True)
@click.option("--out", type=click.Path(file_okay=False), default="out/generate", show_default=True)
@click.pass_context
def generate(ctx, model, seeds, trunc, compress, noise, out):
    """Generate one PNG per seed plus a grid.

    \b
    Examples:
      faceedit generate --seeds 0-7 --out samples/
      faceedit generate --model faces64-wpp --seeds 0-15 --trunc 0.7
      faceedit generate --compress 2.0 --seeds 0-15
    """
    import torch

    from faceedit.core.images import make_grid, save_image, tensor_to_uint8

    seed_list = parse_range(seeds)
    with job_errors():
        G = _load(ctx, model)
        dev = G.synthesis.const.device
        z = torch.cat([G.sample_z(1, seed=s, device=dev) for s in seed_list])
        with torch.no_grad():
            ws = G.mapping(z, truncation_psi=trunc)
            if compress is not None:
                from faceedit.inversion.prior import load_prior

                ws = load_prior(model, G).compress(ws, tau=compress)
            imgs = tensor_to_uint8(G.synthesis(ws, noise_mode=noise))
        out = Path(out)
        for s, im in zip(seed_list, imgs):
            save_image(out / f"seed{s:04d}.png", im)
        save_image(out / "grid.png", make_grid(imgs))
    click.echo(f"wrote {len(seed_list)} images and grid.png to {out}")


@click.command("mix")
@click.option("--model", default="faces64", show_default=True)
@click.option("--rows", default="0-3", show_default=True, help="Seeds giving the coarse styles (rows).")
@click.option("--cols", default="4-7", show_default=True, help="Seeds giving the fine styles (columns).")
@click.option("--crossover", type=int, default=None,
              help="First layer taken from the column seed (default num_ws // 2).")
@click.option("--trunc", type=click.FloatRange(0, 2), default=1.0, show_default=True)
@click.option("--out", type=click.Path(dir_okay=False), default="out/mix.png", show_default=True)
@click.pass_context
def mix(ctx, model, rows, cols, crossover, trunc, out):
    """Style mixing grid: layers before --crossover from the row seed, the rest from the column seed.

    \b
    Example:
      faceedit mix --rows 0-3 --cols 10-13 --crossover 4
    """
    import numpy as np
    import torch

    from faceedit.core.images import make_grid, save_image, tensor_to_uint8

    r, c = parse_range(rows, name="rows"), parse_range(cols, name="cols")
    with job_errors():
        G = _load(ctx, model)
        cut = G.num_ws // 2 if crossover is None else crossover
        if not 0 <= cut <= G.num_ws:
            raise click.BadParameter(f"must be in 0..{G.num_ws}", param_hint="--crossover")
        dev = G.synthesis.const.device
        with torch.no_grad():
            wr = G.mapping(torch.cat([G.sample_z(1, seed=s, device=dev) for s in r]), truncation_psi=trunc)
            wc = G.mapping(torch.cat([G.sample_z(1, seed=s, device=dev) for s in c]), truncation_psi=trunc)
            blank = np.full((1, G.resolution, G.resolution, 3), 255, np.uint8)
            tiles = [blank, tensor_to_uint8(G.synthesis(wc))]
            for i in range(len(r)):
                mixed = torch.cat([wr[i:i + 1, :cut].expand(len(c), -1, -1), wc[:, cut:]], dim=1)
                tiles += [tensor_to_uint8(G.synthesis(wr[i:i + 1])), tensor_to_uint8(G.synthesis(mixed))]
        save_image(out, make_grid(np.concatenate(tiles), cols=len(c) + 1))
    click.echo(f"wrote {out}")
