"""GPU job: train a 64 px StyleGAN v1 (``faces64-sg1``) for a wall-clock budget, resuming, then export.

The v1 generator (``networks.Generator1``: 8-layer mapping, learned constant, AdaIN,
per-layer noise, blur up-sampling) trains in the shipped models' loop
(:func:`faceedit.training.job.run_job` with ``overrides=dict(arch="stylegan1")``): the same
residual discriminator, non-saturating logistic loss with R1, style mixing 0.9, no
path-length penalty, and by default the shipped models' channel table (about 3.6M
generator parameters at 64 px). Each call is one chunk of at most ``--minutes``; the next
chunk continues from ``--run-dir`` (same machine: exact) or from ``--resume-from``, a folder
holding an earlier chunk's three export files (fresh machine: Adam restarts).

Run with faceedit importable (``pip install --no-deps --no-build-isolation -e .``, or the
checkout's rooms on ``PYTHONPATH``); it needs torch, numpy, opencv, pillow and safetensors
only::

    python bench/scripts/train_sg1_job.py --data .gpu/data/faces64_train.npz --minutes 8.5 \\
        --run-dir .gpu/runs/faces64-sg1 --export $OUT/export
    python bench/scripts/train_sg1_job.py --data PACK --minutes 8.5 --resume-from PREV_EXPORT \\
        --export $OUT/export --fast --batch 512

It writes ``faces64-sg1.zip`` (native checkpoint with ``config.json`` recording
``arch: stylegan1``, logs, samples), ``faces64-sg1.disc.safetensors`` and
``faces64-sg1.resume.safetensors`` into ``--export`` (``faceedit unpack-export EXPORT DEST
faces64-sg1`` assembles a model folder from them) and prints a summary table last.
"""
from __future__ import annotations

import time

T_START = time.time()  # the budget counts from the command's start, imports included

import argparse  # noqa: E402
import csv  # noqa: E402
import logging  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="Train pack (faces64_train.npz from `faceedit dataset build`).")
    p.add_argument("--minutes", type=float, default=8.5, help="Wall-clock budget of the whole job [8.5].")
    p.add_argument("--run-dir", default="runs/faces64-sg1", help="Checkpoint folder kept between chunks.")
    p.add_argument("--export", default=None, help="Folder for the three export files (none: no export).")
    p.add_argument("--resume-from", default=None, help="Folder with an earlier chunk's export files.")
    p.add_argument("--init-from", default=None, help="A native StyleGAN v1 folder (G_ema + D) to continue.")
    p.add_argument("--name", default="faces64-sg1", help="Model name [faces64-sg1].")
    p.add_argument("--device", default="cuda", help="cuda, cpu or auto [cuda].")
    p.add_argument("--batch", type=int, default=None, help="Images per step [TrainConfig's 128].")
    p.add_argument("--fast", action="store_true",
                   help="The fast step (explicit draws, torch.compile on CUDA, fused Adam) instead of the reference.")
    p.add_argument("--compile-mode", default=None, help="torch.compile mode of the fast step [default].")
    p.add_argument("--max-steps", type=int, default=None, help="Stop after N steps (a smoke test).")
    p.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE",
                   help="Any other TrainConfig field, e.g. --set holdout=1000 --set gsnr_every=400.")
    return p.parse_args(argv)


def last_losses(run_dir: Path) -> dict:
    """The last row of ``loss.csv`` (empty when the run wrote none)."""
    path = run_dir / "loss.csv"
    if not path.is_file():
        return {}
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return rows[-1] if rows else {}


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    from faceedit.training.job import format_table, parse_overrides, run_job

    overrides = parse_overrides(args.settings)
    overrides["arch"] = "stylegan1"
    overrides["fast"] = args.fast
    if args.batch is not None:
        overrides["batch"] = args.batch
    if args.compile_mode is not None:
        overrides["compile_mode"] = args.compile_mode
    s = run_job(data=args.data, mapping="mlp", run_dir=args.run_dir, minutes=args.minutes, export=args.export,
                resume_from=args.resume_from, init_from=args.init_from, name=args.name, device=args.device,
                max_steps=args.max_steps, overrides=overrides, t_start=T_START)
    last = last_losses(Path(args.run_dir))
    cfg = s["config"]
    rows = [("step", f"{'fast' if cfg['fast'] else 'reference'}, batch {cfg['batch']}"),
            ("pl_weight", cfg["pl_weight"]), ("style mixing", 0.9 if cfg["style_mixing"] is None else cfg["style_mixing"])]
    rows += [(f"last {k}", last[k]) for k in ("loss_G", "loss_D", "D_real", "D_fake", "r1") if last.get(k)]
    print(format_table(s, rows))
    return 1 if s["stopped_on_nan"] else 0


if __name__ == "__main__":
    sys.exit(main())
