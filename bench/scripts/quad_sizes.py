"""How large the train faces are in their photos: the FFHQ quad's side in source pixels.

A generator trained at R px on faces whose crop quad spans fewer than R source pixels learns the
resampler's blur, not detail: the data supports a resolution up to about the quad side most
faces reach. This samples train photos of each source (the test split is never read), aligns the
largest face with the faces64 recipe (dlib), and prints the quad side's quantiles and the share
of faces at or above each candidate resolution.

    OMP_NUM_THREADS=1 python bench/scripts/quad_sizes.py --datasets ../shared/datasets --per-source 400 --out DIR
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

RESOLUTIONS = (64, 96, 128, 256)


def quad_side(quad) -> float:
    """Mean edge length of a 4-corner quad ``[4, 2]`` (the crop's side in source pixels)."""
    q = np.asarray(quad, dtype=np.float64)
    return float(np.linalg.norm(q - np.roll(q, -1, axis=0), axis=1).mean())


def main(argv=None) -> int:
    from faceedit.alignment import align
    from faceedit.alignment.errors import FaceNotFoundError, FaceTooSmallError
    from faceedit.core.images import load_image
    from faceedit.training.dataset import SOURCE_CELEBA, SOURCE_UTK, list_sources

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--datasets", default="../shared/datasets")
    ap.add_argument("--per-source", type=int, default=400, help="train photos sampled per source")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    train = list_sources(a.datasets)["train"]
    rng = np.random.default_rng(a.seed)
    rows, sides, t0 = [], {}, time.perf_counter()
    for source in sorted({r["source"] for r in train}):
        recs = [r for r in train if r["source"] == source]
        pick = rng.choice(len(recs), min(a.per_source, len(recs)), replace=False)
        found, photo_sides = [], []
        for i in pick:
            img = load_image(recs[i]["path"])
            photo_sides.append(min(img.shape[:2]))
            try:
                found.append(quad_side(align(img, face="largest")[0].quad))
            except (FaceNotFoundError, FaceTooSmallError):  # counted in "faces", not measured
                pass
        s = np.array(found)
        sides[str(source)] = s.tolist()
        q = np.quantile(s, [0.1, 0.25, 0.5, 0.75, 0.9])
        rows.append({"source": {SOURCE_CELEBA: "celeba10k", SOURCE_UTK: "utkface"}.get(source, str(source)),
                     "photos": len(pick), "faces": len(s),
                     "photo short side (median)": float(np.median(photo_sides)),
                     **{f"quad p{p}": float(v) for p, v in zip((10, 25, 50, 75, 90), q)},
                     **{f">= {r} px": float((s >= r).mean()) for r in RESOLUTIONS}})
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + " --- |" * len(cols)]
    for r in rows:
        lines.append("| " + " | ".join(f"{r[c]:.0f}" if "quad" in c or "side" in c else
                                       f"{100 * r[c]:.1f}%" if c.startswith(">=") else str(r[c]) for c in cols) + " |")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    table = "\n".join(lines)
    (out / "quad_sizes.json").write_text(json.dumps({"rows": rows, "sides": sides, "seed": a.seed}, indent=1))
    (out / "quad_sizes.md").write_text(
        f"FFHQ quad side of the largest face (faces64 recipe, dlib), source pixels; {a.per_source} random TRAIN "
        f"photos per source (seed {a.seed}); {time.perf_counter() - t0:.0f} s\n\n{table}\n")
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
