"""`faceedit generate` and `faceedit mix`."""
from __future__ import annotations

from pathlib import Path

import click

from .common import OutDir, job_errors, parse_range


def _out_folder(out, model, command: str, names: list):
    """The checked output folder of `generate`/`mix`, after saying which of ``names`` an earlier run left there.

    Every name is claimed before the model loads, so a file there that faceedit did not write stops
    the run at once (``faceedit.outputs.OutputFolder``).
    """
    from faceedit.outputs import OutputFolder

    folder = OutputFolder(out, [model] if Path(str(model)).is_file() else [], command=command).check()
    earlier = [n for n in names if (folder.root / n).exists()]
    for n in names:
        folder.claim(folder.root / n)
    if earlier:
        click.echo(f"replacing {len(earlier)} file(s) an earlier `faceedit {command}` wrote in {folder.root} "
                   f"(pass another --out to keep them)", err=True)
    return folder


def _load(ctx, model):
    from faceedit.checkpoints.registry import load_model
    from faceedit.core.device import resolve_device

    return load_model(model, device=resolve_device(ctx.obj["device"]))


_Z_RULES = {"numpy": "np.random.RandomState(seed).randn(1, *z_shape)",
            "torch": "torch.randn(1, *z_shape, generator=torch.Generator().manual_seed(seed))"}
Z_SOURCE = click.option("--z-source", type=click.Choice(list(_Z_RULES)), default="numpy", show_default=True,
                        help="How z is drawn from a seed: numpy = NVIDIA's RandomState(seed).randn; torch = "
                             "faceedit's own generator (the shipped sample sheets).")


@click.command("generate")
@click.option("--model", default="faces64", show_default=True, help="Registry name or checkpoint path.")
@click.option("--seeds", default="0-7", show_default=True, help="Seeds, e.g. 0-7 or 1,5,9.")
@click.option("--trunc", type=click.FloatRange(0, 2), default=1.0, show_default=True,
              help="Truncation psi (1 = none).")
@click.option("--compress", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Log-compression threshold tau (in sigmas) in the Gaussianized space, instead of --trunc.")
@click.option("--noise", type=click.Choice(["const", "random", "none"]), default="const", show_default=True)
@Z_SOURCE
@click.option("--out", type=OutDir(), default="out/generate", show_default=True,
              help="Output folder (created; an earlier run's samples there are replaced, and said so). Relative "
              "to the current folder, like `faceedit edit`'s, so samples land where the user works.")
@click.pass_context
def generate(ctx, model, seeds, trunc, compress, noise, z_source, out):
    """Generate one PNG per seed plus a grid, and generate.json (model, seeds, how z was drawn).

    z of seed S is drawn as NVIDIA's scripts draw it, np.random.RandomState(S).randn(1, z_dim),
    so seed 0 of an NVIDIA model is the face NVIDIA shows; --z-source torch gives faceedit's
    own draws (the shipped models' sample sheets).

    \b
    Examples:
      faceedit generate --seeds 0-7 --out samples/
      faceedit generate --model faces64-wpp --seeds 0-15 --trunc 0.7
      faceedit generate --model faces64 --seeds 0-31 --z-source torch   # the model card's sheet
      faceedit generate --compress 2.0 --seeds 0-15
    """
    import json

    import torch

    from faceedit.core.images import make_grid, tensor_to_uint8
    from faceedit.sampling import seed_z

    seed_list = parse_range(seeds)
    with job_errors():
        folder = _out_folder(out, model, "generate", [f"seed{s:04d}.png" for s in seed_list]
                             + ["grid.png", "generate.json"])
        loaded = _load(ctx, model)
        G = loaded.G
        z = seed_z(G, seed_list, z_source)
        with torch.no_grad():
            ws = G.mapping(z, truncation_psi=trunc)
            if compress is not None:
                from faceedit.inversion.prior import load_prior

                ws = load_prior(model, G).compress(ws, tau=compress)
            imgs = tensor_to_uint8(G.synthesis(ws, noise_mode=noise))
        out = Path(out)
        for s, im in zip(seed_list, imgs):
            folder.save_image(out / f"seed{s:04d}.png", im)
        folder.save_image(out / "grid.png", make_grid(imgs))
        record = {"version": 1, "model": str(model), "model_id": loaded.model_id, "seeds": seed_list,
                  "z_source": z_source, "z_rule": _Z_RULES[z_source], "truncation_psi": trunc,
                  "compress_tau": compress, "noise_mode": noise}
        folder.write_text(out / "generate.json", json.dumps(record, indent=1) + "\n")
    click.echo(f"wrote {len(seed_list)} images, grid.png and generate.json to {out} (z from {z_source})")


@click.command("mix")
@click.option("--model", default="faces64", show_default=True, help="Registry name or checkpoint path.")
@click.option("--rows", default="0-3", show_default=True, help="Seeds giving the coarse styles (rows).")
@click.option("--cols", default="4-7", show_default=True, help="Seeds giving the fine styles (columns).")
@click.option("--crossover", type=int, default=None,
              help="First layer taken from the column seed [default: num_ws // 2].")
@click.option("--trunc", type=click.FloatRange(0, 2), default=1.0, show_default=True,
              help="Truncation psi (1 = none).")
@Z_SOURCE
@click.option("--out", type=OutDir(), default="out/mix", show_default=True,
              help="Output folder (created); the grid is OUT/mix.png (an earlier one is replaced, and said so). "
              "Relative to the current folder, like `faceedit edit`'s, so the grid lands where the user works.")
@click.pass_context
def mix(ctx, model, rows, cols, crossover, trunc, z_source, out):
    """Style mixing grid: layers before --crossover from the row seed, the rest from the column seed.

    Writes OUT/mix.png (first row: the column seeds; first column: the row seeds).

    \b
    Example:
      faceedit mix --rows 0-3 --cols 10-13 --crossover 4
    """
    import numpy as np
    import torch

    from faceedit.core.images import make_grid, tensor_to_uint8
    from faceedit.sampling import seed_z

    r, c = parse_range(rows, name="rows"), parse_range(cols, name="cols")
    if Path(out).suffix.lower() in (".png", ".jpg", ".jpeg"):
        raise click.BadParameter(f"{out} names a file; --out is a folder, as for every command (the grid is "
                                 f"OUT/mix.png)", param_hint="--out")
    out = Path(out) / "mix.png"
    with job_errors():
        folder = _out_folder(out.parent, model, "mix", ["mix.png"])
        G = _load(ctx, model).G
        cut = G.num_ws // 2 if crossover is None else crossover
        if not 0 <= cut <= G.num_ws:
            raise click.BadParameter(f"must be in 0..{G.num_ws}", param_hint="--crossover")
        with torch.no_grad():
            wr = G.mapping(seed_z(G, r, z_source), truncation_psi=trunc)
            wc = G.mapping(seed_z(G, c, z_source), truncation_psi=trunc)
            blank = np.full((1, G.resolution, G.resolution, 3), 255, np.uint8)
            tiles = [blank, tensor_to_uint8(G.synthesis(wc))]
            for i in range(len(r)):
                mixed = torch.cat([wr[i:i + 1, :cut].expand(len(c), -1, -1), wc[:, cut:]], dim=1)
                tiles += [tensor_to_uint8(G.synthesis(wr[i:i + 1])), tensor_to_uint8(G.synthesis(mixed))]
        folder.save_image(out, make_grid(np.concatenate(tiles), cols=len(c) + 1))
    click.echo(f"wrote {out}")
