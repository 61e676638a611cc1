"""How reproducible are the shipped faces64 directions? Seed-to-seed cosines of their recipe and of others.

    OMP_NUM_THREADS=1 python bench/scripts/direction_stability.py --n 100000 --cache DIR --out DIR \\
        --budget-minutes 12                        # CPU: rerun the same command until it prints the tables
    python bench/scripts/direction_stability.py --device cuda --n 100000 --cache DIR --out DIR

``faces64`` is sampled and scored by the shipped attribute network twice, ``--n`` latents
each: seed 0 (the latent sequence ``directions fit-all`` drew the shipped directions from,
``editing.fit.z_batches``) and seed 1 (independent samples). The scored samples are cached
under ``--cache`` in chunks of ``--chunk`` rows, so a CPU run can be split into commands of
``--budget-minutes`` each (exit status 3: sampling is not finished, run it again). On the
CPU the ``shared`` synthesis path is used (4x faster; equal to float rounding); on CUDA the
shipped fit's path and batch (1000), so that there row 1 checks bit-level reproduction.

Printed, per attribute (smile, age, male, eyeglasses), for InterFaceGAN's SVM normal fitted
by ``editing.fit.fit_svm`` (the shipped recipe: 2% at each end, ``C=1``, 70/30 split):

1. the shipped recipe refitted on seed 0's samples (the shipped fit's own latents, this
   machine's arithmetic) against the shipped file, and on seed 1's against the shipped file
   (what an independent re-fit, e.g. a re-adoption, can reach);
2. seed-to-seed cosines at ``n``, ``n/2`` and ``n/4`` (disjoint subsets of both seeds; mean
   over the pairs), and ``corr``: the same pairs' cosine in the metric of the codes'
   covariance, i.e. the correlation of the two directions' projections over the samples;
3. every recipe at ``n`` (SVM ``C`` and kept fraction): seed-to-seed cosine (corr), how
   well each seed's direction sorts the *other* seed's top and bottom 2% (ROC AUC of the
   projection, mean of both ways: generalisation measured on independent samples), and the
   cosine with the shipped recipe fitted on the same samples;
4. the sensitivity of the shipped recipe: fitted on the latents adopt drew before it
   shared the shipped sequence (256 of seed 0, then seed 1), and on seed 0 with N(0, 2e-4)
   added to the scores (less than float arithmetic moves them between machines);
5. the spread of the codes' covariance and the share of each shipped normal that lies in
   its narrowest half of axes (where the samples hardly vary) and in its widest eighth.

Writes ``stability.md`` and ``stability.json`` under ``--out``.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

ATTRS = ("smile", "age", "male", "eyeglasses")
SHIPPED = {"fraction": 0.02, "C": 1.0}
OLD_FIRST = 256  # adopt's first (timing) batch on CUDA before the shared sequence
NOISE = 2e-4  # standard deviation of the score perturbation of the sensitivity row
VARIANTS = tuple({"fraction": 0.02, "C": c} for c in (0.1, 0.01, 0.003, 0.001, 0.0003)) + (
    {"fraction": 0.1, "C": 1.0}, {"fraction": 0.1, "C": 0.001})


def chunk_path(cache: Path, seed: int, a: int, b: int) -> Path:
    return cache / f"faces64_seed{seed}_{a}-{b}.npz"


def sample_chunks(args, G, score, seeds, deadline) -> bool:
    """Sample and score the chunks not in the cache yet; False when the time budget ran out first."""
    from faceedit.editing.fit import sample_and_score

    path = args.path or ("shared" if torch.device(args.device).type == "cpu" else None)
    for seed in seeds:
        for a in range(0, args.n, args.chunk):
            b = min(a + args.chunk, args.n)
            f = chunk_path(args.cache, seed, a, b)
            if f.is_file():
                continue
            if time.time() > deadline:
                return False
            t = time.time()
            codes, scores = sample_and_score(G, score, b - a, seed=seed, start=a, batch=args.batch,
                                             device=args.device, path=path)
            tmp = f.with_suffix(".tmp.npz")
            np.savez(tmp, codes=codes, **{"s_" + k: v for k, v in scores.items() if k in ATTRS})
            tmp.replace(f)
            print(f"seed {seed} rows {a}-{b}: {time.time() - t:.0f} s ({(time.time() - t) / (b - a) * 1000:.1f} ms an "
                  f"image)", file=sys.stderr, flush=True)
    return True


def load_seed(cache: Path, seed: int, n: int, chunk: int) -> tuple:
    parts = [np.load(chunk_path(cache, seed, a, min(a + chunk, n))) for a in range(0, n, chunk)]
    return (np.concatenate([p["codes"] for p in parts]),
            {k: np.concatenate([p["s_" + k] for p in parts]) for k in ATTRS})


def shipped_vectors() -> dict:
    from faceedit.checkpoints.registry import WEIGHTS_DIR
    from faceedit.editing.direction import list_directions

    return {d.attribute: d.vector.double().reshape(-1).numpy()
            for _, d in list_directions(folder=WEIGHTS_DIR / "directions" / "faces64")
            if d.space == "w" and not d.conditions and not d.layers and d.method == "interfacegan"}


def recipe_name(r: dict) -> str:
    return f"{r['fraction']:.0%} each end, C={r['C']:g}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--n", type=int, default=100_000, help="samples per seed")
    ap.add_argument("--cache", type=Path, required=True, help="folder for the scored samples")
    ap.add_argument("--out", type=Path, required=True, help="folder for stability.md and stability.json")
    ap.add_argument("--chunk", type=int, default=35_000, help="rows per cached file")
    ap.add_argument("--batch", type=int, default=None,
                    help="synthesis batch [default: 1000 on CUDA (the shipped fit's), 500 on the CPU]")
    ap.add_argument("--path", default=None, help="synthesis path [default: shared on the CPU, else the model's]")
    ap.add_argument("--budget-minutes", type=float, default=None, help="stop sampling after this long (exit 3)")
    args = ap.parse_args(argv)
    args.batch = args.batch or (1000 if torch.device(args.device).type == "cuda" else 500)
    if args.n < 8000 or args.chunk < 1:
        ap.error("--n must be at least 8000 (n/4 samples keep 40 at each end) and --chunk at least 1")

    from sklearn.metrics import roc_auc_score

    from faceedit.checkpoints.registry import load_model
    from faceedit.editing.fit import fit_svm
    from faceedit.editing.fit_job import classifier_scorer

    args.cache.mkdir(parents=True, exist_ok=True)
    m = load_model("faces64", device=args.device)
    score, _, scorer_id = classifier_scorer(None, args.device)
    deadline = time.time() + 60 * args.budget_minutes if args.budget_minutes else math.inf
    if not sample_chunks(args, m.G.eval(), score, (0, 1), deadline):
        print("sampling not finished within --budget-minutes; run the same command again", file=sys.stderr)
        return 3

    X = {s: load_seed(args.cache, s, args.n, args.chunk) for s in (0, 1)}
    allc = np.concatenate([X[0][0], X[1][0]]).astype(np.float64)
    cov = np.cov(allc.T)
    ship = shipped_vectors()

    def corr(a, b):
        return float(a @ cov @ b / math.sqrt((a @ cov @ a) * (b @ cov @ b)))

    def other_auc(v, seed, attr):
        """ROC AUC of the projection on ``v`` between the other seed's top and bottom 2%."""
        codes, scores = X[1 - seed]
        k = int(len(codes) * SHIPPED["fraction"])
        order = np.argsort(scores[attr], kind="stable")
        idx = np.concatenate([order[-k:], order[:k]])
        return float(roc_auc_score(np.r_[np.ones(k), np.zeros(k)], codes[idx].astype(np.float64) @ v))

    def fit(seed, attr, rows=None, recipe=SHIPPED):
        codes, scores = X[seed]
        sl = slice(None) if rows is None else slice(*rows)
        return fit_svm(codes[sl], scores[attr][sl], fraction=recipe["fraction"], C=recipe["C"], seed=0)

    res = {"n": args.n, "device": str(args.device), "model_id": m.model_id, "scorer": scorer_id,
           "shipped_recipe": SHIPPED, "attributes": {}}
    t0 = time.time()
    for a in ATTRS:
        r = res["attributes"][a] = {}
        v0, i0 = fit(0, a)
        v1, i1 = fit(1, a)
        r["refit_seed0_vs_shipped"] = float(v0 @ ship[a])
        r["fit_seed1_vs_shipped"] = float(v1 @ ship[a])
        r["refit_seed0_vs_shipped_corr"] = corr(v0, ship[a])
        r["accuracy"] = [i0["accuracy"], i1["accuracy"]]
        r["other_seed_auc"] = (other_auc(v0, 0, a) + other_auc(v1, 1, a)) / 2
        # the latents adopt drew before it shared fit_job's sequence: 256 of seed 0, then seed 1
        old = np.concatenate([X[0][0][:OLD_FIRST], X[1][0][:args.n - OLD_FIRST]])
        olds = np.concatenate([X[0][1][a][:OLD_FIRST], X[1][1][a][:args.n - OLD_FIRST]])
        r["old_adopt_latents_vs_shipped"] = float(fit_svm(old, olds, **SHIPPED, seed=0)[0] @ ship[a])
        noisy = X[0][1][a] + NOISE * np.random.default_rng(0).standard_normal(args.n)
        r["score_noise_vs_refit"] = float(fit_svm(X[0][0], noisy, **SHIPPED, seed=0)[0] @ v0)
        r["seed_to_seed"] = {}
        for parts in (1, 2, 4):
            k = args.n // parts
            vs = [fit(s, a, (j * k, (j + 1) * k))[0] for s in (0, 1) for j in range(parts)]
            pairs = [(p, q) for p in range(len(vs)) for q in range(p + 1, len(vs))]
            r["seed_to_seed"][k] = {"cos": float(np.mean([vs[p] @ vs[q] for p, q in pairs])),
                                    "corr": float(np.mean([corr(vs[p], vs[q]) for p, q in pairs])),
                                    "pairs": len(pairs)}
        r["variants"] = {}
        for rec in VARIANTS:
            w0, j0 = fit(0, a, recipe=rec)
            w1, j1 = fit(1, a, recipe=rec)
            r["variants"][recipe_name(rec)] = {"seed_to_seed": float(w0 @ w1), "corr": corr(w0, w1),
                                               "accuracy": (j0["accuracy"] + j1["accuracy"]) / 2,
                                               "other_seed_auc": (other_auc(w0, 0, a) + other_auc(w1, 1, a)) / 2,
                                               "vs_shipped_recipe": float((w0 @ v0 + w1 @ v1) / 2)}
        print(f"{a}: fitted in {time.time() - t0:.0f} s", file=sys.stderr, flush=True)

    ks = sorted(res["attributes"][ATTRS[0]]["seed_to_seed"], reverse=True)
    lines = [f"# Reproducibility of the faces64 InterFaceGAN directions ({args.n:,} samples a seed, "
             f"{args.device})", "",
             f"Scorer `{scorer_id}`, model `{m.model_id}`; shipped recipe {recipe_name(SHIPPED)}; "
             f"`python bench/scripts/direction_stability.py --n {args.n}`.", "",
             "| attribute | refit on the shipped samples vs shipped | (corr) | independent fit vs shipped | "
             + " | ".join(f"seed-to-seed n={k:,} | (corr)" for k in ks) + " | held-out acc |",
             "| --- " * (4 + 2 * len(ks) + 1) + "|"]
    for a in ATTRS:
        r = res["attributes"][a]
        lines.append(f"| {a} | {r['refit_seed0_vs_shipped']:.3f} | {r['refit_seed0_vs_shipped_corr']:.3f} | "
                     f"{r['fit_seed1_vs_shipped']:.3f} | "
                     + " | ".join(f"{r['seed_to_seed'][k]['cos']:.3f} | {r['seed_to_seed'][k]['corr']:.3f}"
                                  for k in ks)
                     + f" | {np.mean(r['accuracy']):.3f} |")
    lines += ["", f"Every recipe at n={args.n:,}: seed-to-seed cosine (corr) / AUC on the other seed's 2% tails / "
              "cosine with the shipped recipe on the same samples", "",
              "| recipe | " + " | ".join(ATTRS) + " |", "| --- " * (1 + len(ATTRS)) + "|"]
    for rec in (SHIPPED, *VARIANTS):
        name = recipe_name(rec)
        cells = []
        for a in ATTRS:
            r = res["attributes"][a]
            if rec is SHIPPED:
                s = r["seed_to_seed"][args.n]
                cells.append(f"{s['cos']:.3f} ({s['corr']:.3f}) / {r['other_seed_auc']:.4f} / 1")
            else:
                v = r["variants"][name]
                cells.append(f"{v['seed_to_seed']:.3f} ({v['corr']:.3f}) / {v['other_seed_auc']:.4f} / "
                             f"{v['vs_shipped_recipe']:.3f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "Sensitivity of the shipped recipe: the latents adopt drew before (256 of seed 0, then seed 1) "
              f"against the shipped file, and seed 0's fit with N(0, {NOISE:g}) added to the scores against "
              "the same fit without", "",
              "| attribute | old adopt's latents vs shipped | scores perturbed vs unperturbed |", "| --- | --- | --- |"]
    lines += [f"| {a} | {res['attributes'][a]['old_adopt_latents_vs_shipped']:.3f} | "
              f"{res['attributes'][a]['score_noise_vs_refit']:.3f} |" for a in ATTRS]
    ev, U = np.linalg.eigh(cov)  # ascending
    half, top = len(ev) // 2, max(1, len(ev) // 8)
    res["code_covariance"] = {"eigenvalue_max": float(ev[-1]), "eigenvalue_median": float(np.median(ev)),
                              "eigenvalue_min": float(ev[0]), "mean_norm": float(np.linalg.norm(allc.mean(0)))}
    lines += ["", f"Where the shipped normals lie: the codes' covariance has eigenvalues {ev[-1]:.3g} down to "
              f"{ev[0]:.3g} (median {np.median(ev):.3g}; the mean's norm is "
              f"{res['code_covariance']['mean_norm']:.3g})", "",
              f"| attribute | share of the shipped normal in the {half} narrowest axes | in the {top} widest |",
              "| --- | --- | --- |"]
    for a in ATTRS:
        e = (U.T @ ship[a]) ** 2
        res["attributes"][a]["shipped_energy_narrow_half"] = float(e[:half].sum())
        res["attributes"][a]["shipped_energy_wide_eighth"] = float(e[-top:].sum())
        lines.append(f"| {a} | {e[:half].sum():.3f} | {e[-top:].sum():.3f} |")
    text = "\n".join(lines) + "\n"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "stability.md").write_text(text)
    (args.out / "stability.json").write_text(json.dumps(res, indent=2))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
