"""Does `faceedit adopt` reproduce what we know is right? The shipped faces64, generator only.

    python bench/scripts/adopt.py --device cuda --n 100000 --out DIR          # the judging run (GPU)
    OMP_NUM_THREADS=1 python bench/scripts/adopt.py --device cpu --n 8000 --out DIR            # 13 min (2 cores)

A copy of the shipped ``faces64`` holding only ``model.safetensors`` and a ``config.json``
without recipe, discriminator or prior is adopted with ``--recipe faces64`` (the scorer's
framing, so the re-cut is the identity) into a temporary ``FACEEDIT_HOME``, once per
``--seeds`` entry, with the shipped recipe's kept fraction (2% at each end) and
``--batch`` (default on CUDA 1000, the batch the shipped fit ran with, so that on the same
kind of GPU the arithmetic is the shipped run's too). Printed:

* per attribute (smile, age, male, eyeglasses), the cosine of the adopted W direction
  with the shipped one (``directions fit-all``, 100k samples of seed 0), for each seed.
  Seed 0 at ``--n 100000`` draws exactly the shipped fit's latents (``editing.fit.z_batches``),
  so it checks that adopt fits by the shipped path; any other seed draws independent
  samples, so it measures how reproducible the recipe is (bounded by the shipped fit's own
  seed-to-seed cosine, ``bench/scripts/direction_stability.py``); then the cosine between
  the two adoptions and the held-out accuracies; the issue asks for cosine >= 0.9;
* the prior of the first adoption against the shipped prior: the mean's Mahalanobis
  distance and the relative Frobenius distance of the covariances, beside the same two
  numbers between the adopted prior and a second fit at the same sample count from other
  seeds (the sampling error). "within sampling error" means both distances to the
  shipped prior are at most twice the seed-to-seed ones plus what the shipped prior's
  own sample count adds (``sqrt(n_adopt / n_shipped)``).

Writes ``adopt_cosines.md`` (the printed tables) and ``adopt_cosines.json`` under ``--out``.
Exit status 0 when the first seed's cosines reach 0.9 and the prior is within sampling error.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

ATTRS = ("smile", "age", "male", "eyeglasses")
TARGET = 0.9


def generator_only_copy(dst: Path) -> Path:
    from faceedit.checkpoints.registry import WEIGHTS_DIR

    src = WEIGHTS_DIR / "faces64"
    dst.mkdir(parents=True)
    shutil.copy2(src / "model.safetensors", dst / "model.safetensors")
    cfg = json.loads((src / "config.json").read_text())
    cfg.update(recipe=None, discriminator=None, name="faces64-copy")
    (dst / "config.json").write_text(json.dumps(cfg, indent=2))
    return dst


def prior_distance(a: dict, b: dict) -> tuple:
    """``(Mahalanobis distance of the means under b's covariance, ||cov_a - cov_b||_F / ||cov_b||_F)``."""
    ma, mb = a["mean"].double().reshape(-1), b["mean"].double().reshape(-1)
    cb = b["cov"].double()
    d = ma - mb
    maha = float(torch.sqrt(d @ torch.linalg.solve(cb, d)))
    fro = float(torch.linalg.norm(a["cov"].double() - cb) / torch.linalg.norm(cb))
    return maha, fro


def interfacegan(folder: Path) -> dict:
    from faceedit.editing.direction import list_directions

    return {d.attribute: d for _, d in list_directions(folder=folder)
            if d.space == "w" and not d.conditions and not d.layers and d.method == "interfacegan"}


def cos(a, b) -> float:
    return float(a.vector.double().reshape(-1) @ b.vector.double().reshape(-1))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--n", type=int, default=100_000, help="samples scored for the directions")
    ap.add_argument("--prior-n", type=int, default=100_000, help="mapping samples for the prior")
    ap.add_argument("--seeds", default="0,1", help="comma-separated adoption seeds (0: the shipped fit's latents)")
    ap.add_argument("--batch", type=int, default=None,
                    help="synthesis batch of the adoptions [default: 1000 on CUDA, as the shipped fit; else adopt's]")
    ap.add_argument("--fraction", type=float, default=0.02, help="kept at each end (the shipped recipe's)")
    ap.add_argument("--svm-c", type=float, default=None,
                    help="SVM regularisation [default: editing.fit.SVM_C, the shipped recipe's]; another value "
                         "gives other directions, so only its seed-to-seed column means something")
    ap.add_argument("--out", type=Path, required=True, help="folder for adopt_cosines.md and .json")
    args = ap.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    if args.batch is None and torch.device(args.device).type == "cuda":
        args.batch = 1000
    if not seeds:
        ap.error("--seeds needs at least one seed")

    from faceedit.checkpoints.native import load_native
    from faceedit.checkpoints.registry import WEIGHTS_DIR
    from faceedit.inversion.prior import fit_prior

    tmp = Path(tempfile.mkdtemp(prefix="faceedit-adopt-bench-"))
    os.environ["FACEEDIT_HOME"] = str(tmp / "home")
    from faceedit.training.adopt import adopt

    shipped = interfacegan(WEIGHTS_DIR / "directions" / "faces64")
    runs = []
    try:
        copy = generator_only_copy(tmp / "faces64-copy")
        for seed in seeds:
            name = f"faces64-adopted-s{seed}"
            t0 = time.time()
            rep = adopt(copy, name, recipe="faces64", n=args.n, prior_n=args.prior_n, device=args.device,
                        unsupervised=0, attrs=list(ATTRS), seed=seed, batch=args.batch, fraction=args.fraction,
                        svm_c=args.svm_c,
                        stage=lambda m: print(m, file=sys.stderr, flush=True))
            runs.append({"seed": seed, "seconds": time.time() - t0, "report": rep,
                         "dirs": interfacegan(tmp / "home" / "directions" / name)})
        ship_prior = load_native(WEIGHTS_DIR / "faces64").prior
        adopted_prior = load_native(tmp / "home" / "models" / f"faces64-adopted-s{seeds[0]}").prior
        G = load_native(copy).G.to(args.device)
        again = fit_prior(G, args.prior_n, seed=seeds[0] + 7, check_n=0)
        d_ship = prior_distance(adopted_prior, ship_prior)
        d_seed = prior_distance(adopted_prior, again)
        n_ship = int(float(ship_prior.get("n", torch.tensor(100_000.0))))
        allow = 2 * (1 + math.sqrt(args.prior_n / max(n_ship, 1)))
        within = d_ship[0] <= allow * d_seed[0] and d_ship[1] <= allow * d_seed[1]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    rows = []
    for a in ATTRS:
        row = {"attribute": a, "shipped_samples": shipped[a].samples, "cosine": {}, "accuracy": {}, "refused": {}}
        for r in runs:
            d = r["dirs"].get(a)
            if d is None:
                row["refused"][r["seed"]] = r["report"]["directions"]["rejected"].get(a, {}).get("reason", "missing")
                continue
            row["cosine"][r["seed"]] = cos(d, shipped[a])
            row["accuracy"][r["seed"]] = d.accuracy
        if len(runs) > 1 and all(a in r["dirs"] for r in runs[:2]):
            row["seed_to_seed"] = cos(runs[0]["dirs"][a], runs[1]["dirs"][a])
        rows.append(row)

    rep0 = runs[0]["report"]
    from faceedit.editing.fit import SVM_C

    svm_c = SVM_C if args.svm_c is None else args.svm_c
    lines = [f"adopt on {rep0['device']}: n {args.n}, prior n {args.prior_n}, fraction {args.fraction}, SVM C {svm_c:g}, "
             f"batch "
             f"{rep0['batch']}, " + ", ".join(f"seed {r['seed']} {r['seconds']:.1f} s "
                                              f"({r['report']['seconds_per_image'] * 1000:.2f} ms an image)"
                                              for r in runs), ""]
    head = ["attribute"] + [f"cos with shipped, seed {s}" + (" (the shipped latents)" if s == 0 else "")
                            for s in seeds]
    if len(runs) > 1:
        head.append(f"cos seed {seeds[0]} vs {seeds[1]}")
    head += [f"held-out acc seed {s}" for s in seeds] + [f"seed {seeds[0]} >= {TARGET}"]
    lines += ["| " + " | ".join(head) + " |", "| --- " * len(head) + "|"]
    for row in rows:
        cells = [row["attribute"]]
        cells += [f"{row['cosine'][s]:.3f}" if s in row["cosine"] else f"refused: {row['refused'][s]}" for s in seeds]
        if len(runs) > 1:
            cells.append(f"{row['seed_to_seed']:.3f}" if "seed_to_seed" in row else "")
        cells += [f"{row['accuracy'][s]:.3f}" if row["accuracy"].get(s) is not None else "" for s in seeds]
        c0 = row["cosine"].get(seeds[0])
        cells.append("yes" if c0 is not None and c0 >= TARGET else "no")
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "| prior vs | mean Mahalanobis | cov rel. Frobenius |", "| --- | --- | --- |",
              f"| shipped (n {n_ship}) | {d_ship[0]:.4f} | {d_ship[1]:.4f} |",
              f"| same n, other seed | {d_seed[0]:.4f} | {d_seed[1]:.4f} |",
              f"prior within sampling error (<= {allow:.2f}x seed-to-seed): {'yes' if within else 'NO'}"]
    text = "\n".join(lines) + "\n"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "adopt_cosines.md").write_text(text)
    (args.out / "adopt_cosines.json").write_text(json.dumps(
        {"device": rep0["device"], "n": args.n, "prior_n": args.prior_n, "fraction": args.fraction, "svm_c": svm_c,
         "batch": rep0["batch"], "seeds": seeds, "seconds": {r["seed"]: r["seconds"] for r in runs},
         "directions": rows, "prior": {"shipped": d_ship, "seed": d_seed, "within": within, "allow": allow}},
        indent=2))
    print(text)
    ok = all(row["cosine"].get(seeds[0], -1.0) >= TARGET for row in rows) and within
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
